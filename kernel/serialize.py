"""One place that turns values into bytes and back.

``pickle`` (C, fast) is tried first; ``cloudpickle`` takes over for what plain pickle cannot send by
reference: classes and functions defined in ``__main__``, inside functions, or in lambdas. Workers never
import the user's ``__main__``, so such objects must travel by value.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from .errors import NotSerializable

__all__ = ["dumps", "loads"]

_PROTOCOL = 5
_MAIN = b"__main__"


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


loads = pickle.loads
