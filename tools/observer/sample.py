"""A hand-made snapshot in the schema of ``node.snapshot()``: for render tests and for trying the views."""

from __future__ import annotations

from typing import Any


def sample_snapshot(*, time: float = 1700000100.0, handled_bump: int = 0) -> dict[str, Any]:
    """Node ``demo``, 2 workers: root -> (vault -> a plain spawn, carts -> 2 carts).

    ``handled_bump`` advances the message counters, so two samples give non-zero rates.
    """

    def actor(pid: str, **fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "pid": pid,
            "worker": 0,
            "name": None,
            "class": "examples.tickets.Thing",
            "key": None,
            "parent": None,
            "status": "waiting",
            "mailbox": 0,
            "handled": 0,
            "restarts": 0,
            "links": [],
            "monitors": 0,
            "memory": 1200,
            "supervisor": False,
            "children": None,
        }
        base.update(fields)
        return base

    return {
        "node": "demo",
        "os_pid": 123,
        "started": 1700000000.0,
        "time": time,
        "workers": [
            {
                "index": 0,
                "os_pid": 456,
                "incarnation": 0,
                "alive": True,
                "actors": 4,
                "msgs_in": 1000 + handled_bump,
                "msgs_out": 900,
                "commits": 3,
                "cpu_percent": 1.5,
                "rss": 31000000,
            },
            {
                "index": 1,
                "os_pid": 457,
                "incarnation": 0,
                "alive": True,
                "actors": 2,
                "msgs_in": 5000 + 2 * handled_bump,
                "msgs_out": 4000,
                "commits": 7,
                "cpu_percent": 12.25,
                "rss": 45000000,
            },
        ],
        "actors": [
            actor(
                "<0.1>",
                name="root",
                **{"class": "supervisors.Supervisor"},
                key="root",
                parent="<node.1>",
                supervisor=True,
                children=["<0.2>", "<1.1>"],
                links=["<node.1>", "<0.2>", "<1.1>"],
                handled=5,
            ),
            actor(
                "<0.2>",
                name="vault",
                **{"class": "examples.tickets.Vault"},
                key="root/vault",
                parent="<0.1>",
                handled=42 + handled_bump,
                mailbox=3,
                status="running",
                links=["<0.1>"],
                monitors=1,
                memory=5600,
            ),
            actor(
                "<1.1>",
                **{"class": "supervisors.DynamicSupervisor"},
                key="root/carts",
                parent="<0.1>",
                worker=1,
                supervisor=True,
                children=["<1.2>", "<0.3>"],
                links=["<0.1>", "<1.2>", "<0.3>"],
            ),
            actor(
                "<1.2>",
                **{"class": "examples.tickets.Cart"},
                key="root/carts/u42",
                parent="<1.1>",
                worker=1,
                handled=7 + 2 * handled_bump,
                restarts=2,
                links=["<1.1>"],
                memory=2400,
            ),
            actor(
                "<0.3>",
                **{"class": "examples.tickets.Cart"},
                key="root/carts/u7",
                parent="<1.1>",
                handled=1,
                links=["<1.1>"],
                status="exiting",
            ),
            actor("<0.4>", **{"class": "examples.tickets.Helper"}, parent="<0.2>", handled=0, memory=800),
        ],
    }
