"""Pure rendering of a hand-made snapshot (the kernel's schema): text out, compared exactly."""

from __future__ import annotations

import asyncio
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType

from tools.observer import render
from tools.observer.__main__ import main as observer_main
from tools.observer.client import pick_node
from tools.observer.sample import sample_snapshot


def text(renderable: RenderableType, width: int = 120) -> str:
    console = Console(file=StringIO(), width=width)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.splitlines())


def test_supervision_tree_nests_by_children_then_parent() -> None:
    assert text(render.supervision_tree(sample_snapshot())) == (
        "node demo (os pid 123) up 1m40s, 2 workers, 6 actors\n"
        "└── <0.1> root Supervisor sup w0 waiting\n"
        "    ├── <0.2> vault Vault w0 running mailbox=3\n"
        "    │   └── <0.4> Helper w0 waiting\n"
        "    └── <1.1> [carts] DynamicSupervisor sup w1 waiting\n"
        "        ├── <1.2> [u42] Cart w1 waiting restarts=2\n"
        "        └── <0.3> [u7] Cart w0 exiting"
    )


def test_tree_caps_children_and_survives_inconsistent_data() -> None:
    snap = sample_snapshot()
    actors = snap["actors"]
    for i in range(5):
        actors.append({"pid": f"<1.{10 + i}>", "class": "x.Conn", "parent": "<1.1>", "worker": 1})
    # A cycle no root reaches, and a parent that is gone.
    actors.append({"pid": "<2.1>", "class": "x.A", "parent": "<2.2>"})
    actors.append({"pid": "<2.2>", "class": "x.B", "parent": "<2.1>"})
    actors.append({"pid": "<2.3>", "class": "x.C", "parent": "<9.9>"})
    roots, children = render.tree_structure(snap)
    assert roots == ["<0.1>", "<2.3>", "<2.1>"]
    assert children["<2.1>"] == ["<2.2>"] and children["<2.2>"] == []
    placed = roots + [c for kids in children.values() for c in kids]
    assert sorted(placed) == sorted(a["pid"] for a in actors)  # every actor exactly once
    out = text(render.supervision_tree(snap, max_children=3))
    assert "… 4 more" in out  # carts has 2 + 5 children, 3 shown
    assert "<2.2> B" in out


def test_once_output_is_tree_workers_and_processes() -> None:
    out = text(render.render_once(sample_snapshot()))
    tables = out.split("\n\n", 1)[1]
    assert tables == (
        "workers\n"
        " #  os pid  cpu %       rss  actors  msgs/s avg\n"
        "────────────────────────────────────────────────\n"
        " 0     456    1.5  29.6 MiB       4          10\n"
        " 1     457   12.2  42.9 MiB       2          50\n"
        "\n"
        "processes by mailbox\n"
        " pid    name   class                    w  status   mailbox  handled   memory  restarts  child id\n"
        "──────────────────────────────────────────────────────────────────────────────────────────────────\n"
        " <0.2>  vault  Vault                    0  running        3       42  5.5 KiB         0  vault\n"
        " <0.1>  root   Supervisor (sup)         0  waiting        0        5  1.2 KiB         0  root\n"
        " <0.3>         Cart                     0  exiting        0        1  1.2 KiB         0  u7\n"
        " <0.4>         Helper                   0  waiting        0        0    800 B         0\n"
        " <1.1>         DynamicSupervisor (sup)  1  waiting        0        0  1.2 KiB         0  carts\n"
        " <1.2>         Cart                     1  waiting        0        7  2.3 KiB         2  u42"
    )


