"""Linking attacks on what each party receives in a private join (real three-process runs).

Each test plays one party trying to link what it received to rows (its own, or the other data
party's) and requires chance-level success, exactly as the protocol promises:

* the helper, which sees every data party's keyed hashes in the order that party sent them,
  guesses that the rows which matched are the ones *stored* at those positions (this succeeds
  exactly when the data parties do not shuffle; docs/protocols.md step 2);
* in the masked join, a data party guesses that the matched positions it receives into the other
  party's list are the other party's *storage* positions of the matching rows;
* in the Paillier join, a data party links each masked ciphertext it gets back to one it sent:
  without the helper's re-randomisation c' = c * (1 + n)^mask, so c' = c (mod n);
* in the Paillier join, a data party subtracts its own (known) values from the shares it
  decrypts; what is left is the helper's mask, whose every bit must look uniform.

The observer's matching rows are stored first (a worst case for an unshuffled join), last, and
at random, and the attack's success over all runs is compared with its exact chance
distribution (a sum of hypergeometric laws).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from engine.protocols.paillier import MASK_BITS, split_hashes
from tests.conftest import make_tables, run_recorded

pytestmark = [pytest.mark.e2e, pytest.mark.leakage]

P = 2**128 - 173  # the field prime of SecFxp(64, 32)
MASKED = "SET join_protocol = 'masked'; "
JOIN_SQL = ("SELECT COUNT(*), SUM(ac.charges), SUM(ac.delta), SUM(emc.bmi) "
            "FROM ac JOIN emc USING (id)")
LAYOUTS = ("first", "last", "random")
# The owners' values in the Paillier runs are constant per column (with busy low bits), so the
# test knows the value behind every share it sees, whatever the (secret) output order is.
CONST = {"ac": {"charges": 1234.56789, "delta": -0.0123457}, "emc": {"bmi": 27.31415}}


class Run(NamedTuple):
    where: str  # where the matching rows are stored: first, last, random
    tables: dict[str, pd.DataFrame]  # as registered (storage order)
    matching: set
    views: dict[str, Any]  # each party's transcript


@pytest.fixture(scope="module")
def recorded(recording):
    yield lambda ac, emc, sql: run_recorded(recording, ac, emc, sql)


def _layout(df: pd.DataFrame, matching: set, where: str, seed: int) -> pd.DataFrame:
    """``df`` with its matching rows stored first, last, or at random positions."""
    is_match = df["id"].isin(matching)
    hit, miss = df[is_match].sort_values("id"), df[~is_match]
    if where == "first":
        return pd.concat([hit, miss], ignore_index=True)
    if where == "last":
        return pd.concat([miss, hit], ignore_index=True)
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


def _stored_at(df: pd.DataFrame, matching: set) -> set[int]:
    """Storage positions of the matching rows (what a linking attack tries to find)."""
    return set(np.flatnonzero(df["id"].isin(matching).to_numpy()).tolist())


def _messages(view, label):
    return [m for m in view["messages"] if m["label"] == label]


def _helper_guess(helper_view, label: str) -> dict[str, set[int]]:
    """The helper's attack: the matched positions in each party's hash list, as that party's
    storage positions of its matching rows."""
    lists = {m["from"]: split_hashes(m["obj"]["hashes"]) for m in _messages(helper_view, label)}
    assert set(lists) == {"ac", "emc"}
    guess = {}
    for party, other in (("ac", "emc"), ("emc", "ac")):
        theirs = set(lists[other])
        guess[party] = {i for i, h in enumerate(lists[party]) if h in theirs}
    return guess


def _chance_pvalues(trials: list[tuple[int, int, int]]) -> tuple[float, float]:
    """Exact one-sided p-values (too many / too few hits) of the total number of hits.

    Each trial (n, m, hits): an attacker names m of n positions, m of which are right; under
    the protocol its hits follow Hypergeom(n, m, m), independently over trials.
    """
    pmf = np.array([1.0])
    total = 0
    for n, m, hits in trials:
        pmf = np.convolve(pmf, stats.hypergeom(n, m, m).pmf(np.arange(m + 1)))
        total += hits
    return float(pmf[total:].sum()), float(pmf[:total + 1].sum())


def _assert_chance(trials, who: str) -> None:
    hits = sum(h for _, _, h in trials)
    expected = sum(m * m / n for n, m, _ in trials)
    most = sum(m for _, m, _ in trials)
    high, low = _chance_pvalues(trials)
    assert high > 1e-6 and low > 1e-6, (
        f"{who} linked {hits} of {most} matched rows to their storage positions "
        f"(chance: {expected:.1f}; p-values {high:.2g} / {low:.2g})")


def _tables(n: int, overlap: int, seed: int, where: str):
    ac, emc = make_tables(n, n, overlap, seed=seed)
    matching = set(ac["id"]) & set(emc["id"])
    return (_layout(ac, matching, where, seed), _layout(emc, matching, where, seed + 1),
            matching)


# --- the masked join --------------------------------------------------------------------------

MASKED_RUNS = [(where, seed) for seed in (61, 62) for where in LAYOUTS]  # 6 runs
N_MASKED, M_MASKED = 30, 10


@pytest.fixture(scope="module")
def masked_runs(recorded):
    out = []
    for where, seed in MASKED_RUNS:
        ac, emc, matching = _tables(N_MASKED, M_MASKED, seed, where)
        rows, views = recorded(ac, emc, MASKED + JOIN_SQL)
        assert rows[0][0] == M_MASKED
        out.append(Run(where, {"ac": ac, "emc": emc}, matching, views))
    return out


def test_masked_helper_cannot_tell_which_stored_rows_matched(masked_runs):
    for party in ("ac", "emc"):
        trials = []
        for run in masked_runs:
            guess = _helper_guess(run.views["helper"], "hashed_masked_rows")[party]
            assert len(guess) == M_MASKED
            truth = _stored_at(run.tables[party], run.matching)
            trials.append((N_MASKED, M_MASKED, len(guess & truth)))
        _assert_chance(trials, f"the helper (masked join, {party}'s rows)")


def test_masked_positions_do_not_point_at_the_other_partys_stored_rows(masked_runs):
    """A data party receives the matched positions into the *other* party's shuffled list: read
    as storage positions they must hit the other party's matching rows only by chance."""
    for observer, other in (("ac", "emc"), ("emc", "ac")):
        trials = []
        for run in masked_runs:
            pos = _messages(run.views[observer], "matched_positions")[0]["obj"]
            guess = {int(p) for p in np.ravel(pos)}
            assert len(guess) == M_MASKED
            truth = _stored_at(run.tables[other], run.matching)
            trials.append((N_MASKED, M_MASKED, len(guess & truth)))
        _assert_chance(trials, f"{observer} (masked join, {other}'s rows)")


