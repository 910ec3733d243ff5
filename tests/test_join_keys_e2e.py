"""Exact join keys end to end (issue 10 finding 5): the secure COUNT equals DuckDB's on the
same typed tables, for every key type, and mixed key types are refused at planning."""

from __future__ import annotations

import duckdb
import pytest

from dialect.errors import ProgrammingError

pytestmark = pytest.mark.e2e

BIG = 12345678901234567890
MASKED = "SET join_protocol = 'masked'; "
COUNT = "SELECT COUNT(*), SUM(ka.x), SUM(kb.y) FROM ka JOIN kb USING (id)"


def _write(path: str, name: str, dtype: str, ids: list[str], col: str) -> None:
    with duckdb.connect(path) as c:
        c.execute(f"CREATE TABLE {name} (id {dtype}, {col} DOUBLE)")
        for i, v in enumerate(ids):
            c.execute(f"INSERT INTO {name} VALUES ({v}, {i + 1})")


def _tables(tmp_path, a_type, a_ids, b_type, b_ids):
    """Two DuckDB files (ka at ac, kb at emc) and DuckDB's own answer on them."""
    pa, pb = str(tmp_path / "ka.duckdb"), str(tmp_path / "kb.duckdb")
    _write(pa, "ka", a_type, a_ids, "x")
    _write(pb, "kb", b_type, b_ids, "y")
    with duckdb.connect() as c:
        c.execute(f"ATTACH '{pa}' AS a (READ_ONLY)")
        c.execute(f"ATTACH '{pb}' AS b (READ_ONLY)")
        plain = c.execute("SELECT COUNT(*), SUM(ka.x), SUM(kb.y) "
                          "FROM a.ka AS ka JOIN b.kb AS kb USING (id)").fetchone()
    return pa, pb, plain


def _secure(con, pa, pb, sql):
    con.register("ka", pa, party="ac", key="id", table="ka")
    con.register("kb", pb, party="emc", key="id", table="kb")
    cur = con.cursor()
    cur.execute(sql)
    return cur.fetchone()


def _same(secure, plain):
    assert secure[0] == plain[0]
    for s, p in zip(secure[1:], plain[1:], strict=True):
        assert (s is None and p is None) or s == pytest.approx(p or 0, abs=1e-6)


def _q(values):
    return [f"'{v}'" for v in values]


CASES = {
    # the reproduction of the finding: 1 match before (float64), DuckDB says 0
    "hugeint-adjacent": ("HUGEINT", [str(BIG)], "HUGEINT", [str(BIG + 1)]),
    "hugeint-mixed": ("HUGEINT", [str(BIG + i) for i in (0, 2, 3, 5)],
                      "HUGEINT", [str(BIG + i) for i in (1, 2, 3, 4)]),
    # a false "duplicated id" before: distinct ids that collide as float64
    "hugeint-2^100": ("HUGEINT", [str(2**100 + i) for i in range(6)],
                      "HUGEINT", [str(2**100 + i) for i in range(3, 9)]),
    "uhugeint": ("UHUGEINT", [str(2**128 - 1 - i) for i in range(4)],
                 "UHUGEINT", [str(2**128 - 1), str(2**128 - 5), str(2**128 - 3)]),
    "uhugeint-vs-bigint": ("UHUGEINT", ["7", "8", str(2**62), str(2**62 + 1)],
                           "BIGINT", ["8", "9", str(2**62), str(2**62 + 2)]),
    "decimal38-big": ("DECIMAL(38,0)", [str(10**37 + i) for i in range(5)],
                      "DECIMAL(38,0)", [str(10**37 + i) for i in range(2, 7)]),
    "decimal38-vs-hugeint": ("DECIMAL(38,0)", [str(BIG), str(BIG + 1), str(BIG + 2)],
                             "HUGEINT", [str(BIG + 1), str(BIG + 3)]),
    "decimal-scale-vs-integer": ("DECIMAL(10,2)", ["5.00", "5.50", "6.25", "7.00"],
                                 "INTEGER", ["5", "6", "7", "8"]),
    "integer-vs-bigint": ("INTEGER", [str(i) for i in range(1, 30)],
                          "BIGINT", [str(i) for i in range(10, 40)] + [str(2**40)]),
    "uuid": ("UUID", _q(["00000000-0000-0000-0000-000000000001",
                         "ffffffff-ffff-ffff-ffff-fffffffffffe",
                         "12345678-1234-5678-1234-567812345678"]),
             "UUID", _q(["ffffffff-ffff-ffff-ffff-fffffffffffe",
                         "12345678-1234-5678-1234-567812345679",
                         "00000000-0000-0000-0000-000000000001"])),
    "date": ("DATE", _q(["2020-01-01", "2020-01-02", "1900-02-28", "5881580-07-10"]),
             "DATE", _q(["2020-01-02", "1900-02-28", "5881580-07-09", "0044-03-15 (BC)"])),
    "timestamp-vs-timestamp_s": ("TIMESTAMP", _q(["2020-01-01 00:00:00", "2020-01-01 00:00:01",
                                                  "2020-01-01 00:00:00.5"]),
                                 "TIMESTAMP_S", _q(["2020-01-01 00:00:00",
                                                    "2020-01-01 00:00:01"])),
    "varchar": ("VARCHAR", _q(["a", "A", "é", "x y", "12345678901234567890"]),
                "VARCHAR", _q(["A", "e", "é", "x  y", "12345678901234567891"])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_secure_count_matches_duckdb_masked(con, tmp_path, case):
    a_type, a_ids, b_type, b_ids = CASES[case]
    pa, pb, plain = _tables(tmp_path, a_type, a_ids, b_type, b_ids)
    _same(_secure(con, pa, pb, MASKED + COUNT), plain)


def test_hugeint_adjacent_ids_paillier(con, tmp_path):
    a_type, a_ids, b_type, b_ids = CASES["hugeint-mixed"]
    pa, pb, plain = _tables(tmp_path, a_type, a_ids, b_type, b_ids)
    assert plain[0] == 2
    _same(_secure(con, pa, pb, COUNT), plain)


def test_bigint_vs_varchar_refused_at_planning(con, tmp_path):
    ids = [str(i) for i in range(1, 21)]
    pa, pb, plain = _tables(tmp_path, "BIGINT", ids, "VARCHAR", _q(ids))
    assert plain[0] == 20  # DuckDB casts the string; the secure join refuses to guess
    with pytest.raises(ProgrammingError,
                       match=r"join key ka\.id is BIGINT but kb\.id is VARCHAR; cast one of "
                             r"them in its party's table"):
        _secure(con, pa, pb, MASKED + COUNT)


def test_double_key_refused_at_planning(con, tmp_path):
    pa, pb, _ = _tables(tmp_path, "DOUBLE", ["1", "2"], "BIGINT", ["1", "2"])
    with pytest.raises(ProgrammingError, match=r"join key ka\.id is DOUBLE, which cannot be a "
                                               r"join key \(floating-point"):
        _secure(con, pa, pb, MASKED + COUNT)
