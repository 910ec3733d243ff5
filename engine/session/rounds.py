"""Communication rounds on the critical path, bytes per phase, and emulated link latency.

Nothing here changes what is sent to peers.  Each party's session transport
(:func:`engine.session.channels.patch_connection_loss`) keeps a :class:`TrafficLog` of its own
events in the order they happen:

* ``send`` to peer j: MPyC's k-th message on the link to j (TCP keeps each link in order, so
  the receiver's k-th message from this party is the same message);
* ``consume`` of peer p's k-th message: the moment the program can first use it, i.e. the later
  of its arrival and of MPyC asking for it (``receive(pc)``);
* marks: a phase closing (``Session.phase``) or a progress step starting (``Session.step``).

:func:`critical_path` merges the three parties' logs afterwards (from the query's statistics)
into Lamport depths: a message's depth is 1 + the largest depth of the messages its sender had
consumed before sending it (1 if none).  The critical path is the largest depth any party
consumed: the longest chain of messages each of which was sent after the previous one had been
received and taken up, so no execution on links of one-way delay L can finish its messages in
less than depth x L, and an execution whose every step waits for its inputs takes depth x L
more than with no delay.  Counted on consumption rather than arrival, a message that arrived
while the program was still busy elsewhere does not lengthen the chain (it was not waited for),
which keeps the count stable between runs of the same plan.  A round trip is two such hops, so
``round trips = hops / 2`` and the latency a WAN adds is ``hops x RTT / 2``.

:data:`EMULATE_ENV` (``MPCSQL_EMULATE_RTT_MS``, for benchmarks) makes the transport hold every
received chunk for RTT/2 before MPyC sees it (in order), which emulates a one-way delay of
RTT/2 on every link in user space where the kernel cannot shape links.
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dialect.errors import ConfigError

#: Benchmarks only: delay every message a session receives by this many ms / 2 (one way).
EMULATE_ENV = "MPCSQL_EMULATE_RTT_MS"

# events: an int per event; k*4 + p (consume peer p's k-th message) or -(1 + j + 4*label)
# (send to j from code labelled ``labels[label]``)
_MAX_EVENTS = 2_000_000  # beyond this the log stops (and says so): ~16 MB of ints at most


def emulated_rtt() -> float:
    """The emulated round-trip time in seconds from :data:`EMULATE_ENV` (0: none)."""
    raw = os.environ.get(EMULATE_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not 0.0 <= ms <= 10_000.0:
        raise ConfigError(f"{EMULATE_ENV} must be a round-trip time in ms (0..10000), got {raw!r}")
    return ms / 1000.0


def _cpu_now() -> float:
    """User + system CPU s of this process and its finished (joined) children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class TrafficLog:
    """One party's send/consume events, marks, and bytes sent per peer (see the module doc)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.events: list[int] = []
        self.marks: list[tuple[int, str]] = []
        self.overflow = False
        self.labels: list[str] = ["other"]
        self._label_ids: dict[str, int] = {"other": 0}
        self.sent: dict[int, int] = {}  # peer -> bytes sent (MPyC frames: 12 + payload)
        self.messages: dict[int, int] = {}  # peer -> messages sent
        self.arrived: dict[int, dict[int, int]] = {}  # peer -> {pc: arrival index}, unconsumed
        self.n_arrived: dict[int, int] = {}
        self._phase_sent: dict[int, int] = {}
        self.bytes_by_phase: dict[str, dict[int, int]] = {}
        self._cpu = _cpu_now()
        self.cpu_by_phase: dict[str, float] = {}  # CPU s of this process + joined workers

    def _add(self, ev: int) -> None:
        if len(self.events) < _MAX_EVENTS:
            self.events.append(ev)
        else:
            self.overflow = True

    def label_id(self, label: str) -> int:
        i = self._label_ids.get(label)
        if i is None:
            i = self._label_ids[label] = len(self.labels)
            self.labels.append(label)
        return i

    def send(self, peer: int, nbytes: int, label: int = 0) -> None:
        self.sent[peer] = self.sent.get(peer, 0) + nbytes
        self.messages[peer] = self.messages.get(peer, 0) + 1
        self._add(-(1 + peer + 4 * label))

    def arrive(self, peer: int, pc: int) -> None:
        """A complete message labelled ``pc`` arrived from ``peer`` (in link order)."""
        k = self.n_arrived.get(peer, 0)
        self.n_arrived[peer] = k + 1
        self.arrived.setdefault(peer, {})[pc] = k

    def consume(self, peer: int, pc: int) -> None:
        """The program took up ``peer``'s message ``pc`` (it has arrived)."""
        k = self.arrived.get(peer, {}).pop(pc, None)
        if k is not None:
            self._add(k * 4 + peer)

    def mark(self, label: str) -> None:
        self.marks.append((len(self.events), label))

    def phase(self, name: str) -> None:
        """Phase ``name`` closed: its bytes are those sent since the previous phase closed."""
        self.mark("phase:" + name)
        out = self.bytes_by_phase.setdefault(name, {})
        for peer, n in self.sent.items():
            d = n - self._phase_sent.get(peer, 0)
            if d:
                out[peer] = out.get(peer, 0) + d
        self._phase_sent = dict(self.sent)
        now = _cpu_now()
        self.cpu_by_phase[name] = self.cpu_by_phase.get(name, 0.0) + now - self._cpu
        self._cpu = now

    def stats(self, names: Mapping[int, str]) -> dict[str, Any]:
        """What goes into the session statistics (``traffic``): plain JSON-able data."""
        self.phase("shutdown")
        return {"pid": self.pid, "events": self.events, "marks": [list(m) for m in self.marks],
                "overflow": self.overflow, "labels": self.labels,
                "messages_sent": {names[p]: n for p, n in self.messages.items()},
                "bytes_by_phase": {ph: {names[p]: n for p, n in v.items()}
                                   for ph, v in self.bytes_by_phase.items() if v},
                "cpu_by_phase": {ph: round(v, 4) for ph, v in self.cpu_by_phase.items()}}


