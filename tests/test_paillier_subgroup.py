"""Subgroup Paillier keys (``paillier_randomness = "subgroup"``; docs/protocols.md).

Unit tests on 512-bit keys are labelled as such (small keys: unit tests only); the others use
real 2048-bit keys.  What is checked: the key's structure (p' | p - 1 and q' | q - 1 of the
stated size, h of order exactly p' q', an encryption of zero); encryptions by the owner and by
the public key alone decrypt exactly with the short exponents, and phe's own decryption agrees;
the homomorphisms; the owner's randomiser is h**a for a uniform in Z_{p'q'}; the helper's
re-randomisation changes every ciphertext (even modulo n) and keeps its plaintext, with the
helper's exponent as long as for any DJN key (it cannot check the order); the join's steps;
the pools; the setting.  The end-to-end wire checks run in tests/test_paillier_djn.py.
"""

from __future__ import annotations

import re
import secrets

import gmpy2
import pytest

from dialect.errors import ConfigError, ProtocolError
from engine import cli
from engine.deploy import config as deploy_config
from engine.deploy.config import load_party_toml
from engine.protocols import paillier as P
from engine.server.pools import PaillierPools
from tests.test_paillier_djn import FIELD, _roundtrip, _run, _wire


@pytest.fixture(scope="module")
def small():
    return P.generate_keypair(512, "subgroup")  # small key: unit test only


@pytest.fixture(scope="module")
def real():
    return P.generate_keypair(2048, "subgroup")


def _order(pub, priv):
    return int(priv.subgroup_orders[0]) * int(priv.subgroup_orders[1])


@pytest.mark.parametrize("bits", [512, 2048], ids=["512-bit-unit-test-key", "2048-bit"])
def test_key_structure(bits, small, real):
    pub, priv = small if bits == 512 else real
    n, h = int(pub.n), P.djn_h(pub)
    p, q = int(priv.p), int(priv.q)
    po, qo = (int(x) for x in priv.subgroup_orders)
    assert n.bit_length() == bits and p * q == n and p != q
    assert p.bit_length() == q.bit_length() == bits // 2
    assert (p - 1) % po == 0 and (q - 1) % qo == 0
    assert po.bit_length() == qo.bit_length() == P.subgroup_order_bits(bits)
    assert gmpy2.is_prime(po) and gmpy2.is_prime(qo) and po != qo
    assert gmpy2.gcd(n, (p - 1) * (q - 1)) == 1
    nsq = n * n
    # order exactly p' q': h**(p'q') = 1, neither h**p' nor h**q' is
    assert gmpy2.powmod(h, po * qo, nsq) == 1
    assert gmpy2.powmod(h, po, nsq) != 1 and gmpy2.powmod(h, qo, nsq) != 1
    assert P.check_djn_h(n, h) == h
    assert P.decrypt_many(priv, [h], workers=1) == [0]  # an n-th residue: Enc(0)
    assert priv.raw_decrypt(h) == 0


def test_order_bits_follow_the_security_level():
    assert P.subgroup_order_bits(2048) == 224 and P.subgroup_order_bits(3072) == 256
    assert P.subgroup_order_bits(1024) == 160 and P.subgroup_order_bits(4096) == 256
    assert P.subgroup_order_bits(512) == 80  # small key: unit test only
    assert "subgroup" in P.RANDOMNESS and P.DEFAULT_RANDOMNESS == "djn"


def test_decryption_of_edge_values_by_owner_and_public_key(real):
    pub, priv = real
    n = int(pub.n)
    ms = [0, 1, 2, n - 2, n - 1, 2**2046, 2**1024 + 1] + [secrets.randbelow(n) for _ in range(73)]
    ctx = P._PrivateCtx(priv)
    assert ctx.subgroup and ctx.ep.bit_length() == ctx.eq.bit_length() == 224
    for owner in (priv, None):
        cts = P.encrypt_many(pub, ms, private_key=owner, workers=2)  # >= 64: forked workers
        assert P.decrypt_many(priv, cts, workers=2) == ms
        assert [priv.raw_decrypt(c) for c in cts[:8]] == ms[:8]  # phe (exponent p - 1) agrees
        assert len(set(cts)) == len(cts)


