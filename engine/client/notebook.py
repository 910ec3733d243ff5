"""Results and plans in notebooks: HTML and Markdown tables, Arrow tables.

Jupyter shows an object by its ``_repr_html_`` (or ``_repr_markdown_``) when it has one: a
:class:`~engine.client.dbapi.Cursor` that has executed a query renders its result as a table,
and :meth:`~engine.client.dbapi.Connection.explain` returns an :class:`Explanation`, the same
text as before (a ``str``), which renders as a table of what each party learns and its policy
verdict, above the plan.  :func:`arrow_table` builds ``Cursor.fetch_arrow_table()``'s
``pyarrow.Table`` with a type per column from its SQL type (the ``arrow`` extra).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from dialect.errors import InterfaceError

#: Rows a notebook table shows; the rest are summarised as "... N more rows".
MAX_ROWS = 200

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_DECIMAL = re.compile(r"DECIMAL\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.IGNORECASE)
_NUMERIC = ("INT", "DOUBLE", "REAL", "FLOAT", "DECIMAL", "NUMERIC")


def cell(value: Any) -> str:
    """A value as a table shows it: NULL for None, floats in their shortest exact form."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def md_escape(text: str) -> str:
    """``text`` safe inside a Markdown table cell (one line, special characters escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\r", "").replace("\n", "<br>")


def _numeric(dtype: str | None) -> bool:
    return bool(dtype) and any(t in dtype.upper() for t in _NUMERIC)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               types: Sequence[str | None] | None = None, caption: str | None = None,
               max_rows: int = MAX_ROWS) -> str:
    """An HTML table (column names with their SQL types as the header), values escaped."""
    types = list(types) if types is not None else [None] * len(columns)
    right = [_numeric(t) for t in types]
    head = "".join(
        f"<th>{html.escape(str(c))}" + (f"<br><small>{html.escape(t)}</small>" if t else "")
        + "</th>" for c, t in zip(columns, types, strict=True))
    body = []
    for row in rows[:max_rows]:
        tds = "".join(
            f'<td style="text-align: right">{html.escape(cell(v))}</td>' if r
            else f"<td>{html.escape(cell(v))}</td>" for v, r in zip(row, right, strict=True))
        body.append(f"<tr>{tds}</tr>")
    out = ['<table class="mpcsql">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out += [f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"]
    if len(rows) > max_rows:
        out.append(f"<p>... {len(rows) - max_rows} more rows</p>")
    return "\n".join(out)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                   types: Sequence[str | None] | None = None,
                   max_rows: int = MAX_ROWS) -> str:
    """A GitHub-flavoured Markdown table (header: name and type), values escaped."""
    types = list(types) if types is not None else [None] * len(columns)
    head = [md_escape(str(c)) + (f" ({md_escape(t)})" if t else "")
            for c, t in zip(columns, types, strict=True)]
    rule = ["---:" if _numeric(t) else "---" for t in types]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(md_escape(cell(v)) for v in row) + " |"
              for row in rows[:max_rows]]
    if len(rows) > max_rows:
        lines += ["", f"... {len(rows) - max_rows} more rows"]
    return "\n".join(lines)


def result_footer(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def arrow_type(dtype: str | None):
    """The pyarrow type of a result column's SQL (DuckDB) type; None lets pyarrow infer."""
    import pyarrow as pa

    up = (dtype or "").upper().strip()
    m = _DECIMAL.fullmatch(up)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return {
        "BIGINT": pa.int64(), "INTEGER": pa.int32(), "SMALLINT": pa.int16(),
        "TINYINT": pa.int8(), "HUGEINT": pa.decimal128(38, 0), "DOUBLE": pa.float64(),
        "REAL": pa.float32(), "FLOAT": pa.float32(), "BOOLEAN": pa.bool_(),
        "VARCHAR": pa.string(),
    }.get(up)


def arrow_table(columns: Sequence[str], types: Sequence[str | None],
                rows: Sequence[Sequence[Any]]):
    """A ``pyarrow.Table`` of ``rows``, each column typed by :func:`arrow_type` (HUGEINT as
    ``decimal128(38, 0)``, as DuckDB exports it), NULLs as Arrow nulls."""
    try:
        import pyarrow as pa
    except ImportError:
        raise InterfaceError("fetch_arrow_table() needs pyarrow: "
                             "python -m pip install 'mpcsql[arrow]'") from None
    arrays = []
    for i, dtype in enumerate(types):
        values = [r[i] for r in rows]
        typ = arrow_type(dtype)
        if typ is not None and pa.types.is_decimal(typ):
            values = [v if v is None or isinstance(v, Decimal) else Decimal(str(v))
                      for v in values]
        arrays.append(pa.array(values, type=typ))
    return pa.Table.from_arrays(arrays, names=list(columns))