_current: TrafficLog | None = None

# --- which protocol code sends (for the critical path's breakdown) ---------------------------

#: engine modules that only provide arithmetic to the protocols: a send is labelled with the
#: protocol that called them instead
_HELPERS = ("fastfxp", "fixedpoint", "fieldwords", "runtime", "codec", "channel")
_code_labels: dict[Any, str | None] = {}
_task_labels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _code_label(code) -> str | None:
    lab = _code_labels.get(code, False)
    if lab is False:
        lab = None
        path = code.co_filename.replace("\\", "/")
        i = path.rfind("/engine/protocols/")
        if i >= 0:
            mod = path[i + len("/engine/protocols/"):-3].replace("/", ".")
            if mod.rsplit(".", 1)[-1] not in _HELPERS:
                lab = f"{mod}.{code.co_name}"
        _code_labels[code] = lab
    return lab


def stack_label(depth: int = 2, limit: int = 16) -> str | None:
    """The nearest protocol function on the running stack (None: none within ``limit``)."""
    f = sys._getframe(depth)
    for _ in range(limit):
        if f is None:
            return None
        lab = _code_label(f.f_code)
        if lab is not None:
            return lab
        f = f.f_back
    return None


def _current_task():
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def label_tasks(asyncoro) -> None:
    """Label every MPyC coroutine's task with the protocol function that started it (or its
    parent task's label), by wrapping ``asyncoro.Task`` (what ``mpc_coro`` calls)."""
    task_type = getattr(asyncoro, "_mpcsql_task_type", asyncoro.Task)
    asyncoro._mpcsql_task_type = task_type

    def labelled(coro, *args, **kwargs):
        t = task_type(coro, *args, **kwargs)
        lab = stack_label(2)
        if lab is None:
            parent = _current_task()
            lab = _task_labels.get(parent) if parent is not None else None
        if lab is not None:
            _task_labels[t] = lab
        return t

    asyncoro.Task = labelled


def send_label() -> str:
    """The label of the code sending now: its task's, else the stack's, else 'other'."""
    t = _current_task()
    lab = _task_labels.get(t) if t is not None else None
    return lab or stack_label(2) or "other"


def start(pid: int) -> TrafficLog:
    """The log of this session process (one session per process)."""
    global _current
    _current = TrafficLog(pid)
    return _current


def current() -> TrafficLog | None:
    return _current


# --- merging the parties' logs ---------------------------------------------------------------