def test_rates_sorting_and_sparkline_from_two_snapshots() -> None:
    before = sample_snapshot()
    after = sample_snapshot(time=1700000102.0, handled_bump=10)
    rates = render.compute_rates(before, after)
    assert rates.workers == {0: 5.0, 1: 10.0}
    assert rates.actors["<0.2>"] == 5.0 and rates.actors["<1.2>"] == 10.0 and rates.actors["<0.1>"] == 0.0
    order = [a["pid"] for a in render.sort_actors(after["actors"], "rate", rates)]
    assert order[:2] == ["<1.2>", "<0.2>"]
    assert [a["pid"] for a in render.sort_actors(after["actors"], "memory")][:2] == ["<0.2>", "<1.2>"]
    assert [a["pid"] for a in render.sort_actors(after["actors"], "pid")] == [
        "<0.1>", "<0.2>", "<0.3>", "<0.4>", "<1.1>", "<1.2>",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="key must be one of"):
        render.sort_actors([], "cpu")

    out = text(render.process_table(after, rates, sort="rate", limit=2))
    assert out.splitlines()[0] == "processes by rate (top 2 of 6)"
    assert "msgs/s" in out.splitlines()[1]
    assert out.splitlines()[3].split()[:9] == ["<1.2>", "Cart", "1", "waiting", "0", "27", "10", "2.3", "KiB"]

    workers = text(render.workers_table(after, rates, {0: [0, 5, 10], 1: [10, 10, 10]}))
    assert workers.splitlines()[1].split() == [
        "#",
        "os",
        "pid",
        "cpu",
        "%",
        "rss",
        "actors",
        "msgs/s",
        "msgs/s",
        "history",
    ]
    assert workers.splitlines()[3].endswith("5.0  ▁▅█")
    assert workers.splitlines()[4].endswith("10  ███")


def test_rates_skip_restarted_workers_and_other_nodes() -> None:
    before = sample_snapshot()
    after = sample_snapshot(time=1700000101.0, handled_bump=1)
    after["workers"][1]["incarnation"] = 1
    after["workers"][1]["msgs_in"] = 3
    assert render.compute_rates(before, after).workers == {0: 1.0}
    assert render.compute_rates(None, after) == render.Rates()
    assert render.compute_rates(after, after) == render.Rates()  # no time passed
    other = dict(after, node="other")
    assert render.compute_rates(before, other) == render.Rates()


def test_dead_worker_and_missing_fields_render() -> None:
    snap: dict[str, Any] = {
        "node": "n",
        "workers": [{"index": 0, "alive": False}],
        "actors": [{"pid": "<0.1>"}],
    }
    out = text(render.render_once(snap))
    assert " 0    down      -    -       0           -" in out
    assert "<0.1> ? w? ?" in out


def test_actor_details_shows_links_monitors_and_truncated_state() -> None:
    vault = sample_snapshot()["actors"][1]
    out = text(render.actor_details(vault, {"repr": "x" * 50}, max_repr=10))
    assert "links     <0.1>" in out
    assert "monitors  1" in out
    assert "key       root/vault" in out
    assert out.endswith("xxxxxxxxxx… (40 more characters)")
    assert "(loading…)" in text(render.actor_details(vault, None))
    assert "unavailable: no process" in text(render.actor_details(vault, {"error": "no process"}))


def test_small_helpers() -> None:
    assert render.format_bytes(None) == "-"
    assert render.format_bytes(800) == "800 B"
    assert render.format_bytes(31_000_000) == "29.6 MiB"
    assert render.format_bytes(5 * 1024**4) == "5120.0 GiB"
    assert render.sparkline([]) == ""
    assert render.sparkline([0, 0]) == "▁▁"
    assert render.sparkline([1, 2, 4, 8], width=3) == "▃▅█"
    assert render.pid_sort_key("<node.1>") < render.pid_sort_key("<0.9>") < render.pid_sort_key("<0.10>")
    assert render.child_id({"key": "root/carts/u42"}) == "u42"
    assert render.child_id({"key": None}) is None


def test_pick_node() -> None:
    assert pick_node([], input) is None
    assert pick_node(["solo"], input) == "solo"
    answers = iter(["7", "nope", "2"])
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    assert pick_node(["a", "b"], ask) == "b"
    assert "1. a" in prompts[0] and len(prompts) == 3
    assert pick_node(["a", "b"], lambda _: " a ") == "a"


# --------------------------------------------------------------------------- the command, --once


@pytest.fixture
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))


@pytest.mark.usefixtures("private_runtime")
def test_once_without_nodes_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert observer_main(["--once"]) == 1
    assert "no running nodes" in capsys.readouterr().err


