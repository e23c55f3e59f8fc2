"""A node's membership of its cluster, kept by the node process: join, renew, watch the others.

``Node(cluster=dsn, listen="host:port")`` starts one :class:`ClusterMember` before its workers. It
installs the schema (kernel/cluster/schema.py), reads the cluster's handshake secret, joins the
membership table with the node's address and worker count, and then:

* renews the lease on a connection of its own (:class:`~kernel.cluster.LeaseKeeper`), so a pool busy
  with checkpoint writes never delays a renew;
* polls the live members every ``min(lease / 4, 1 s)`` and reports the difference: a member that
  appears (or rejoins) to ``on_up``, one whose lease ran out to ``on_down``, so a dead node is
  declared down at most one poll after the database's clock passed its lease;
* when its own lease cannot be renewed, calls ``on_lost`` before the lease runs out (the node stops
  its persistent actors there), then joins again as soon as the database answers: a new incarnation
  (its old names are free for others from the moment the lease ran out), the same node id.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ..cluster import LeaseKeeper, Member, Membership, install, secret
from ..cluster.membership import DB_ERRORS
from ..errors import LeaseExpired, NodeNameInUse
from ..routing.remote import Remote, port_of
from ..routing.runtime import Runtime
from ..terms import set_home
from ..transport.sockets import Listener
from ..transport.tcp import TLS, TcpAddress, parse_listen

__all__ = ["ClusterMember", "attach", "member_route", "worker_config"]

log = logging.getLogger("kernel.cluster")

#: Longest pause between two polls of the membership table (seconds).
_POLL_MAX = 1.0
#: Pause between two attempts to join again after the lease was lost (seconds).
_REJOIN_RETRY = 0.2


class ClusterMember:
    """This node's row in the cluster and its view of the other members."""

    def __init__(self, dsn: str, name: str, address: str, workers: int, lease: float,
                 on_up: Callable[[Member], None], on_down: Callable[[Member], None],
                 on_lost: Callable[[LeaseExpired], Awaitable[None] | None],
                 on_rejoined: Callable[[Member], None]) -> None:
        self.dsn = dsn
        self.name = name
        self.address = address
        self.workers = workers
        self.lease = lease
        self.on_up = on_up
        self.on_down = on_down
        self.on_lost = on_lost
        self.on_rejoined = on_rejoined
        self.secret = b""
        self.membership: Membership | None = None
        #: The live members seen at the last poll, by node id (this node included).
        self.members: dict[int, Member] = {}
        self._conn: Any = None
        self._reader: Any = None
        self._keeper: LeaseKeeper | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def id(self) -> int:
        assert self.membership is not None and self.membership.id is not None
        return self.membership.id

    async def start(self) -> Member:
        """Install the schema, read the secret, join and keep the lease; returns this node's row. Then
        :meth:`run`."""
        self._conn = await asyncpg.connect(self.dsn)
        self._reader = await asyncpg.connect(self.dsn)
        await install(self._conn)
        self.secret = await secret(self._conn)
        self.membership = Membership(self._conn, self.name, self.address, self.lease, workers=self.workers)
        me = await self._join_first()
        self._keep()  # from now on: starting the workers may take longer than a lease
        return me

    async def _join_first(self) -> Member:
        """Join; while a predecessor under this name (dead, most likely) still has a live lease, wait
        for it to run out, up to one lease; then :class:`~kernel.errors.NodeNameInUse`."""
        assert self.membership is not None
        deadline = asyncio.get_running_loop().time() + self.lease + 1.0
        while True:
            try:
                return await self.membership.join()
            except NodeNameInUse:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("a node named %s is still a member (a predecessor's lease?): waiting for it",
                            self.name)
                await asyncio.sleep(min(_REJOIN_RETRY * 5, self.lease / 4))

    async def run(self) -> None:
        """Report the live members (``on_up``), then watch them."""
        await self._poll()
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch(), name="cluster-watch"))

    def _keep(self) -> None:
        assert self.membership is not None
        self._keeper = LeaseKeeper(self.membership, self._lost)
        self._keeper.start()

    async def _watch(self) -> None:
        interval = min(self.lease / 4, _POLL_MAX)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._poll()
            except DB_ERRORS as exc:
                log.warning("cannot read the cluster's members: %s", exc)
                self._reader = await self._reconnect(self._reader)

    async def _reconnect(self, conn: Any) -> Any:
        """A new connection in place of ``conn`` (closed, or broken by a database restart); ``conn``
        itself when the database cannot be reached now (the next attempt tries again)."""
        try:
            fresh = await asyncpg.connect(self.dsn, timeout=self.lease / 2)
        except DB_ERRORS:
            return conn
        with contextlib.suppress(*DB_ERRORS):
            await conn.close(timeout=1.0)
        return fresh

    async def _poll(self) -> None:
        live = {m.id: m for m in await Membership(self._reader, self.name, self.address).live()}
        before, self.members = self.members, live
        for node, member in before.items():
            gone = node not in live or live[node].incarnation != member.incarnation
            if gone and node != self.id:
                self.on_down(member)
        for node, member in live.items():
            old = before.get(node)
            if (old is None or old.incarnation != member.incarnation) and node != self.id:
                self.on_up(member)

    async def _lost(self, lost: LeaseExpired) -> None:
        log.error("node %s lost its cluster lease (%s): stopping its persistent actors", self.name, lost)
        result = self.on_lost(lost)
        if inspect.isawaitable(result):
            await result
        self._tasks.append(asyncio.get_running_loop().create_task(self._rejoin(), name="cluster-rejoin"))

    async def _rejoin(self) -> None:
        assert self.membership is not None
        while not self._closing:
            try:
                me = await self.membership.join()
            except DB_ERRORS as exc:
                log.debug("rejoin failed: %s", exc)
                await asyncio.sleep(_REJOIN_RETRY)
                self._conn = self.membership.db = await self._reconnect(self._conn)
                continue
            log.warning("node %s joined the cluster again (incarnation %s)", self.name, me.incarnation)
            self._keep()
            self.on_rejoined(me)
            return

    async def close(self) -> None:
        """Leave the cluster (frees this node's names at once) and close the connections."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._keeper is not None:
            await self._keeper.stop()
        if self.membership is not None and self._conn is not None:
            with contextlib.suppress(*DB_ERRORS):
                await self.membership.leave()
        for conn in (self._conn, self._reader):
            if conn is not None:
                with contextlib.suppress(*DB_ERRORS):
                    await conn.close()


def attach(rt: Runtime, config: dict[str, Any]) -> Listener:
    """Make ``rt`` (the node process's or a worker's runtime) a process of cluster node
    ``config["node_id"]``: its pids say so in pickles, its routes to the other nodes are set up, and
    its TCP listener is made (started by the caller). ``config`` is :func:`worker_config`'s dict.
    """
    node = int(config["node_id"])
    set_home(node)
    tls = TLS(*config["tls"]) if config.get("tls") else None
    secret_key = bytes.fromhex(config["secret"])
    remote = rt.remote = Remote(rt, node, secret_key, tls)
    for member in config["members"]:
        remote.node_up(*member)
    address = TcpAddress(config["host"], port_of(int(config["port"]), rt.index), tls)
    listener = Listener(address, secret_key, rt.dispatch, rt._inbound_lost, rt._set_solo, node=node,
                        remote=remote.inbound)
    listener.max_message = rt.listener.max_message
    return listener


def worker_config(member: ClusterMember, host: str, port: int, tls: TLS | None) -> dict[str, Any]:
    """What a worker needs to join its node's cluster side (JSON: it travels on the worker's stdin)."""
    assert member.membership is not None and member.membership.incarnation is not None
    return {
        "dsn": member.dsn, "node": member.name, "node_id": member.id,
        "incarnation": member.membership.incarnation.isoformat(),
        "secret": member.secret.hex(), "host": host, "port": port,
        "tls": None if tls is None else [tls.certfile, tls.keyfile, tls.cafile],
        "members": [list(member_route(m)) for m in member.members.values() if m.id != member.id],
    }


def member_route(member: Member) -> tuple[int, str, int, int]:
    """``(id, host, port, workers)`` of a member row, as ``Remote.node_up`` takes them."""
    host, port = parse_listen(member.address, "address")
    return member.id, host, port, member.workers
