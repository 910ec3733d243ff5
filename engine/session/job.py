"""What a party's session process is given (a :class:`Job`) and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.protocols import paillier
from engine.protocols.channel import LocalData
from planner.plan import Plan


@dataclass
class Job:
    """Everything one party needs to run its part of a query."""

    query_id: str
    plan: Plan
    party: str
    pids: dict[str, int]  # party name -> MPyC index
    addresses: list[tuple[str, int]]  # MPyC listen address per pid
    local: LocalData | None  # this party's rows (None at the helper)
    own_min: int  # this party's own policy minimum intersection (or table) size
    binding: str  # what this party approved at prepare (engine.protocols.agreement.binding)
    own_group_min: int | None = None  # this party's own policy min_group_rows (None: no rule)
    key_bits: int = paillier.KEY_BITS
    paillier_randomness: str = paillier.DEFAULT_RANDOMNESS  # of a fresh key ("djn" | "classic")
    transcript_dir: str | None = None
    connect_timeout: float = 30.0
    tls: Any = None  # engine.session.tls.SessionTLS: run the MPyC channels over mutual TLS
    paillier_key: tuple[Any, Any] | None = None  # a data party's long-term key pair (pools on)
    randomizers: dict[int, list[int]] = field(default_factory=dict)  # n -> precomputed r^n
    # Most bytes the session holds from one peer (None: MPCSQL_MAX_PEER_BUFFER or 4 GiB).
    max_peer_buffer: int | None = None
    #: where and above how many rows the masked join spills (engine.protocols.spill.Spill);
    #: its directory is made and removed by the party server
    spill: Any = None


@dataclass
class SessionResult:
    rows: list[tuple] | None  # None at parties that do not receive the result
    stats: dict[str, Any] = field(default_factory=dict)
