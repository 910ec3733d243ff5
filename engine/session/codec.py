"""Decoding what the other parties send: plain data only, never code.

MPyC 0.11 moves Python objects between parties with :mod:`pickle`: ``Runtime.transfer`` (the
engine's own messages: :meth:`engine.session.channels.Session.send`, the query agreement, the
share conversion of :mod:`engine.protocols.shares`) and the numpy branches of ``input``,
``output`` and ``_reshare`` (``marshal = pickle.dumps`` / ``unmarshal = pickle.loads``).  A
plain ``pickle.loads`` runs whatever a crafted ``__reduce__`` names, so an authenticated but
misbehaving peer could run code in the other parties' session processes.

:func:`install` (called by :func:`engine.protocols.runtime.make_runtime`, so in every session
process and in nothing else) replaces the ``pickle`` module MPyC's runtime module uses by one
whose ``loads`` is :func:`loads`:

* a :class:`pickle.Unpickler` whose ``find_class`` admits exactly the reconstructors numpy's
  own array pickles use (checked against real runs; see :data:`ALLOWED`): numpy's
  ``_reconstruct`` (only for a plain ``ndarray`` of shape ``(0,)``, as numpy writes it),
  ``ndarray``, ``dtype`` (only from a dtype string of a plain numeric or object kind) and
  ``scalar`` — under both the numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names.
  Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, MPyC's own field
  classes, ...) is refused before it is even imported;
* then a check of the decoded object (:func:`check_plain`): only ``None``, ``bool``, ``int``,
  ``float``, ``str``, ``bytes``, numeric numpy scalars and arrays (kinds b, i, u, f; no
  structured dtypes), object arrays whose every element is a Python ``int`` (that is how MPyC
  pickles its field-element arrays when the modulus exceeds 64 bits, e.g. the 128-bit field of
  SecFxp(64, 32)), and lists, tuples and dicts of those.

The engine's own join messages (``hmac_key``/``join_key`` bytes, ``hashed_encrypted_rows``
dicts of an int, bytes and a list of ints, ``hashed_masked_rows``, ``matched_positions`` int64
arrays, ``masked_rows``, sizes as int or None, the agreement's (str, int) pairs) keep going
through ``mpc.transfer``: every one of them is plain data in the sense above, so the restricted
unpickler decodes them and each protocol still checks their shape and types itself.

MPyC's other receive path, ``field.from_bytes`` (scalar shares), only ever makes integers; it
is wrapped to refuse a payload whose length is not a whole number of field elements.

Every payload a peer sends is framed by :class:`Framer` (used by
:func:`engine.session.channels.patch_connection_loss` in place of MPyC's
``MessageExchanger.data_received``), which tags it with the sending party
(:class:`PeerBytes`), refuses a second message for the same program counter, and caps what a
session holds from one peer (received but not yet used, plus a partly received message) at
``max_buffer`` bytes (:func:`default_max_buffer`: ``MPCSQL_MAX_PEER_BUFFER`` or 4 GiB).

A refused message raises :class:`dialect.errors.ProtocolError` naming the sending party, and
the refusal is reported to the session (:func:`set_refusal_hook`) so that the query fails with
that error even though MPyC stops its event loop when one of its coroutines raises.
"""

from __future__ import annotations

import io
import os
import pickle
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


def refuse(peer: int | None, what: str) -> ProtocolError:
    """The error for a refused message from ``peer`` (reported to the hook, then returned)."""
    name = party_name(peer)
    who = f"party {name}" if name else "a peer"
    err = ProtocolError(f"refused a message from {who}: {what}; peers may send only plain "
                        f"data (numbers, bytes, strings, numeric arrays)", party=name)
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

def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray
    return multiarray


_ma = _numpy_multiarray()


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct``, for the empty plain ndarray numpy's pickles start from."""
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError("array reconstruction other than numpy's own")
    return _ma._reconstruct(np.ndarray, (0,), dtype)


def _dtype(spec, align=False, copy=True):
    """``numpy.dtype`` from a dtype string of a plain numeric or object kind only."""
    if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise pickle.UnpicklingError("dtype other than a plain type string")
    dt = np.dtype(spec)
    if dt.fields is not None or dt.subdtype is not None or dt.kind not in _NUMERIC_KINDS | {"O"}:
        raise pickle.UnpicklingError(f"array type {spec!r}")
    return np.dtype(spec, align, copy)


def _scalar(dtype, data=None):
    """numpy's ``scalar`` for numeric dtypes (object scalars are never needed)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS \
            or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar other than a plain number")
    return _ma.scalar(dtype, data)


_MODULES = ("numpy._core.multiarray", "numpy.core.multiarray")

#: (module, name) -> what it resolves to: all that peers' pickles may name.
ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _reconstruct for m in _MODULES},
    **{(m, "scalar"): _scalar for m in _MODULES},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def check_plain(obj: Any) -> None:
    """Raise ``ValueError`` unless ``obj`` is plain data (see the module docstring)."""
    todo = [obj]
    while todo:
        x = todo.pop()
        t = type(x)
        if x is None or t in (bool, int, float, str, bytes):
            continue
        if t in (list, tuple):
            todo.extend(x)
        elif t is dict:
            todo.extend(x.keys())
            todo.extend(x.values())
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


def loads(data, peer: int | None = None) -> Any:
    """Decode a peer's pickle into plain data, or raise :class:`ProtocolError` naming it."""
    if peer is None:
        peer = getattr(data, "peer", None)
    try:
        obj = _PlainUnpickler(io.BytesIO(data)).load()
        check_plain(obj)
    except (pickle.UnpicklingError, ValueError) as e:
        raise refuse(peer, str(e)) from None
    except Exception as e:  # noqa: BLE001 - any failure to decode is the sender's
        raise refuse(peer, f"undecodable ({type(e).__name__})") from None
    return obj


#: Stand-in for the ``pickle`` module inside ``mpyc.runtime``: dumps as usual, loads restricted.
safe_pickle = types.SimpleNamespace(dumps=pickle.dumps, loads=loads,
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


def install(runtime_module, finfields_module) -> None:
    """Make MPyC's runtime decode peers' pickles with :func:`loads` (idempotent)."""
    runtime_module.pickle = safe_pickle
    base = finfields_module.FiniteFieldElement
    current = base.__dict__["from_bytes"]
    if not hasattr(current.__func__, "__wrapped__"):
        base.from_bytes = _checked_from_bytes(current)


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
        import struct

        while len(data) >= _HEADER:
            pc, size = struct.unpack_from("<qI", data)
            if self.buffered + _HEADER + size > self.max_buffer:
                return refuse(self.peer, f"a message of {size} bytes would make this session "
                                         f"hold more than {self.max_buffer} bytes from it")
            if len(data) < _HEADER + size:
                break
            payload = PeerBytes.of(memoryview(data)[_HEADER:_HEADER + size], self.peer)
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
