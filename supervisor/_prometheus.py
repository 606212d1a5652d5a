"""Prometheus exposition of a ``MetricsSnapshot``: a custom collector and ``render_metrics``.

Collection is synchronous, so the collector reads a *source*: a callable returning the latest
``MetricsSnapshot`` (or None before the first one). The daemon's ``/metrics`` handler asks the
metrics actor for a fresh snapshot and calls ``render_metrics(snapshot)``; an embedding host
that already runs a prometheus_client registry registers ``SnapshotCollector(source)`` in it.

Families (labels are server, tool, outcome and state only, never arguments or ids; tool
labels are capped per server by the metrics actor, the rest fold into ``_OTHER``):

- ``mcp_supervisor_tool_calls_total{server,tool,outcome}`` counter: finished attempts by
  outcome kind (``success``, ``tool_error``, the typed failure names, ``cancelled``).
- ``mcp_supervisor_tool_call_duration_seconds{server,tool}`` histogram over the fixed
  ``DURATION_BUCKETS`` (exact counts), with ``_sum`` and ``_count``; timed outcomes only.
- ``mcp_supervisor_server_restarts_total{server}`` counter.
- ``mcp_supervisor_server_exits_total{server, cause}`` counter: the connection's abnormal
  ends by cause (``protocol.DEATH_CAUSES``: exited, transport, hang, unresponsive,
  session_lost, garbage, connect, other).
- ``mcp_supervisor_server_up{server}`` gauge: 1 while the connection is running, else 0.
- ``mcp_supervisor_server_state{server,state}`` gauge: 1 for the server's current state, 0
  for the others among ``SERVER_STATES`` (starting, running, restarting, failed, stopped),
  as kube-state-metrics shows a pod's phase: ``failed`` is a server that gave up for good
  (``backoff.max_consecutive``), which ``server_up`` alone tells not from one restarting.
  A server no event has been seen for yet is ``unknown`` (a series of its own).
- ``mcp_supervisor_breaker_state{server,state}`` gauge: 1 for the current state, 0 for the
  others among closed, open, half_open, forced_open, disabled.
- ``mcp_supervisor_inflight_calls{server}`` and ``mcp_supervisor_queued_calls{server}`` gauges.
- ``mcp_supervisor_server_dropped_messages_total{server, reason}`` counter: what the server
  wrote that was dropped, over every incarnation: ``not_json_rpc`` (a line on stdout, or an
  event on its stream, that was no JSON-RPC) or ``over_max_message_bytes`` (a stdio line; an
  answer that large is also an ``InvalidResult`` outcome of its call).
- ``mcp_supervisor_metrics_dropped_reports_total`` counter: outcome reports the metrics actor
  never saw because its mailbox was full.
- ``mcp_supervisor_http_sessions`` gauge (the daemon's ``/metrics`` only, `render_front`):
  the MCP sessions open on its HTTP front.

Guarantee: ``render_metrics`` uses a fresh, dedicated ``CollectorRegistry`` per call, never
the global one, and touches no state outside its argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from protocol._metrics import BREAKER_STATES, DURATION_BUCKETS, SERVER_STATES, MetricsSnapshot

__all__ = ["CONTENT_TYPE", "SnapshotCollector", "render_front", "render_metrics"]

#: The Content-Type of ``render_metrics``' output (text exposition format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LE = [floatToGoString(bound) for bound in DURATION_BUCKETS]


class SnapshotCollector(Collector):
    """A collector over whatever snapshot ``source()`` returns at collection time."""

    def __init__(self, source: Callable[[], MetricsSnapshot | None]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; skip the registry's describe-time collect

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        if snapshot is None:
            snapshot = MetricsSnapshot()
        calls = CounterMetricFamily(
            "mcp_supervisor_tool_calls", "Finished tool call attempts by outcome.", labels=["server", "tool", "outcome"]
        )
        durations = HistogramMetricFamily(
            "mcp_supervisor_tool_call_duration_seconds",
            "Duration of tool call attempts that reached the server.",
            labels=["server", "tool"],
        )
        for tool in snapshot.tools:
            calls.add_metric([tool.server, tool.tool, "success"], tool.successes)
            for reason, count in sorted(tool.failures.items()):
                calls.add_metric([tool.server, tool.tool, reason], count)
            if tool.cancelled:
                calls.add_metric([tool.server, tool.tool, "cancelled"], tool.cancelled)
            counts = tool.buckets if len(tool.buckets) == len(_LE) else [0] * len(_LE)
            buckets: list[tuple[str, float]] = list(zip(_LE, counts))
            buckets.append(("+Inf", tool.duration_count))
            durations.add_metric([tool.server, tool.tool], buckets, tool.duration_sum)
        yield calls
        yield durations

        restarts = CounterMetricFamily(
            "mcp_supervisor_server_restarts", "Restarts of each server's connection.", labels=["server"]
        )
        exits = CounterMetricFamily(
            "mcp_supervisor_server_exits",
            "Abnormal ends of each server's connection, by cause.",
            labels=["server", "cause"],
        )
        up = GaugeMetricFamily(
            "mcp_supervisor_server_up", "1 while the server's connection is running.", labels=["server"]
        )
        server_state = GaugeMetricFamily(
            "mcp_supervisor_server_state",
            "1 for the server's current state (failed: gave up for good), else 0.",
            labels=["server", "state"],
        )
        breaker = GaugeMetricFamily(
            "mcp_supervisor_breaker_state", "1 for the breaker's current state, else 0.", labels=["server", "state"]
        )
        inflight = GaugeMetricFamily(
            "mcp_supervisor_inflight_calls", "Tool calls in flight on the server.", labels=["server"]
        )
        queued = GaugeMetricFamily(
            "mcp_supervisor_queued_calls", "Tool calls waiting for a concurrency slot.", labels=["server"]
        )
        dropped = CounterMetricFamily(
            "mcp_supervisor_server_dropped_messages",
            "What the server wrote that was dropped, by reason.",
            labels=["server", "reason"],
        )
        for server in snapshot.servers:
            restarts.add_metric([server.server], server.restarts)
            dropped.add_metric([server.server, "not_json_rpc"], server.garbage_lines)
            dropped.add_metric([server.server, "over_max_message_bytes"], server.oversized_dropped)
            for cause, count in sorted(server.exits.items()):
                exits.add_metric([server.server, cause], count)
            up.add_metric([server.server], 1.0 if server.state == "running" else 0.0)
            _one_hot(server_state, server.server, SERVER_STATES, server.state)
            _one_hot(breaker, server.server, BREAKER_STATES, server.breaker_state)
            inflight.add_metric([server.server], server.inflight)
            queued.add_metric([server.server], server.queue_depth)
        yield restarts
        yield exits
        yield up
        yield server_state
        yield breaker
        yield inflight
        yield queued
        yield dropped
        yield CounterMetricFamily(
            "mcp_supervisor_metrics_dropped_reports",
            "Outcome reports dropped because the metrics actor's mailbox was full.",
            value=snapshot.dropped_reports,
        )


def _one_hot(family: GaugeMetricFamily, server: str, states: tuple[str, ...], current: str) -> None:
    """1 for ``current``, 0 for every other of ``states`` (and ``current`` added when it is
    none of them: a state this module does not know yet)."""
    if current not in states:
        states = (*states, current)
    for state in states:
        family.add_metric([server, state], 1.0 if state == current else 0.0)


def render_metrics(snapshot: MetricsSnapshot | None) -> bytes:
    """The Prometheus text exposition (``CONTENT_TYPE``) of one snapshot."""
    return _render(SnapshotCollector(lambda: snapshot))


class _Families(Collector):
    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render_front(sessions: int) -> bytes:
    """The exposition of the daemon's HTTP front, to follow `render_metrics`' in ``/metrics``."""
    return _render(_Families(GaugeMetricFamily(
        "mcp_supervisor_http_sessions", "MCP sessions open on the daemon's HTTP front.", value=sessions
    )))


def _render(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
