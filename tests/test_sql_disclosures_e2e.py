"""The SQL operators of issue 11 open exactly what their plan says (real three-process runs).

Every session records, under the plan's disclosure labels, each value that reaches its party in
the clear (engine/session/transcript.py; ``Session.reveal`` and ``Session.opened``).  For each
query shape (WHERE on one party or across parties, a WHERE that leaves too few rows, GROUP BY
one or two keys with a NULL group, HAVING, min_group_rows suppression, FILTER, MIN / MAX /
MEDIAN, CORR / REGR, ORDER BY / LIMIT, a subset of receivers, a single table) these tests check,
per party, that the labels the session opened are *exactly* those ``Plan.reached(outcome)``
lists for it: each once, none missing, none extra, in the order of the plan's stages.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import engine
from planner.plan import REFUSED, STAGES
from tests.test_disclosures_e2e import opened, planned

pytestmark = pytest.mark.e2e

MASKED = "SET join_protocol = 'masked'; "
JOIN = "FROM ac JOIN emc USING (id)"
PARTIES = ("ac", "emc", "helper")
MIN_ROWS = 5  # ac's min_intersection
MIN_GROUP = 3  # emc's min_group_rows
POLICIES = {"ac": {"min_intersection": MIN_ROWS}, "emc": {"min_intersection": 0,
                                                          "min_group_rows": MIN_GROUP},
            "helper": {"min_intersection": 0}}
REGIONS = ["north", "south", "east", "west"]
#: kid of the 25 joined rows: 0 x 8, 1 x 7, 2 x 2 (suppressed by min_group_rows 3), 3 x 0,
#: 4 x 3, NULL x 5
KIDS = [0] * 8 + [1] * 7 + [2] * 2 + [4] * 3 + [None] * 5


def tables(n_ac: int = 40, n_emc: int = 35, overlap: int = 25, seed: int = 5
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ac (age, charges, grp 0..2, region, smoker) and emc (bmi, children, kid 0..4 or NULL);
    the joined rows' kid counts are KIDS (when overlap is 25)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(1, 10_000_000), n_ac + n_emc - overlap, replace=False)
    ac = pd.DataFrame({"id": ids[:n_ac], "age": rng.integers(18, 90, n_ac),
                       "charges": np.round(rng.uniform(1000, 60000, n_ac), 2),
                       "grp": rng.integers(0, 3, n_ac),
                       "region": rng.choice(REGIONS, n_ac),
                       "smoker": rng.random(n_ac) < 0.3})
    kids = (KIDS if overlap == len(KIDS) else list(rng.integers(0, 5, overlap)))
    kids = kids + list(rng.integers(0, 5, n_emc - overlap))
    emc = pd.DataFrame({"id": np.concatenate([ids[:overlap], ids[n_ac:]]),
                        "bmi": np.round(rng.uniform(16, 48, n_emc), 3),
                        "children": rng.integers(0, 5, n_emc),
                        "kid": pd.array(kids, dtype="Int64")})
    return (ac.sample(frac=1, random_state=seed).reset_index(drop=True),
            emc.sample(frac=1, random_state=seed + 1).reset_index(drop=True))


def register(con, ac: pd.DataFrame, emc: pd.DataFrame, suffix: str = "") -> None:
    con.register("ac" + suffix, ac, party="ac", key="id",
                 bounds={"age": 128, "charges": 65536},
                 domains={"grp": {"min": 0, "max": 2}, "region": REGIONS})
    con.register("emc" + suffix, emc, party="emc", key="id",
                 bounds={"bmi": 64, "children": 8}, domains={"kid": {"min": 0, "max": 4}})


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tdir = str(tmp_path_factory.mktemp("sql-disclosures"))
    with engine.connect(policies=POLICIES, transcript_dir=tdir, key_bits=512) as con:
        ac, emc = tables()
        register(con, ac, emc)
        small_ac, small_emc = tables(20, 18, MIN_ROWS - 1, seed=9)
        register(con, small_ac, small_emc, "_small")
        yield con, tdir, ac.merge(emc, on="id")


def check(con, tdir: str, sql: str, receivers: tuple[str, ...] | None = None,
          outcome: str = "done") -> tuple[list[tuple] | None, dict[str, list[str]], object]:
    """Run ``sql`` (to ``receivers``); every party opened exactly the labels
    ``plan.reached(outcome)`` lists for it, each once, stage by stage.  Returns the rows
    (None if refused), what each party opened and the plan."""
    con.receivers = list(receivers) if receivers else None
    cur = con.cursor()
    try:
        if outcome == "done":
            rows = cur.execute(sql).fetchall()
        else:
            with pytest.raises(engine.PolicyError, match="smaller than the minimum") as info:
                cur.execute(sql)
            assert str(MIN_ROWS - 1) not in str(info.value).replace(f"of {MIN_ROWS} rows", "")
            rows = None
        plan = planned(con, sql, receivers)
    finally:
        con.receivers = None
    got = opened(tdir, cur.query_id)
    assert set(got) == set(PARTIES)
    stage = {d.label: STAGES.index(d.stage) for d in plan.disclosures()}
    for party, labels in got.items():
        expect = {d.label for d, ps in plan.reached(outcome) if party in ps}
        assert len(labels) == len(set(labels)), (party, sql, labels)  # each opened once
        assert set(labels) == expect, (party, sql, labels, sorted(expect))
        assert [stage[x] for x in labels] == sorted(stage[x] for x in labels), (party, labels)
    return rows, got, plan


SIZE_LABELS = {"intersection_size", "table_sizes", "row_count", "row_count:ac",
               "row_count:emc"}


def expect_opened(got: dict[str, list[str]], extra: dict[str, set[str]]) -> None:
    """Beside the sizes, each party opened exactly ``extra`` (what the tests below expect,
    besides ``check``'s comparison with the plan itself)."""
    for p in PARTIES:
        assert set(got[p]) - SIZE_LABELS == extra.get(p, set()), (p, got[p])
        assert "intersection_size" in got[p] or "row_count" in got[p], (p, got[p])


ALL_FILTER = {p: {"filter_too_small"} for p in PARTIES}
RESULT = {"ac": {"result"}, "emc": {"result"}}
GROUPS = {"ac": {"group_present", "result"}, "emc": {"group_present", "result"}}


def _union(*ds: dict[str, set[str]]) -> dict[str, set[str]]:
    return {p: set().union(*(d.get(p, set()) for d in ds)) for p in PARTIES}


# --- WHERE ---------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["age > 40", "ac.age > emc.bmi",
                                   "region IN ('north', 'east') AND NOT smoker",
                                   "ac.charges > 1000 * emc.bmi OR emc.kid IS NULL"],
                         ids=["one-party", "cross-party", "strings-and-booleans", "mixed"])
