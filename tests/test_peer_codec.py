"""The codec for what peers send (engine/protocols/codec.py): plain data in, never code."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
import subprocess

import numpy as np
import pytest

from dialect.errors import ProtocolError
from engine.protocols import codec, runtime


@pytest.fixture(autouse=True)
def names():
    codec.set_party_names({0: "ac", 1: "emc", 2: "helper"})
    yield
    codec.set_party_names({})
    codec.set_refusal_hook(None)


def roundtrip(obj, protocol=None):
    return codec.loads(codec.PeerBytes.of(pickle.dumps(obj, protocol=protocol), 1))


# --- plain data round-trips --------------------------------------------------------------------

PLAIN = [
    None, True, False, 0, -1, 2**4096 + 3, 1.5, float("inf"), "text", b"\x00bytes", (), [],
    {"n": 3, "hashes": os.urandom(64), "cts": [2**2047 + 1, 5]},  # hashed_encrypted_rows
    {"hashes": b"h" * 64, "masked": b"m" * 32},  # hashed_masked_rows
    ("binding", 10), [("a", 1), ("b", None)], {1: [b"x", (2, 3.0)]},
]


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("obj", PLAIN, ids=range(len(PLAIN)))
def test_plain_values_round_trip(obj, protocol):
    out = roundtrip(obj, protocol)
    assert out == obj and type(out) is type(obj)


ARRAYS = [
    np.arange(7, dtype=np.int64),  # matched_positions
    np.array([0, 2**64 - 1, 2**63], dtype=np.uint64),  # share-conversion words
    np.arange(12, dtype=np.uint64).reshape(2, 3, 2),
    np.linspace(0, 1, 5),
    np.arange(4, dtype=">i8"),
    np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    np.arange(6).reshape(2, 3)[:, ::2],  # not contiguous
    np.zeros((0, 3), dtype=np.int64),
    np.array([True, False]),
    np.array([1, 2**100, 2**127 - 1], dtype=object),  # as MPyC pickles big-field arrays
    np.array([[1, 2], [3, 4]], dtype=object),
]


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("a", ARRAYS, ids=range(len(ARRAYS)))
def test_numeric_arrays_round_trip(a, protocol):
    out = roundtrip(a, protocol)
    assert type(out) is np.ndarray and out.dtype == a.dtype and out.shape == a.shape
    assert (out == a).all()
    out[...] = out  # a writable copy of its own, as numpy's own unpickling gives


def test_numpy_scalars_round_trip():
    for v in (np.int64(-3), np.uint64(2**64 - 1), np.float64(2.5), np.int8(7), np.bool_(True)):
        out = roundtrip(v)
        assert out == v and type(out) is type(v)
    assert roundtrip([np.int64(1), {"k": np.float32(0.5)}]) == [1, {"k": 0.5}]


def test_mpyc_field_arrays_as_mpyc_sends_them():
    """The numpy branches of input/output/_reshare pickle field values (object or int64)."""
    from mpyc import thresha

    for sf in (runtime.secfxp(), runtime.runtime_module.Runtime.SecInt(32)):
        field = sf.field
        x = np.array([v % field.order for v in range(-5, 5)], dtype=object)
        if field.order < 2**62:
            x = x.astype(np.int64)
        for share in thresha.np_random_split(field, x, 1, 3):
            out = codec.loads(pickle.dumps(share))
            assert out.dtype == share.dtype and (out == share).all()
        arr = field.array(x)
        out = codec.loads(pickle.dumps(arr.value))  # what output() marshals
        assert (field.array(out, check=False).value == arr.value).all()


def test_field_from_bytes_scalar_path():
    runtime.make_runtime(0, [runtime.Address("127.0.0.1", 0)])
    field = runtime.secfxp().field
    data = field.to_bytes([1, 2, field.order - 1])
    assert field.from_bytes(codec.PeerBytes.of(data, 2)) == [1, 2, field.order - 1]
    with pytest.raises(ProtocolError, match="party helper: 47 bytes is not a whole number"):
        field.from_bytes(codec.PeerBytes.of(data[:-1], 2))


# --- code and odd objects are refused ----------------------------------------------------------


class RunsCommand:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class RunsPopen:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.path)],))


class Evals:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({str(self.path)!r}, 'w')",))


@pytest.mark.parametrize("cls", [RunsCommand, RunsPopen, Evals])
def test_reduce_pickle_is_refused_and_runs_nothing(tmp_path, cls):
    marker = tmp_path / "pwned"
    crafted = pickle.dumps(cls(marker))
    seen = []
    codec.set_refusal_hook(lambda err, peer: seen.append((peer, err)))
    with pytest.raises(ProtocolError) as info:
        codec.loads(codec.PeerBytes.of(crafted, 1))
    assert not marker.exists()
    assert info.value.party == "emc"
    assert str(info.value).startswith("[emc] refused a message from party emc: global ")
    assert "is not allowed" in str(info.value)
    assert seen == [(1, info.value)]
    # nested in plain data, or in MPyC's runtime module pickle: refused the same way
    with pytest.raises(ProtocolError):
        codec.loads(pickle.dumps({"cts": [1, cls(marker)]}))
    runtime.make_runtime(0, [runtime.Address("127.0.0.1", 0)])
    with pytest.raises(ProtocolError):
        runtime.runtime_module.pickle.loads(codec.PeerBytes.of(crafted, 2))
    assert not marker.exists()


def test_mpyc_runtime_uses_the_codec():
    runtime.make_runtime(0, [runtime.Address("127.0.0.1", 0)])
    assert runtime.runtime_module.pickle.loads is codec.loads
    assert runtime.runtime_module.pickle.dumps is codec.dumps


@pytest.mark.parametrize("values", [[0], [1, -1, 2**63 - 1, -(2**63)], list(range(24))])
@pytest.mark.parametrize("shape", [None, (2, 1, -1)])
def test_share_arrays_of_small_ints_travel_as_int64(values, shape):
    a = np.array(values, dtype=object)
    if shape is not None:
        a = a.reshape(shape if a.size % 2 == 0 else (1, 1, -1))
    data = codec.dumps(a)
    assert data.startswith(codec.INT64_MAGIC)
    assert len(data) == len(codec.INT64_MAGIC) + 1 + 8 * a.ndim + 8 * a.size  # fixed width
    out = codec.loads(codec.PeerBytes.of(data, 1))
    assert out.dtype == object and out.shape == a.shape
    assert out.tolist() == a.tolist() and all(type(v) is int for v in out.flat)
    zero_d = codec.loads(codec.dumps(np.array(5, dtype=object)))
    assert zero_d.shape == () and zero_d.item() == 5
    assert codec.loads(codec.dumps(np.zeros((0, 3), dtype=object))).shape == (0, 3)


@pytest.mark.parametrize("obj", [np.array([2**63, 1], dtype=object),
                                 np.array([1, 1.5], dtype=object),
                                 np.array([True, 1], dtype=object),
                                 np.array([1, None], dtype=object),
                                 np.array([1, 2], dtype=np.int64), [1, 2], {"a": 1}])
def test_everything_else_is_pickled_as_before(obj):
    assert codec.dumps(obj) == pickle.dumps(obj)


_GOOD_INT64 = codec.dumps(np.arange(6, dtype=np.int64).astype(object).reshape(2, 3))
_BAD_INT64 = {
    "truncated values": _GOOD_INT64[:-1],
    "extra bytes": _GOOD_INT64 + b"\0",
    "no header": codec.INT64_MAGIC,
    "a truncated shape": _GOOD_INT64[:len(codec.INT64_MAGIC) + 1 + 4],
    "too many axes": codec.INT64_MAGIC + bytes((33,)) + b"\0" * 8 * 33,
    "a huge shape": codec.INT64_MAGIC + bytes((2,)) + struct.pack("<2Q", 2**40, 2**40),
    "an empty array of a huge shape": codec.INT64_MAGIC + bytes((3,))
    + struct.pack("<3Q", 0, 2**62, 2**63),
}


@pytest.mark.parametrize("what", list(_BAD_INT64))
def test_malformed_int64_arrays_are_refused_naming_the_sender(what):
    with pytest.raises(ProtocolError, match="party emc: .*int64 array"):
        codec.loads(codec.PeerBytes.of(_BAD_INT64[what], 1))


def _pickle(ops: bytes) -> bytes:
    return b"\x80\x04" + ops + b"."


def _global(module: str, name: str) -> bytes:
    m, n = module.encode(), name.encode()
    return b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93"


REFUSED = {
    "other numpy global": _pickle(_global("numpy", "load") + b"N\x85R"),
    "numpy testing": _pickle(_global("numpy.testing", "assert_") + b"N\x85R"),
    "mpyc field class": pickle.dumps(runtime.secfxp().field(3)),
    "object array of objects": pickle.dumps(np.array([1, "s"], dtype=object)),
    "string array": pickle.dumps(np.array(["a", "b"])),
    "structured dtype": pickle.dumps(np.zeros(2, dtype=[("a", "i8"), ("b", "f8")])),
    "datetime array": pickle.dumps(np.array(["2020-01-01"], dtype="M8[D]")),
    "set": pickle.dumps({1, 2}),
    "bytearray": pickle.dumps(bytearray(b"x")),
    "complex": pickle.dumps(1j),
    "ndarray called": _pickle(_global("numpy", "ndarray") + b"K\x05\x85\x85R"),
    "dtype state with object flags": pickle.dumps(np.zeros(2, dtype=np.uint64)).replace(
        b"K\x00t\x94b", b"K?t\x94b"),
    "garbage": b"\x80\x04\x95garbage",
    "empty": b"",
    "persistent id": _pickle(b"K\x01Q"),
    "build on an allowed global": _pickle(_global("numpy", "dtype") + b"}\x8c\x01a\x8c\x01bsb"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_non_plain_pickles_are_refused(name):
    with pytest.raises(ProtocolError, match=r"^\[ac\] refused a message from party ac: "):
        codec.loads(codec.PeerBytes.of(REFUSED[name], 0))


def test_self_reference_and_deep_nesting_are_refused():
    a: list = []
    a.append(a)
    with pytest.raises(ProtocolError, match="self-referencing"):
        codec.loads(pickle.dumps(a))
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ProtocolError, match="nested too deeply"):
        codec.loads(pickle.dumps(deep))
    shared: list = [1]
    for _ in range(50):
        shared = [shared, shared]  # 2**50 paths, 50 objects: each decoded once
    out = codec.loads(pickle.dumps([shared] * 3))
    assert out[2][1][0][1] is out[0][0][1][0]


def test_numpy_pickles_name_only_allowed_globals():
    """What numpy's own pickles name is exactly what the unpickler admits."""
    import io

    names = set()

    class Recording(codec._PlainUnpickler):
        def find_class(self, module, name):
            names.add((module, name))
            return super().find_class(module, name)

    for a in ARRAYS + [np.int64(1), np.float64(0.5)]:
        for protocol in (4, 5):
            Recording(io.BytesIO(pickle.dumps(a, protocol=protocol))).load()
    assert names <= set(codec.ALLOWED)
    assert ("numpy", "dtype") in names and ("numpy", "ndarray") in names


