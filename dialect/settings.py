"""Per-query settings: ``SET name = 'value';`` statements written before the SELECT.

Accepted::

    SET join_protocol = 'masked';  SELECT ...

(``TO`` may replace ``=``, as in DuckDB.)  Names are case-insensitive, values are quoted strings
compared case-insensitively.  Any other SET form is refused with an :class:`UnsupportedError`
naming it; an unknown value is a :class:`ProgrammingError` listing the allowed ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from dialect.errors import ProgrammingError, UnsupportedError

#: Setting name -> allowed values, the default first.
SETTINGS: dict[str, tuple[str, ...]] = {
    "join_protocol": ("paillier", "masked"),
}
DEFAULTS: dict[str, str] = {name: values[0] for name, values in SETTINGS.items()}


@dataclass(frozen=True)
class ParsedQuery:
    """One validated SELECT and the settings written before it (name -> value, in order)."""

    select: exp.Select
    settings: tuple[tuple[str, str], ...] = ()

    def setting(self, name: str, default: str | None = None) -> str | None:
        """The value set for ``name`` in the SQL, else ``default``."""
        return dict(self.settings).get(name, default)


def _allowed(name: str) -> str:
    return ", ".join(f"'{v}'" for v in SETTINGS[name])


def is_set_statement(stmt: exp.Expression) -> bool:
    return isinstance(stmt, exp.Set) or (
        isinstance(stmt, exp.Command) and str(stmt.this).upper() == "SET"
    )


def read_setting(stmt: exp.Expression, line: int, col: int) -> tuple[str, str]:
    """``(name, value)`` of one ``SET name = 'value'`` statement starting at ``line``/``col``."""
    where = f"(line {line}, column {col})"

    def refuse(construct: str, hint: str = "") -> UnsupportedError:
        names = ", ".join(SETTINGS)
        return UnsupportedError(
            f"{construct} is not supported {where}; "
            + (hint or f"write SET <setting> = '<value>' before the SELECT (settings: {names})"),
            construct=construct, line=line, col=col,
        )

    if not isinstance(stmt, exp.Set):  # sqlglot fell back to a raw command
        raise refuse(f"SET {str(stmt.expression or '').strip()}".strip())
    if stmt.args.get("unset") or stmt.args.get("tag"):
        raise refuse("UNSET" if stmt.args.get("unset") else "SET TAG")
    items = stmt.expressions
    if len(items) != 1:
        raise refuse("SET with several settings", "write one SET statement per setting")
    item = items[0]
    kind = item.args.get("kind")
    if kind:
        raise refuse(f"SET {str(kind).upper()}", "settings apply to this query only: "
                     "write SET <setting> = '<value>'")
    eq = item.this
    if not (isinstance(eq, exp.EQ) and isinstance(eq.this, exp.Column)):
        raise refuse(f"SET {item.sql()}")
    if eq.this.table:
        raise refuse(f"SET {eq.this.sql()}", f"the known settings are: {', '.join(SETTINGS)}")
    name = eq.this.name.lower()
    if name not in SETTINGS:
        raise refuse(f"SET {eq.this.name}", f"the known settings are: {', '.join(SETTINGS)}")
    value = eq.expression
    if not (isinstance(value, exp.Literal) and value.is_string):
        raise ProgrammingError(
            f"{name} must be a quoted string, one of {_allowed(name)}, not {value.sql()} {where}"
        )
    text = str(value.this).lower()
    if text not in SETTINGS[name]:
        raise ProgrammingError(
            f"unknown {name} '{value.this}' {where}; allowed values: {_allowed(name)}"
        )
    return name, text