# --- the Paillier join ------------------------------------------------------------------------

N_PAILLIER, M_PAILLIER = 24, 8


def _constant_values(df: pd.DataFrame, party: str) -> pd.DataFrame:
    out = df.copy()
    for col, v in CONST[party].items():
        out[col] = v
    return out


@pytest.fixture(scope="module")
def paillier_runs(recorded):
    out = []
    for i, where in enumerate(LAYOUTS):  # 3 runs: 2048-bit keys are slow
        ac, emc, matching = _tables(N_PAILLIER, M_PAILLIER, 71 + i, where)
        ac, emc = _constant_values(ac, "ac"), _constant_values(emc, "emc")
        rows, views = recorded(ac, emc, JOIN_SQL)
        (count, s_charges, s_delta, s_bmi), = rows
        assert count == M_PAILLIER
        assert abs(s_charges - M_PAILLIER * CONST["ac"]["charges"]) < 1e-4
        assert abs(s_bmi - M_PAILLIER * CONST["emc"]["bmi"]) < 1e-4
        out.append(Run(where, {"ac": ac, "emc": emc}, matching, views))
    return out


def test_paillier_helper_cannot_tell_which_stored_rows_matched(paillier_runs):
    for party in ("ac", "emc"):
        trials = []
        for run in paillier_runs:
            guess = _helper_guess(run.views["helper"], "hashed_encrypted_rows")[party]
            assert len(guess) == M_PAILLIER
            truth = _stored_at(run.tables[party], run.matching)
            trials.append((N_PAILLIER, M_PAILLIER, len(guess & truth)))
        _assert_chance(trials, f"the helper (Paillier join, {party}'s rows)")