# --- framing and the buffer bound --------------------------------------------------------------


class FakeExchanger:
    def __init__(self):
        self.buffers = {}
        self.bytes = bytearray()


def frame(pc: int, payload: bytes) -> bytes:
    import struct

    return struct.pack("<qI", pc, len(payload)) + payload


def test_framer_tags_payloads_and_hands_them_over():
    loop = asyncio.new_event_loop()
    try:
        ex, framer = FakeExchanger(), codec.Framer(2, max_buffer=1000)
        waiting = ex.buffers[7] = loop.create_future()
        data = bytearray(frame(7, b"abc") + frame(8, b"defg") + frame(9, b"h")[:5])
        assert framer.feed(ex, data) is None
        assert waiting.result() == b"abc" and waiting.result().peer == 2
        assert ex.buffers == {8: b"defg"} and ex.buffers[8].peer == 2
        assert framer.buffered == 4 and len(data) == 5  # a partial message stays
        framer.taken(4)
        assert framer.buffered == 0
    finally:
        loop.close()


def test_framer_refuses_duplicates_and_too_much_buffered():
    ex, framer = FakeExchanger(), codec.Framer(1, max_buffer=100)
    assert framer.feed(ex, bytearray(frame(3, b"x" * 40))) is None
    err = framer.feed(ex, bytearray(frame(3, b"y")))
    assert isinstance(err, ProtocolError) and err.party == "emc"
    assert "second message for program counter 3" in err.message
    ex, framer = FakeExchanger(), codec.Framer(1, max_buffer=90)
    assert framer.feed(ex, bytearray(frame(1, b"x" * 40))) is None
    err = framer.feed(ex, bytearray(frame(2, b"x" * 40)))
    assert err.party == "emc" and "more than 90 bytes" in err.message
    framer.taken(40)  # MPyC used the first message: room again
    assert framer.feed(FakeExchanger(), bytearray(frame(2, b"x" * 40))) is None
    # an announced size over the limit is refused before its bytes arrive
    err = codec.Framer(2, max_buffer=100).feed(FakeExchanger(), bytearray(frame(1, b"")[:8]
                                                                          + b"\xff\xff\xff\xff"))
    assert err.party == "helper" and "4294967295 bytes" in err.message


