"""The node's control socket: how an observer on the same host, as the same OS user, talks to a node.

Promises:

- Only the node's own OS user gets in. Three fences, each enough on Linux, kept together as defense in
  depth: the runtime directory is ``0700`` and owned by us (checked, never trusted), the socket is
  ``0600``, and on accept the peer's uid (``SO_PEERCRED``, checked by the OS kernel at ``connect()``)
  must equal ours. Then a fresh-nonce HMAC-SHA256 challenge proves the peer can read the node's
  ``0600`` key file; the client checks the node's answer to its own nonce the same way (mutual, as
  ``multiprocessing.connection`` does), so a squatting socket cannot impersonate a node.
- JSON only, never pickle, before or after the handshake: even an authenticated peer can only ask one
  of a closed set of operations (:data:`OPS`); it cannot make the node run code. Every line has a size
  cap (256 bytes before authentication, :data:`MAX_REQUEST` after).
- A peer that fails (wrong uid, bad or replayed answer, garbage, oversize line, timeout) is dropped and
  logged; the node and every other connection are unharmed. A handler that raises becomes an error
  reply, never a dead server.
- No peer can lock the others out. At most :data:`MAX_CONNECTIONS` connections are served; a newcomer
  past it closes the connection that has waited longest without a request in progress (one still in its
  handshake, or an authenticated client idle between requests), and only if every one is mid-request is
  it answered ``{"ok": false, "error": "busy"}`` (:class:`NodeBusy` in the client). An authenticated
  connection idle for :data:`IDLE_TIMEOUT` is closed, and a client that hangs up mid-request cancels its
  handler. Warnings a peer can cause are rate-limited (:data:`LOG_BURST` per kind per
  :data:`LOG_WINDOW`, then one line counting the rest), so a reconnecting slowloris cannot flood the log.

Wire protocol (each message is one line of UTF-8 JSON ending in ``\\n``)::

    server -> {"pyotp": 1, "challenge": "<hex nonce>"}
    client -> {"answer": hex(hmac(key, b"client:" + nonce)), "challenge": "<hex client nonce>"}
    server -> {"welcome": true, "answer": hex(hmac(key, b"server:" + client nonce))}   (or it hangs up)
    client -> {"op": "snapshot", ...}
    server -> {"ok": true, "result": {...}}  or  {"ok": false, "error": "<code>", "message": "..."}

The key is the 32 random bytes whose hex is in ``<runtime dir>/<name>.key``. The two directions MAC
different prefixes, so an answer can never be reflected back as the other side's answer, and the nonce
is fresh per connection, so a recorded answer is worthless on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kernel.errors import KernelError

from ..process.trace import MAX_TRACE
from ..transport.auth import NONCE_BYTES, mac, peer_credentials, private_dir_problem

__all__ = [
    "MAX_REQUEST",
    "OPS",
    "AuthenticationFailed",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "Handler",
    "NodeBusy",
    "NodeNotFound",
    "UnsafeRuntimeDir",
    "list_nodes",
    "request",
    "runtime_dir",
    "validate_node_name",
]

log = logging.getLogger("kernel.control")

#: The closed set of requests; anything else is refused before the handler sees it.
OPS = frozenset({"ping", "snapshot", "state", "kill", "stop", "replay", "drop", "dead_letters", "stack",
                 "trace", "trace_log", "cluster"})
#: Largest request line accepted after authentication (requests are tiny; this only bounds abuse).
MAX_REQUEST = 64 * 1024
#: Largest line accepted before authentication, as in ``multiprocessing`` (``recv_bytes(256)``).
MAX_HANDSHAKE = 256
#: Largest reply line the client accepts: a snapshot of 100k actors is tens of MB.
MAX_REPLY = 256 * 1024 * 1024
#: Seconds a peer has to complete the handshake before it is dropped.
HANDSHAKE_TIMEOUT = 5.0
#: Concurrent control connections; past it a newcomer displaces the longest-waiting connection that has
#: no request in progress, or is answered ``busy`` if there is none, so observers cannot exhaust the node.
MAX_CONNECTIONS = 32
#: Seconds an authenticated connection may wait between requests before it is closed (the observer
#: asks every second; a client that went quiet holds a slot for nobody).
IDLE_TIMEOUT = 120.0
#: Peer-caused warnings of one kind logged per :data:`LOG_WINDOW` seconds; the rest are counted, then
#: reported in one line. A slowloris of 40 reconnecting sockets once wrote 87,049 lines in 6 s.
LOG_BURST = 10
LOG_WINDOW = 10.0

PROTOCOL = 1
_NONCE_BYTES = NONCE_BYTES
_KEY_BYTES = 32
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_PID_RE = re.compile(r"<(node|\d+)\.\d+(\.\d+)?>")

#: What the node plugs in: one validated request dict in, one JSON-able result dict out. Raise
#: :class:`ControlError` to answer an error the peer caused (``noproc``, ``bad_request``...).
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(KernelError):
    """A control request failed; ``code`` is a short machine tag, ``message`` says why for a human.

    Raised by the client when the node answers an error, and by a node's handler to answer one.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))


