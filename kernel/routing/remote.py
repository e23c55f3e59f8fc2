"""Routes to the other nodes of a cluster: one per OS process of a cluster node, beside its runtime.

A pid whose ``node`` is not 0 lives on another node (kernel/terms.py): the runtime hands what is
addressed to it here. Every process of a cluster node (the node process and each worker) listens on
TCP as well as on its Unix socket: the node process on the node's ``listen`` port, worker ``i`` on
``port + 1 + i``, so a member's row in the database (its ``host:port``) is its whole address book.
The connections are the same one-way, batched, authenticated streams as between a node's own
processes (kernel/transport/sockets.py); the HMAC key is the cluster's secret, and TLS wraps them when
the node was given certificates.

What arrives from another node is decoded by :meth:`Remote.inbound`, chosen once per connection at its
handshake: the envelopes are those of kernel/transport/wire.py, and only the ones that name their
caller by its ints (a call, a stop, an rpc) need the sending node added; the rest go to the runtime's
own ``dispatch`` (pids inside them arrive with their node already, see ``terms.set_home``).

A node that the cluster declares down (its lease expired; the node process learns it from the
membership table and tells its workers) is :meth:`node_down` here: calls into it fail with
``ActorExited("node_down")``, links and monitors into it fire ``"node_down"``, what is sent to it is
dropped, as a message to any dead process is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import ActorExited, NoProc, NotSerializable
from ..terms import NODE, Pid
from ..transport import wire
from ..transport.serialize import dumps, loads
from ..transport.sockets import Peer
from ..transport.tcp import TLS, TcpAddress

__all__ = ["Remote", "port_of"]

log = logging.getLogger("kernel.cluster")

_CALL = wire.CALL
_PACKED = wire.PACKED


def port_of(base: int, index: int) -> int:
    """The TCP port process ``index`` of a node listening on ``base`` uses (NODE: ``base`` itself)."""
    return base if index == NODE else base + 1 + index


class Remote:
    """This process's routes to the other nodes (``node`` is this node's id, never 0)."""

    def __init__(self, rt: Any, node: int, secret: bytes, tls: TLS | None = None) -> None:
        # ``rt`` is the process's routing.runtime.Runtime, which imports this module (so not named here).
        self.rt = rt
        self.node = node
        self.secret = secret
        self.tls = tls
        #: node id -> (host, base port, workers) of every node known to be live.
        self.members: dict[int, tuple[str, int, int]] = {}
        self.peers: dict[tuple[int, int], Peer] = {}
        #: Nodes declared down, until the membership shows them live again.
        self.down: set[int] = set()

    # -- membership -----------------------------------------------------------------------------

    def node_up(self, node: int, host: str, port: int, workers: int) -> None:
        """Node ``node`` is a live member at ``host:port`` (again): connect on first use."""
        self.members[node] = (host, port, workers)
        if node in self.down:
            self.down.discard(node)
            for (n, _), peer in self.peers.items():
                if n == node:
                    peer.mark_up()

    def node_down(self, node: int) -> None:
        """Node ``node`` is down: fail what waits on it and fire every link and monitor into it."""
        if node == self.node or node in self.down:
            return
        self.down.add(node)
        for (n, _), peer in self.peers.items():
            if n == node:
                peer.mark_down()
        rt = self.rt
        rt.names.forget_node(node)
        error = ActorExited("node_down", Pid(0, 0, 0, node))
        for ref, entry in list(rt.calls.items()):
            where = entry[1]
            if type(where) is tuple and where[0] == node and not entry[0].done():
                entry[0].set_exception(error)
                del rt.calls[ref]
        for proc in list(rt.procs.values()):
            if not proc._exiting:
                proc._on_node_down(node)

    def worker_down(self, node: int, index: int, inc: int) -> None:
        """Worker ``index`` (incarnation ``inc``) of live node ``node`` died (that node replaces it):
        as a worker's death on this node, for the pids of that worker."""
        def gone(pid: Pid) -> bool:
            return pid.node == node and pid.worker == index and pid.incarnation == inc

        rt = self.rt
        for pid in [p for _, p in rt.names.items_list() if gone(p)]:
            rt.names.forget_pid(pid)
        error = ActorExited("worker_down", Pid(index, 0, inc, node))
        for ref, entry in list(rt.calls.items()):
            if entry[1] == (node, index) and entry[2] == inc and not entry[0].done():
                entry[0].set_exception(error)
                del rt.calls[ref]
        for proc in list(rt.procs.values()):
            if not proc._exiting:
                proc._on_gone(gone, "worker_down")

    def note(self, node: int, index: int, op: str, *args: Any) -> None:
        """A one-way notice to process ``index`` of ``node`` (dropped when that node is down)."""
        peer = self.peer(node, index)
        if peer is not None:
            peer.send(dumps((wire.NOTE, op, args), op))

    def live(self, pid: Pid) -> bool:
        """False once ``pid``'s node is known down (or was never a member)."""
        return pid.node in self.members and pid.node not in self.down

    # -- outbound -------------------------------------------------------------------------------

    def peer(self, node: int, index: int) -> Peer | None:
        """The connection towards process ``index`` of ``node``; None when that node is down or unknown."""
        peer = self.peers.get((node, index))
        if peer is not None:
            return peer if node not in self.down else None
        member = self.members.get(node)
        if member is None or node in self.down:
            return None
        host, port, _ = member
        rt = self.rt
        peer = Peer(TcpAddress(host, port_of(port, index), self.tls), self.secret, (rt.index, rt.inc),
                    rt.send_buffer, node=self.node)
        peer.max_message = rt.listener.max_message
        self.peers[(node, index)] = peer
        return peer

    def ship(self, node: int, index: int, envelope: tuple[Any, ...], payload: Any, what: str) -> None:
        """As ``Runtime.ship``, towards another node's process; dropped when that node is down."""
        peer = self.peer(node, index)
        if peer is not None:
            self.rt.ship_via(peer, index, envelope, payload, what)

    def signal(self, pid: Pid, kind: int, fields: tuple[Any, ...]) -> None:
        peer = self.peer(pid.node, pid.worker)
        if peer is None:
            self.rt._dead_target(pid, kind, fields)  # a link or monitor into a down node: noproc
            return
        data = dumps((kind, pid.serial, pid.incarnation, *fields), "signal")
        if kind in (wire.LINK, wire.MONITOR):
            peer.send_now(data)
        else:
            peer.send(data)

    def reply(self, node: int, index: int, inc: int, ref: int, ok: bool, value: Any) -> None:
        self.ship(node, index, (wire.REPLY, inc, ref, ok, value), value, "reply")

    async def rpc(self, node: int, index: int, op: str, args: tuple[Any, ...],
                  timeout: float | None = None) -> Any:
        """Ask process ``index`` of ``node`` to run ``op`` (an ``Ops`` rpc); its failure is raised here.

        Bounded by the node's liveness: if it is declared down, this raises ``ActorExited("node_down")``.
        """
        rt = self.rt
        peer = self.peer(node, index)
        if peer is None:
            raise ActorExited("node_down", Pid(0, 0, 0, node))
        return await rt.ask(peer, (node, index), 0, op, args, None, timeout, f"node {node} ({op})")

    # -- inbound --------------------------------------------------------------------------------

    def inbound(self, node: int, index: int, inc: int) -> Callable[[Any], None]:
        """The decoder of one connection from process ``index`` (incarnation ``inc``) of ``node``."""
        rt = self.rt
        dispatch = rt.dispatch
        here = rt.index

        def receive(env: Any) -> None:
            kind = env[0]
            if kind in (_CALL, wire.STOP):
                caller = (Pid(env[4], env[5], env[6], node), env[7])
                target = Pid(here, env[1], env[2])
                proc = rt.local(target)
                if proc is None:
                    rt.fail_caller_with(caller, NoProc(target))
                else:
                    rt.msgs_in += 1
                    proc._deliver((kind, env[3], caller))
            elif kind == _CALL + _PACKED:
                try:
                    request = loads(env[3])
                except Exception as exc:
                    rt.fail_caller_with((Pid(env[4], env[5], env[6], node), env[7]),
                                        NotSerializable(f"request to {Pid(here, env[1], env[2])!r}",
                                                        rt.inbound._undecodable(env[3], exc)))
                    return
                receive((_CALL, env[1], env[2], request, *env[4:]))
            elif kind == wire.RPC:
                rt.inbound.serve_rpc(env[1], env[2], env[3], env[4], env[5], node)
            else:
                dispatch(env)

        return receive

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
        self.peers.clear()
