"""Decoding what the other parties send: plain data only, never code.

MPyC 0.11 moves Python objects between parties with :mod:`pickle`: ``Runtime.transfer`` (the
engine's own messages: :meth:`engine.session.channels.Session.send`, the query agreement, the
share conversion of :mod:`engine.protocols.shares`) and the numpy branches of ``input``,
``output`` and ``_reshare`` (``marshal = pickle.dumps`` / ``unmarshal = pickle.loads``).  A
plain ``pickle.loads`` runs whatever a crafted ``__reduce__`` names, so an authenticated but
misbehaving peer could run code in the other parties' session processes.

:func:`install` (called by :func:`engine.protocols.runtime.make_runtime`, so for every MPyC
runtime mpcsql builds: in the forked session process of each query) replaces the ``pickle``
module MPyC's runtime module uses by one whose ``loads`` is :func:`loads`:

* a :class:`pickle.Unpickler` whose ``find_class`` admits exactly the globals numpy's own
  array and scalar pickles name (checked against real runs and by a test; see
  :data:`ALLOWED`): ``numpy.dtype``, ``numpy.ndarray`` and numpy's ``_reconstruct``,
  ``scalar`` and (pickle protocol 5) ``_frombuffer``, under both the numpy 2 (``numpy._core``)
  and numpy 1 (``numpy.core``) names.  They resolve to checked stand-ins, not to numpy's
  functions: numpy's ``__setstate__`` never sees peer-controlled state (a dtype's state could
  otherwise set object flags on raw bytes); arrays are built at the end from a validated
  dtype, shape and data of exactly the right length.  Any other global (``os.system``,
  ``builtins.eval``, ``subprocess.Popen``, MPyC's own field classes, ...) is refused before
  it is even imported, as are persistent ids, ``BUILD`` on an allowed global, self-referencing
  and deeply nested structures;
* so that the decoded object can only hold (:func:`check_plain`): ``None``, ``bool``, ``int``,
  ``float``, ``str``, ``bytes``, numeric numpy scalars and arrays (kinds b, i, u, f; no
  structured dtypes), object arrays whose every element is a Python ``int`` (that is how MPyC
  pickles its field-element arrays when the modulus exceeds 64 bits, e.g. the 128-bit field of
  SecFxp(64, 32)), and lists, tuples and dicts of those.

What the parties send is still made by ``pickle.dumps``, with one exception (:func:`dumps`):
an object array of Python ints that all fit in 64 signed bits (MPyC's share arrays in the
62-bit fields of the solver and the aggregates) travels as fixed-width little-endian int64
behind :data:`INT64_MAGIC`, which no pickle starts with; :func:`loads` decodes that form
without pickle, checks its shape (at most 32 axes of at most 2^40) and that its length matches
it exactly, and returns the same object array of ints.

The engine's own join messages (``hmac_key``/``join_key`` bytes, ``hashed_encrypted_rows``
dicts of an int, bytes and a list of ints, ``hashed_masked_rows``, ``matched_positions`` int64
arrays, ``masked_rows``, sizes as int or None, the agreement's (str, int) pairs) keep going
through ``mpc.transfer``: every one of them is plain data in the sense above, so the restricted
unpickler decodes them and each protocol still checks their shape and types itself.

MPyC's other receive path, ``field.from_bytes`` (scalar shares), only ever makes integers; it
is wrapped to refuse a payload whose length is not a whole number of field elements.  Before
shares are recombined (``output``, ``_reshare``), a peer's share whose shape differs from the
party's own is refused, naming the peer.

Every payload a peer sends is framed by :class:`Framer` (used by
:func:`engine.session.channels.patch_connection_loss` in place of MPyC's
``MessageExchanger.data_received``), which tags it with the sending party
(:class:`PeerBytes`), refuses a second message for the same program counter, and caps what a
session holds from one peer (received but not yet used, plus a partly received message) at
``max_buffer`` bytes (``Job.max_peer_buffer``; by default :func:`default_max_buffer`: the
environment's ``MPCSQL_MAX_PEER_BUFFER`` or 4 GiB).

A refused message raises :class:`dialect.errors.ProtocolError` naming the sending party, and
the refusal is reported to the session (:func:`set_refusal_hook`) so that the query fails with
that error even though MPyC stops its event loop when one of its coroutines raises.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from dialect.errors import ProtocolError

#: Default cap on what a session buffers from one peer (bytes).
DEFAULT_MAX_BUFFER = 4 << 30

_NUMERIC_KINDS = frozenset("biuf")

#: Process-wide: party names by MPyC index (set by the session) and the refusal hook.
_names: dict[int, str] = {}
_hook: list[Callable[[ProtocolError, int | None], None]] = []


def default_max_buffer() -> int:
    """``MPCSQL_MAX_PEER_BUFFER`` (bytes) if set, else 4 GiB."""
    raw = os.environ.get("MPCSQL_MAX_PEER_BUFFER", "").strip()
    if not raw:
        return DEFAULT_MAX_BUFFER
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        from dialect.errors import ConfigError

        raise ConfigError(f"MPCSQL_MAX_PEER_BUFFER must be a positive number of bytes, got "
                          f"{raw!r}")
    return value


def set_party_names(names: dict[int, str]) -> None:
    """Name the parties (MPyC index -> name) in refusals."""
    _names.clear()
    _names.update(names)


def set_refusal_hook(hook: Callable[[ProtocolError, int | None], None] | None) -> None:
    """Call ``hook(error, peer_pid)`` on every refused message (None: no hook)."""
    _hook.clear()
    if hook is not None:
        _hook.append(hook)


def party_name(peer: int | None) -> str | None:
    if peer is None:
        return None
    return _names.get(peer, f"number {peer}")


def refuse(peer: int | None, what: str, *, plain: bool = True) -> ProtocolError:
    """The error for a refused message from ``peer`` (reported to the hook, then returned)."""
    name = party_name(peer)
    who = f"party {name}" if name else "a peer"
    why = ("; peers may send only plain data (numbers, bytes, strings, numeric arrays)"
           if plain else "")
    err = ProtocolError(f"refused a message from {who}: {what}{why}", party=name)
    for hook in _hook:
        hook(err, peer)
    return err


class PeerBytes(bytes):
    """A payload received from party number ``peer``."""

    peer: int | None = None

    @classmethod
    def of(cls, data, peer: int | None) -> PeerBytes:
        out = cls(data)
        out.peer = peer
        return out


# --- restricted unpickling -------------------------------------------------------------------
#
# numpy's own reconstructors are never handed peer-controlled state: ``dtype``,
# ``_reconstruct``, ``_frombuffer`` and ``scalar`` resolve to the checked stand-ins below, and
# the arrays are built at the end (:func:`_finish`) from validated shapes, dtypes and bytes.

_MAX_DIMS = 32
_MAX_DEPTH = 64


def _bad(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(what)


class _Dtype:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` and its ``__setstate__``."""

    __slots__ = ("dtype",)

    def __init__(self, spec, align=False, copy=True):
        if type(spec) is not str or type(align) is not bool or type(copy) is not bool:
            raise _bad("a dtype other than a plain type string")
        try:
            dt = np.dtype(spec)
        except TypeError:
            raise _bad(f"array type {spec[:40]!r}") from None
        if dt.fields is not None or dt.subdtype is not None \
                or dt.kind not in _NUMERIC_KINDS | {"O"}:
            raise _bad(f"array type {spec[:40]!r}")
        self.dtype = dt

    def __setstate__(self, state):
        canonical = self.dtype.__reduce__()[2]
        if type(state) is not tuple or len(state) != len(canonical) \
                or state[0] != canonical[0] or state[2:] != canonical[2:] \
                or state[1] not in ("<", ">", "|", "="):
            raise _bad("a dtype with unexpected state")
        if self.dtype.byteorder != "|" and state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _dtype_of(d) -> np.dtype:
    if type(d) is not _Dtype:
        raise _bad("an array without a plain dtype")
    return d.dtype


