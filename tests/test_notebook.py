"""Notebooks: results and explain render as tables; ``cursor.fetch_arrow_table()``.

One embedded federation for the module (tests/conftest.py ``con``) with the bundled split;
the queries use the masked join (about a second each).  The HTML is read back with the
standard library's parser, so each test checks the cells a notebook would show.
"""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser

import pyarrow as pa
import pytest

from dialect.errors import ProgrammingError
from engine.client.notebook import Explanation, html_table, markdown_table
from engine.data import demo

e2e = pytest.mark.e2e  # the tests that use the module's federation

SQL = ("SET join_protocol = 'masked'; SELECT region, COUNT(*) AS n, AVG(charges) AS avg_charges, "
       "SUM(children) AS kids FROM ac JOIN emc USING (id) GROUP BY region ORDER BY region")


class Cells(HTMLParser):
    """The text of every table cell, row by row (``th`` and ``td``), and the captions."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.captions: list[str] = []
        self._cell: list[str] | None = None
        self._caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._caption = True
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "caption":
            self._caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._caption:
            self.captions.append(data)


def cells(html: str) -> Cells:
    p = Cells()
    p.feed(html)
    return p


def md_rows(md: str) -> list[list[str]]:
    """The cells of a Markdown table (splitting on unescaped ``|``)."""
    out = []
    for line in md.splitlines():
        if not line.startswith("|"):
            continue
        parts, cur, esc = [], "", False
        for ch in line[1:]:
            if esc:
                cur, esc = cur + ch, False
            elif ch == "\\":
                esc = True
            elif ch == "|":
                parts.append(cur.strip())
                cur = ""
            else:
                cur += ch
        out.append(parts)
    return out


@pytest.fixture(scope="module")
def fed(con):
    demo.register(con)
    return con


@e2e
def test_result_renders_as_an_html_table(fed):
    cur = fed.execute(SQL)
    assert cur.fetchone() is not None  # a fetched row is still shown
    page = cells(cur._repr_html_())
    header, *body = page.rows
    assert header == ["region\nVARCHAR", "n\nBIGINT", "avg_charges\nDOUBLE", "kids\nHUGEINT"]
    rows = cur._rows
    assert body == [[str(v) if not isinstance(v, float) else repr(v) for v in r] for r in rows]
    assert [r[0] for r in body] == ["northeast", "northwest", "southeast", "southwest"]
    assert page.captions == ["4 rows"]


@e2e
def test_result_renders_as_markdown(fed):
    cur = fed.execute(SQL)
    header, rule, *body = md_rows(cur._repr_markdown_())
    assert header == ["region (VARCHAR)", "n (BIGINT)", "avg_charges (DOUBLE)", "kids (HUGEINT)"]
    assert rule == ["---", "---:", "---:", "---:"]
    assert body == [[str(v) if not isinstance(v, float) else repr(v) for v in r]
                    for r in cur.fetchall()]
    assert cur._repr_markdown_().endswith("4 rows")


@e2e
def test_a_cursor_without_a_result_has_no_table(fed):
    cur = fed.cursor()
    assert cur._repr_html_() is None and cur._repr_markdown_() is None


@e2e
def test_fetch_arrow_table_types_and_values(fed):
    cur = fed.execute(SQL)
    rows = list(cur._rows)
    table = cur.fetch_arrow_table()
    assert isinstance(table, pa.Table)
    assert table.schema.names == ["region", "n", "avg_charges", "kids"]
    assert table.schema.types == [pa.string(), pa.int64(), pa.float64(), pa.decimal128(38, 0)]
    assert table.to_pylist() == [
        {"region": r, "n": n, "avg_charges": a, "kids": Decimal(k)} for r, n, a, k in rows]
    assert cur.fetchall() == []  # like fetchall(), it fetched the rows
    assert cur.fetch_arrow_table().num_rows == 0
    with pytest.raises(ProgrammingError, match="no query"):
        fed.cursor().fetch_arrow_table()


@e2e
def test_fetch_arrow_table_nulls(fed):
    cur = fed.execute("SET join_protocol = 'masked'; SELECT children, MIN(charges) "
                      "FILTER (WHERE age > 200) AS m FROM ac JOIN emc USING (id) "
                      "GROUP BY children ORDER BY children")
    table = cur.fetch_arrow_table()
    assert table.column("m").null_count == table.num_rows > 0
    assert table.column("children").to_pylist() == sorted(table.column("children").to_pylist())


@e2e
def test_explain_is_the_same_text_and_renders_as_a_table(fed):
    sql = "SELECT AVG(charges) FROM ac JOIN emc USING (id) WHERE bmi > 30"
    ex = fed.explain(sql)
    assert isinstance(ex, Explanation) and isinstance(ex, str)
    from engine.control import messages

    assert str(ex) == fed._request("ac", messages.Explain(sql=sql))["text"]
    assert ex.plan.startswith("Plan:") and "PrivateJoin[paillier]" in ex.plan
    assert ex.parties() == ["ac", "emc", "helper"]
    assert "|ac|, |emc| (row counts)" in ex.learns["helper"]
    assert ex.checks["ac"][0] == "approves"
    assert any("AVG on ac.charges" in r for r in ex.checks["ac"][1])
    header, *body = cells(ex._repr_html_()).rows
    assert header == ["party", "learns", "policy"]
    assert [r[0] for r in body] == ["ac", "emc", "helper"]
    helper = body[2]
    assert helper[1].split("\n") == ex.learns["helper"].split("; ")
    assert helper[2].startswith("approves")
    md = md_rows(ex._repr_markdown_())
    assert md[0] == ["party", "learns", "policy"]
    assert [r[0] for r in md[2:]] == ["**ac**", "**emc**", "**helper**"]
    assert "|ac ∩ emc| (intersection size)" in md[2][1]  # the | in the text is escaped
    assert "```text\nPlan:" in ex._repr_markdown_()


def test_tables_escape_html_and_markdown():
    html = html_table(["a<b>"], [("<script>x</script>",), (None,)], types=["VARCHAR"])
    assert "<script>" not in html and "a&lt;b&gt;" in html
    assert cells(html).rows == [["a<b>\nVARCHAR"], ["<script>x</script>"], ["NULL"]]
    md = markdown_table(["x|y"], [("a|b*c*",)])
    assert md_rows(md) == [["x|y"], ["---"], ["a|b*c*"]]
    assert "\\*c\\*" in md  # no emphasis
    many = html_table(["n"], [(i,) for i in range(250)], types=["BIGINT"], max_rows=200)
    assert len(cells(many).rows) == 201 and "50 more rows" in many
    plain = Explanation("not an explain text")
    assert plain.parties() == [] and "<pre>not an explain text</pre>" in plain._repr_html_()
