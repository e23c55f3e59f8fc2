"""One place that turns values into bytes and back.

``pickle`` (C, fast) is tried first; ``cloudpickle`` takes over for what plain pickle cannot send by
reference: classes and functions defined in ``__main__``, inside functions, or in lambdas. Workers never
import the user's ``__main__``, so such objects must travel by value.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from ..errors import NotSerializable
from ..terms import Pid, Ref

__all__ = ["dumps", "loads", "plain"]

_PROTOCOL = 5
_MAIN = b"__main__"

#: What ``plain`` admits: immutable builtins (and our pids and refs) that pickle by value or by a
#: reference into the kernel, so they can neither fail to pickle nor name ``__main__``.
_FIXED = frozenset({float, bool, type(None), Pid, Ref})
_INT = 1 << 63
#: Bounds that keep one plain message under 9 KB pickled: 256 characters per str/bytes, 8 items.
_TEXT = 256
_WIDTH = 8


def dumps(obj: Any, what: str = "message") -> bytes:
    """Pickle ``obj``; raise ``NotSerializable`` naming ``what`` when it cannot be sent."""
    try:
        data = pickle.dumps(obj, _PROTOCOL)
    except Exception:
        data = b""
    else:
        # A reference to __main__ would not resolve in a worker: send such objects by value.
        if _MAIN not in data:
            return data
    try:
        data = cloudpickle.dumps(obj, _PROTOCOL)
    except Exception as exc:
        raise NotSerializable(what, f"{type(exc).__name__}: {exc}") from None
    assert isinstance(data, bytes)
    return data


def plain(message: Any) -> bool:
    """Whether ``message`` may be pickled later, with the rest of its tick's batch, instead of now.

    A sender must learn at once that its message cannot be sent (``NotSerializable``,
    ``MessageTooLarge``), so a message is normally pickled on the spot. These cannot fail, cannot
    refer to ``__main__``, cannot change after the send and are small: an int, float, bool, None, a
    short str or bytes, a pid or a ref, or a tuple of up to 8 of these: the shape of most messages
    (``("add", "sku-1", 2)``). Pickling a tick's worth of them as one list costs a fifth as much.
    """
    items = message if type(message) is tuple else (message,)
    if len(items) > _WIDTH:
        return False
    for item in items:
        kind = type(item)
        if kind is int:
            if not -_INT <= item < _INT:
                return False
        elif kind is str or kind is bytes:
            if len(item) > _TEXT:
                return False
        elif kind not in _FIXED:
            return False
    return True


loads = pickle.loads
