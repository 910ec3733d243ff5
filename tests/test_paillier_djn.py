"""Damgard-Jurik-Nielsen randomness for the published (Paillier) join.

Unit tests on 512-bit keys are labelled as such (small keys: unit tests only); the 2048-bit
tests use real keys; the end-to-end tests run the three party servers (512-bit keys there too,
as tests/test_federation.py does).  What is checked: DJN keys publish a valid h; encryptions
and re-randomisations decrypt correctly and keep the homomorphisms; a re-randomised ciphertext
differs from the original; an invalid h is refused wherever a peer's h arrives; the pools work
with either randomness; the setting is parsed and the key owner's choice reaches the wire.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pickle
import re
import secrets

import gmpy2
import pandas as pd
import pytest

from dialect.errors import ConfigError, Error, ProtocolError
from engine import cli
from engine.client.dbapi import Connection
from engine.client.embedded import LocalFederation
from engine.deploy import config as deploy_config
from engine.deploy.config import load_party_toml
from engine.protocols import paillier as P
from engine.server.pools import PaillierPools
from tests.conftest import OPEN_POLICY

FIELD = 2**127 - 1


@pytest.fixture(scope="module")
def small():
    return P.generate_keypair(512, "djn")  # small key: unit test only


@pytest.fixture(scope="module")
def real():
    return P.generate_keypair(2048, "djn")


def _wire(pub):
    """The public key as the helper rebuilds it from the join message (n, h and, for a
    subgroup key, h_order_bits)."""
    return P.public_key(int(pub.n), P.djn_h(pub), P.djn_order_bits(pub))


def test_djn_key_publishes_a_valid_h_and_classic_keys_none(small):
    pub, priv = small
    n = int(pub.n)
    h = P.djn_h(pub)
    assert h is not None and P.check_djn_h(n, h) == h
    # h = (-x^2)^n is an n-th residue: an encryption of zero
    assert P.decrypt_many(priv, [h], workers=1) == [0]
    classic, _ = P.generate_keypair(512, "classic")  # small key: unit test only
    assert P.djn_h(classic) is None
    with pytest.raises(ValueError, match="randomness"):
        P.generate_keypair(512, "fast")  # small key: unit test only
    assert P.djn_exponent_bits(2048) == 1024 and P.djn_exponent_bits(512) == 256


def test_fixed_base_table_equals_powmod(small):
    pub, _ = small
    n = int(pub.n)
    h = P.djn_h(pub)
    for window in (1, 3, 8):
        fb = P.FixedBase(h, n * n, 256, window)
        for e in [0, 1, 2**256 - 1] + [secrets.randbits(256) for _ in range(20)]:
            assert fb.pow(e) == gmpy2.powmod(h, e, n * n)
        with pytest.raises(ValueError):
            fb.pow(2**256)


def test_djn_randomiser_is_h_to_a_secret_exponent(small, monkeypatch):
    """The owner's encryptions use a ceil(k/2)-bit a; the helper's re-randomisers (public key
    only) a k + SIGMA-bit a', long enough that h**a' is 2**-SIGMA-close to uniform in <h>."""
    pub, priv = small
    n = int(pub.n)
    h = P.djn_h(pub)
    assert P.rerandomizer_exponent_bits(512) == 512 + P.SIGMA  # small key: unit test only
    assert P.rerandomizer_exponent_bits(2048) == 2088
    owner = P._context(pub, priv)
    assert owner.djn is None and owner.djn_bits == 256  # CRT: tables mod p**2 and q**2
    assert [t.bits for t in owner.djn_pq] == [256, 256]
    for ctx, bits in ((P._PublicCtx(_wire(pub)), 512 + P.SIGMA), (owner, 256)):
        a = secrets.randbits(bits) | (1 << (bits - 1))  # uses the table's top row
        monkeypatch.setattr(P.secrets, "randbits", lambda k, a=a, bits=bits: a if k == bits
                            else 0)
        assert ctx.randomizer() == gmpy2.powmod(h, a, n * n)
    # a re-randomiser's exponent exceeds n > ord(h): it covers <h> (h**a' mod n**2 wraps)
    assert 2 ** P.rerandomizer_exponent_bits(512) > 2**P.SIGMA * n


@pytest.mark.parametrize("randomness", ["djn", "classic"])
def test_decryption_of_many_and_edge_values_either_randomness(randomness):
    """Real 2048-bit keys: 0, 1, n - 1, powers of two and random plaintexts, each encrypted by
    the owner (CRT) and by the public key alone, decrypt exactly; so does phe's decryption."""
    pub, priv = P.generate_keypair(2048, randomness)
    n = int(pub.n)
    ms = [0, 1, 2, n - 2, n - 1, 2**2046, 2**1024 + 1] + [secrets.randbelow(n) for _ in range(73)]
    for owner in (priv, None):
        cts = P.encrypt_many(pub, ms, private_key=owner, workers=2)  # >= 64: forked workers
        assert P.decrypt_many(priv, cts, workers=2) == ms
        assert P.decrypt_many(priv, cts[:5], workers=1) == ms[:5]
        assert [priv.raw_decrypt(c) for c in cts[:8]] == ms[:8]
    with pytest.raises(ValueError):
        P.encrypt_many(pub, [n], workers=1)
    with pytest.raises(ValueError):
        P.encrypt_many(pub, [-1], workers=1)
    # signed encodings at the ends of the 64-bit range survive packing, masking, unpacking
    rows = [[-(2**63), 2**63 - 1, 0, -1, 1] + [secrets.randbelow(2**64) - 2**63
                                               for _ in range(10)] for _ in range(3)]
    _, _, got = _roundtrip(pub, priv, rows, 15)
    assert got == [[v % FIELD for v in r] for r in rows]


