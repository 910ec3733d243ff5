"""The planner: bind parsed SQL against the federated catalog and build a secure plan."""

from __future__ import annotations

from planner.binder import Binder, BoundQuery
from planner.build import build_plan, plan
from planner.catalog import DATA, HELPER, Catalog, ColumnSchema, Party, TableSchema
from planner.plan import (
    ALL_AGGREGATES,
    MODEL_AGGREGATES,
    SCALAR_AGGREGATES,
    Aggregate,
    ColumnRef,
    OutputColumn,
    Plan,
    PrivateJoin,
    Reveal,
    Scan,
    SecretShare,
    SecureAggregate,
)
from planner.policy import Policy

__all__ = [
    "ALL_AGGREGATES",
    "DATA",
    "HELPER",
    "MODEL_AGGREGATES",
    "SCALAR_AGGREGATES",
    "Aggregate",
    "Binder",
    "BoundQuery",
    "Catalog",
    "ColumnRef",
    "ColumnSchema",
    "OutputColumn",
    "Party",
    "Plan",
    "Policy",
    "PrivateJoin",
    "Reveal",
    "Scan",
    "SecretShare",
    "SecureAggregate",
    "TableSchema",
    "build_plan",
    "plan",
]
