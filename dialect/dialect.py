"""``MpcDialect``: DuckDB's SQL dialect plus the typed model aggregates.

Every other accepted aggregate (MIN, MAX, VAR_SAMP, CORR, REGR_*, MEDIAN, QUANTILE_CONT, ...)
already parses as a typed sqlglot class under DuckDB's parser (see :mod:`dialect.functions`).
"""

from __future__ import annotations

from sqlglot.dialects.duckdb import DuckDB

from dialect.functions import MODEL_FUNCTIONS


def _model_mappings() -> dict:
    mappings: dict = {}
    for cls in MODEL_FUNCTIONS:
        mappings.update(cls.default_parser_mappings())
    return mappings


class MpcDialect(DuckDB):
    """DuckDB's dialect whose parser knows LASSO, RIDGE and LINREG as typed aggregates."""

    class Parser(DuckDB.Parser):
        FUNCTIONS = {**DuckDB.Parser.FUNCTIONS, **_model_mappings()}
