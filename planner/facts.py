"""The plan's small shared facts: column references and disclosures (no other planner imports).

:mod:`planner.plan` re-exports them; :mod:`planner.logical` and :mod:`planner.lower_explain`
import them from here, so that the plan nodes can use those modules without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from dialect.errors import InternalError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InternalError(f"invalid plan: {msg}")


#: When a disclosure happens, in the order a run reaches them.
STAGES = ("input", "size", "compute", "result")
#: The condition of the "too small" bit.
REFUSED = "only if refused"
#: How a run can end (:meth:`planner.plan.Plan.reached`).
OUTCOMES = ("done", "too_small", "filter_too_small", "aborted")


@dataclass(frozen=True)
class Disclosure:
    """One fact that running a plan discloses: what (``text``), to whom, at which stage.

    ``label`` is the stable name under which a session records the disclosure in its
    transcript when it happens; ``to`` holds party names or ``"*"`` (every party);
    ``when`` is ``"always"`` or the condition under which it happens (e.g. ``"if refused"``).
    """

    label: str
    text: str
    to: tuple[str, ...]
    stage: str
    when: str = "always"

    def __post_init__(self) -> None:
        _check(bool(self.label and self.text and self.to), "empty disclosure")
        _check(self.stage in STAGES, f"unknown disclosure stage {self.stage!r}")


@dataclass(frozen=True)
class ColumnRef:
    """A numeric column of a party's table."""

    party: str
    table: str
    column: str
    dtype: str = "DOUBLE"
    scale_bits: int | None = None  # public bound |x| <= 2**scale_bits declared in the catalog

    def __post_init__(self) -> None:
        _check(bool(self.party and self.table and self.column), "empty column reference")

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.column}"
