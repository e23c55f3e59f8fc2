"""Owned resources (API section 14): ``self.own(resource)`` is released on every exit, ``"kill"`` included."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import kernel
from kernel import Actor, Node
from kernel.testing import Facts, wait_down, wait_facts
from supervisors import ChildSpec, Supervisor, which_children

FACTS = "owned-test-facts"


class PortOwner(Actor):
    """A front: binds a TCP port on 127.0.0.1 in ``init`` and owns the server (no ``terminate``)."""

    async def init(self, port: int) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.own(server)
        self.port = server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi\n")
        await writer.drain()
        writer.close()

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return self.port


class Releases(Actor):
    """Owns two callables and an object with close(); each records its release as a fact."""

    trap_exits = True

    async def init(self) -> None:
        self.own(lambda: self.cast(FACTS, "first"))
        self.own(_Closer(self))
        self.own(lambda: self.cast(FACTS, "third"))

    async def terminate(self, reason: Any) -> None:
        kernel.cast(FACTS, "terminate")


class _Closer:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    def close(self) -> None:
        self.actor.cast(FACTS, "second")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _answer(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.node(workers=2)
async def test_a_killed_port_owner_restarted_three_times_binds_again(node: Node) -> None:
    port = _free_port()
    sup = await node.spawn(Supervisor, children=[ChildSpec("front", PortOwner, args=(port,), worker=1)],
                           max_restarts=5, max_seconds=60.0)
    for _ in range(3):
        [(_, pid, _)] = await which_children(sup)
        assert pid is not None
        assert await node.call(pid, "port") == port
        assert await _answer(port) == b"hi\n"
        ref = node.monitor(pid)
        node.exit(pid, "kill")
        assert (await wait_down(node, ref)).reason == "killed"
    [(_, pid, _)] = await which_children(sup)  # answered once the restart after the last kill is done
    assert pid is not None, "the restart could bind the port again"
    assert await node.call(pid, "port") == port
    assert await _answer(port) == b"hi\n"


@pytest.mark.node(workers=2)
async def test_owned_resources_are_released_last_first_after_terminate_and_on_kill(node: Node) -> None:
    await node.spawn(Facts, name=FACTS, worker=0)
    stopped = await node.spawn(Releases, worker=1)
    await node.stop(stopped)
    assert await wait_facts(node, FACTS, 4) == ["terminate", "third", "second", "first"]
    killed = await node.spawn(Releases, worker=1)
    ref = node.monitor(killed)
    node.exit(killed, "kill")
    await wait_down(node, ref)
    facts = await wait_facts(node, FACTS, 7)
    assert facts[4:] == ["third", "second", "first"], "released in the worker without terminate"


@pytest.mark.node(workers=1)
async def test_own_refuses_what_it_cannot_release(node: Node) -> None:
    class Bad(Actor):
        async def init(self) -> None:
            self.own(42)

    with pytest.raises(kernel.ActorExited, match="close"):
        await node.spawn(Bad)
