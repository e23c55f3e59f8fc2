"""The checks that come before a byte from another process is trusted, written once.

Both the sockets between a node's processes (kernel/transport/sockets.py, which carry pickles) and the
control socket (kernel/node/control.py, JSON) use them:

* :func:`private_dir_problem`: a directory we put sockets or keys in must be a real directory (``lstat``:
  a symlink is refused, never followed), owned by us, mode 0700.
* :func:`peer_credentials`: who is at the other end of a Unix socket, as the OS kernel recorded it at
  ``connect()`` (``SO_PEERCRED``). Where the platform cannot tell (no ``SO_PEERCRED``, not a Unix
  socket, e.g. the TCP connections between the nodes of a cluster, or the socket is gone), it returns
  None and the caller relies on the handshake alone: the secret it proves is readable by our uid only
  (on other hosts, by whoever was given it), so a missing uid check never opens the door by itself.
* :func:`mac` and :func:`verify`: one HMAC-SHA256 challenge-response, mutual: each side proves it knows
  the secret by answering the other side's fresh nonce. The two sides' answers cover different prefixes
  (``client:`` and ``server:``), so an answer can never be reflected back as the other side's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import stat
import struct
from typing import Any, Literal

__all__ = ["NONCE_BYTES", "Side", "mac", "peer_credentials", "private_dir_problem", "verify"]

#: Bytes of a fresh challenge nonce (and of an HMAC-SHA256 answer).
NONCE_BYTES = 32

Side = Literal["client", "server"]

_UCRED = struct.Struct("3i")


def private_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """What makes ``path`` unfit to hold our sockets or keys, said so a user can fix it; None if fit."""
    st = os.lstat(path)
    shown = repr(os.fspath(path))
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{shown} is not a plain directory (a symlink or a file)"
    if st.st_uid != os.getuid():
        return (f"{shown} is owned by uid {st.st_uid}, not by us (uid {os.getuid()}); "
                "someone else created it: remove it")
    if st.st_mode & 0o077:
        return f"{shown} has mode {stat.S_IMODE(st.st_mode):#o}; it must be 0700 (no group or other bits)"
    return None


def peer_credentials(sock: Any) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the peer of Unix socket ``sock``; None where the platform cannot tell."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None or sock is None or sock.family != socket.AF_UNIX:
        return None  # no such option here, or not a Unix socket (TCP answers uid -1: no one)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return int(pid), int(uid), int(gid)


def mac(secret: bytes, side: Side, nonce: bytes) -> bytes:
    """``side``'s answer to the other side's challenge ``nonce``."""
    return hmac.new(secret, side.encode() + b":" + nonce, hashlib.sha256).digest()


def verify(secret: bytes, side: Side, nonce: bytes, answer: bytes) -> bool:
    """Whether ``answer`` is ``side``'s correct answer to ``nonce`` (compared in constant time)."""
    return hmac.compare_digest(answer, mac(secret, side, nonce))
