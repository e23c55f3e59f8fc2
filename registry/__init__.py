"""Names and groups on top of the kernel's name table.

Unique names (``register``, ``unregister``, ``whereis``, ``registered``) are the kernel's own (Erlang's
BIFs): the node process is the authority and every worker holds a replica, so a send or call by name
costs no round trip. This package adds the idioms built on them:

* ``get_or_spawn``: "start it if it isn't running, else give me the one that is", in one call;
  concurrent callers on any worker all get the same single pid.
* duplicate-key groups for pub/sub (Elixir's ``Registry`` with ``keys: :duplicate``, Erlang's ``pg``):
  ``join``, ``leave``, ``members``, ``publish``.
"""

from __future__ import annotations

from kernel import register, registered, unregister, whereis

from .groups import join, leave, members, publish
from .names import get_or_spawn

__all__ = [
    "get_or_spawn",
    "join",
    "leave",
    "members",
    "publish",
    "register",
    "registered",
    "unregister",
    "whereis",
]
