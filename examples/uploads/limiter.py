"""A per-user upload limiter, the right way (one actor per user) and the naive way (check, then act).

The right way: every request for user U goes to U's own :class:`UploadLimiter`, one of the
``Entities("quotas", UploadLimiter)`` (:func:`quotas`): of all the clients that race to reach it
first, from every worker, exactly one activation happens and every one talks to the same actor. The
check "fewer than X running?" and the act "count this one" happen inside one message, one message at a
time, so nothing can slip between them.

The naive way is the Rails story from the design discussion: a shared counter in a store with separate
get and set, read, validated, then written, from many workers at once. Two requests both read X-1 and
both go ahead.

The disk is the witness for both: an upload in progress is a ``.part`` file in the user's folder, and
each upload counts the ``.part`` files it sees the moment its own appears.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

import kernel
from kernel import Actor, Pid
from supervisors import Entities

Mode = Literal["actor", "naive"]
STORE = "upload-store"


def in_progress(folder: str) -> int:
    return sum(1 for entry in os.listdir(folder) if entry.endswith(".part"))


class UploadLimiter(Actor):
    """User U's limiter: ``("begin", id)`` -> ``(True, its pid)`` if fewer than ``limit`` uploads run,
    and counts it (the pid shows the demo that every tab reached the same one)."""

    async def init(self, user: str, limit: int, folders: str) -> None:
        # Start from what is really on disk: a limiter restarted mid-upload does not forget them.
        folder = os.path.join(folders, user)
        self.state = {"user": user, "limit": limit, "active": in_progress(folder), "peak": 0}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        s = self.state
        match request:
            case ("begin", _upload):
                if s["active"] >= s["limit"]:
                    return (False, self.pid)
                s["active"] += 1
                s["peak"] = max(s["peak"], s["active"])
                return (True, self.pid)
            case "stats":
                return dict(s)
        return await super().handle_call(request, caller)

    async def handle_cast(self, message: Any) -> None:
        if message[0] == "done":
            self.state["active"] -= 1


class Store(Actor):
    """A plain key-value store (a database, a cache): get and set, nothing atomic in between."""

    async def init(self) -> None:
        self.state = {}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("get", key):
                return self.state.get(key, 0)
            case ("set", key, value):
                self.state[key] = value
                return True
        return await super().handle_call(request, caller)


def quotas(limit: int, root: str) -> Entities:
    """The limiters: one per user, started on a user's first upload (``init(user, limit, folders)``);
    put ``quotas(...).child_spec()`` in the tree. A crashed one restarts counting from the disk."""
    return Entities("quotas", UploadLimiter, args=(limit, os.path.join(root, "actor")))


def limiter_name(user: str) -> tuple[str, str]:
    return ("quotas", user)


@dataclass(frozen=True, slots=True)
class Uploads:
    """What a web handler calls: ``await uploads.upload(user, upload_id, data)`` -> accepted or not."""

    mode: Mode
    limit: int
    root: str

    def folder(self, user: str) -> str:
        return os.path.join(self.root, self.mode, user)

    async def upload(self, user: str, upload_id: str, data: bytes) -> tuple[bool, int, Pid | None]:
        """Run one upload if the user's limit allows; returns (accepted, uploads seen on disk, limiter)."""
        folder = self.folder(user)
        if self.mode == "actor":
            accepted, limiter = await quotas(self.limit, self.root).call(user, ("begin", upload_id))
            if not accepted:
                return False, 0, limiter
        else:
            limiter = None
            running = await kernel.call(STORE, ("get", user))
            if running >= self.limit:
                return False, 0, None
            await asyncio.sleep(0.001)  # validate the file name, check auth...: any await will do
            await kernel.call(STORE, ("set", user, running + 1))
        seen = await self._transfer(folder, upload_id, data)
        if self.mode == "actor":
            quotas(self.limit, self.root).cast(user, ("done", upload_id))
        else:
            running = await kernel.call(STORE, ("get", user))
            await kernel.call(STORE, ("set", user, running - 1))
        return True, seen, limiter

    @staticmethod
    async def _transfer(folder: str, upload_id: str, data: bytes) -> int:
        part = os.path.join(folder, upload_id + ".part")
        with open(part, "wb") as f:  # noqa: ASYNC230 - a tiny local file stands in for the upload
            seen = in_progress(folder)
            for chunk in range(0, len(data), 1024):
                f.write(data[chunk:chunk + 1024])
                await asyncio.sleep(random.uniform(0.001, 0.003))  # the network is slow
        os.replace(part, os.path.join(folder, upload_id + ".bin"))
        return seen
