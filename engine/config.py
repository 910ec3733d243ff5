"""Configuration of one party server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KEY_BITS = 2048  # Paillier modulus size used in production


@dataclass
class PartyConfig:
    """How one party server runs (the embedded federation builds this; see also party.toml)."""

    name: str
    role: str
    parties: list[tuple[str, str]]  # (name, role) in MPyC pid order
    database: str
    host: str = "127.0.0.1"
    port: int = 0
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    query_timeout: float = 600.0
    connect_timeout: float = 30.0
    key_bits: int = KEY_BITS
    transcript_dir: str | None = None
    parent_pid: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartyConfig:
        d = dict(d)
        d["parties"] = [tuple(p) for p in d["parties"]]
        d["peers"] = {k: tuple(v) for k, v in d.get("peers", {}).items()}
        return cls(**d)