def test_rerandomisation_hides_the_owner_s_own_randomiser(small):
    """What the owner can compute from a re-randomised ciphertext after stripping the plaintext:
    h**(a_i + a').  Its exponent (known here, as the owner could find it by discrete logarithms
    modulo p and q) minus a_i is a' and spreads over [0, 2**(k + SIGMA)), far beyond the range
    [0, 2**ceil(k/2)) of every a_j: so it no longer singles out the true row (a short a' did)."""
    pub, priv = small
    short = P.djn_exponent_bits(512)
    long_ = P._PublicCtx(_wire(pub)).djn.bits  # the helper's table
    a_own = [secrets.randbits(short) for _ in range(200)]
    a_helper = [secrets.randbits(long_) for _ in range(200)]
    # with a short a' the true row's a_i is the unique j with 0 <= e - a_j < 2**short in most
    # cases; with the long a' almost no e is within 2**(short + 1) of any a_j
    assert sum(e + a < 2 ** (short + 1) for e, a in zip(a_helper, a_own, strict=True)) <= 1


@pytest.mark.parametrize("owner", [True, False], ids=["owner-crt", "public"])
def test_decryption_and_homomorphisms(small, owner):
    pub, priv = small
    n = int(pub.n)
    nsq = n * n
    ms = [0, 1, 12345, n - 1] + [secrets.randbelow(n) for _ in range(20)]
    cts = P.encrypt_many(pub, ms, private_key=priv if owner else None, workers=1)
    assert P.decrypt_many(priv, cts, workers=1) == ms
    assert len(set(cts)) == len(cts)  # fresh randomness each
    # addition: Enc(a) * Enc(b) = Enc(a + b mod n); scalar: Enc(a)^k = Enc(k a mod n)
    sums = [c1 * c2 % nsq for c1, c2 in zip(cts, cts[1:], strict=False)]
    assert P.decrypt_many(priv, sums, workers=1) == [
        (a + b) % n for a, b in zip(ms, ms[1:], strict=False)]
    ks = [secrets.randbelow(2**64) for _ in ms]
    scaled = [pow(c, k, nsq) for c, k in zip(cts, ks, strict=True)]
    assert P.decrypt_many(priv, scaled, workers=1) == [k * m % n for k, m in zip(ks, ms,
                                                                                strict=True)]


def test_rerandomised_ciphertexts_differ_and_decrypt_the_same(small):
    pub, priv = small
    n = int(pub.n)
    nsq = n * n
    ms = [secrets.randbelow(n) for _ in range(30)]
    cts = P.encrypt_many(pub, ms, private_key=priv, workers=1)
    ctx = P._PublicCtx(_wire(pub))
    again = [c * ctx.randomizer() % nsq for c in cts]
    assert all(a != c for a, c in zip(again, cts, strict=True))
    assert P.decrypt_many(priv, again, workers=1) == ms


def _roundtrip(pub, priv, rows, d, workers=1, randomizers=None):
    cts = P.encrypt_rows(pub, rows, private_key=priv, workers=workers)
    masked, hshares = P.helper_mask(_wire(pub), cts, d, FIELD, workers=workers,
                                    randomizers=randomizers)
    owner = P.decrypt_shares(priv, masked, d, FIELD, workers=workers)
    got = [[(a + b) % FIELD for a, b in zip(o, h, strict=True)]
           for o, h in zip(owner, hshares, strict=True)]
    return cts, masked, got


def test_join_steps_with_djn_small_keys(small):
    pub, priv = small
    d = 3  # one ciphertext per row at 512 bits (4 slots)
    rows = [[secrets.randbelow(2**63) - 2**62 for _ in range(d)] for _ in range(40)]
    cts, masked, got = _roundtrip(pub, priv, rows, d)
    assert got == [[v % FIELD for v in r] for r in rows]
    sent = {c for row in cts for c in row}
    assert not sent & {c for row in masked for c in row}
    # nor linkable by c mod n (what re-randomisation exists to prevent)
    n = int(pub.n)
    assert not {c % n for c in sent} & {c % n for row in masked for c in row}