def test_buffer_limit_default_and_environment(monkeypatch):
    from dialect.errors import ConfigError

    monkeypatch.delenv("MPCSQL_MAX_PEER_BUFFER", raising=False)
    assert codec.default_max_buffer() == 4 << 30
    monkeypatch.setenv("MPCSQL_MAX_PEER_BUFFER", "12345")
    assert codec.default_max_buffer() == 12345
    monkeypatch.setenv("MPCSQL_MAX_PEER_BUFFER", "lots")
    with pytest.raises(ConfigError, match="MPCSQL_MAX_PEER_BUFFER"):
        codec.default_max_buffer()


def test_shares_of_another_shape_are_refused_before_recombining():
    """A peer's share must have the receiver's own shape (output, reshare): else a ProtocolError
    naming the peer, not an IndexError inside MPyC."""
    from mpyc import thresha

    runtime.make_runtime(0, [runtime.Address("127.0.0.1", 0)])
    field = runtime.secfxp().field
    seen = []
    codec.set_refusal_hook(lambda err, peer: seen.append(peer))
    same = [(1, [5, 6]), (2, [7, 8])]
    assert thresha.recombine(field, same) == thresha.recombine.__wrapped__(field, same)
    with pytest.raises(ProtocolError, match=r"party emc: a share of shape \(3,\) where \(2,\)"):
        thresha.recombine(field, [(1, [5, 6]), (2, [1, 2, 3])])
    own, peer = np.array([5, 6], dtype=object), np.array([[1, 2]], dtype=object)
    with pytest.raises(ProtocolError, match=r"party helper: a share of shape \(1, 2\)"):
        thresha.np_recombine(field, [(3, peer), (1, own)])
    assert seen == [1, 2]
