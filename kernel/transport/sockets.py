"""The connections between processes: authenticated, batched, ordered, over any ``Address``.

Unix-domain sockets join the processes of one node; TCP (kernel/transport/tcp.py, TLS when the node has
a certificate) joins the workers of different nodes of a cluster. Everything below is the same on both.

Security: our frames carry pickles, and unpickling is code execution. So the accepting side checks the
peer's uid where the OS can tell (SO_PEERCRED, Unix sockets only; TCP has no such answer), and both
sides prove knowledge of the node's secret (HMAC-SHA256 challenge-response in both directions, as
multiprocessing's authkey does; kernel/transport/auth.py, shared with the control socket) before a
single byte is unpickled; on TCP that handshake decides alone. A node's own sockets are Linux
abstract names (``\0pyotp-<random>/w0.sock``): no file, so nothing is left behind when a process is
SIGKILLed, and no file permission to get wrong; a socket given as a file path instead lives in a
private 0700 directory and is itself 0600.

Identity: the connecting side sends its ``(index, incarnation, node)`` inside the handshake. ``node`` is
0 on a single host; in a cluster each node incarnation has its own id >= 1. A :class:`Listener` hands
frames from its own node's processes to ``dispatch`` and those from another node to what its ``remote``
callback returns for that peer, chosen once per connection, so the per-message path is unchanged.

Throughput: a connection is one-way. Each process keeps one outbound :class:`Peer` per destination
process and writes everything for it into one buffer that is flushed once per event-loop tick (or
as soon as the tick has batched ~64 KB for it, so a sender that never yields still keeps the receiver
busy), so many messages share one ``write``. Plain envelopes (``serialize.plain``) of one tick are pickled
together as one list, a fifth of the cost of pickling them one by one, on both ends. One connection
per (sender process, receiver process) pair, fed in send order, gives FIFO per sender-receiver pair.

A stream is a sequence of length-prefixed pickles; each is one envelope (a tuple) or a batch of them
(a list).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..errors import MessageTooLarge
from . import auth
from .address import Address, as_address, check_private_dir
from .serialize import loads
from .wire import HEADER, MAX_MESSAGE, OVERLOAD_FACTOR, SEND_BUFFER

__all__ = ["Listener", "Peer", "Remote", "check_private_dir"]

log = logging.getLogger("kernel.transport")

#: ``remote(node, index, inc)``: the dispatch for the envelopes of one connection from another node.
Remote = Callable[[int, int, int], Callable[[Any], None]]

_MAGIC = b"PYOTP1"
_NONCE = auth.NONCE_BYTES
_DIGEST = 32  # an HMAC-SHA256 answer
_IDENT = struct.Struct("!iiq")  # index, incarnation, node id (0: single host)
_pack = HEADER.pack
_dumps = pickle.dumps
#: A tick's buffer for one peer is written out at once past this many bytes, or plain envelopes (each
#: under 9 KB, typically ~40 B pickled in a batch), instead of at the end of the tick.
_EAGER = 64 * 1024
_EAGER_BATCH = 1024


class _Inbound(asyncio.Protocol):
    """The accepting end: authenticates the peer, then decodes frames and hands envelopes on.

    Invariant: ``_ready`` is False until the peer answered our challenge; until then bytes are only
    compared, never unpickled. A peer of another node than ``node`` gets ``remote(node, index, inc)`` as
    its dispatch, or is refused when there is no ``remote``.
    """

    def __init__(self, secret: bytes, dispatch: Callable[[Any], None],
                 on_lost: Callable[[int, int], None], hint: Callable[[bool], None] | None = None,
                 node: int = 0, remote: Remote | None = None) -> None:
        self._secret = secret
        self._dispatch = dispatch
        self._on_lost = on_lost
        self._node = node
        self._remote = remote
        self._hint = hint  # told whether a read holds a single message (latency) or a batch
        self.max_message = MAX_MESSAGE
        self._buf = bytearray()
        self._need = 0
        self._ready = False
        self._nonce = os.urandom(_NONCE)
        self._transport: asyncio.Transport | None = None
        self.peer: tuple[int, int, int] = (0, 0, 0)  # index, incarnation, node

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = tr = cast(asyncio.Transport, transport)
        creds = auth.peer_credentials(tr.get_extra_info("socket"))
        uid = None if creds is None else creds[1]  # None: the platform cannot tell; the handshake decides
        if uid is not None and uid != os.getuid():
            log.warning("refused a connection from uid %s", uid)
            tr.abort()
            return
        tr.write(_MAGIC + self._nonce)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if not self._ready:
            buf += data
            need = _DIGEST + _NONCE + _IDENT.size
            if len(buf) < need:
                return
            digest = bytes(buf[:_DIGEST])
            if not auth.verify(self._secret, "client", self._nonce, digest):
                log.warning("refused a peer that failed the handshake")
                assert self._transport is not None
                self._transport.abort()
                buf.clear()
                return
            client_nonce = bytes(buf[_DIGEST:_DIGEST + _NONCE])
            self.peer = index, inc, node = _IDENT.unpack_from(buf, _DIGEST + _NONCE)
            assert self._transport is not None
            if node != self._node and not self._route_remote(index, inc, node):
                self._transport.abort()
                buf.clear()
                return
            self._transport.write(auth.mac(self._secret, "server", client_nonce))
            self._ready = True
            data = bytes(buf[need:])
            buf.clear()
        elif buf:
            buf += data
            if len(buf) < self._need:
                return  # a large message still arriving: do not re-scan (or copy) the buffer
            data = bytes(buf)
            buf.clear()
        used = self._decode(data)
        if used < len(data):
            buf += data[used:]

    def _route_remote(self, index: int, inc: int, node: int) -> bool:
        """Point this connection's frames at ``remote(node, index, inc)``; False to refuse the peer."""
        if self._remote is None:
            log.warning("refused worker %d of node %d: this listener takes node %d only",
                        index, node, self._node)
            return False
        try:
            self._dispatch = self._remote(node, index, inc)
        except Exception:
            log.exception("refused worker %d of node %d: no route for it", index, node)
            return False
        return True

    def _decode(self, data: bytes) -> int:
        """Dispatch every complete message in ``data``; returns how many bytes were used.

        Slicing immutable bytes is cheaper than memoryviews over the buffer (measured: 650 vs 1090 ns
        per message, pickle.loads included).
        """
        pos = 0
        end = len(data)
        dispatch = self._dispatch
        unpack = HEADER.unpack_from
        hint = self._hint
        if hint is not None and end >= 4:
            hint(unpack(data, 0)[0] + 4 == end)
        while end - pos >= 4:
            (size,) = unpack(data, pos)
            if size > self.max_message:
                log.error("peer %s announced a %d-byte message; dropping the connection", self.peer, size)
                assert self._transport is not None
                self._transport.abort()
                return end
            start = pos + 4
            if end - start < size:
                self._need = size + 4
                return pos
            pos = start + size
            try:
                envelope = loads(data[start:pos])
            except Exception:
                log.exception("could not decode a message from %s; dropped", self.peer)
                continue
            batch: Sequence[Any] = (envelope,)
            if type(envelope) is list:  # a tick's batch of plain envelopes: not a lone message
                if hint is not None:
                    hint(False)
                batch = envelope
            for item in batch:
                try:
                    dispatch(item)
                except Exception:
                    log.exception("failed to dispatch a message from %s", self.peer)
        self._need = 0
        if hint is not None:
            hint(False)
        return pos

    def connection_lost(self, exc: Exception | None) -> None:
        index, inc, node = self.peer
        if self._ready and node == self._node:
            # A remote peer's loss is not reported: a TCP connection closing says nothing reliable of
            # another node's life; the cluster's membership lease does.
            self._on_lost(index, inc)


