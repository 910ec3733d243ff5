"""Paillier randomiser pools: the bookkeeping (no party servers; real runs: test_pools_e2e.py)."""

from __future__ import annotations

import time

import pytest

from engine import cli
from engine.deploy.config import ConfigError, load_party_toml
from engine.protocols import paillier as P
from engine.server.pools import PaillierPools, key_id

# --- unit: the pool's bookkeeping (512-bit keys: unit tests only) ----------------------------


@pytest.fixture(scope="module")
def small_key():
    return P.generate_keypair(512)  # small key: unit test only


def _pools_with(key, values: list[int]) -> PaillierPools:
    pools = PaillierPools("helper", 10, 512)
    pools.set_peer_key("ac", key[0].n)
    pools.pools[int(key[0].n)] = list(values)
    return pools


def test_taken_values_leave_the_pool_and_only_untouched_ones_come_back(small_key):
    n = int(small_key[0].n)
    pools = _pools_with(small_key, [1, 2, 3, 4, 5])
    handed = pools.take()
    assert handed == {n: [1, 2, 3, 4, 5]} and pools.pools[n] == []
    pools.pools[n].append(6)  # made while the query ran
    pools.give_back(handed, {key_id(n): 2})  # the session used 3, from the end
    assert sorted(pools.pools[n]) == [1, 2, 6] and pools.discarded == 0


def test_a_failed_session_s_values_are_thrown_away(small_key):
    n = int(small_key[0].n)
    pools = _pools_with(small_key, [1, 2, 3])
    handed = pools.take()
    pools.give_back(handed, None)
    assert pools.pools[n] == [] and pools.discarded == 3
    pools = _pools_with(small_key, [1, 2, 3])
    handed = pools.take()
    pools.give_back(handed, {key_id(n): 4})  # an impossible report: keep nothing
    assert pools.pools[n] == [] and pools.discarded == 3


def test_a_replaced_key_drops_its_pool(small_key):
    pools = _pools_with(small_key, [1, 2])
    other = P.generate_keypair(512)  # small key: unit test only
    pools.set_peer_key("ac", other[0].n)
    assert list(pools.pools) == [int(other[0].n)] and pools.discarded == 2


def test_session_draws_pool_values_from_the_end_and_reports_the_rest(small_key):
    pub, priv = small_key
    pool = P.precompute_randomizers(pub, 10, private_key=priv)
    kept = pool[:7]
    P.encrypt_rows(pub, [[1, 2], [3, 4], [5, 6]], private_key=priv, randomizers=pool)
    assert pool == kept


def test_config_checks_the_pool_size(tmp_path):
    assert cli.main(["init", "--party", "helper", "--out", str(tmp_path)]) == 0
    path = tmp_path / "party.toml"
    (tmp_path / "certs").mkdir(exist_ok=True)
    for name in ("ca", "helper", "ac", "emc"):  # only their presence is checked on loading
        (tmp_path / "certs" / f"{name}.crt").touch()
    assert load_party_toml(str(path)).paillier_pool == 0  # off unless asked for
    text = path.read_text()
    path.write_text(text.replace("paillier_pool = 0", "paillier_pool = 5000"))
    assert load_party_toml(str(path)).paillier_pool == 5000
    path.write_text(text.replace("paillier_pool = 0", "paillier_pool = -1"))
    with pytest.raises(ConfigError, match="paillier_pool"):
        load_party_toml(str(path))


@pytest.mark.parametrize("answers, asked", [({"ac": 0, "emc": 0}, 1), ({"ac": 0, "emc": None}, 2)])
def test_helper_does_not_pester_parties_that_keep_no_key(answers, asked):
    """A data party without a long-term key answers 0: no pool, and it is asked again only
    after 10 s; one that did not answer at all is asked again after 1 s."""
    import asyncio

    calls = []

    async def fetch():
        calls.append(time.monotonic())
        return dict(answers)

    async def main():
        pools = PaillierPools("helper", 10, 2048)
        stopping = asyncio.Event()
        task = asyncio.ensure_future(pools.run(lambda: True, fetch, None, stopping))
        await asyncio.sleep(1.6)
        stopping.set()
        await asyncio.wait_for(task, 5)
        return pools

    loop = asyncio.new_event_loop()  # private: asyncio.run would unset MPyC's current loop
    try:
        pools = loop.run_until_complete(main())
    finally:
        loop.close()
    assert pools.keys == {} and pools.pools == {}
    assert len(calls) == asked