def test_join_steps_with_real_2048_bit_keys(real):
    pub, priv = real
    assert int(pub.n).bit_length() == 2048
    d = 15
    rows = [[secrets.randbelow(2**63) - 2**62 for _ in range(d)] for _ in range(80)]
    cts, masked, got = _roundtrip(pub, priv, rows, d, workers=2)  # >= 64: forked workers
    assert got == [[v % FIELD for v in r] for r in rows]
    n = int(pub.n)
    assert not {c % n for row in cts for c in row} & {c % n for row in masked for c in row}
    # a homomorphic sum of the 80 first slots decrypts to their sum (+ offsets)
    nsq = n * n
    acc = 1
    for row in cts:
        acc = acc * row[0] % nsq
    total = P.decrypt_many(priv, [acc], workers=1)[0]
    assert total & ((1 << P.SLOT_BITS) - 1) == sum(r[0] + P.OFFSET for r in rows)


@pytest.mark.parametrize("bad", ["zero", "one", "n", "p", "nsq-1", "nsq", "neg", "str", "bool"])
def test_an_invalid_h_is_refused(small, bad):
    pub, priv = small
    n = int(pub.n)
    h = {"zero": 0, "one": 1, "n": n, "p": int(priv.p) * 7, "nsq-1": n * n - 1, "nsq": n * n,
         "neg": -P.djn_h(pub), "str": str(P.djn_h(pub)), "bool": True}[bad]
    with pytest.raises(ProtocolError) as err:
        P.public_key(n, h)
    assert isinstance(err.value, Error) and "h" in str(err.value)
    pools = PaillierPools("helper", 10, 512)
    with pytest.raises(ProtocolError):
        pools.set_peer_key("ac", n, h)
    assert pools.pools == {}  # no pool for a key with an invalid h


def test_pools_with_either_randomness(small):
    pub, priv = small
    n = int(pub.n)
    classic_view = P.public_key(n)  # the same key without h
    djn_pool = P.precompute_randomizers(_wire(pub), 8, workers=1)
    classic_pool = P.precompute_randomizers(classic_view, 8, private_key=priv, workers=1)
    # every pooled value is an encryption of zero for the key, whichever kind it is
    assert P.decrypt_many(priv, djn_pool + classic_pool, workers=1) == [0] * 16
    rows = [[5, -7, 9], [1, 2, 3]]
    for pool in (djn_pool, classic_pool):
        kept = pool[:6]
        _, _, got = _roundtrip(pub, priv, rows, 3, randomizers=pool)
        assert got == [[v % FIELD for v in r] for r in rows] and pool == kept


def test_pool_objects_fill_djn_values(small):
    pub, priv = small
    n = int(pub.n)
    helper = PaillierPools("helper", 4, 512, batch=4, workers=1)
    helper.set_peer_key("ac", n, P.djn_h(pub))
    assert P.djn_h(helper.keys[n][0]) == P.djn_h(pub)
    helper.set_peer_key("ac", n, P.djn_h(pub))  # the same key again: pool kept
    _run(helper._fill(n, 4))
    values = helper.pools[n]
    assert len(values) == 4 and P.decrypt_many(priv, values, workers=1) == [0] * 4
    owner = PaillierPools("data", 4, 512, batch=4, workers=1, randomness="djn")
    own_pub, own_priv = _run(owner.own_keypair("ac"))
    assert P.djn_h(own_pub) is not None
    _run(owner._fill(int(own_pub.n), 4))
    assert P.decrypt_many(own_priv, owner.pools[int(own_pub.n)], workers=1) == [0] * 4
    classic = PaillierPools("data", 4, 512, randomness="classic")
    assert P.djn_h(_run(classic.own_keypair("ac"))[0]) is None


def test_helper_pool_refuses_an_invalid_h_and_keeps_the_other_party_s_key(small):
    """A data party whose published h is invalid gets no pool; the other one still does."""
    pub, _ = small
    other, _ = P.generate_keypair(512, "djn")  # small key: unit test only
    answers = {"ac": (int(pub.n), int(pub.n)), "emc": (int(other.n), P.djn_h(other))}

    async def fetch():
        return dict(answers)

    async def main():
        pools = PaillierPools("helper", 2, 512, batch=2, workers=1)
        stopping = asyncio.Event()
        task = asyncio.ensure_future(pools.run(lambda: True, fetch, None, stopping))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if len(pools.pools.get(int(other.n), [])) == 2:
                break
        stopping.set()
        await asyncio.wait_for(task, 10)
        return pools

    loop = asyncio.new_event_loop()  # private: asyncio.run would unset MPyC's current loop
    try:
        pools = loop.run_until_complete(main())
    finally:
        loop.close()
    assert int(pub.n) not in pools.keys and list(pools.pools) == [int(other.n)]
    assert len(pools.pools[int(other.n)]) == 2