class Listener:
    """The socket a process accepts inbound connections on.

    ``node`` is this process's node id (0 on a single host). A peer whose handshake names another node
    is handed to ``remote(node, index, inc)``, called once per connection (after the handshake, before
    anything is unpickled); the callable it returns receives that connection's envelopes instead of
    ``dispatch``. Without ``remote`` such a peer is refused. ``on_lost(index, inc)`` is called for
    peers of our own node only (see ``_Inbound.connection_lost``).
    """

    def __init__(self, path: str | Address, secret: bytes, dispatch: Callable[[Any], None],
                 on_lost: Callable[[int, int], None], hint: Callable[[bool], None] | None = None,
                 *, node: int = 0, remote: Remote | None = None) -> None:
        self.address = as_address(path)
        self.path = str(self.address)
        self._secret = secret
        self._dispatch = dispatch
        self._on_lost = on_lost
        self._hint = hint
        self._node = node
        self._remote = remote
        self.max_message = MAX_MESSAGE
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await self.address.serve(asyncio.get_running_loop(), self._inbound)

    def _inbound(self) -> _Inbound:
        inbound = _Inbound(self._secret, self._dispatch, self._on_lost, self._hint, self._node, self._remote)
        inbound.max_message = self.max_message
        return inbound

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class _Outbound(asyncio.Protocol):
    """The connecting end: answers the challenge, checks the server's answer, then only writes."""

    def __init__(self, secret: bytes, ident: tuple[int, int, int], done: asyncio.Future[None],
                 on_lost: Callable[[], None], on_pause: Callable[[bool], None]) -> None:
        self._secret = secret
        self._ident = ident
        self._done = done
        self._on_lost = on_lost
        self._on_pause = on_pause
        self._buf = bytearray()
        self._nonce = os.urandom(_NONCE)
        self._answered = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return  # the server never talks after the handshake
        self._buf += data
        buf = self._buf
        head = len(_MAGIC) + _NONCE
        assert self._transport is not None
        if len(buf) >= head and not self._answered:
            if bytes(buf[:len(_MAGIC)]) != _MAGIC:
                self._done.set_exception(ConnectionError("peer is not a kernel process"))
                self._transport.abort()
                return
            server_nonce = bytes(buf[len(_MAGIC):head])
            self._transport.write(auth.mac(self._secret, "client", server_nonce) + self._nonce
                                  + _IDENT.pack(*self._ident))
            self._answered = True
        if len(buf) >= head + _DIGEST:
            if not auth.verify(self._secret, "server", self._nonce, bytes(buf[head:head + _DIGEST])):
                self._done.set_exception(ConnectionError("peer failed the handshake"))
                self._transport.abort()
                return
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_exception(ConnectionError(f"connection lost during handshake: {exc}"))
        self._on_lost()

    def pause_writing(self) -> None:
        self._on_pause(True)  # the transport's buffer is past its high-water mark (the peer's limit)

    def resume_writing(self) -> None:
        self._on_pause(False)


