"""The secure dialect: typed parsing and the restricted grammar (no catalog, no MPC)."""

from __future__ import annotations

import re

import pytest
from sqlglot import exp

from dialect import (
    Error,
    Lasso,
    Linreg,
    MpcDialect,
    NotSupportedError,
    ParseError,
    ProgrammingError,
    Ridge,
    UnsupportedError,
    bind_parameters,
    error_from_dict,
    parse,
)

JOIN_SQL = "SELECT COUNT(*), AVG(ac.charges), SUM(emc.bmi) FROM ac INNER JOIN emc USING (id)"
LASSO_SQL = (
    "SELECT LASSO(charges, age, bmi, smoker, alpha => 0.001) FROM ac JOIN emc ON ac.id = emc.id"
)


def _position(message: str) -> tuple[int, int]:
    m = re.search(r"\(line (\d+), column (\d+)\)", message)
    assert m, f"no position in {message!r}"
    return int(m.group(1)), int(m.group(2))


# --- good queries -----------------------------------------------------------------------------


def test_scalar_aggregates_are_sqlglot_types() -> None:
    tree = parse(JOIN_SQL)
    assert isinstance(tree, exp.Select)
    count, avg, total = tree.expressions
    assert isinstance(count, exp.Count) and isinstance(count.this, exp.Star)
    assert isinstance(avg, exp.Avg) and avg.this.table == "ac"
    assert isinstance(total, exp.Sum) and total.this.name == "bmi"
    join = tree.args["joins"][0]
    assert join.text("kind") == "INNER" and [i.name for i in join.args["using"]] == ["id"]


def test_model_aggregate_is_typed_with_kwarg_options() -> None:
    tree = parse(LASSO_SQL)
    (lasso,) = tree.expressions
    assert isinstance(lasso, Lasso)
    assert isinstance(lasso, exp.AggFunc)
    assert lasso.this.name == "charges"
    cols = [e.name for e in lasso.expressions if isinstance(e, exp.Column)]
    assert cols == ["age", "bmi", "smoker"]
    (kw,) = [e for e in lasso.expressions if isinstance(e, exp.Kwarg)]
    assert kw.this.name == "alpha" and kw.expression.this == "0.001"
    assert lasso.sql(dialect=MpcDialect) == "LASSO(charges, age, bmi, smoker, alpha => 0.001)"


@pytest.mark.parametrize(
    ("sql", "cls"),
    [
        ("SELECT RIDGE(charges, age, alpha => 1) FROM ac", Ridge),
        ("SELECT linreg(charges, age, fit_intercept => false) FROM ac", Linreg),
        ("select lasso(charges, age) from ac", Lasso),
    ],
)
def test_all_model_aggregates(sql: str, cls: type) -> None:
    assert isinstance(parse(sql).expressions[0], cls)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM ac",
        "SELECT count(age), sum(age) AS s, avg(ac.age) a FROM ac",
        "SELECT COUNT(*) FROM ac AS a JOIN emc AS b ON a.id = b.id",
        "SELECT COUNT(*) FROM ac JOIN emc USING (id);",
        "SELECT\n  COUNT(*)\nFROM ac\nINNER JOIN emc\n  USING (id)\n",
        'SELECT SUM("age") FROM "ac"',
        "-- comment\nSELECT COUNT(*) FROM ac /* trailing */",
        "FROM ac SELECT COUNT(*)",
    ],
)
def test_accepted(sql: str) -> None:
    assert isinstance(parse(sql), exp.Select)


# --- refused constructs -----------------------------------------------------------------------