def test_where_opens_the_filter_bit_to_everyone_and_the_result_to_the_receivers(fed, where):
    con, tdir, joined = fed
    rows, got, plan = check(con, tdir, MASKED + f"SELECT COUNT(*), AVG(charges), SUM(bmi) {JOIN} "
                            f"WHERE {where}")
    expect_opened(got, _union(ALL_FILTER, RESULT))
    assert {d.label for d in plan.disclosures() if d.label == "filter_too_small"}
    assert "group_present" not in {d.label for d in plan.disclosures()}
    assert rows[0][0] == int(PANDAS[where](joined).fillna(False).sum())


#: The WHERE predicates above on the plaintext join (NULL compares as unknown: not kept).
PANDAS = {
    "age > 40": lambda j: j["age"] > 40,
    "ac.age > emc.bmi": lambda j: j["age"] > j["bmi"],
    "region IN ('north', 'east') AND NOT smoker":
        lambda j: j["region"].isin(["north", "east"]) & ~j["smoker"],
    "ac.charges > 1000 * emc.bmi OR emc.kid IS NULL":
        lambda j: (j["charges"] > 1000 * j["bmi"]) | j["kid"].isna(),
}


@pytest.mark.parametrize("where", ["age < 0", "ac.age > emc.bmi + 100", "kid = 2 AND age > 0"],
                         ids=["one-party-empty", "cross-party-empty", "two-rows-left"])
def test_a_where_leaving_too_few_rows_opens_only_the_filter_bit(fed, where):
    con, tdir, joined = fed
    if where.startswith("kid"):
        assert 0 < (joined["kid"] == 2).fillna(False).sum() < MIN_ROWS
    sql = MASKED + f"SELECT kid, COUNT(*), AVG(charges) {JOIN} WHERE {where} GROUP BY kid"
    _, got, plan = check(con, tdir, sql, outcome="filter_too_small")
    expect_opened(got, ALL_FILTER)  # no presence bit, no result, for anyone
    assert {d.label for d, _ in plan.reached("filter_too_small")} == \
        {"intersection_size", "table_sizes", "row_count:ac", "row_count:emc", "filter_too_small"}


def test_a_too_small_intersection_opens_only_the_too_small_bit(fed):
    con, tdir, _ = fed
    sql = (MASKED + "SELECT grp, COUNT(*), MEDIAN(bmi) FROM ac_small JOIN emc_small USING (id) "
           "WHERE age > 20 GROUP BY grp")
    _, got, plan = check(con, tdir, sql, outcome="too_small")
    assert got["ac"] == got["emc"] == ["too_small"]
    assert set(got["helper"]) <= {"table_sizes", "intersection_size", "too_small"}
    assert {d.label for d, _ in plan.reached("too_small") if d.when == REFUSED} == {"too_small"}


