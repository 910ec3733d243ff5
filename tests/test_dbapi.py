"""The PEP 249 (DB-API 2.0) module interface of ``engine`` (no party servers)."""

from __future__ import annotations

import engine


def test_pep249_module_attributes():
    assert engine.apilevel == "2.0"
    assert engine.threadsafety == 1
    assert engine.paramstyle == "qmark"
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
                 "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
                 "NotSupportedError"):
        assert issubclass(getattr(engine, name), Exception)
    assert issubclass(engine.DataError, engine.DatabaseError)
    assert issubclass(engine.DatabaseError, engine.Error)