def test_setting_is_parsed_and_checked():
    assert deploy_config.PAILLIER_RANDOMNESS == P.RANDOMNESS
    assert deploy_config.DEFAULT_PAILLIER_RANDOMNESS == P.DEFAULT_RANDOMNESS
    deploy_config.check_randomness("classic")
    with pytest.raises(ConfigError, match="paillier_randomness"):
        deploy_config.check_randomness("DJN")
    with pytest.raises(ConfigError, match="paillier_randomness"):
        LocalFederation(paillier_randomness="fast")


def test_party_toml_setting(tmp_path):
    assert cli.main(["init", "--party", "ac", "--out", str(tmp_path)]) == 0
    path = tmp_path / "party.toml"
    (tmp_path / "certs").mkdir(exist_ok=True)
    for name in ("ca", "helper", "ac", "emc"):  # only their presence is checked on loading
        (tmp_path / "certs" / f"{name}.crt").touch()
    text = path.read_text()
    assert 'paillier_randomness = "djn"' in text
    assert load_party_toml(str(path)).paillier_randomness == "djn"
    path.write_text(text.replace('paillier_randomness = "djn"', 'paillier_randomness = "classic"'))
    assert load_party_toml(str(path)).paillier_randomness == "classic"
    path.write_text(text.replace('paillier_randomness = "djn"', 'paillier_randomness = "short"'))
    with pytest.raises(ConfigError, match="crypto.paillier_randomness"):
        load_party_toml(str(path))
    without = re.sub(r"(?m)^paillier_randomness = .*\n", "", text)
    assert "paillier_randomness" not in without.split("[crypto]")[1].split("\n[")[0]
    path.write_text(without)
    assert load_party_toml(str(path)).paillier_randomness == "djn"  # the default


@pytest.mark.e2e
@pytest.mark.parametrize("randomness", ["classic", "djn", "subgroup"])
def test_the_key_owner_s_choice_reaches_the_wire(tmp_path, randomness):
    tdir = str(tmp_path / "t")
    os.makedirs(tdir)
    fed = LocalFederation(str(tmp_path / "w"), policies=OPEN_POLICY, key_bits=2048,
                          transcript_dir=tdir, paillier_randomness=randomness)
    con = Connection(fed, "ac")
    try:
        ids = list(range(30))
        con.register("ac", pd.DataFrame({"id": ids, "x": [float(i) for i in ids]}),
                     party="ac", key="id")
        con.register("emc", pd.DataFrame({"id": ids[10:], "y": [2.0] * 20}),
                     party="emc", key="id")
        rows = con.execute("SELECT COUNT(*), SUM(ac.x), SUM(emc.y) "
                           "FROM ac JOIN emc USING (id)").fetchall()
    finally:
        con.close()
    assert rows[0][0] == 20 and abs(rows[0][1] - sum(ids[10:])) < 1e-6
    assert abs(rows[0][2] - 40.0) < 1e-6
    views = {}
    for f in glob.glob(os.path.join(tdir, "*.pkl")):
        with open(f, "rb") as fh:
            views[os.path.basename(f).rsplit("-", 1)[1][:-4]] = pickle.load(fh)
    sent = _messages(views["helper"], "hashed_encrypted_rows")
    assert {m["from"] for m in sent} == {"ac", "emc"}
    for m in sent:
        assert ("h" in m["obj"]) == (randomness != "classic")  # a subgroup key's h too
        assert m["obj"].get("h_order_bits") == (448 if randomness == "subgroup" else None)
        if randomness != "classic":
            P.check_djn_h(int(m["obj"]["n"]), m["obj"]["h"])
        assert int(m["obj"]["n"]).bit_length() == 2048
    # what each owner got back is re-randomised: no ciphertext it sent comes back, not even
    # modulo n (c mod n is r^n mod n for the ciphertext's randomiser, whatever the plaintext)
    for owner in ("ac", "emc"):
        out = next(m["obj"] for m in sent if m["from"] == owner)
        back = _messages(views[owner], "masked_rows")
        assert len(back) == 1 and len(back[0]["obj"]) == 20
        n = int(out["n"])
        mine = {c for row in out["cts"] for c in row}
        got = {c for row in back[0]["obj"] for c in row}
        assert len(got) == 20 and not mine & got
        assert not {c % n for c in mine} & {c % n for c in got}


def _run(coro):
    loop = asyncio.new_event_loop()  # private: asyncio.run would unset MPyC's current loop
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _messages(view, label):
    return [m for m in view["messages"] if m["label"] == label]
