"""Smoke test of the benchmark harness: it runs end to end and yields a figure and a ratio.

No timing is asserted here, ever: speed targets are judged by ``python -m tools.bench`` against a
floor measured in the same run, never by a test on a noisy machine.
"""

import json

import pytest

from tools.bench.runner import main


@pytest.mark.timeout(20)
def test_quick_local_cast_yields_a_figure_and_a_ratio(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "local_cast", "--reps", "1", "--json", str(out)])
    summary = json.loads(out.read_text())
    floor = summary["floors"]["queue_one_way"]
    row = summary["scenarios"]["local_cast"]
    assert row["error"] is None
    assert floor["median"] > 0
    assert row["median"] > 0
    assert row["ratio"] > 0
    assert row["target"] == ">= 0.5x"
    assert isinstance(row["met"], bool)


@pytest.mark.timeout(60)
def test_quick_registry_and_checkpoint_rows_yield_figures(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "send_by_name", "--only", "ckpt_volatile", "--reps", "1", "--json", str(out)])
    summary = json.loads(out.read_text())
    for name in ("send_by_name", "ckpt_volatile"):
        row = summary["scenarios"][name]
        assert row["error"] is None
        assert row["median"] > 0
        assert row["ratio"] > 0
        assert isinstance(row["met"], bool)


@pytest.mark.timeout(60)
def test_quick_dynsup_rows_place_the_supervisor_on_the_worker_and_in_the_node(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "dynsup_start", "--only", "dynsup_start_node", "--reps", "1",
          "--json", str(out)])
    rows = json.loads(out.read_text())["scenarios"]
    assert rows["dynsup_start"]["error"] is None and rows["dynsup_start"]["median"] > 0
    assert rows["dynsup_start_node"]["error"] is None and rows["dynsup_start_node"]["median"] > 0
    assert rows["dynsup_start_node"]["base"]["name"] == "dynsup_start"
    assert rows["dynsup_start"]["extra"]["sup_worker"] == 0  # worker= given: beside its caller
    assert rows["dynsup_start_node"]["extra"]["sup_worker"] == -1  # the default: the node process


@pytest.mark.timeout(60)
def test_quick_stop_to_down_row_measures_the_heartbeat_beside_a_kill(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "stop_to_down", "--reps", "1", "--json", str(out)])
    rows = json.loads(out.read_text())["scenarios"]
    row = rows["stop_to_down"]
    assert row["error"] is None and row["unit"] == "s"
    # A stopped worker is found by the heartbeat (worker_timeout=1.0), a killed one by its exit.
    assert row["median"] >= 1.0 > row["base_value"]


@pytest.mark.timeout(60)
def test_quick_tcp_transport_rows_yield_figures_beside_their_tcp_floors(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "tcp_peer_call", "--only", "tcp_peer_cast", "--reps", "1", "--json", str(out)])
    summary = json.loads(out.read_text())
    for name, floor in (("tcp_peer_call", "tcp_roundtrip"), ("tcp_peer_cast", "tcp_stream")):
        row = summary["scenarios"][name]
        assert row["error"] is None
        assert row["median"] > 0 and summary["floors"][floor]["median"] > 0
        assert row["ratio"] > 0


@pytest.mark.timeout(240)
def test_quick_cluster_rows_yield_every_figure_beside_its_base(tmp_path, postgres):
    from tools.bench.cluster_nodes import main as cluster_main

    out = tmp_path / "cluster.json"
    assert cluster_main(["--quick", "--dsn", postgres.dsn, "--lease", "1", "--json", str(out)]) == 0
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    names = " | ".join(rows)
    for part in ("call A -> B, actor", "call A -> B, node context, sequential", "cast A -> B",
                 "entity activation", "durable calls", "name claim (free name)", "after SIGKILL",
                 "after SIGSTOP"):
        assert part in names, f"no row {part!r} in {names}"
    for row in rows.values():
        assert row["ours"] > 0 and row["base"] > 0 and row["ratio"] > 0
    kill = next(row for name, row in rows.items() if "SIGKILL" in name)
    assert kill["base"] == 1.0 and kill["unit"] == "s"  # the lease is the fail-over's floor
    # Activations went to every node of the cluster, not only the caller's.
    assert len(next(row for name, row in rows.items() if name.startswith("entity"))["hosts"]) == 3
