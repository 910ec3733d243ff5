"""The progress bar of ``mpcsql query`` and ``mpcsql demo`` (tqdm), on terminals only.

The bar is drawn on standard error, one line, redrawn in place, and removed when the query
ends, so what the command prints on standard output is the same with or without it.  It is
shown only when both standard output and standard error are terminals (and ``TERM`` is not
``dumb``): piped or redirected output never contains it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

#: A counted step: "ac: encrypting 3,200 / 5,000 rows |██████▍   |  64%, 12 s" (tqdm puts
#: the ", " before the postfix, the seconds since the party received the query)
COUNTED = "{desc} |{bar}| {percentage:3.0f}%{postfix}"
#: A step without counts: "ac: helper re-randomising, 40 s"
PLAIN = "{desc}{postfix}"


def wanted(out: TextIO | None = None, err: TextIO | None = None) -> bool:
    """Whether to draw a bar: standard output and standard error are both terminals."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        ttys = out.isatty() and err.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
    return ttys and os.environ.get("TERM", "") != "dumb"


class Bar:
    """An ``on_progress`` callback drawing one tqdm line on ``file``."""

    def __init__(self, file: TextIO):
        from tqdm import tqdm  # only when a bar is drawn

        # a terminal that reports no size (0 x 0, e.g. a fresh pseudo-terminal) gets 80 x 24:
        # tqdm draws nothing in 0 columns or rows
        sized = min(_size(file)) > 0
        self.bar = tqdm(total=None, file=file, leave=False, dynamic_ncols=sized,
                        ncols=None if sized else 80, nrows=None if sized else 24,
                        bar_format=PLAIN, mininterval=0, ascii=False)
        self.step: tuple[Any, ...] | None = None

    def __call__(self, p: Any) -> None:
        """Show ``p`` (an :class:`engine.client.progress.Progress`); phase ``done`` closes."""
        if self.bar is None:
            return
        if p.phase == "done":
            self.close()
            return
        where = f"{p.party}: " if p.party else ""
        detail = p.detail  # this party's count, or another party's while it waits for it
        self.bar.set_description_str(where + _text(p, detail), refresh=False)
        self.bar.set_postfix_str(f"{p.elapsed:.0f} s", refresh=False)
        step = (p.step, detail.party if detail else None, detail.step if detail else None)
        if step != self.step:  # a new step: its own format and total
            self.step = step
            self.bar.bar_format = COUNTED if detail and detail.total else PLAIN
            self.bar.reset(total=detail.total if detail and detail.total else None)  # redraws
        if detail and detail.total:
            self.bar.n = detail.done or 0
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _size(file: TextIO) -> tuple[int, int]:
    try:
        return tuple(os.get_terminal_size(file.fileno()))
    except (AttributeError, OSError, ValueError):
        return (0, 0)


def _text(p: Any, detail: Any) -> str:
    """``encrypting 3,200 / 5,000 rows``; ``waits for helper: re-randomising ac's rows 1,200
    / 4,000 rows`` (this party is at ``helper re-randomising``)."""
    if detail is None:
        return p.phase
    unit = f" {detail.unit}" if detail.unit else ""
    count = f"{detail.phase} {detail.done:,} / {detail.total:,}{unit}"
    return count if detail is p else f"waits for {detail.party}: {count}"


@contextlib.contextmanager
def progress_bar(enabled: bool | None = None, file: TextIO | None = None
                 ) -> Iterator[Callable[[Any], None] | None]:
    """An ``on_progress`` callback drawing a bar (None when not :func:`wanted`); the bar is
    removed on leaving the block, also on an error or Ctrl-C."""
    if not (wanted() if enabled is None else enabled):
        yield None
        return
    bar = Bar(file or sys.stderr)
    try:
        yield bar
    finally:
        bar.close()