def test_decryption_and_homomorphisms(small):
    pub, priv = small
    n = int(pub.n)
    nsq = n * n
    ms = [0, 1, 12345, n - 1] + [secrets.randbelow(n) for _ in range(20)]
    cts = P.encrypt_many(pub, ms, private_key=priv, workers=1)
    assert P.decrypt_many(priv, cts, workers=1) == ms
    sums = [c1 * c2 % nsq for c1, c2 in zip(cts, cts[1:], strict=False)]
    assert P.decrypt_many(priv, sums, workers=1) == [
        (a + b) % n for a, b in zip(ms, ms[1:], strict=False)]
    ks = [secrets.randbelow(2**64) for _ in ms]
    scaled = [pow(c, k, nsq) for c, k in zip(cts, ks, strict=True)]
    assert P.decrypt_many(priv, scaled, workers=1) == [k * m % n for k, m in zip(ks, ms,
                                                                                strict=True)]
    # a ciphertext whose randomness is outside <h> does not decrypt with the short exponents
    classic = (n * 5 + 1) * gmpy2.powmod(secrets.randbelow(n - 2) + 2, n, nsq) % nsq
    assert priv.raw_decrypt(int(classic)) == 5
    assert P.decrypt_many(priv, [int(classic)], workers=1) != [5]