def test_owner_cannot_link_returned_ciphertexts_to_the_ones_it_sent(paillier_runs):
    """Without re-randomisation c' = c * (1 + n*mask) = c (mod n): the owner finds, for every
    ciphertext it gets back, the one it sent (and so which of its rows matched, and in which
    output order).  With it, c' = c * r^n (mod n) matches no sent ciphertext."""
    for run in paillier_runs:
        for owner in ("ac", "emc"):
            sent_msg = [m["obj"] for m in _messages(run.views["helper"], "hashed_encrypted_rows")
                        if m["from"] == owner][0]
            n = int(sent_msg["n"])
            sent = {int(c) % n: i for i, row in enumerate(sent_msg["cts"]) for c in row}
            assert len(sent) == N_PAILLIER  # one ciphertext per row here (d <= 19 slots)
            back = _messages(run.views[owner], "masked_rows")[0]["obj"]
            back = [int(c) for row in back for c in row]
            assert len(back) == M_PAILLIER
            assert all(n < c < n * n for c in back)
            linked = [sent[c % n] for c in back if c % n in sent]
            assert not linked, (
                f"{owner} linked {len(linked)} of {len(back)} returned ciphertexts to the ones "
                f"it sent (its rows {sorted(linked)}; matching rows stored {run.where})")
            # nor does any returned ciphertext equal a sent one outright
            assert not set(back) & {int(c) for row in sent_msg["cts"] for c in row}


def _binomial_band(count: int, tail: float) -> tuple[int, int]:
    b = stats.binom(count, 0.5)
    return int(b.ppf(tail)), int(b.isf(tail))


def test_owners_decrypted_shares_hide_every_bit_of_its_values(paillier_runs):
    """The owner decrypts v + r per value; it knows v (its own row), so it can compute r: every
    one of r's MASK_BITS bits must be a fair coin, its low 64 bits (which cover v) uniform."""
    masks = []
    for run in paillier_runs:
        for owner, cols in (("ac", ["charges", "delta"]), ("emc", ["bmi"])):
            shares = _messages(run.views[owner], "decrypted_shares")[0]["obj"]
            assert len(shares) == M_PAILLIER
            # The owner shares each column's value (normalised by its public bound) and its
            # validity bit: 2 local columns per column, each constant here.  Their encodings c
            # are below 2^64, so r + c has r's uniform low 64 bits and (but for one carry) its
            # high bits: the test checks share = v + r as the owner sees it.
            for row in shares:
                assert len(row) == 2 * len(cols)
                masks.extend(int(s) % P for s in row)
    count = len(masks)  # 3 runs x 8 rows x 6 values = 144
    assert all(r < 2**MASK_BITS for r in masks)  # the documented mask range
    low = np.array([r % 2**64 for r in masks], dtype=object)
    exact = int(sum(1 for r in low if r == 0))
    assert exact == 0, f"{exact} of {count} shares minus the owner's value are 0 mod 2^64"
    assert stats.kstest(np.array([float(r) / 2**64 for r in low]), "uniform").pvalue > 1e-6
    lo, hi = _binomial_band(count, 1e-9)  # per bit; 104 bits: a false alarm below 1e-6
    for bit in range(MASK_BITS):
        ones = sum((r >> bit) & 1 for r in masks)
        assert lo <= ones <= hi, (f"mask bit {bit} is set in {ones} of {count} shares "
                                  f"(a fair coin gives {lo}..{hi})")
