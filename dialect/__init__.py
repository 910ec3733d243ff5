"""The secure SQL dialect: parsing and the restricted grammar (no planner, no engine)."""

from __future__ import annotations

from dialect.dialect import MpcDialect
from dialect.errors import (
    BindError,
    ConfigError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ParseError,
    PolicyError,
    ProgrammingError,
    ProtocolError,
    UnsupportedError,
    Warning,
    error_from_dict,
)
from dialect.functions import (
    AGGREGATE_FUNCTIONS,
    AGGREGATE_NAMES,
    MODEL_FUNCTIONS,
    SCALAR_FUNCTIONS,
    Lasso,
    Linreg,
    Ridge,
    canonical_name,
    function_name,
)
from dialect.params import bind_parameters, sql_literal
from dialect.parsing import parse, parse_query
from dialect.settings import DEFAULTS, SETTINGS, ParsedQuery

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "AGGREGATE_NAMES",
    "DEFAULTS",
    "MODEL_FUNCTIONS",
    "SCALAR_FUNCTIONS",
    "SETTINGS",
    "BindError",
    "ConfigError",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "Lasso",
    "Linreg",
    "MpcDialect",
    "NotSupportedError",
    "OperationalError",
    "ParseError",
    "ParsedQuery",
    "PolicyError",
    "ProgrammingError",
    "ProtocolError",
    "Ridge",
    "UnsupportedError",
    "Warning",
    "bind_parameters",
    "canonical_name",
    "error_from_dict",
    "function_name",
    "parse",
    "parse_query",
    "sql_literal",
]