class Explanation(str):
    """What :meth:`Connection.explain` returns: the explain text itself (a ``str``: print it,
    compare it, search it as before), with its parts parsed for notebooks.

    ``plan`` is the plan block; ``learns`` maps each party to what it learns; ``checks`` maps
    each party to ``(verdict, rules)`` (``"approves"`` or ``"REFUSES: ..."``, and the rules it
    checked); ``notes`` are the remaining lines of those sections.  In Jupyter it renders as a
    table (party, learns, policy) above the plan.
    """

    plan: str
    learns: dict[str, str]
    checks: dict[str, tuple[str, list[str]]]
    notes: list[str]

    def __new__(cls, text: str) -> Explanation:
        self = super().__new__(cls, text)
        self._parse(str(text))
        return self

    def _parse(self, text: str) -> None:
        self.learns, self.checks, self.notes = {}, {}, []
        lines = text.splitlines()
        plan: list[str] = []
        section, party = "plan", None
        for line in lines:
            if line == "What each party learns:":
                section = "learns"
            elif line.startswith("Policy checks"):
                section = "checks"
                self.notes.append(line.rstrip(":"))
            elif section == "plan":
                plan.append(line)
            elif not line.strip():
                continue
            elif section == "learns":
                m = re.fullmatch(r"  (\S+) learns: (.*)", line)
                if m:
                    self.learns[m.group(1)] = m.group(2)
                else:
                    self.notes.append(line.strip())
            elif line.startswith("    ") and party is not None:
                self.checks[party][1].append(line.strip())
            else:
                m = re.fullmatch(r"  (\S+): (.*)", line)
                if m:
                    party = m.group(1)
                    self.checks[party] = (m.group(2), [])
                else:
                    self.notes.append(line.strip())
        self.plan = "\n".join(plan).strip("\n")

    def parties(self) -> list[str]:
        """The parties named in the learns and policy sections, in order."""
        return list(dict.fromkeys([*self.learns, *self.checks]))

    def _repr_html_(self) -> str:
        out = ['<div class="mpcsql-explain">']
        if self.parties():
            rows = []
            for p in self.parties():
                learns = "<br>".join(html.escape(x) for x in self.learns.get(p, "").split("; "))
                verdict, rules = self.checks.get(p, ("", []))
                rule_list = "".join(f"<li>{html.escape(r)}</li>" for r in rules)
                policy = f"<b>{html.escape(verdict)}</b>" + (f"<ul>{rule_list}</ul>"
                                                             if rules else "")
                rows.append(f"<tr><td><b>{html.escape(p)}</b></td>"
                            f'<td style="text-align: left">{learns}</td>'
                            f'<td style="text-align: left">{policy}</td></tr>')
            out += ['<table class="mpcsql">',
                    "<thead><tr><th>party</th><th>learns</th><th>policy</th></tr></thead>",
                    "<tbody>", *rows, "</tbody>", "</table>"]
            out += [f"<p>{html.escape(n)}</p>" for n in self.notes]
            out.append(f"<details><summary>Plan</summary><pre>{html.escape(self.plan)}"
                       "</pre></details>")
        else:  # not the usual sections: show the text as it is
            out.append(f"<pre>{html.escape(str(self))}</pre>")
        out.append("</div>")
        return "\n".join(out)

    def _repr_markdown_(self) -> str:
        if not self.parties():
            return "```text\n" + str(self) + "\n```"
        lines = ["| party | learns | policy |", "|---|---|---|"]
        for p in self.parties():
            verdict, rules = self.checks.get(p, ("", []))
            policy = "<br>".join([f"**{md_escape(verdict)}**", *map(md_escape, rules)])
            lines.append(f"| **{md_escape(p)}** | "
                         + "<br>".join(md_escape(x) for x in self.learns.get(p, "").split("; "))
                         + f" | {policy} |")
        lines += ["", *(md_escape(n) + "  " for n in self.notes), "", "```text", self.plan,
                  "```"]
        return "\n".join(lines)