# --- GROUP BY, HAVING, min_group_rows -----------------------------------------------------

def _groups(joined: pd.DataFrame, keys: list[str], domains: list[list]) -> dict[tuple, int]:
    """Row count per group of the declared domains (NULL last), as DuckDB would group."""
    out = {}
    for combo in itertools.product(*domains):
        mask = np.ones(len(joined), dtype=bool)
        for k, v in zip(keys, combo, strict=True):
            hit = joined[k].isna() if v is None else (joined[k] == v).fillna(False)
            mask &= hit.to_numpy(dtype=bool)
        out[tuple(combo)] = int(mask.sum())
    return out


def test_group_by_one_key_opens_presence_and_result(fed):
    con, tdir, joined = fed
    rows, got, _ = check(con, tdir, MASKED + f"SELECT grp, COUNT(*), SUM(charges) {JOIN} "
                         "GROUP BY grp ORDER BY grp")
    expect_opened(got, GROUPS)
    counts = _groups(joined, ["grp"], [[0, 1, 2]])
    assert [(r[0], r[1]) for r in rows] == [(k[0], n) for k, n in counts.items()
                                            if n >= MIN_GROUP]


def test_group_by_two_keys_of_both_parties_with_a_null_group(fed):
    con, tdir, joined = fed
    sql = (MASKED + f"SELECT region, kid, COUNT(*) AS n, AVG(bmi) {JOIN} GROUP BY region, kid "
           "ORDER BY region, kid NULLS LAST")
    rows, got, plan = check(con, tdir, sql)
    expect_opened(got, GROUPS)
    assert len(plan.program.groups) == 5 * 6  # region and kid may be NULL: a NULL group each
    counts = _groups(joined, ["region", "kid"], [REGIONS + [None], [0, 1, 2, 3, 4, None]])
    want = {k: n for k, n in counts.items() if n >= MIN_GROUP}
    assert {(r[0], r[1]): r[2] for r in rows} == want
    assert any(k[1] is None for k in want)  # a NULL group is output


def test_min_group_rows_suppresses_small_groups(fed):
    """kid 2 has 2 joined rows (< 3) and kid 3 none: both absent; only the presence bits and
    the present groups' values are opened."""
    con, tdir, _ = fed
    rows, got, _ = check(con, tdir, MASKED + f"SELECT kid, COUNT(*), MIN(age) {JOIN} GROUP BY kid")
    expect_opened(got, GROUPS)
    assert sorted(((r[0] is None, r[0]), r[1]) for r in rows) == [
        ((False, 0), 8), ((False, 1), 7), ((False, 4), 3), ((True, None), 5)]


@pytest.mark.parametrize("sql", [
    f"SELECT grp, AVG(charges) {JOIN} GROUP BY grp HAVING AVG(charges) > 30000",
    f"SELECT COUNT(*), SUM(charges) {JOIN} HAVING COUNT(*) > 100",
    f"SELECT COUNT(*), SUM(charges) {JOIN} HAVING SUM(bmi) > 10",
    f"SELECT grp, kid {JOIN} GROUP BY grp, kid HAVING COUNT(*) >= 2",
    f"SELECT kid {JOIN} GROUP BY kid",
], ids=["grouped", "no-group-fails", "no-group-holds", "keys-only-having", "keys-only"])
def test_having_and_keys_only_open_presence_bits(fed, sql):
    con, tdir, _ = fed
    rows, got, plan = check(con, tdir, MASKED + sql)
    expect_opened(got, GROUPS)
    d = next(d for d in plan.disclosures() if d.label == "group_present")
    assert "HAVING" in d.text or "HAVING" not in sql
    if "100" in sql:
        assert rows == []


# --- aggregates ----------------------------------------------------------------------------

@pytest.mark.parametrize("select", [
    "COUNT(*) FILTER (WHERE bmi > 30), AVG(charges) FILTER (WHERE ac.age > emc.bmi), "
    "SUM(children) FILTER (WHERE region = 'north')",
    "MIN(charges), MAX(bmi), MEDIAN(age), QUANTILE_CONT(charges, 0.25)",
    "CORR(charges, bmi), REGR_SLOPE(charges, age), REGR_INTERCEPT(charges, bmi), "
    "REGR_R2(bmi, age), REGR_COUNT(charges, kid), COVAR_SAMP(charges, bmi)",
    "VAR_SAMP(bmi), STDDEV_POP(charges), AVG(charges) - AVG(bmi) * 100",
], ids=["filter", "order-statistics", "regression", "variance-arithmetic"])
def test_ungrouped_aggregates_open_only_the_result(fed, select):
    con, tdir, _ = fed
    _, got, plan = check(con, tdir, MASKED + f"SELECT {select} {JOIN}")
    expect_opened(got, RESULT)
    if "MEDIAN" in select:
        assert "data value" in next(d.text for d in plan.disclosures() if d.label == "result")