def _shape_of(shape) -> tuple[int, ...]:
    if type(shape) is not tuple or len(shape) > _MAX_DIMS \
            or not all(type(n) is int and n >= 0 for n in shape):
        raise _bad("an array with a malformed shape")
    return shape


def _build(dt: np.dtype, shape: tuple[int, ...], data, fortran: bool) -> np.ndarray:
    n = 1
    for k in shape:
        n *= k
    order = "F" if fortran else "C"
    if dt.kind == "O":
        if type(data) is not list or len(data) != n or not set(map(type, data)) <= {int}:
            raise _bad("an object array with elements other than integers")
        out = np.empty(n, dtype=object)
        out[:] = data
        return out.reshape(shape, order=order)
    if type(data) not in (bytes, bytearray) or len(data) != n * dt.itemsize:
        raise _bad("an array whose data does not match its shape")
    return np.frombuffer(data, dtype=dt).reshape(shape, order=order).copy(order="K")


class _Array:
    """Stand-in for numpy's ``_reconstruct(ndarray, (0,), b'b')`` and ndarray ``__setstate__``."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None or type(state) is not tuple or len(state) != 5 \
                or state[0] != 1 or type(state[3]) is not bool:
            raise _bad("an array with unexpected state")
        self.array = _build(_dtype_of(state[2]), _shape_of(state[1]), state[4], state[3])


class _Global:
    """What an allowed global resolves to: callable, but without state a pickle could change
    (no ``__dict__``; ``BUILD`` on it is refused), and not a type (no ``NEWOBJ``)."""

    __slots__ = ("_f", "_name")

    def __init__(self, f, name: str):
        object.__setattr__(self, "_f", f)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args):
        if self._f is None:
            raise _bad(f"{self._name} called")
        return self._f(*args)

    def __setattr__(self, name, value):
        raise _bad(f"state for {self._name}")

    def __setstate__(self, state):
        raise _bad(f"state for {self._name}")


_NDARRAY = _Global(None, "numpy.ndarray")  # only ever an argument of _reconstruct


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY or shape != (0,) or dtype != b"b":
        raise _bad("array reconstruction other than numpy's own")
    return _Array()


def _frombuffer(buf, dtype, shape, order):
    """numpy's pickle protocol 5 reconstructor (in-band buffers only)."""
    if order not in ("C", "F"):
        raise _bad("an array with a malformed memory order")
    dt = _dtype_of(dtype)
    if dt.kind == "O":
        raise _bad("an object array from a raw buffer")
    return _build(dt, _shape_of(shape), buf, order == "F")