REFUSED = [
    # (sql, words in the message, (line, column))
    ("SELECT age FROM ac", "raw column age", (1, 8)),
    ("SELECT * FROM ac", "* outside COUNT", (1, 8)),
    ("SELECT ac.* FROM ac", "* outside COUNT", (1, 8)),
    ("SELECT SUM(*) FROM ac", "* outside COUNT", (1, 12)),
    ("SELECT COUNT(*) FROM (SELECT * FROM ac)", "subquery", (1, 23)),
    ("SELECT COUNT(*) FROM ac WHERE age IN (SELECT 1)", "subquery", (1, 39)),
    ("SELECT COUNT(*) FROM ac LEFT JOIN emc USING (id)", "LEFT JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac LEFT OUTER JOIN emc USING (id)", "LEFT JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac RIGHT JOIN emc USING (id)", "RIGHT JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac FULL OUTER JOIN emc USING (id)", "FULL JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac CROSS JOIN emc", "CROSS JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac, emc", "comma join", (1, 24)),
    ("SELECT COUNT(*) FROM ac JOIN emc", "JOIN without ON or USING", (1, 25)),
    ("SELECT COUNT(*) FROM ac NATURAL JOIN emc", "NATURAL JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac SEMI JOIN emc USING (id)", "SEMI JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac ASOF JOIN emc USING (id)", "ASOF JOIN", (1, 25)),
    ("SELECT COUNT(*) FROM ac JOIN ac AS b USING (id)", "self-join of table ac", (1, 25)),
    ("SELECT COUNT(*) FROM ac JOIN emc USING (id) JOIN x USING (id)", "more than one JOIN",
     (1, 45)),
    ("SELECT COUNT(*) FROM ac JOIN emc ON ac.id > emc.id", "join condition ac.id > emc.id",
     (1, 37)),
    ("SELECT COUNT(*) FROM ac JOIN emc ON ac.id = emc.id AND ac.age = 1", "join condition",
     (1, 37)),
    ("SELECT COUNT(*) FROM ac JOIN emc USING (id, age)", "USING with several columns",
     (1, 45)),
    ("SELECT COUNT(*) FROM ac QUALIFY 1", "QUALIFY", (1, 25)),
    ("SELECT COUNT(*) FROM ac WHERE SUM(age) > 3", "aggregate SUM in WHERE", (1, 31)),
    ("SELECT COUNT(*) FROM ac LIMIT 1 + 1", "LIMIT 1 + 1", (1, 31)),
    ("SELECT MODE(age) FROM ac", "function MODE", (1, 8)),
    ("SELECT COUNT(*) FILTER (WHERE age LIKE 'a') FROM ac", "LIKE", (1, 31)),
    ("SELECT DISTINCT COUNT(*) FROM ac", "DISTINCT", (1, 8)),
    ("SELECT SUM(age) FROM ac WINDOW w AS (ORDER BY age)", "WINDOW", (1, 25)),
    ("SELECT SUM(age) OVER () FROM ac", "window function (OVER)", (1, 8)),
    ("SELECT COUNT(DISTINCT age) FROM ac", "COUNT(DISTINCT ...)", (1, 14)),
    ("SELECT COUNT() FROM ac", "COUNT() without argument", (1, 8)),
    ("SELECT COUNT(*) FROM ac UNION SELECT COUNT(*) FROM emc", "UNION", (1, 25)),
    ("SELECT COUNT(*) FROM ac UNION ALL SELECT COUNT(*) FROM emc", "UNION ALL", (1, 25)),
    ("SELECT COUNT(*) FROM ac EXCEPT SELECT COUNT(*) FROM emc", "EXCEPT", (1, 25)),
    ("WITH t AS (SELECT 1) SELECT COUNT(*) FROM t", "WITH", (1, 1)),
    ("(SELECT COUNT(*) FROM ac)", "parenthesized query", (1, 1)),
    ("CREATE TABLE t (a INT)", "CREATE TABLE statement", (1, 1)),
    ("INSERT INTO ac VALUES (1)", "INSERT statement", (1, 1)),
    ("UPDATE ac SET age = 1", "UPDATE statement", (1, 1)),
    ("DELETE FROM ac", "DELETE statement", (1, 1)),
    ("  DROP TABLE ac", "DROP TABLE statement", (1, 3)),
    ("PRAGMA version", "PRAGMA statement", (1, 1)),
    ("SELECT COUNT(*) FROM ac; SELECT COUNT(*) FROM emc", "multiple statements", (1, 26)),
    ("SELECT FOO(age) FROM ac", "unknown function FOO", (1, 8)),
    ("SELECT SUM(foo(age)) FROM ac", "unknown function FOO", (1, 12)),
    ("SELECT COUNT(*) FROM my_table_fn(1)", "unknown function MY_TABLE_FN", (1, 22)),
    ("SELECT COUNT(*) FROM read_csv('x.csv')", "table function READ_CSV", (1, 22)),
    ("SELECT COUNT(*) FROM (VALUES (1)) t", "VALUES", (1, 23)),
    ("SELECT COUNT(*)", "SELECT without FROM", (1, 8)),
    ("SELECT COUNT(*) FROM main.ac", "qualified table name main.ac", (1, 22)),
    ("SELECT SUM(main.ac.age) FROM ac", "qualified column name main.ac.age", (1, 12)),
    ("SELECT COUNT(*) FROM ac a(x, y)", "column alias list", (1, 27)),
    ("SELECT LASSO(charges, age * 2) FROM ac", "expression age * 2 as argument of LASSO",
     (1, 23)),
]


