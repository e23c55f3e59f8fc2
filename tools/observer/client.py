"""Client glue: where the observer's data comes from, and how a node is chosen.

The app talks to a :class:`Source`; :class:`NodeSource` is the real one (the node's control socket,
JSON only), tests pass a fake. The observer reads and asks; it never reaches into the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kernel.node.control import ControlClient, ControlError

__all__ = ["NodeSource", "Source", "pick_node"]


class Source(Protocol):
    """What the observer needs from a node. Each call may raise ``ControlError`` or ``ConnectionError``."""

    async def snapshot(self) -> dict[str, Any]: ...

    async def state(self, pid: str) -> dict[str, Any]: ...

    async def kill(self, pid: str) -> dict[str, Any]: ...

    async def stop(self, pid: str) -> dict[str, Any]: ...

    async def stack(self, pid: str) -> dict[str, Any]: ...

    async def trace(self, pid: str, n: int) -> dict[str, Any]: ...

    async def trace_log(self, pid: str) -> dict[str, Any]: ...

    async def dead_letters(self) -> list[dict[str, Any]]: ...

    async def cluster(self) -> dict[str, Any]: ...

    def view(self, node: str | None) -> None: ...

    async def replay(self, letter_id: int) -> dict[str, Any]: ...

    async def drop(self, letter_id: int) -> dict[str, Any]: ...

    def close(self) -> None: ...


class NodeSource:
    """A node's control socket as a :class:`Source`; (re)connects on demand.

    After a failure the connection is dropped and the next call tries again, so the observer survives
    a node restart (it shows the error meanwhile).

    ``viewed``: another node of the attached node's cluster whose snapshot is shown, asked through the
    cluster (``{"op": "snapshot", "node": NAME}``); None shows the attached node. Acting on a viewed
    node's actors is refused: its control socket is on its own host.
    """

    def __init__(self, name: str, viewed: str | None = None) -> None:
        self.name = name
        self.viewed = viewed
        self._client: ControlClient | None = None

    def view(self, node: str | None) -> None:
        """Show ``node`` (through the attached one) from the next snapshot; None or its own name: itself."""
        self.viewed = None if node == self.name else node

    async def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.viewed is not None and req["op"] not in ("snapshot", "cluster"):
            raise ControlError("remote", f"node {self.viewed} is viewed through {self.name}: to act on its "
                               f"actors, run `python -m tools.observer --node {self.viewed}` on its host")
        if self._client is None:
            client = ControlClient()
            await client.connect(self.name)
            self._client = client
        try:
            return await self._client.request(req)
        except ControlError:
            raise  # an error answer: the connection is fine
        except BaseException:
            self.close()  # broken or cut short mid-reply: start afresh next time
            raise

    async def snapshot(self) -> dict[str, Any]:
        if self.viewed is not None:
            return await self._request({"op": "snapshot", "node": self.viewed})
        return await self._request({"op": "snapshot"})

    async def cluster(self) -> dict[str, Any]:
        return await self._request({"op": "cluster"})

    async def state(self, pid: str) -> dict[str, Any]:
        return await self._request({"op": "state", "pid": pid})

    async def kill(self, pid: str) -> dict[str, Any]:
        return await self._request({"op": "kill", "pid": pid})

    async def stop(self, pid: str) -> dict[str, Any]:
        return await self._request({"op": "stop", "pid": pid})

    async def stack(self, pid: str) -> dict[str, Any]:
        return await self._request({"op": "stack", "pid": pid})

    async def trace(self, pid: str, n: int) -> dict[str, Any]:
        return await self._request({"op": "trace", "pid": pid, "n": n})

    async def trace_log(self, pid: str) -> dict[str, Any]:
        return await self._request({"op": "trace_log", "pid": pid})

    async def dead_letters(self) -> list[dict[str, Any]]:
        letters: list[dict[str, Any]] = (await self._request({"op": "dead_letters"}))["letters"]
        return letters

    async def replay(self, letter_id: int) -> dict[str, Any]:
        return await self._request({"op": "replay", "id": letter_id})

    async def drop(self, letter_id: int) -> dict[str, Any]:
        return await self._request({"op": "drop", "id": letter_id})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def pick_node(names: Sequence[str], ask: Callable[[str], str]) -> str | None:
    """Choose a node: the only one, or ask for a number or a name among several; None if there are none.

    ``ask`` is called with a prompt and returns the user's answer (``input`` in a terminal); it is asked
    again until the answer names a listed node.
    """
    if not names:
        return None
    if len(names) == 1:
        return names[0]
    menu = "\n".join(f"  {i}. {name}" for i, name in enumerate(names, 1))
    prompt = f"running nodes:\n{menu}\nattach to which one (number or name)? "
    while True:
        answer = ask(prompt).strip()
        if answer in names:
            return answer
        if answer.isdigit() and 1 <= int(answer) <= len(names):
            return names[int(answer) - 1]
        prompt = f"pick 1-{len(names)} or a name from the list: "