@pytest.mark.usefixtures("private_runtime")
def test_once_against_a_control_server(capsys: pytest.CaptureFixture[str]) -> None:
    from kernel.node.control import ControlServer

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        assert req == {"op": "snapshot"}
        return sample_snapshot()

    async def main() -> tuple[int, int]:
        async with asyncio.timeout(20), ControlServer("demo", handler):
            # The command runs its own loop (as from a shell), so it runs in a thread here.
            auto = await asyncio.to_thread(observer_main, ["--once"])  # the only node: attached
            named = await asyncio.to_thread(observer_main, ["--once", "--node", "demo", "--sort", "pid"])
            return auto, named

    assert asyncio.run(main()) == (0, 0)
    out = capsys.readouterr().out
    assert out.count("node demo (os pid 123)") == 2
    assert "processes by mailbox" in out and "processes by pid" in out
    assert " <0.2>  vault  Vault " in out


def test_workers_table_shows_loop_lag_and_unresponsive_workers() -> None:
    snap = sample_snapshot()
    snap["workers"][0].update(responsive=True, lag=0.0123)
    snap["workers"][1].update(responsive=False, lag=2.5)
    snap["actors"].append({**snap["actors"][0], "pid": "<node.2>", "worker": -1, "name": "top"})
    assert text(render.workers_table(snap)) == (
        "workers\n"
        " #            os pid  cpu %       rss  actors  msgs/s avg  loop lag\n"
        "────────────────────────────────────────────────────────────────────\n"
        " 0               456    1.5  29.6 MiB       4          10     12 ms\n"
        " 1  457 unresponsive   12.2  42.9 MiB       2          50     2.5 s"
    )
    assert "Supervisor sup node waiting" in text(render.actor_label(snap["actors"][-1]))


def test_once_names_the_worker_that_did_not_answer() -> None:
    snap = sample_snapshot()
    snap["workers"][1] = {"index": 1, "os_pid": 457, "alive": True, "responsive": False, "lag": 4.5}
    snap["actors"] = [a for a in snap["actors"] if a["worker"] != 1]
    out = text(render.render_once(snap), width=160)
    assert out.startswith("worker 1 (os pid 457) did not answer, its loop is 4.5 s behind: its actors are "
                          "not listed\n")
    assert "457 unresponsive" in out
    assert render.worker_problems(sample_snapshot()) == []


def test_process_table_columns_never_run_together() -> None:
    out = text(render.process_table(sample_snapshot()), width=160)
    for line in out.splitlines()[3:]:
        assert "waiting0" not in line and "running3" not in line and "exiting0" not in line
    assert "waiting        0" in out


def test_dead_letters_table() -> None:
    letters = [{"id": 7, "key": "'u42'", "error": "ZeroDivisionError: division by zero", "count": 3,
                "created": 1700000050.0, "message": "cast: ('divide', 0)"}]
    out = text(render.dead_letters_table(letters), width=160)
    assert "dead letters (1)" in out
    assert " 7    'u42'   3       22:14:10   ZeroDivisionError: division by zero   cast: ('divide', 0)" in out


def test_trace_rows_and_summary() -> None:
    events = [{"at": 1700000100.25, "direction": "in", "kind": "call", "peer": "<1.2>", "message": "'tick'"},
              {"at": 1700000100.5, "direction": "out", "kind": "reply", "peer": "<1.2>", "message": "3"},
              {"direction": "in", "kind": "cast", "peer": None, "message": "'x'"}]
    assert [[c.plain for c in row] for row in render.trace_rows(events)] == [
        ["22:15:00.250", "in ", "call", "<1.2>", "'tick'"],
        ["22:15:00.500", "out", "reply", "<1.2>", "3"],
        ["?", "in ", "cast", "-", "'x'"],
    ]
    log = {"n": 20, "events": events, "ended": None}
    assert render.trace_summary(log) == "3/20 messages, tracing…"
    assert render.trace_summary({**log, "ended": "exited"}) == "3/20 messages, ended: the actor exited"
    assert render.trace_summary({**log, "ended": "limit"}) == "3/20 messages, ended: all traced"
