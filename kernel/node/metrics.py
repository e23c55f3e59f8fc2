"""Prometheus metrics: ``Node(metrics_port=N)`` serves the text exposition format at ``/metrics``.

Nothing is added to the message path. The kernel's counters are plain ints its code bumps anyway, or
bumps once per exit, per timed-out call or per commit (:func:`worker_metrics` lists them); a scrape
asks every worker for them over the node's existing rpc path (as ``node.snapshot()`` does) from a
custom collector, so a node nobody scrapes pays nothing, and one scrape costs one rpc per worker. A
worker that does not answer within the snapshot's wait is reported ``pyotp_worker_up 0`` with its
loop lag, rather than holding the scrape up.

Every sample has a ``worker`` label: the worker index, or ``node`` for the node process (which hosts
the supervisors). ``prometheus_client`` is imported only when a port is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["serve", "validate_port", "worker_metrics"]

#: How long one scrape waits for the node's loop to gather the workers' parts.
SCRAPE_WAIT = 5.0


def validate_port(port: object, argument: str = "metrics_port") -> int | None:
    """``None`` (no metrics) or a TCP port 0-65535 (0: any free port); ``ValueError`` naming ``argument``."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{argument} must be a TCP port number 0-65535 (0 picks a free one) or None, "
                         f"got {port!r}")
    return port


def worker_metrics(rt: Any) -> dict[str, Any]:
    """One process's counters (run on its own loop: by the ``metrics`` rpc, or in the node process).

    ``restarts`` is keyed by the worker index that hosts each restarted child, as counted by the
    supervisors that live in this process.
    """
    from ..process.raw import NodeContext

    handled = rt.handled_done
    depth = 0
    restarts: dict[int, int] = {}
    actors = 0
    for p in list(rt.procs.values()):
        if isinstance(p, NodeContext):
            continue
        actors += 1
        handled += p._handled
        if p._mbox and len(p._mbox) > depth:
            depth = len(p._mbox)
        counts = getattr(p, "child_restarts", None)
        if isinstance(counts, dict) and counts:
            children = getattr(p, "_sup_children", {})
            for cid, n in counts.items():
                child = children.get(cid)
                where = child.pid.worker if child is not None and child.pid is not None else rt.index
                restarts[where] = restarts.get(where, 0) + n
    buffered = 0
    for peer in rt.peers.values():
        buffered += len(peer._buf)
        transport = peer._transport
        if transport is not None:
            buffered += transport.get_write_buffer_size()
    store = rt.store
    latency = getattr(store, "commit_latency", None)
    return {
        "handled": handled,
        "mailbox_max": depth,
        "actors": actors,
        "restarts": restarts,
        "exits": dict(rt.exits),
        "calls_timed_out": rt.calls_timed_out,
        "commits": getattr(store, "commits", 0),
        "commit_latency": None if latency is None else (list(latency.counts), latency.total),
        "buffered": buffered,
    }


def _families(parts: Mapping[str, dict[str, Any]]) -> Iterator[Any]:
    """The metric families of one scrape: ``parts`` maps a worker label to its part (or ``{}``)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    from ..persistence.store import COMMIT_BUCKETS  # here: `import kernel` must not pay for sqlite_utils

    def family(kind: Any, name: str, doc: str, key: str, labels: tuple[str, ...] = ("worker",)) -> Any:
        fam = kind(name, doc, labels=list(labels))
        for worker, part in parts.items():
            if key in part and part[key] is not None:
                fam.add_metric([worker], part[key])
        return fam

    yield family(GaugeMetricFamily, "pyotp_worker_up", "1 if the process answered this scrape, else 0", "up")
    yield family(GaugeMetricFamily, "pyotp_loop_lag_seconds",
                 "how far the process's event loop is behind (the node's heartbeat)", "lag")
    yield family(GaugeMetricFamily, "pyotp_actors", "processes hosted", "actors")
    yield family(CounterMetricFamily, "pyotp_messages_handled", "messages handled by its actors", "handled")
    yield family(GaugeMetricFamily, "pyotp_mailbox_depth_max", "the longest mailbox now", "mailbox_max")
    yield family(CounterMetricFamily, "pyotp_calls_timed_out", "calls from here that timed out",
                 "calls_timed_out")
    yield family(CounterMetricFamily, "pyotp_checkpoint_commits", "checkpoint transactions committed",
                 "commits")
    yield family(GaugeMetricFamily, "pyotp_peer_buffered_bytes",
                 "bytes written but not yet taken by the other processes of the node", "buffered")
    restarts = CounterMetricFamily("pyotp_restarts", "children restarted by their supervisor, by the "
                                   "worker that hosts the child", labels=["worker"])
    merged: dict[str, int] = {}
    for part in parts.values():
        for index, n in (part.get("restarts") or {}).items():
            label = "node" if int(index) < 0 else str(index)
            merged[label] = merged.get(label, 0) + n
    for worker in parts:
        restarts.add_metric([worker], merged.get(worker, 0))
    yield restarts
    exits = CounterMetricFamily("pyotp_exits", "process exits, by reason kind", labels=["worker", "reason"])
    for worker, part in parts.items():
        for reason, n in sorted((part.get("exits") or {}).items()):
            exits.add_metric([worker, reason], n)
    yield exits
    latency = HistogramMetricFamily("pyotp_checkpoint_commit_seconds",
                                    "checkpoint transaction latency, the write lock wait included",
                                    labels=["worker"])
    bounds = [*(repr(b) for b in COMMIT_BUCKETS), "+Inf"]
    for worker, part in parts.items():
        hist = part.get("commit_latency")
        if hist is None:
            continue
        counts, total = hist
        cumulative, buckets = 0, []
        for bound, n in zip(bounds, counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        latency.add_metric([worker], buckets, sum_value=total)
    yield latency


class _Collector:
    """A prometheus_client collector that gathers from the node's loop at scrape time."""

    def __init__(self, gather: Callable[[], Mapping[str, dict[str, Any]]]) -> None:
        self._gather = gather

    def collect(self) -> Iterator[Any]:
        yield from _families(self._gather())

    def describe(self) -> list[Any]:
        return []  # no scrape at registration: the families are produced only by collect()


class MetricsServer:
    """The HTTP endpoint: a prometheus_client server thread on ``host:port``; :meth:`close` stops it."""

    def __init__(self, gather: Callable[[], Any], loop: asyncio.AbstractEventLoop, host: str,
                 port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        def from_loop() -> Mapping[str, dict[str, Any]]:
            # The scrape runs on the server's thread; the workers are asked from the node's loop.
            result: Mapping[str, dict[str, Any]] = asyncio.run_coroutine_threadsafe(gather(), loop).result(
                SCRAPE_WAIT)
            return result

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(from_loop))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics_port: cannot serve /metrics on {host}:{port}: {exc.strerror} "
                                     "(choose another port, or 0 for any free one)") from None
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def serve(gather: Callable[[], Any], host: str, port: int) -> MetricsServer:
    """Start serving ``/metrics`` (call from the node's loop)."""
    return MetricsServer(gather, asyncio.get_running_loop(), host, port)