class AuthenticationFailed(ControlError):
    """The handshake failed: the node hung up on us, or its answer did not prove it holds the key."""

    def __init__(self, code: str = "auth", message: str = "handshake failed") -> None:
        super().__init__(code, message)


class NodeBusy(ControlError):
    """The node had no room for this connection: retry shortly.

    Either every one of its :data:`MAX_CONNECTIONS` connections was mid-request, or this one was still in
    its handshake when newer ones displaced it.
    """

    def __init__(self, code: str = "busy", message: str = "the node's control socket is busy") -> None:
        super().__init__(code, message)


class NodeNotFound(ControlError):
    """No node of that name is running for this user (no socket or key file in the runtime dir)."""

    def __init__(self, code: str = "not_found", message: str = "no such node") -> None:
        super().__init__(code, message)


class UnsafeRuntimeDir(ControlError):
    """The runtime directory exists but is not ours alone (owner, mode, or a symlink); nothing is used."""

    def __init__(self, code: str = "unsafe_runtime_dir", message: str = "") -> None:
        super().__init__(code, message)


# ---------------------------------------------------------------------------------------------- paths


def validate_node_name(name: object) -> str:
    """Return ``name`` if it is a safe file name (letters, digits, ``_.-``, 1-64 chars, no leading dot)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}: {name!r}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"name must be 1-64 letters, digits, '_', '.', '-' and not start with '.' or '-', got {name!r}"
        )
    return name


#: The shared directory of the usual runtime directory: a literal /tmp, not tempfile.gettempdir(), so
#: node and observer agree even if TMPDIR differs (a module constant so tests can move it).
_SHARED_TMP = "/tmp"


def _candidate_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
        return Path(base) / "pyotp"
    return Path(_SHARED_TMP) / f"pyotp-{os.getuid()}"


def _candidate_dirs() -> list[Path]:
    """Where the runtime directory may be, in the order node and observer both try them.

    The private fallback under the user's home defeats a local denial of service: another user who
    pre-creates ``/tmp/pyotp-<uid>`` makes it unusable (it is refused, never trusted), not the node.
    """
    first = _candidate_dir()
    fallback = Path.home() / ".cache" / "pyotp" / "run"
    return [first] if first == fallback else [first, fallback]


def _check_private_dir(path: Path) -> None:
    problem = private_dir_problem(path)  # kernel/transport/auth.py: lstat, so a symlink is refused
    if problem is not None:
        raise UnsafeRuntimeDir(message=f"{problem}; or set XDG_RUNTIME_DIR to a directory of your own")


def _one_runtime_dir(path: Path, create: bool) -> Path:
    if create:
        if path != _candidate_dir():  # the home fallback: its parents are ours to make
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(path, 0o700)  # the umask can only remove bits, but make the invariant explicit
    _check_private_dir(path)
    return path


def runtime_dir(create: bool = True) -> Path:
    """The private directory holding every node's socket and key for this user.

    ``$XDG_RUNTIME_DIR/pyotp`` if ``XDG_RUNTIME_DIR`` is set and writable, else ``/tmp/pyotp-<uid>``.
    Created ``0700`` when missing (and ``create``). An existing one is verified, never repaired: it
    must be a real directory owned by us with no group/other bits. One that is not (another user made
    it first) is skipped, with a warning, for ``~/.cache/pyotp/run``, which the observer tries next too;
    only when none is usable is :class:`UnsafeRuntimeDir` raised. With ``create=False`` the first that
    exists and is ours is returned, and ``FileNotFoundError`` raised when none exists.
    """
    refused: UnsafeRuntimeDir | None = None
    for path in _candidate_dirs():
        try:
            found = _one_runtime_dir(path, create)
        except FileNotFoundError:
            continue
        except UnsafeRuntimeDir as exc:
            refused = refused or exc
            continue
        if refused is not None and create:
            log.warning("%s; using %s instead", refused.message, found)
        return found
    if refused is not None:
        raise refused
    raise FileNotFoundError(f"no runtime directory: none of {[str(p) for p in _candidate_dirs()]} exists")


def _paths(name: str, directory: Path) -> tuple[Path, Path]:
    return directory / f"{name}.sock", directory / f"{name}.key"


def _claim_name(name: str) -> tuple[Path, Path]:
    """Socket and key paths for a new node ``name``; a stale socket (nobody answers) is removed.

    "Stale" means connect() is refused: nobody listens. A listener that is merely slow to answer (its
    loop is busy, or it is this very process) still holds the name.
    """
    directory = runtime_dir(create=True)
    _sweep_dead(directory)
    sock_path, key_path = _paths(name, directory)
    if len(os.fsencode(sock_path)) >= 108:
        raise ValueError(f"socket path {str(sock_path)!r} is too long for AF_UNIX; use a shorter name")
    if os.path.lexists(sock_path):
        if _socket_listens(sock_path):
            raise ControlError("name_in_use", f"a node named {name!r} is already running")
        os.unlink(sock_path)
    return sock_path, key_path


def _bound_paths() -> set[str] | None:
    """Paths of every Unix socket that is open on this host (Linux ``/proc/net/unix``), or None."""
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            next(f)
            return {fields[7].rstrip("\n") for line in f if len(fields := line.split(None, 7)) == 8}
    except (OSError, StopIteration):
        return None


def _sweep_dead(directory: Path) -> None:
    """Remove the socket and key files of dead nodes, so they never accumulate.

    A node's socket is dead when no open socket is bound to its path (``/proc/net/unix``) and connect()
    is refused: a socket that is bound but not yet listening (a node starting right now) still counts as
    alive. Without ``/proc``, nothing is swept (a stale name is still replaced when it is claimed again).
    """
    bound = _bound_paths()
    if bound is None:
        return
    for sock in directory.glob("*.sock"):
        if str(sock) in bound or not _NAME_RE.fullmatch(sock.name.removesuffix(".sock")):
            continue
        try:
            st = os.lstat(sock)
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(st.st_mode) or _socket_listens(sock) or str(sock) in (_bound_paths() or ()):
            continue  # it answers (listed under another spelling of its path), or was bound since
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock.with_suffix(".key"))
        log.info("removed the control socket of dead node %r", sock.name.removesuffix(".sock"))


# ------------------------------------------------------------------------------------------ handshake


def _mac(key: bytes, side: Literal["client", "server"], nonce: bytes) -> str:
    return mac(key, side, nonce).hex()  # the transport's handshake, in hex for JSON


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


def _decode_object(line: bytes) -> dict[str, Any]:
    """Parse one JSON object line; ``ValueError`` for anything else (JSON never runs code)."""
    obj = json.loads(line.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _hex_field(obj: dict[str, Any], field: str, nbytes: int) -> bytes:
    value = obj.get(field)
    if not isinstance(value, str) or len(value) != 2 * nbytes:
        raise ValueError(f"field {field!r} must be {2 * nbytes} hex characters")
    return bytes.fromhex(value)


def _read_key(path: Path) -> bytes:
    """Read a node's key, refusing a file another user could have written or read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise NodeNotFound(message=f"no key file {str(path)!r}: is the node running?") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise UnsafeRuntimeDir(
                message=f"key file {str(path)!r} is not ours alone (uid {st.st_uid}, "
                f"mode {stat.S_IMODE(st.st_mode):#o}); refusing it"
            )
        text = f.read(4 * _KEY_BYTES).decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise AuthenticationFailed("bad_key", f"key file {str(path)!r} does not hold {_KEY_BYTES} hex bytes")
    return key