def test_grouped_order_statistics_with_where(fed):
    con, tdir, _ = fed
    sql = (MASKED + f"SELECT grp, MIN(bmi), MAX(charges), MEDIAN(charges) {JOIN} "
           "WHERE smoker OR age > 50 GROUP BY grp")
    _, got, _ = check(con, tdir, sql)
    expect_opened(got, _union(ALL_FILTER, GROUPS))


def test_order_by_and_limit_act_on_the_opened_rows(fed):
    con, tdir, joined = fed
    sql = (MASKED + f"SELECT region, COUNT(*) AS n, AVG(charges) AS a {JOIN} GROUP BY region "
           "ORDER BY a DESC LIMIT 2 OFFSET 1")
    rows, got, _ = check(con, tdir, sql)
    expect_opened(got, GROUPS)
    by = joined.groupby("region")["charges"]
    avg = by.mean()[by.size() >= MIN_GROUP].sort_values(ascending=False)
    assert [r[0] for r in rows] == list(avg.index[1:3])


# --- receivers, single tables, the Paillier join -------------------------------------------

def test_a_receivers_subset_opens_presence_and_result_to_it_only(fed):
    con, tdir, _ = fed
    sql = (MASKED + f"SELECT grp, kid, COUNT(*), CORR(charges, bmi) {JOIN} WHERE bmi > 20 "
           "GROUP BY grp, kid HAVING COUNT(*) > 1")
    rows, got, _ = check(con, tdir, sql, receivers=("ac",))
    expect_opened(got, {p: {"filter_too_small"} | ({"group_present", "result"} if p == "ac"
                                                   else set()) for p in PARTIES})
    assert rows is not None


def test_single_table_where_and_group_by(fed):
    con, tdir, _ = fed
    rows, got, _ = check(con, tdir, "SELECT region, COUNT(*), MAX(charges) FROM ac "
                         "WHERE age > 30 GROUP BY region")
    for p in PARTIES:
        want = {"row_count", "filter_too_small"} | ({"group_present", "result"}
                                                    if p != "helper" else set())
        assert set(got[p]) == want, (p, got[p])


def test_single_table_where_leaving_too_few_rows(fed):
    con, tdir, _ = fed
    _, got, _ = check(con, tdir, "SELECT COUNT(*), AVG(charges) FROM ac WHERE age > 200",
                      outcome="filter_too_small")
    for p in PARTIES:
        assert set(got[p]) == {"row_count", "filter_too_small"}, (p, got[p])


@pytest.mark.parametrize("sql", [
    f"SELECT grp, COUNT(*), AVG(bmi) {JOIN} WHERE ac.age > emc.bmi GROUP BY grp HAVING "
    "COUNT(*) > 2",
    f"SELECT MIN(charges), MEDIAN(bmi), CORR(age, bmi) {JOIN} WHERE kid IS NOT NULL",
], ids=["grouped", "order-statistics"])
def test_paillier_join(fed, sql):
    con, tdir, _ = fed
    _, got, _ = check(con, tdir, sql)
    sizes = {"ac": {"intersection_size"}, "emc": {"intersection_size"},
             "helper": {"table_sizes", "intersection_size"}}
    extra = GROUPS if "GROUP" in sql else RESULT
    for p in PARTIES:
        assert set(got[p]) == sizes[p] | {"filter_too_small"} | extra.get(p, set()), (p, got[p])


def test_paillier_where_leaving_too_few_rows(fed):
    con, tdir, _ = fed
    _, got, _ = check(con, tdir, f"SELECT COUNT(*) {JOIN} WHERE emc.bmi > ac.age + 50",
                      outcome="filter_too_small")
    assert set(got["ac"]) == set(got["emc"]) == {"intersection_size", "filter_too_small"}


def test_explain_names_every_disclosure_of_a_program_plan(fed):
    con, _, _ = fed
    sql = (MASKED + f"SELECT kid, COUNT(*), MEDIAN(bmi) {JOIN} WHERE ac.age > emc.bmi "
           "GROUP BY kid HAVING AVG(charges) > 100")
    text = con.explain(sql)
    for d in planned(con, sql).disclosures():
        assert d.text in text, d.label
