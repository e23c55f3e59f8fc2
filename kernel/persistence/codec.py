"""How checkpoint states and keys become bytes and text in the state file.

A state file must outlive the code that wrote it (a restart, a deploy, a Python upgrade), so states are
encoded with the standard ``pickle`` (protocol 5: classes by reference, never cloudpickle's by-value
functions), or by a codec the actor's class names, such as ``"json"`` for plain data. The codec's name is
stored next to the bytes, so a reader always decodes with the codec that wrote them.

Keys are any hashable, picklable value; the file stores a canonical text form that an operator can read
and that :func:`key_from_text` turns back into the value:

* a ``str`` that does not start with ``~`` is stored as itself (``"root/carts/u42"``, ``"wallet"``);
* any other key is ``~`` + ``repr(key)`` when it is built from literals (``~('cart', 42)``), else
  ``~pickle:`` + base64 of its pickle. Only the ``~`` prefix marks a non-plain key, so the mapping is
  one-to-one (a str key ``"~x"`` is stored as ``~'~x'``).

Equal keys of different types (``1`` and ``1.0``, ``1`` and ``True``) are different checkpoint keys.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import pickle
from typing import Any, Protocol

from ..errors import NotSerializable

__all__ = [
    "JSON",
    "PICKLE",
    "Codec",
    "decode",
    "encode",
    "get_codec",
    "key_from_text",
    "key_to_text",
    "register_codec",
]

PICKLE_PROTOCOL = 5
_TAG = "~"
_PICKLED = "~pickle:"
_LITERAL_ATOMS = (str, bytes, int, bool, type(None))


class Codec(Protocol):
    """Turns a state into bytes and back; ``name`` is stored with every checkpoint it writes."""

    name: str

    def encode(self, state: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class _Pickle:
    name = "pickle"

    def encode(self, state: Any) -> bytes:
        return pickle.dumps(state, protocol=PICKLE_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


class _Json:
    """Plain data only (dict, list, str, numbers, bool, None); tuples come back as lists."""

    name = "json"

    def encode(self, state: Any) -> bytes:
        return json.dumps(state, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


PICKLE: Codec = _Pickle()
JSON: Codec = _Json()
_codecs: dict[str, Codec] = {PICKLE.name: PICKLE, JSON.name: JSON}


def register_codec(codec: Codec) -> Codec:
    """Make ``codec`` available by name to writers and readers in this process; returns it."""
    name = getattr(codec, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"codec must have a non-empty str 'name', got {codec!r}")
    if _codecs.get(name, codec) is not codec:
        raise ValueError(f"codec name {name!r} is already registered to {_codecs[name]!r}")
    _codecs[name] = codec
    return codec


def get_codec(codec: str | Codec) -> Codec:
    """The codec object for a name or a codec; ``ValueError`` names an unknown codec."""
    if not isinstance(codec, str):
        return codec
    try:
        return _codecs[codec]
    except KeyError:
        raise ValueError(
            f"unknown codec {codec!r}; known: {sorted(_codecs)} (register_codec() adds one)"
        ) from None


def encode(key: Any, state: Any, codec: str | Codec = PICKLE) -> bytes:
    """Encode ``state`` for checkpoint ``key``.

    Raises:
        NotSerializable: naming the key and the cause, when the codec cannot encode the state (a lambda,
            a lock, a class defined inside a function...). Nothing has been written.
    """
    c = get_codec(codec)
    try:
        data = c.encode(state)
    except Exception as e:  # any failure of user __reduce__/__getstate__ means "cannot be serialized"
        raise NotSerializable(
            f"checkpoint state of {key!r}", f"{c.name}: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(data, bytes):
        raise TypeError(f"codec {c.name!r} returned {type(data).__name__}, expected bytes")
    return data


def decode(data: bytes, codec: str | Codec = PICKLE) -> Any:
    """Decode checkpoint bytes with the codec that wrote them (only read files you trust: pickle)."""
    return get_codec(codec).decode(data)


def _is_literal(value: Any) -> bool:
    if type(value) is tuple:
        return all(_is_literal(v) for v in value)
    if type(value) is float:
        return math.isfinite(value)  # repr of nan/inf is not a literal
    return type(value) in _LITERAL_ATOMS


def key_to_text(key: Any) -> str:
    """The canonical text under which ``key`` is stored (see the module docstring)."""
    if type(key) is str and not key.startswith(_TAG):
        return key
    if _is_literal(key):
        return _TAG + repr(key)
    try:
        blob = pickle.dumps(key, protocol=PICKLE_PROTOCOL)
    except Exception as e:
        raise NotSerializable(f"checkpoint key {key!r}", f"{type(e).__name__}: {e}") from e
    return _PICKLED + base64.b64encode(blob).decode("ascii")


def key_from_text(text: str) -> Any:
    """Inverse of :func:`key_to_text`."""
    if not text.startswith(_TAG):
        return text
    if text.startswith(_PICKLED):
        return pickle.loads(base64.b64decode(text[len(_PICKLED) :]))
    return ast.literal_eval(text[len(_TAG) :])