class Peer:
    """The outbound side towards one other process of this node or, over TCP, of another node.

    ``ident`` is our (worker index, incarnation) and ``node`` our node id (0 on a single host): the
    listener sees all three in the handshake and routes our frames by them.

    Messages are appended to one buffer and written once per loop tick. While the connection is being
    made, or while the peer process is being replaced, the buffer holds them; the replacement process
    then sees them addressed to an older incarnation and answers as for dead actors.

    Invariant: ``_batch`` holds plain envelopes posted after everything in ``_buf``; it is sealed
    (pickled into ``_buf``) before any other bytes go in, so the stream keeps send order.

    Backpressure (asyncio's flow control plus Erlang's busy limit): ``busy`` is set once more than
    ``limit`` bytes wait for the peer (our buffer while it is unconnected, or the transport's, which
    pauses us past ``limit``); ``over`` past ``OVERLOAD_FACTOR`` times it. They are recounted when the
    transport pauses or resumes, at each ~64 KB written out, and at every write while busy, so the fast
    path pays one flag test. The runtime pauses senders while busy and refuses messages while over.
    """

    def __init__(self, path: str | Address, secret: bytes, ident: tuple[int, int],
                 limit: int = SEND_BUFFER, *, node: int = 0) -> None:
        self.address = as_address(path)
        self.path = str(self.address)
        self._secret = secret
        self._ident = (ident[0], ident[1], node)  # sent in the handshake: (index, incarnation, node)
        self._buf = bytearray()
        self._batch: list[tuple[Any, ...]] = []
        self._transport: asyncio.Transport | None = None
        self._scheduled = False
        self._connecting = False
        self.up = True  # False while the process behind it is known dead
        self.written = 0
        self.max_message = MAX_MESSAGE
        self.limit = limit
        self.busy = False
        self.over = False
        #: Bytes waiting for the peer, as of the last recount.
        self.buffered = 0
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._dialing: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    def send(self, data: bytes) -> None:
        """Queue one encoded message for this peer; ``MessageTooLarge`` past the node's limit.

        The first message of a loop tick is written at once (a lone call or ring hop pays no extra loop
        iteration); what follows in the same tick is batched into one write at the end of the tick.
        """
        size = len(data)
        if size > self.max_message:
            raise MessageTooLarge(size, self.max_message)
        self.written += 1
        if self._batch:
            self._seal()
        if self._scheduled:
            buf = self._buf
            buf += _pack(size)
            buf += data
            if len(buf) > _EAGER:
                self._spill()
            return
        transport = self._transport
        if transport is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)
            if not self._buf:
                transport.write(HEADER.pack(len(data)) + data)
                if self.busy:
                    self._account()
                return
        buf = self._buf
        buf += HEADER.pack(len(data))
        buf += data
        if transport is None:
            if not self._connecting and self.up:
                self._connect()
            if len(buf) > _EAGER:
                self._account()

    def send_now(self, data: bytes) -> None:
        """Queue one encoded message and write it, with everything queued before it, at once.

        For links and monitors: once ``monitor()`` returns, the signal is in the socket, ahead of
        anything the caller does next (a reply to a third process that then acts on the target).
        """
        self.send(data)
        transport = self._transport
        if transport is not None and self._buf:
            transport.write(self._buf)
            self._buf = bytearray()
            if self.busy:
                self._account()

    async def connected(self) -> bool:
        """Connect now if not yet, and wait for the handshake; False if the peer is not listening."""
        if self._transport is None and not self._connecting and self.up:
            self._connect()
        if self._dialing is not None:
            await asyncio.shield(self._dialing)
        return self._transport is not None

    def post(self, envelope: tuple[Any, ...]) -> None:
        """Queue one envelope of plain values (``serialize.plain``): pickled with its tick's batch.

        The first of a tick is still written at once, alone, as ``send`` does.
        """
        if self._scheduled:
            batch = self._batch
            batch.append(envelope)
            if len(batch) >= _EAGER_BATCH:
                self._spill()
        elif self._transport is None:
            batch = self._batch
            batch.append(envelope)
            if len(batch) >= _EAGER_BATCH:
                self._spill()
            if not self._connecting and self.up:
                self._connect()
        else:
            self.send(_dumps(envelope, 5))

    def _seal(self) -> None:
        """Pickle the pending plain envelopes, as one list, into the buffer."""
        batch, self._batch = self._batch, []
        self.written += len(batch)
        self._frame(batch)

    def _frame(self, batch: list[tuple[Any, ...]]) -> None:
        data = _dumps(batch, 5)
        if len(data) > self.max_message:
            # A tick of many messages, or a batch piled up while the peer was away: halve it. One
            # plain envelope is under 9 KB, below the smallest bound a node accepts (64 KiB), so
            # halving always ends.
            half = len(batch) // 2
            self._frame(batch[:half])
            self._frame(batch[half:])
            return
        buf = self._buf
        buf += _pack(len(data))
        buf += data

    def _flush(self) -> None:
        self._scheduled = False
        if self._batch:
            self._seal()
        if self._transport is not None and self._buf:
            self._transport.write(self._buf)
            self._buf = bytearray()
            if self.busy:
                self._account()

    def _spill(self) -> None:
        """This tick has batched ~64 KB for the peer: write it now (the receiver works meanwhile), or,
        while unconnected, recount what waits."""
        if self._batch:
            self._seal()
        transport = self._transport
        if transport is not None:
            transport.write(self._buf)
            self._buf = bytearray()
        self._account()

    def _account(self) -> None:
        """Recount the bytes waiting for the peer (ours and the transport's); set ``busy``/``over``."""
        transport = self._transport
        size = len(self._buf) + (transport.get_write_buffer_size() if transport is not None else 0)
        self.buffered = size
        self.over = size > OVERLOAD_FACTOR * self.limit
        busy = self._paused or size > self.limit
        if busy != self.busy:
            self.busy = busy
            if not busy:
                self._wake()

    def _pause(self, paused: bool) -> None:
        self._paused = paused
        self._account()

    def _wake(self) -> None:
        fut, self._drained = self._drained, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def drained(self) -> None:
        """Return once the bytes waiting for the peer are back under ``limit`` (or the peer died)."""
        while self.busy and self.up:
            fut = self._drained
            if fut is None:
                fut = self._drained = self._loop.create_future()
            await fut

    def _connect(self) -> None:
        self._connecting = True
        self._dialing = self._loop.create_task(self._connect_task())

    async def _connect_task(self) -> None:
        try:
            done: asyncio.Future[None] = self._loop.create_future()

            def factory() -> _Outbound:
                return _Outbound(self._secret, self._ident, done, self._lost, self._pause)

            transport = await self.address.connect(self._loop, factory)
            await done
            transport.set_write_buffer_limits(high=self.limit)
        except (OSError, ConnectionError) as exc:
            log.debug("connect to %s failed: %s", self.path, exc)
            self._connecting = False
            return  # retried when the runtime learns the peer is up again
        self._connecting = False
        self._transport = transport
        if (self._buf or self._batch) and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _lost(self) -> None:
        self._transport = None
        self._paused = False
        self._account()

    def mark_down(self) -> None:
        """The process behind this peer died: stop writing, keep buffering."""
        self.up = False
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._paused = False
        self._account()
        self._wake()  # a sender waiting for it to drain goes on: what it sent is lost with the peer

    def mark_up(self) -> None:
        """A (new) process listens again: connect and deliver what was buffered."""
        self.up = True
        if self._transport is None and not self._connecting:
            self._connect()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()
            self._transport = None
        self.up = False
        self._wake()