def _scalar(dtype, data=None):
    """numpy's ``scalar`` for numeric dtypes (object scalars are never needed)."""
    dt = _dtype_of(dtype)
    if dt.kind not in _NUMERIC_KINDS or type(data) is not bytes or len(data) != dt.itemsize:
        raise _bad("a numpy scalar other than a plain number")
    return np.frombuffer(data, dtype=dt)[0]


_CORE = ("numpy._core", "numpy.core")  # numpy 2, numpy 1

#: (module, name) -> what it resolves to: all that peers' pickles may name.
ALLOWED: dict[tuple[str, str], _Global] = {
    **{(f"{c}.multiarray", "_reconstruct"): _Global(_reconstruct, "_reconstruct") for c in _CORE},
    **{(f"{c}.multiarray", "scalar"): _Global(_scalar, "scalar") for c in _CORE},
    **{(f"{c}.numeric", "_frombuffer"): _Global(_frombuffer, "_frombuffer") for c in _CORE},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global(_Dtype, "numpy.dtype"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _bad(f"global {str(module)[:80]}.{str(name)[:80]} is not allowed") from None

    def persistent_load(self, pid):
        raise _bad("persistent ids are not allowed")


def _finish(obj: Any) -> Any:
    """Replace the stand-ins by real arrays and check that all is plain data."""
    done: dict[int, Any] = {}
    busy: set[int] = set()
    keep: list[Any] = []  # keeps ids unique while walking

    def walk(x: Any, depth: int) -> Any:
        t = type(x)
        if x is None or t in (bool, int, float, str, bytes):
            return x
        if t is np.ndarray:
            check_plain(x)
            return x
        if isinstance(x, np.generic):
            check_plain(x)
            return x
        if t is _Array:
            if x.array is None:
                raise _bad("an array without data")
            return x.array
        if t not in (list, tuple, dict):
            raise _bad(f"an object of type {t.__name__}")
        key = id(x)
        if key in done:
            return done[key]
        if key in busy:
            raise _bad("a self-referencing structure")
        if depth >= _MAX_DEPTH:
            raise _bad("a structure nested too deeply")
        busy.add(key)
        keep.append(x)
        if t is list:
            out: Any = [walk(v, depth + 1) for v in x]
        elif t is tuple:
            out = tuple(walk(v, depth + 1) for v in x)
        else:
            out = {walk(k, depth + 1): walk(v, depth + 1) for k, v in x.items()}
        busy.discard(key)
        done[key] = out
        return out

    return walk(obj, 0)


def check_plain(obj: Any) -> None:
    """Raise ``ValueError`` unless ``obj`` is plain data (see the module docstring)."""
    todo, seen = [obj], set()
    while todo:
        x = todo.pop()
        t = type(x)
        if x is None or t in (bool, int, float, str, bytes):
            continue
        if t in (list, tuple, dict):
            if id(x) in seen:
                continue
            seen.add(id(x))
            todo.extend(x.items() if t is dict else x)
        elif t is np.ndarray:
            dt = x.dtype
            if dt.fields is not None or dt.subdtype is not None:
                raise ValueError("a structured numpy array")
            if dt.kind == "O":
                if not all(type(v) is int for v in x.flat):
                    raise ValueError("an object array with elements other than integers")
            elif dt.kind not in _NUMERIC_KINDS:
                raise ValueError(f"a numpy array of type {dt}")
        elif isinstance(x, np.generic) and type(x).__module__ == "numpy" \
                and x.dtype.kind in _NUMERIC_KINDS:
            continue
        else:
            raise ValueError(f"an object of type {t.__module__}.{t.__qualname__}")


# --- object arrays of small integers: fixed-width int64 instead of a pickle ---------------------
#
# MPyC sends every opened or reshared share array with pickle.dumps: an object array of Python
# ints, pickled one int at a time and, here, unpickled and checked one at a time (~15 % of a
# LASSO solve's CPU went there; most of its messages are shares in a 62-bit field). dumps
# sends such an array, when every element is a Python int in the int64 range, as
# INT64_MAGIC, ndim (1 byte), the shape (8 bytes per axis) and the values (8 bytes each,
# little-endian); loads turns it back into the same object array of ints. No pickle starts
# with these bytes (a pickle starts with an opcode, 0x01 is none), the length must match the
# shape exactly, and the result can only hold ints: nothing else can be decoded from it.

INT64_MAGIC = b"\x01I64"
_MAX_NDIM = 32
_MAX_AXIS = 1 << 40  # no share array is near this; an empty array may not claim more


def dumps(obj: Any, *args, **kwargs) -> bytes:
    """``pickle.dumps``, except for an object array of int64-range Python ints (see above)."""
    if type(obj) is np.ndarray and obj.dtype == object and obj.ndim <= _MAX_NDIM \
            and all(type(v) is int for v in obj.flat):
        try:
            values = obj.astype("<i8")
        except OverflowError:
            pass
        else:
            return b"".join((INT64_MAGIC, bytes((obj.ndim,)),
                             struct.pack(f"<{obj.ndim}Q", *obj.shape), values.tobytes()))
    return pickle.dumps(obj, *args, **kwargs)


def _int64_array(data) -> np.ndarray:
    """The object array of ints :func:`dumps` encoded in ``data``, or ValueError."""
    view = memoryview(data)
    head = len(INT64_MAGIC) + 1
    if len(view) < head or view[head - 1] > _MAX_NDIM:
        raise ValueError("an int64 array with a bad header")
    ndim = view[head - 1]
    if len(view) < head + 8 * ndim:
        raise ValueError("an int64 array with a bad header")
    shape = struct.unpack_from(f"<{ndim}Q", view, head)
    if any(a > _MAX_AXIS for a in shape):
        raise ValueError(f"an int64 array of shape {shape}")
    start = head + 8 * ndim
    if len(view) - start != 8 * math.prod(shape):
        raise ValueError(f"an int64 array of shape {shape} in {len(view) - start} bytes")
    values = np.frombuffer(view, dtype="<i8", offset=start)
    return values.astype(object).reshape(shape)


def loads(data, peer: int | None = None) -> Any:
    """Decode a peer's pickle into plain data, or raise :class:`ProtocolError` naming it."""
    if peer is None:
        peer = getattr(data, "peer", None)
    if bytes(data[:len(INT64_MAGIC)]) == INT64_MAGIC:
        try:
            return _int64_array(data)
        except ValueError as e:
            raise refuse(peer, str(e)) from None
    try:
        obj = _finish(_PlainUnpickler(io.BytesIO(data)).load())
    except (pickle.UnpicklingError, ValueError) as e:
        raise refuse(peer, str(e)) from None
    except Exception as e:  # noqa: BLE001 - any failure to decode is the sender's
        raise refuse(peer, f"undecodable ({type(e).__name__})") from None
    return obj


#: Stand-in for the ``pickle`` module inside ``mpyc.runtime``: dumps as pickle does (share
#: arrays of small ints as int64), loads restricted.
safe_pickle = types.SimpleNamespace(dumps=dumps, loads=loads,
                                    HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
                                    DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL,
                                    UnpicklingError=pickle.UnpicklingError,
                                    PicklingError=pickle.PicklingError)


def _checked_from_bytes(orig):
    def from_bytes(cls, data):
        r = cls.byte_length
        if len(data) % r:
            raise refuse(getattr(data, "peer", None),
                         f"{len(data)} bytes is not a whole number of {r}-byte field elements")
        return orig.__func__(cls, data)

    from_bytes.__wrapped__ = orig  # type: ignore[attr-defined]
    return classmethod(from_bytes)


def _checked_recombine(orig, runtime_module):
    """``thresha.(np_)recombine`` refusing a peer's share whose shape is not the party's own.

    A decoded share is plain data, but one of the wrong length (a crafted payload that happens
    to be a whole number of field elements, an array of another shape) would otherwise fail
    deep inside MPyC as an IndexError or broadcast error that names no one.
    """
    def recombine(field, points, *args, **kwargs):
        own = runtime_module.mpc.pid + 1
        shapes = {x: np.shape(s) if isinstance(s, np.ndarray) else (len(s),) for x, s in points}
        want = shapes.get(own, next(iter(shapes.values())))
        for x, shape in shapes.items():
            if shape != want:
                raise refuse(x - 1, f"a share of shape {shape} where {want} was expected",
                             plain=False)
        return orig(field, points, *args, **kwargs)

    recombine.__wrapped__ = orig  # type: ignore[attr-defined]
    return recombine


def install(runtime_module, finfields_module) -> None:
    """Make MPyC's runtime decode peers' pickles with :func:`loads` and check the shape of
    peers' shares before recombining them (idempotent)."""
    runtime_module.pickle = safe_pickle
    base = finfields_module.FiniteFieldElement
    current = base.__dict__["from_bytes"]
    if not hasattr(current.__func__, "__wrapped__"):
        base.from_bytes = _checked_from_bytes(current)
    thresha = runtime_module.thresha
    for name in ("recombine", "np_recombine"):
        fn = getattr(thresha, name)
        if not hasattr(fn, "__wrapped__"):
            setattr(thresha, name, _checked_recombine(fn, runtime_module))


# --- framing of peers' messages ----------------------------------------------------------------

_HEADER = 12  # MPyC: program counter (8 bytes, signed) and payload size (4 bytes, unsigned)


class Framer:
    """MPyC's message framing for one peer connection, bounded.

    ``feed(ex, data)`` does what ``MessageExchanger.data_received`` does after the connection
    handshake (the peer's pid and PRSS keys): it splits ``ex.bytes`` into (pc, payload)
    messages and hands each to the waiting future or keeps it in ``ex.buffers``.  It returns
    None, or the :class:`ProtocolError` for a message it refused (the caller drops the
    connection).  ``taken(n)`` tells it that ``n`` buffered bytes were used.
    """

    def __init__(self, peer: int, max_buffer: int):
        self.peer = peer
        self.max_buffer = max_buffer
        self.buffered = 0  # payload bytes kept in ex.buffers, not yet received by MPyC

    def feed(self, ex, data: bytearray) -> ProtocolError | None:
        while len(data) >= _HEADER:
            pc, size = struct.unpack_from("<qI", data)
            if self.buffered + _HEADER + size > self.max_buffer:
                return refuse(self.peer, f"a message of {size} bytes would make this session "
                                         f"hold more than {self.max_buffer} bytes from it")
            if len(data) < _HEADER + size:
                break
            with memoryview(data) as view, view[_HEADER:_HEADER + size] as part:
                payload = PeerBytes.of(part, self.peer)
            del data[:_HEADER + size]
            waiting = ex.buffers.get(pc)
            if waiting is None:
                ex.buffers[pc] = payload
                self.buffered += size
            elif isinstance(waiting, bytes):
                return refuse(self.peer, f"a second message for program counter {pc}")
            else:
                del ex.buffers[pc]
                if not waiting.done():
                    waiting.set_result(payload)
        if self.buffered + len(data) > self.max_buffer:
            return refuse(self.peer, f"more than {self.max_buffer} bytes buffered")
        return None

    def taken(self, n: int) -> None:
        self.buffered = max(0, self.buffered - n)
