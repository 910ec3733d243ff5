"""The state one party server holds, shared by its roles (coordinator, participant, dispatch)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dialect.errors import ProgrammingError
from engine.deploy import tls
from engine.deploy.config import PartyConfig
from engine.server.audit import AuditLog, describe
from engine.server.pools import PaillierPools
from engine.server.queries import QueryBook, QueryRecord, Slot
from engine.server.storage import PartyStore
from planner import plan as make_plan
from planner.catalog import Catalog, Party
from planner.plan import Plan
from planner.policy import Policy


class PartyState:
    """One party's configuration, data, policy, queries, pools and audit log."""

    def __init__(self, cfg: PartyConfig):
        self.cfg = cfg
        self.store = PartyStore(cfg.database, cfg.name, read_only=cfg.tables is not None)
        if cfg.tables is not None:
            self.store.expose([(t.name, t.key, t.columns, t.bounds, t.domains,
                                t.postgres) for t in cfg.tables])
        self.server_ssl = tls.server_context(cfg.tls) if cfg.tls else None
        self.client_ssl = tls.client_context(cfg.tls) if cfg.tls else None
        self.policy = Policy.from_dict(cfg.name, cfg.policy)
        self.slot = Slot()  # one query at a time at this party, reserved at prepare
        self.book = QueryBook()
        self.prepared: dict[str, Any] = {}  # query id -> participant.Prepared
        audit_path = getattr(cfg, "audit_log", None)
        self.audit = AuditLog(audit_path) if audit_path else None
        self.children: set[Any] = set()
        self.pools = PaillierPools(cfg.role, cfg.paillier_pool, cfg.key_bits,
                                   randomness=cfg.paillier_randomness)
        self.stopping = asyncio.Event()
        #: The handler of every operation, by its typed message class (set by the server).
        self.handlers: dict[type, Any] = {}
        self.connections = 0  # control connections being served

    def parties(self) -> tuple[Party, ...]:
        return tuple(Party(n, r, i) for i, (n, r) in enumerate(self.cfg.parties))

    def own_catalog(self) -> Catalog:
        return Catalog(self.parties(), tuple(self.store.schemas()))

    async def plan(self, sql: str, catalog: dict[str, Any],
                   receivers: list[str] | None = None) -> Plan:
        """Plan with the peers' schemas but this party's own tables as it knows them.

        Planning runs in a worker thread, so a large query never stalls the event loop (status,
        other clients, running queries).
        """
        try:
            theirs = Catalog.from_dict(catalog)
        except (KeyError, TypeError, ValueError) as e:
            raise ProgrammingError(f"malformed catalog from the coordinator: {e!r}") from None
        own = self.own_catalog()
        tables = tuple(t for t in theirs.tables if t.party != self.cfg.name) + own.tables
        return await asyncio.to_thread(make_plan, sql, Catalog(self.parties(), tables),
                                       receivers=tuple(receivers) if receivers else None)

    def audit_query(self, rec: QueryRecord, plan: Plan | None, approvals: dict[str, str],
               revealed: dict[str, list[str]], error: BaseException | None) -> None:
        """One audit line for a query this party took part in (never raises into the query)."""
        if self.audit is None:
            return
        try:
            self.audit.append(
                query_id=rec.query_id, analyst=rec.analyst, coordinator=rec.coordinator,
                sql=rec.sql, plan=plan.fingerprint() if plan else None, approvals=approvals,
                revealed=revealed, outcome=(f"failed: {describe(error)}"
                                            if rec.state == "failed" else rec.state),
                role=rec.role, submitted=rec.to_dict()["submitted"])
        except OSError as e:  # a full disk must not take the server down; say so loudly
            print(f"mpcsql[{self.cfg.name}]: cannot write the audit log: {e}",
                  file=sys.stderr, flush=True)
