"""The restricted secure grammar: refuse, with a position, whatever lies outside it.

Accepted::

    SELECT <item> [AS alias], ...
    FROM t1 [[AS] a] [[INNER] JOIN t2 [[AS] b] USING (k) | ON a.k = b.k]
    [WHERE <row predicate>] [GROUP BY <row expression>, ...] [HAVING <predicate>]
    [ORDER BY <output column | alias | position | select item> [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]

optionally preceded by ``SET join_protocol = '...';`` statements (:mod:`dialect.settings`).
The select items, the row expressions and the aggregates are checked in
:mod:`dialect.clauses` and :mod:`dialect.expressions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.tokens import TokenType

from dialect.clauses import ClauseChecks
from dialect.dialect import MpcDialect
from dialect.errors import UnsupportedError
from dialect.expressions import AGGREGATE_LIST
from dialect.functions import function_name
from dialect.positions import SourceMap

#: Select clauses outside the grammar: arg name -> (construct, keyword tokens that start it).
CLAUSES: dict[str, tuple[str, tuple[TokenType, ...]]] = {
    "with_": ("WITH", (TokenType.WITH,)),
    "distinct": ("DISTINCT", (TokenType.DISTINCT,)),
    "into": ("SELECT INTO", (TokenType.INTO,)),
    "laterals": ("LATERAL", (TokenType.LATERAL,)),
    "pivots": ("PIVOT", (TokenType.PIVOT, TokenType.UNPIVOT)),
    "prewhere": ("PREWHERE", (TokenType.PREWHERE,)),
    "qualify": ("QUALIFY", (TokenType.QUALIFY,)),
    "windows": ("WINDOW", (TokenType.WINDOW,)),
    "sample": ("SAMPLE", (TokenType.USING, TokenType.TABLE_SAMPLE)),
}
ALLOWED_SELECT_ARGS = frozenset(
    {"expressions", "from_", "joins", "where", "group", "having", "order", "limit", "offset"}
)

SET_OPERATION_TOKENS = (TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT)


@dataclass(frozen=True, order=True)
class Violation:
    """One construct outside the grammar, sortable by position."""

    line: int
    col: int
    message: str
    construct: str

    def error(self) -> UnsupportedError:
        return UnsupportedError(
            self.message, construct=self.construct, line=self.line, col=self.col
        )


class GrammarChecker(ClauseChecks):
    """Collects the violations of one statement; :meth:`check` raises the first in the text."""

    def __init__(self, src: SourceMap, start: int | None = None) -> None:
        self.src = src
        self.start = start  # offset of the checked statement (after any SET statements)
        self.found: list[Violation] = []

    # --- recording ----------------------------------------------------------------------------

    def refuse(
        self,
        node: exp.Expression | None,
        construct: str,
        *,
        hint: str = "",
        message: str | None = None,
        keywords: tuple[TokenType, ...] = (),
        join: bool = False,
        at: tuple[int, int] | None = None,
    ) -> None:
        line, col = at or self.src.position(node, keywords=keywords, join=join)
        text = message or f"{construct} is not supported"
        text = f"{text} (line {line}, column {col})" + (f"; {hint}" if hint else "")
        self.found.append(Violation(line, col, text, construct))

    def raise_first(self) -> None:
        if self.found:
            raise min(self.found).error()

    def statement_start(self) -> tuple[int, int]:
        if self.start is not None:
            return self.src.line_col(self.start)
        starts = self.src.statement_starts()
        return self.src.line_col(starts[0] if starts else 0)

    def sql(self, node: exp.Expression) -> str:
        return node.sql(dialect=MpcDialect)

    # --- statements ---------------------------------------------------------------------------

    def check(self, stmt: exp.Expression) -> exp.Select:
        """Return ``stmt`` if it is inside the grammar, else raise :class:`UnsupportedError`."""
        if isinstance(stmt, exp.SetOperation):
            name = stmt.key.upper() + ("" if stmt.args.get("distinct", True) else " ALL")
            self.refuse(stmt.expression, name, keywords=SET_OPERATION_TOKENS,
                        hint="a query is one SELECT")
        elif isinstance(stmt, exp.Subquery):
            self.refuse(stmt, "parenthesized query", at=self.statement_start())
        elif not isinstance(stmt, exp.Select):
            self.refuse(stmt, f"{statement_name(stmt)} statement", at=self.statement_start(),
                        hint="only SELECT queries are allowed")
        self.raise_first()
        assert isinstance(stmt, exp.Select)
        if stmt.args.get("with_"):  # before its CTEs are reported as subqueries
            self.refuse(stmt.args["with_"], "WITH", keywords=(TokenType.WITH,),
                        hint="common table expressions are not part of the secure grammar")
            self.raise_first()
        self.check_hard(stmt)
        self.raise_first()
        self.check_select(stmt)
        self.raise_first()
        return stmt

    def check_hard(self, stmt: exp.Select) -> None:
        """Subqueries and unknown functions anywhere in the statement."""
        for node in stmt.walk():
            if node is stmt:
                continue
            if isinstance(node, (exp.Subquery, exp.Query)):
                if not isinstance(node.parent, (exp.Subquery, exp.Query)):
                    self.refuse(node, "subquery", keywords=(TokenType.SELECT, TokenType.L_PAREN))
            elif isinstance(node, exp.Anonymous):
                name = str(node.name).upper()
                self.refuse(node, f"function {name}", message=f"unknown function {name}",
                            hint=f"the aggregates are {AGGREGATE_LIST}")

    # --- SELECT -------------------------------------------------------------------------------

    def check_select(self, stmt: exp.Select) -> None:
        for key, value in stmt.args.items():
            if not value or key in ALLOWED_SELECT_ARGS:
                continue
            node = value[0] if isinstance(value, list) else value
            node = node if isinstance(node, exp.Expression) else stmt
            construct, keywords = CLAUSES.get(key, (key.rstrip("_").upper(), ()))
            self.refuse(node, construct, keywords=keywords)
        frm = stmt.args.get("from_")
        if frm is None:
            self.refuse(stmt, "SELECT without FROM", hint="name a table")
        else:
            self.check_table(frm.this)
        self.check_joins(stmt)
        if not stmt.expressions:
            self.refuse(stmt, "SELECT without aggregates",
                        hint=f"select one or more of {AGGREGATE_LIST}")
        self.check_clauses(stmt)

    def check_table(self, table: exp.Expression) -> None:
        if isinstance(table, (exp.Subquery, exp.Query)):
            return  # reported as a subquery
        if isinstance(table, exp.Values):
            self.refuse(table, "VALUES", keywords=(TokenType.VALUES,))
            return
        if not isinstance(table, exp.Table):
            self.refuse(table, f"table expression {self.sql(table)}")
            return
        if not isinstance(table.this, exp.Identifier):
            if not isinstance(table.this, exp.Anonymous):  # unknown functions are reported
                self.refuse(table, f"table function {function_name(table.this)}")
            return
        if table.args.get("db") or table.args.get("catalog"):
            self.refuse(table, f"qualified table name {self.sql(table.this.parent)}",
                        hint="name the table without schema")
        alias = table.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.args.get("columns"):
            self.refuse(alias.args["columns"][0], "column alias list in a table alias")
        for key, value in table.args.items():
            if value and key not in ("this", "alias", "db", "catalog"):
                self.refuse(table, f"{key.rstrip('_').upper()} on table {table.name}")

    def check_joins(self, stmt: exp.Select) -> None:
        joins = stmt.args.get("joins") or []
        frm = stmt.args.get("from_")
        first = frm.this if frm is not None else None
        for i, join in enumerate(joins):
            if i > 0:
                self.refuse(join, "more than one JOIN", join=True,
                            message="more than one JOIN is not supported",
                            hint="a query joins at most two tables")
                continue
            self.check_join(join, first)

    def check_join(self, join: exp.Join, first: exp.Expression | None) -> None:
        method, side, kind = (join.text(k).upper() for k in ("method", "side", "kind"))
        on, using = join.args.get("on"), join.args.get("using")
        hint = "use [INNER] JOIN ... USING (key) or ON t1.key = t2.key"
        if method:
            self.refuse(join, f"{method} JOIN", join=True, hint=hint)
        elif side:
            self.refuse(join, f"{side} JOIN", join=True, hint=hint)
        elif kind and kind != "INNER":
            self.refuse(join, f"{kind} JOIN", join=True, hint=hint)
        elif on is None and not using:
            before = self.src.token_before(join.this) if join.this is not None else None
            comma = before is not None and before.token_type == TokenType.COMMA
            name = "comma join (implicit CROSS JOIN)" if comma else "JOIN without ON or USING"
            self.refuse(join, name, join=True, hint=hint)
        for key, value in join.args.items():
            if value and key not in ("this", "on", "using", "method", "side", "kind"):
                self.refuse(join, f"{key.rstrip('_').upper()} in JOIN", join=True)
        table = join.this
        self.check_table(table)
        if (
            isinstance(table, exp.Table)
            and isinstance(first, exp.Table)
            and table.name
            and table.name.lower() == first.name.lower()
        ):
            self.refuse(join, f"self-join of table {table.name}", join=True,
                        hint="join tables of two different parties")
        if on is not None and not (
            isinstance(on, exp.EQ)
            and isinstance(on.this, exp.Column)
            and isinstance(on.expression, exp.Column)
        ):
            self.refuse(on, f"join condition {self.sql(on)}", hint=hint)
        elif on is not None:
            for col in (on.this, on.expression):
                self.check_column(col, "the join condition")
        if using and len(using) != 1:
            self.refuse(using[1], "USING with several columns", hint="join on the single key")

    def check_column(self, col: exp.Column, where: str) -> None:
        if len(col.parts) > 2:
            self.refuse(col, f"qualified column name {self.sql(col)} in {where}",
                        hint="qualify columns with the table name or alias only")


def statement_name(stmt: exp.Expression) -> str:
    """A readable name of a (non-SELECT) statement: ``CREATE TABLE``, ``INSERT``, ..."""
    if isinstance(stmt, exp.Command):
        return str(stmt.this).upper()
    kind = stmt.args.get("kind")
    name = stmt.key.upper()
    if isinstance(kind, str) and isinstance(stmt, (exp.Create, exp.Drop, exp.Alter)):
        return f"{name} {kind.upper()}"
    return name