def _write_key(path: Path, key: bytes) -> None:
    """Write the key atomically: 0600 from birth (O_EXCL temp file), then rename over any stale one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(key.hex() + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def _read_line_capped(reader: asyncio.StreamReader, cap: int) -> bytes:
    """One line of at most ``cap`` bytes; ``ValueError`` if longer or followed by more data (pre-auth)."""
    buf = b""
    while True:
        chunk = await reader.read(cap + 1 - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
        end = buf.find(b"\n")
        if end >= 0:
            if end != len(buf) - 1:
                raise ValueError("data after the handshake line before the reply")
            return buf[:end]
        if len(buf) > cap:
            raise ValueError(f"handshake line longer than {cap} bytes")


# --------------------------------------------------------------------------------------------- server


class ControlServer:
    """Serve one node's control socket ``<runtime dir>/<name>.sock`` with key file ``<name>.key``.

    ``handler`` is awaited once per request, one request at a time per connection, on the loop that
    called :meth:`start`; it receives a request whose ``op`` is in :data:`OPS` and whose ``pid`` (for
    ``state``/``kill``) looks like a pid repr, and returns a JSON-able dict. It may raise
    :class:`ControlError` to answer an error; any other exception is logged and answered ``internal``.
    """

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = validate_node_name(name)
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {handler!r}")
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._log = _LogLimiter(name)
        self._inodes: dict[Path, int] = {}  # the socket and key files we created, by path
        self.socket_path: Path | None = None
        self.key_path: Path | None = None
        self._key = b""

    async def start(self) -> None:
        """Create the key and the socket and start accepting; returns once connections are accepted.

        Raises :class:`ControlError` (``name_in_use``) if a live node already answers on this name, and
        :class:`UnsafeRuntimeDir` if the runtime directory is not private. A stale socket left by a
        dead node is replaced.
        """
        if self._server is not None:
            raise RuntimeError("ControlServer already started")
        sock_path, key_path = _claim_name(self.name)
        self._key = secrets.token_bytes(_KEY_BYTES)
        # The key exists before the socket, so whoever finds the socket can read the matching key.
        _write_key(key_path, self._key)
        self._inodes = {key_path: os.stat(key_path).st_ino}
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(sock_path))  # EADDRINUSE if a racing node bound first: we lose, loudly
            os.chmod(sock_path, 0o600)
            self._inodes[sock_path] = os.stat(sock_path).st_ino
            sock.listen(64)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            self._remove_files(sock_path, key_path)
            raise
        self.socket_path, self.key_path = sock_path, key_path
        log.info("control socket for node %r at %s", self.name, sock_path)

    async def close(self) -> None:
        """Stop accepting, drop every connection, remove the socket and key files (if still ours)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        self._log.flush()
        if self.socket_path is not None and self.key_path is not None:
            self._remove_files(self.socket_path, self.key_path)
            self.socket_path = self.key_path = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _remove_files(self, sock_path: Path, key_path: Path) -> None:
        # Invariant: we only remove files we created; a node that replaced a stale socket of ours owns them.
        # Each file is judged by its own inode: since 3.13 asyncio's server.close() unlinks the socket
        # itself (cleanup_socket), so a missing socket says nothing about whose key is there.
        for path in (sock_path, key_path):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == self._inodes.get(path):
                    os.unlink(path)
        self._inodes = {}

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer, time.monotonic())
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer, conn))
        self._connections[task] = conn
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)

    def _make_room(self, newcomer: asyncio.Task[None] | None) -> bool:
        """Below the limit, or made so by closing the longest-waiting connection without a request."""
        live = [(c, t) for t, c in self._connections.items() if not c.evicted]
        if len(live) <= MAX_CONNECTIONS:
            return True
        waiting = [(c.since, id(c), c, t) for c, t in live if not c.busy and t is not newcomer]
        if not waiting:
            return False
        _, _, victim, task = min(waiting)
        victim.evicted = True  # it is leaving: it no longer counts against the limit
        with contextlib.suppress(Exception):  # tell it why, in case it is reading (a handshake)
            victim.writer.write(_error("busy", "closed to make room for a newer control connection"))
            victim.writer.close()  # here too: a task cancelled before it ran never reaches its finally
        task.cancel()
        self._log.warning("evicted", "control %r: closed a connection waiting since %.1f s ago to admit "
                          "another (over %d)", self.name, time.monotonic() - victim.since, MAX_CONNECTIONS)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: _Connection) -> None:
        peer = "?"
        try:
            creds = peer_credentials(writer.get_extra_info("socket"))
            if creds is not None:
                pid, uid, _gid = creds
                peer = f"pid {pid} uid {uid}"
                if uid != os.getuid():
                    self._log.warning("uid", "control %r: refused %s: not our uid %d", self.name, peer,
                                      os.getuid())
                    return
            if not self._make_room(asyncio.current_task()):
                writer.write(_error("busy", f"node {self.name!r} serves {MAX_CONNECTIONS} control "
                                    "connections, each mid-request: retry shortly"))
                self._log.warning("busy", "control %r: answered %s busy: %d connections, each mid-request",
                                  self.name, peer, MAX_CONNECTIONS)
                return
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    await self._handshake(reader, writer)
            except (ValueError, TimeoutError, UnicodeDecodeError) as exc:
                self._log.warning("handshake", "control %r: dropped %s: handshake failed: %s", self.name,
                                  peer, exc)
                return
            await self._requests(reader, writer, peer, conn)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("control %r: %s went away: %s", self.name, peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Invariant: nothing a peer does takes the node down; a bug here costs one connection only.
            log.exception("control %r: error serving %s", self.name, peer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        writer.write(_encode({"pyotp": PROTOCOL, "challenge": nonce.hex()}))
        await writer.drain()
        reply = _decode_object(await _read_line_capped(reader, MAX_HANDSHAKE))
        answer = reply.get("answer")
        if not isinstance(answer, str) or not hmac.compare_digest(
            answer.encode("ascii", "replace"), _mac(self._key, "client", nonce).encode()
        ):
            raise ValueError("wrong answer to the challenge")
        client_nonce = _hex_field(reply, "challenge", _NONCE_BYTES)
        writer.write(_encode({"welcome": True, "answer": _mac(self._key, "server", client_nonce)}))
        await writer.drain()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str,
                        conn: _Connection) -> None:
        """Answer requests in order until the peer hangs up, idles past ``IDLE_TIMEOUT`` or misbehaves.

        The next line is read while a request is handled: an EOF then means the peer is gone, and its
        handler (a snapshot stuck on a hung worker, say) is cancelled instead of holding a slot for nobody.
        """
        pending = asyncio.ensure_future(reader.readuntil(b"\n"))
        answer: asyncio.Future[bytes] | None = None
        try:
            while True:
                conn.busy, conn.since = False, time.monotonic()
                if not (await asyncio.wait([pending], timeout=IDLE_TIMEOUT))[0]:
                    self._log.info("idle", "control %r: closed %s: no request for %.0f s", self.name, peer,
                                   IDLE_TIMEOUT)
                    return
                try:
                    line = pending.result()
                except asyncio.LimitOverrunError:
                    writer.write(_error("too_large", f"request lines are capped at {MAX_REQUEST} bytes"))
                    await writer.drain()
                    self._log.warning("too_large", "control %r: dropped %s: request over %d bytes",
                                      self.name, peer, MAX_REQUEST)
                    return
                except asyncio.IncompleteReadError:
                    return  # clean EOF between requests
                conn.busy = True
                answer = asyncio.ensure_future(self._answer(line, peer))
                pending = asyncio.ensure_future(reader.readuntil(b"\n"))
                await asyncio.wait([answer, pending], return_when=asyncio.FIRST_COMPLETED)
                if not answer.done() and pending.done() and isinstance(
                        pending.exception(), asyncio.IncompleteReadError | ConnectionError):
                    self._log.info("gone", "control %r: %s hung up mid-request: cancelled its handler",
                                   self.name, peer)
                    return  # the finally cancels the handler
                await asyncio.wait([answer])  # a pipelined request waits its turn
                writer.write(answer.result())
                await writer.drain()
        finally:
            for fut in (pending, answer):
                if fut is not None and not fut.done():
                    fut.cancel()
            if answer is not None and not answer.done():
                await asyncio.wait([answer])  # the handler's own cleanup runs before the socket closes

    async def _answer(self, line: bytes, peer: str) -> bytes:
        try:
            req = _decode_object(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error("bad_request", f"not a JSON object: {exc}")
        try:
            _validate_request(req)
            if req["op"] in ("kill", "stop"):  # not rate-limited: only an authenticated peer can ask
                # Audit trail: every kill says who asked for it.
                log.warning("control %r: %s %s requested by %s", self.name, req["op"], req["pid"], peer)
            result = await self._handler(req)
            if not isinstance(result, dict):
                raise TypeError(f"handler returned {type(result).__name__}, not a dict")
            return _encode({"ok": True, "result": result})
        except ControlError as exc:
            return _error(exc.code, exc.message)
        except Exception as exc:
            log.exception("control %r: handler failed on %r", self.name, req.get("op"))
            return _error("internal", f"{type(exc).__name__}: {exc}")


def _validate_request(req: dict[str, Any]) -> None:
    op = req.get("op")
    if op not in OPS:
        raise ControlError("unknown_op", f"op must be one of {sorted(OPS)}, got {op!r}")
    if op in ("state", "kill", "stop", "stack", "trace", "trace_log"):
        pid = req.get("pid")
        if not isinstance(pid, str) or not _PID_RE.fullmatch(pid):
            raise ControlError("bad_request", f"pid must be a pid repr such as '<0.3>', got {pid!r}")
    if op == "snapshot" and req.get("node") is not None:
        node = req["node"]
        if not isinstance(node, str) or not node:
            raise ControlError("bad_request", f"node must be the name of a node of the cluster, got {node!r}")
    if op == "trace":
        n = req.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_TRACE:
            raise ControlError("bad_request", f"n must be an int in 1..{MAX_TRACE} (the number of messages "
                               f"to trace), got {n!r}")
    if op in ("replay", "drop"):
        letter = req.get("id")
        if not isinstance(letter, int) or isinstance(letter, bool) or letter < 1:
            raise ControlError("bad_request", f"id must be a dead letter's id (an int >= 1), got {letter!r}")


def _error(code: str, message: str) -> bytes:
    return _encode({"ok": False, "error": code, "message": message})


@dataclass(eq=False)
class _Connection:
    """What admission needs to know of one connection: is a request in progress, since when it waits."""

    writer: asyncio.StreamWriter
    since: float  # when it was accepted, or when its last answer was written
    busy: bool = False  # a request is being handled: never displaced for a newcomer
    evicted: bool = False  # closed to make room; no longer counted


class _LogLimiter:
    """Log at most ``LOG_BURST`` records of each kind per ``LOG_WINDOW`` seconds; count the rest.

    The count is reported in one line when the kind next occurs after its window, and at ``flush()``.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._kinds: dict[str, list[Any]] = {}  # kind -> [window start, logged, suppressed, level]

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self._log(logging.WARNING, kind, msg, *args)

    def info(self, kind: str, msg: str, *args: object) -> None:
        self._log(logging.INFO, kind, msg, *args)

    def _log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = self._clock()
        state = self._kinds.setdefault(kind, [now, 0, 0, level])
        if now - state[0] >= LOG_WINDOW:
            self._report(kind, state)
            state[:] = [now, 0, 0, level]
        if state[1] < LOG_BURST:
            state[1] += 1
            log.log(level, msg, *args)
        else:
            state[2] += 1

    def _report(self, kind: str, state: list[Any]) -> None:
        if state[2]:
            log.log(state[3], "control %r: %d more %r events in %.0f s, not logged one by one", self._name,
                    state[2], kind, self._clock() - state[0])

    def flush(self) -> None:
        for kind, state in self._kinds.items():
            self._report(kind, state)
        self._kinds.clear()


# --------------------------------------------------------------------------------------------- client


class ControlClient:
    """One authenticated connection to a node's control socket.

    Requests are answered in order; concurrent :meth:`request` calls on one client are serialized.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def connect(self, name: str) -> None:
        """Connect to node ``name`` and run the mutual handshake (bound it with ``asyncio.timeout``).

        Raises :class:`NodeNotFound` if no such node runs for this user, :class:`AuthenticationFailed` if
        the node refused us or could not prove it holds the key.
        """
        validate_node_name(name)
        try:
            sock_path, key_path = _paths(name, runtime_dir(create=False))
        except FileNotFoundError:
            raise NodeNotFound(message=f"no node named {name!r}: no runtime directory yet") from None
        key = _read_key(key_path)
        try:
            reader, writer = await asyncio.open_unix_connection(os.fspath(sock_path), limit=MAX_REPLY)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NodeNotFound(message=f"node {name!r} does not answer: {exc}") from None
        try:
            hello = _busy_or(_decode_object(await reader.readline()), name)
            nonce = _hex_field(hello, "challenge", _NONCE_BYTES)
            my_nonce = secrets.token_bytes(_NONCE_BYTES)
            writer.write(_encode({"answer": _mac(key, "client", nonce), "challenge": my_nonce.hex()}))
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise AuthenticationFailed(message=f"node {name!r} refused the handshake")
            welcome = _busy_or(_decode_object(line), name)
            answer = welcome.get("answer")
            if not isinstance(answer, str) or not hmac.compare_digest(
                answer.encode("ascii", "replace"), _mac(key, "server", my_nonce).encode()
            ):
                raise AuthenticationFailed(message=f"{str(sock_path)!r} did not prove it holds the key")
        except BaseException as exc:
            writer.close()
            if isinstance(exc, ValueError | UnicodeDecodeError):
                raise AuthenticationFailed(message=f"bad handshake from {name!r}: {exc}") from None
            raise
        self.name, self._reader, self._writer = name, reader, writer

    async def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its ``result``.

        Raises :class:`ControlError` if the node answers an error, ``ConnectionError`` if it went away.
        Bound it with ``asyncio.timeout``; a request cut short leaves the connection unusable, close it.
        """
        if self._reader is None or self._writer is None:
            raise RuntimeError("ControlClient is not connected; await connect(name) first")
        if not isinstance(req, dict):
            raise TypeError(f"req must be a dict, got {type(req).__name__}")
        reader, writer = self._reader, self._writer
        async with self._lock:
            writer.write(_encode(req))
            await writer.drain()
            line = await reader.readline()
        if not line:
            raise ConnectionError(f"node {self.name!r} closed the control connection")
        reply = _decode_object(line)
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            result: dict[str, Any] = reply["result"]
            return result
        raise ControlError(str(reply.get("error", "protocol")), str(reply.get("message", repr(reply))))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _busy_or(line: dict[str, Any], name: str) -> dict[str, Any]:
    """``line`` itself, unless the node answered ``busy`` in its place (then :class:`NodeBusy`)."""
    if line.get("ok") is False and line.get("error") == "busy":
        raise NodeBusy(message=f"node {name!r}: {line.get('message', 'busy')}")
    return line


def request(name: str, req: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
    """Blocking one-shot: connect to node ``name``, send ``req``, return the result (for scripts).

    Runs its own event loop, so it cannot be called from inside a running one (use :class:`ControlClient`).
    """

    async def once() -> dict[str, Any]:
        client = ControlClient()
        try:
            async with asyncio.timeout(timeout):
                await client.connect(name)
                return await client.request(req)
        finally:
            client.close()

    return asyncio.run(once())


# ------------------------------------------------------------------------------------------ discovery


def _socket_listens(path: Path) -> bool:
    """True unless connect() on ``path`` is refused (a stale socket file) or the file is gone."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        try:
            s.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:
            return True  # the backlog is full: someone is listening
        return True


def _socket_answers(path: Path, timeout: float) -> bool:
    """True if a server accepts on ``path`` and sends its challenge within ``timeout``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(path))
            return s.recv(MAX_HANDSHAKE).startswith(b'{"pyotp"')
        except OSError:
            return False


def list_nodes(timeout: float = 1.0) -> list[str]:
    """Names of this user's nodes whose control socket answers, sorted; [] if there is no runtime dir.

    Blocks up to ``timeout`` per socket file. Stale sockets (a node that died) are skipped, not removed.
    """
    try:
        directory = runtime_dir(create=False)
    except FileNotFoundError:
        return []
    names = []
    for entry in sorted(directory.glob("*.sock")):
        name = entry.name.removesuffix(".sock")
        if _NAME_RE.fullmatch(name) and _socket_answers(entry, timeout):
            names.append(name)
    return names