def test_owner_randomiser_is_h_to_a_uniform_exponent_mod_the_order(small, monkeypatch):
    """a mod p' and a mod q' are drawn apart (uniform a in Z_{p'q'} by the CRT): the owner's
    randomiser is h**a with a = x mod p', a = y mod q'."""
    pub, priv = small
    n, h = int(pub.n), P.djn_h(pub)
    po, qo = (int(x) for x in priv.subgroup_orders)
    owner = P._context(pub, priv)
    assert [t.bits for t in owner.djn_pq] == [po.bit_length(), qo.bit_length()]
    x, y = po - 1 - secrets.randbelow(po // 2), secrets.randbelow(qo)
    monkeypatch.setattr(P.secrets, "randbelow", lambda m: x if m == po else y)
    a = y + qo * ((x - y) * pow(qo, -1, po) % po)
    assert owner.randomizer() == gmpy2.powmod(h, a, n * n)


@pytest.mark.parametrize("bound", [True, False], ids=["order-bound", "no-bound"])
def test_helper_rerandomises_with_the_published_order_bound(small, real, bound):
    """With the key's published bound ord(h) < 2**b the helper's a' has b + SIGMA bits (a' mod
    ord(h) is then within 2**-SIGMA of uniform); without it (a DJN view of the same key),
    k + SIGMA bits as for any DJN key."""
    for pub, priv in (small, real):
        k = int(pub.n).bit_length()
        assert P.djn_order_bits(pub) == 2 * P.subgroup_order_bits(k)
        assert P.djn_order_bits(pub) >= _order(pub, priv).bit_length()
    assert P.djn_order_bits(real[0]) == 448
    assert P._PublicCtx(_wire(real[0])).djn.bits == 448 + P.SIGMA == 488
    pub, priv = small  # small key: unit test only
    n = int(pub.n)
    nsq = n * n
    helper = P._PublicCtx(_wire(pub) if bound else P.public_key(n, P.djn_h(pub)))
    assert helper.djn.bits == (160 if bound else 512) + P.SIGMA
    ms = [secrets.randbelow(n) for _ in range(30)]
    cts = P.encrypt_many(pub, ms, private_key=priv, workers=1)
    again = [c * helper.randomizer() % nsq for c in cts]
    assert not {c % n for c in cts} & {c % n for c in again}
    assert P.decrypt_many(priv, again, workers=1) == ms
    # every randomiser, the owner's and the helper's, lies in <h> (order p' q')
    alpha = _order(pub, priv)
    for ctx in (helper, P._context(pub, priv)):
        assert all(gmpy2.powmod(ctx.randomizer(), alpha, nsq) == 1 for _ in range(5))


@pytest.mark.parametrize("bad", [159, 512, 10**4, -1, True, "448", 448.0, None])
def test_an_invalid_order_bound_is_refused(small, bad):
    """Shorter than an honest key's (it would shorten the helper's re-randomisers), not below
    k, not an int, or without h: a ProtocolError, wherever a peer's key arrives."""
    pub, _ = small  # small key: unit test only
    n, h = int(pub.n), P.djn_h(pub)
    with pytest.raises(ProtocolError, match="h_order_bits"):
        P.public_key(n, h if bad is not None else None, bad if bad is not None else 160)
    pools = PaillierPools("helper", 10, 512)
    with pytest.raises(ProtocolError):
        pools.set_peer_key("ac", n, h if bad is not None else None,
                           bad if bad is not None else 160)
    assert pools.pools == {}
    pools.set_peer_key("ac", n, h, 160)  # the honest bound is kept, and a change replaces it
    pools.set_peer_key("ac", n, h)
    assert P.djn_order_bits(pools.keys[n][0]) is None


def test_join_steps_with_real_2048_bit_keys(real):
    pub, priv = real
    d = 15
    rows = [[-(2**63), 2**63 - 1, 0, -1, 1] + [secrets.randbelow(2**64) - 2**63
                                               for _ in range(10)]]
    rows += [[secrets.randbelow(2**63) - 2**62 for _ in range(d)] for _ in range(79)]
    cts, masked, got = _roundtrip(pub, priv, rows, d, workers=2)  # >= 64: forked workers
    assert got == [[v % FIELD for v in r] for r in rows]
    n = int(pub.n)
    assert not {c % n for row in cts for c in row} & {c % n for row in masked for c in row}


def test_a_private_key_whose_orders_do_not_divide_is_refused(small):
    pub, priv = small
    wrong = P.paillier.PaillierPrivateKey(pub, priv.p, priv.q)
    wrong.subgroup_orders = (priv.subgroup_orders[0] + 2, priv.subgroup_orders[1])
    with pytest.raises(ValueError, match="orders"):
        P._PrivateCtx(wrong)


def test_pools_fill_subgroup_values(small):
    pub, priv = small
    n = int(pub.n)
    alpha = _order(pub, priv)
    helper = PaillierPools("helper", 4, 512, batch=4, workers=1)
    helper.set_peer_key("ac", n, P.djn_h(pub))
    _run(helper._fill(n, 4))
    assert P.decrypt_many(priv, helper.pools[n], workers=1) == [0] * 4
    owner = PaillierPools("data", 4, 512, batch=4, workers=1, randomness="subgroup")
    own_pub, own_priv = _run(owner.own_keypair("ac"))  # small key: unit test only
    assert own_priv.subgroup_orders and P.djn_h(own_pub) is not None
    _run(owner._fill(int(own_pub.n), 4))
    values = owner.pools[int(own_pub.n)]
    assert P.decrypt_many(own_priv, values, workers=1) == [0] * 4
    own_alpha = _order(own_pub, own_priv)
    assert all(gmpy2.powmod(v, own_alpha, int(own_pub.n) ** 2) == 1 for v in values)
    # pooled values go into the join like fresh ones
    rows = [[5, -7, 9], [1, 2, 3]]
    pool = P.precompute_randomizers(_wire(pub), 2, workers=1)
    _, _, got = _roundtrip(pub, priv, rows, 3, randomizers=pool)
    assert got == [[v % FIELD for v in r] for r in rows] and pool == []
    assert gmpy2.powmod(P.precompute_randomizers(pub, 1, private_key=priv, workers=1)[0],
                        alpha, n * n) == 1


def test_setting_is_parsed(tmp_path):
    deploy_config.check_randomness("subgroup")
    assert "subgroup" in deploy_config.PAILLIER_RANDOMNESS
    with pytest.raises(ConfigError, match="paillier_randomness"):
        deploy_config.check_randomness("Subgroup")
    assert cli.main(["init", "--party", "ac", "--out", str(tmp_path)]) == 0
    path = tmp_path / "party.toml"
    (tmp_path / "certs").mkdir(exist_ok=True)
    for name in ("ca", "helper", "ac", "emc"):  # only their presence is checked on loading
        (tmp_path / "certs" / f"{name}.crt").touch()
    text = path.read_text()
    assert "subgroup" in text  # the template names the choice
    path.write_text(re.sub(r'(?m)^paillier_randomness = "djn"', 'paillier_randomness = "subgroup"',
                           text))
    assert load_party_toml(str(path)).paillier_randomness == "subgroup"