@pytest.mark.parametrize(("sql", "construct", "pos"), REFUSED, ids=[r[1] for r in REFUSED])
def test_refused(sql: str, construct: str, pos: tuple[int, int]) -> None:
    with pytest.raises(UnsupportedError) as info:
        parse(sql)
    err = info.value
    assert isinstance(err, NotSupportedError)
    msg = str(err)
    assert construct in msg
    assert _position(msg) == pos == (err.line, err.col)
    assert err.construct


def test_refused_message_format() -> None:
    with pytest.raises(UnsupportedError) as info:
        parse("SELECT COUNT(*) FROM ac LEFT JOIN emc USING (id)")
    assert "LEFT JOIN is not supported (line 1, column 25)" in str(info.value)
    assert info.value.construct == "LEFT JOIN"
    with pytest.raises(UnsupportedError, match=r"GROUP BY ALL is not supported \(line 1, column"):
        parse("SELECT SUM(age) FROM ac GROUP BY ALL")


def test_multiline_positions() -> None:
    sql = "SELECT COUNT(*),\n       AVG(charges)\nFROM ac\n  LEFT JOIN emc USING (id)\n"
    with pytest.raises(UnsupportedError) as info:
        parse(sql)
    assert (info.value.line, info.value.col) == (4, 3)
    sql = "SELECT\n  SUM(age),\n  age\nFROM ac"
    with pytest.raises(UnsupportedError, match=r"raw column age .*\(line 3, column 3\)"):
        parse(sql)
    sql = "SELECT COUNT(*)\nFROM ac\nWHERE age LIKE 'a%'"
    with pytest.raises(UnsupportedError, match=r"LIKE .*\(line 3, column 7\)"):
        parse(sql)


def test_first_violation_in_text_is_reported() -> None:
    with pytest.raises(UnsupportedError, match="raw column age"):
        parse("SELECT age FROM ac LEFT JOIN emc USING (id) WHERE age > 1")


def test_unsupported_error_round_trips() -> None:
    with pytest.raises(UnsupportedError) as info:
        parse("SELECT COUNT(*) FROM ac ORDER BY ALL")
    again = error_from_dict(info.value.to_dict())
    assert isinstance(again, UnsupportedError)
    assert str(again) == str(info.value)
    assert (again.line, again.col, again.construct) == (1, 25, "ORDER BY ALL")


# --- syntax errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "pos", "highlight"),
    [
        ("SELECT SUM(x FROM ac", (1, 14), "FROM"),
        ("SELECT COUNT(*) FROM", (1, 17), "FROM"),
        ("SELECT COUNT(*)\nFROM ac JOIN emc USING (id", (2, 25), "id"),
    ],
)
def test_parse_error_keeps_position(sql: str, pos: tuple[int, int], highlight: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(sql)
    err = info.value
    assert isinstance(err, ProgrammingError) and isinstance(err, Error)
    assert (err.line, err.col) == pos
    assert err.highlight == highlight
    assert "syntax error" in str(err) and f"(line {pos[0]}, column {pos[1]})" in str(err)
    assert "SENTINEL" not in str(err) and "\x1b" not in str(err)


def test_unterminated_string() -> None:
    with pytest.raises(ParseError, match=r"unterminated ' \(line 2, column 3\)"):
        parse("SELECT COUNT(*)\n  'abc FROM ac")


def test_model_without_feature_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="LASSO needs a target column and at least one feature"):
        parse("SELECT LASSO(charges) FROM ac")


def test_non_string_sql() -> None:
    with pytest.raises(ProgrammingError):
        parse(None)  # type: ignore[arg-type]


# --- parameters -------------------------------------------------------------------------------


def test_bind_parameters() -> None:
    sql = "SELECT LASSO(charges, age, alpha => ?, solver => ?, standardize => ?) FROM ac -- ?"
    out = bind_parameters(sql, [0.5, "it's", True])
    assert out == (
        "SELECT LASSO(charges, age, alpha => 0.5, solver => 'it''s', standardize => TRUE) "
        "FROM ac -- ?"
    )
    assert isinstance(parse(out).expressions[0], Lasso)
    with pytest.raises(ProgrammingError, match="1 \\? placeholder"):
        bind_parameters("SELECT RIDGE(a, b, alpha => ?) FROM t", [])
    with pytest.raises(ProgrammingError):
        bind_parameters("SELECT ? FROM t", [object()])
    with pytest.raises(ProgrammingError):
        bind_parameters("SELECT ? FROM t", {"a": 1})


@pytest.mark.parametrize("sql", ["", "   -- only a comment\n", ";"])
def test_empty_sql_is_a_parse_error(sql: str) -> None:
    with pytest.raises(ParseError, match=r"empty SQL.*line 1, column 1"):
        parse(sql)