def _merge(logs: Mapping[str, Mapping[str, Any]]):
    """Lamport merge: per party the depth consumed after each event, and every message as
    (depth, the message that set its sender's depth, its label)."""
    parties = list(logs)
    by_pid = {int(logs[p]["pid"]): p for p in parties}
    sent: dict[tuple[int, int], list[tuple[int, Any, str]]] = {}  # (from, to) -> messages
    pos = {p: 0 for p in parties}
    cur: dict[str, tuple[int, Any]] = {p: (0, None) for p in parties}
    after: dict[str, list[int]] = {p: [] for p in parties}
    events = {p: logs[p]["events"] for p in parties}
    labels = {p: logs[p].get("labels") or ["other"] for p in parties}
    progress = True
    while progress:
        progress = False
        for p in parties:
            me = int(logs[p]["pid"])
            ev, i, (c, src), out, labs = events[p], pos[p], cur[p], after[p], labels[p]
            while i < len(ev):
                e = ev[i]
                if e < 0:
                    lab, j = divmod(-e - 1, 4)
                    link = sent.setdefault((me, j), [])
                    link.append((c + 1, src, labs[lab] if lab < len(labs) else "other"))
                else:
                    k, peer = divmod(e, 4)
                    link = sent.get((peer, me), [])
                    if k >= len(link):
                        break  # its sender has not got that far yet
                    if link[k][0] > c:
                        c, src = link[k][0], (peer, me, k)
                out.append(c)
                i += 1
            progress |= i != pos[p]
            pos[p], cur[p] = i, (c, src)
    stuck = [p for p in parties if pos[p] < len(events[p])]
    if stuck:
        p = stuck[0]
        k, peer = divmod(events[p][pos[p]], 4)
        raise ValueError(f"traffic logs do not fit: {p} consumed message {k} from "
                         f"{by_pid.get(peer, peer)}, which was never sent")
    return after, sent, cur, by_pid


def depths(logs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[int]]:
    """Per party: the largest depth it had consumed after each of its events (Lamport merge).

    ``logs`` maps party name -> that party's ``traffic`` statistics.  Raises ValueError if the
    logs do not fit together (a message consumed that its sender never sent).
    """
    return _merge(logs)[0]


def chain_labels(logs: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """One critical path, hop by hop: how many of its messages each protocol function sent."""
    _, sent, cur, _ = _merge(logs)
    end = max(cur.values(), key=lambda v: v[0], default=(0, None))[1]
    out: dict[str, int] = {}
    while end is not None:
        depth, parent, label = sent[(end[0], end[1])][end[2]]
        out[label] = out.get(label, 0) + 1
        end = parent
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _at(after: list[int], index: int) -> int:
    """Depth consumed before event ``index`` (0 before the first)."""
    return after[index - 1] if index > 0 and after else 0


def critical_path(logs: Mapping[str, Mapping[str, Any]],
                  stage_of: Callable[[str], str] | None = None,
                  stages: Iterable[str] = ()) -> dict[str, Any]:
    """Hops on the critical path in all, per stage and per progress step.

    ``stage_of(phase name)`` names the stage a phase belongs to; ``stages`` orders them.  A
    stage's hops are the growth of the largest depth any party had consumed when it closed its
    last phase of that stage or an earlier one (as :meth:`bench.common.Run.stages` does for
    time); ``steps``: per progress step (``Session.step``), the largest growth at any party
    between the step's start and the next mark of a step.
    """
    after = depths(logs)
    total = max((a[-1] for a in after.values() if a), default=0)
    out: dict[str, Any] = {"hops": total, "round_trips": total / 2,
                           "overflow": any(logs[p].get("overflow") for p in logs)}
    order = list(stages)
    if stage_of is not None and order:
        rank = {s: i for i, s in enumerate(order)}
        ends = [0] * len(order)
        for p, lg in logs.items():
            for idx, label in lg["marks"]:
                if label.startswith("phase:"):
                    r = rank.get(stage_of(label[6:]), len(order) - 1)
                    ends[r] = max(ends[r], _at(after[p], idx))
        by_stage, prev = {}, 0
        for s, name in enumerate(order):
            end = max(ends[: s + 1] + [prev])
            by_stage[name] = end - prev
            prev = end
        by_stage[order[-1]] += max(0, total - prev)  # after the last phase: shutdown
        out["by_stage"] = by_stage
    steps: dict[str, int] = {}
    for p, lg in logs.items():
        marks = [(i, lab[5:]) for i, lab in lg["marks"] if lab.startswith("step:")]
        mine: dict[str, int] = {}
        for n, (idx, name) in enumerate(marks):
            nxt = marks[n + 1][0] if n + 1 < len(marks) else len(after[p])
            mine[name] = mine.get(name, 0) + _at(after[p], nxt) - _at(after[p], idx)
        for name, v in mine.items():
            steps[name] = max(steps.get(name, 0), v)
    out["steps"] = steps
    out["chain"] = chain_labels(logs)
    return out
