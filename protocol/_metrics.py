"""The metrics snapshot: what the metrics actor answers, as plain data encoded at the edges.

A ``MetricsSnapshot`` is computed at once by the metrics actor (percentiles are computed at
snapshot time only, never per call) and is never mutated afterwards. Three views read it:

- the status API encodes it as it is (``msgspec.json.encode(snapshot)``);
- ``MetricsSnapshot.seed_summary()`` renders the dict the copilot's ``MCPMetricsCollector
  .get_metrics()`` returned, key for key and format for format;
- ``supervisor._prometheus`` renders the Prometheus text exposition.

Meanings fixed here:

- ``calls`` counts finished *attempts* (one ``CallOutcome`` each): ``calls == successes +
  sum(failures.values()) + cancelled``. ``successes`` counts ``success`` only; ``failures``
  maps the typed failure names (``ServerCrashed``, ``DeadlineExceeded``, ...) and
  ``tool_error`` to counts; ``cancelled`` (the caller gave up) is neither.
- ``success_rate`` is a fraction in [0, 1]: ``successes / (successes + failures)``, and 0.0
  while nothing has been decided. The seed summary shows it as a percentage.
- Durations are seconds. Latency (``p50``/``p95``/``p99``, ``min``/``max``/``mean``, the
  fixed buckets, ``duration_sum``/``duration_count``) covers the attempts that reached the
  server and ended there (``TIMED_OUTCOMES``, sent): a fast refusal (circuit open, unknown
  tool, overloaded, ...) or a cancelled call would otherwise pull the percentiles down
  exactly when the server is in trouble, and a ``DeadlineExceeded`` that was never sent
  (its deadline passed while it waited for a free slot) would push them up for a queue on
  the supervisor's side. Each is None while no timed attempt has been seen.
  Percentiles are within 1% relative error of the exact ones.
- ``buckets[i]`` is the exact cumulative count of timed attempts with duration
  ``<= DURATION_BUCKETS[i]``; the implicit ``+Inf`` bucket is ``duration_count``.
- ``last_call`` is wall-clock epoch seconds (``time.time()`` scale) of the last attempt's end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec

__all__ = [
    "BREAKER_STATES",
    "DEATH_CAUSES",
    "DURATION_BUCKETS",
    "OTHER_TOOL",
    "SERVER_STATES",
    "TIMED_OUTCOMES",
    "MetricsSnapshot",
    "ServerMetrics",
    "ToolMetrics",
]

#: Upper bounds (seconds) of the fixed latency buckets shown to Prometheus; ``+Inf`` is implied.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# (Up to 600 s: the seed's timeouts are 300 s, and a workflow run takes minutes; with 60 s
# the top bucket, every such call was only in +Inf.)

#: The tool label that stands for every tool of a server past its cardinality cap.
OTHER_TOOL: Final = "_OTHER"

#: Outcome kinds whose duration counts as latency: the attempt reached the server and ended
#: there (answered, timed out, or the server died under it); an attempt reported with
#: ``sent=False`` (a deadline spent before it could be sent) is not timed, whatever its kind.
TIMED_OUTCOMES: Final = frozenset({"success", "tool_error", "InvalidResult", "DeadlineExceeded", "ServerCrashed"})

#: Every state a breaker can be in, as exported by ``mcp_supervisor_breaker_state``.
BREAKER_STATES: Final = ("closed", "open", "half_open", "forced_open", "disabled")

#: Every state a server can be in, as exported by ``mcp_supervisor_server_state``: its
#: connection's ``ChildState``. ``failed`` is for good (``backoff.max_consecutive`` failed
#: starts in a row; only an operator's restart brings it back); ``restarting`` waits for
#: its next start.
SERVER_STATES: Final = ("starting", "running", "restarting", "failed", "stopped")


class ToolMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """The counters and latency of one ``(server, tool)`` label pair."""

    server: str
    tool: str
    calls: int
    successes: int
    failures: dict[str, int]
    cancelled: int = 0
    retries: int = 0  # attempts with attempt > 1
    slow: int = 0  # attempts reported slow
    success_rate: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    duration_count: int = 0
    duration_sum: float = 0.0
    buckets: list[int] = []  # cumulative, aligned with DURATION_BUCKETS
    last_error: str | None = None
    last_call: float | None = None  # epoch seconds

    @property
    def failure_count(self) -> int:
        return sum(self.failures.values())

    def seed_dict(self) -> dict[str, Any]:
        """The seed's ``MCPMetrics.to_dict()``: same keys, same order, same formats."""

        def ms(value: float | None) -> str:
            return f"{(value or 0.0) * 1000:.2f}"

        return {
            "server": self.server,
            "tool": self.tool,
            "requests": self.calls,
            "successes": self.successes,
            "failures": self.failure_count,
            "success_rate": f"{self.success_rate * 100:.1f}%",
            "avg_time_ms": ms(self.mean),
            "min_time_ms": ms(self.min),
            "max_time_ms": ms(self.max),
            "last_error": self.last_error,
            "last_call": None if self.last_call is None else datetime.fromtimestamp(self.last_call).isoformat(),
        }


#: Why a connection died, as ``ServerMetrics.exits`` counts it (a bounded set, fit for a label).
DEATH_CAUSES: Final = ("exited", "transport", "hang", "unresponsive", "session_lost", "garbage", "connect", "other")


class ServerMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One server as the supervision events, the breaker and its connection's gauges show it.

    ``state`` is the connection's ``ChildState`` (``unknown`` before any event about it);
    ``restarts`` counts restart decisions in the server's subtree (each restarts the
    connection); ``uptime`` is seconds since the connection was last ready, None when it is
    not running. ``exits`` counts the connection's abnormal ends by cause (`DEATH_CAUSES`).
    ``garbage_lines`` and ``oversized_dropped`` count, over every incarnation, what the
    server wrote that was dropped: lines that were not JSON-RPC (a stray log line on stdout;
    past ``garbage_threshold`` in a row the connection dies) and messages over
    ``max_message_bytes``.
    """

    server: str
    state: str = "unknown"
    restarts: int = 0
    exits: dict[str, int] = {}
    breaker_state: str = "closed"
    breaker_transitions: int = 0
    inflight: int = 0
    queue_depth: int = 0
    garbage_lines: int = 0
    oversized_dropped: int = 0
    uptime: float | None = None


class MetricsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every tool and server the metrics actor knows, sorted by name.

    ``dropped_reports`` counts outcome reports the call path dropped because the metrics
    mailbox was full or down (so ``calls`` may lag the truth by that much).
    """

    tools: list[ToolMetrics] = []
    servers: list[ServerMetrics] = []
    dropped_reports: int = 0

    def seed_summary(self, server: str | None = None) -> dict[str, dict[str, Any]]:
        """The seed's ``MCPMetricsCollector.get_metrics(server)``: ``"server:tool"`` -> ``to_dict()``.

        Unlike the seed (a prefix match), ``server`` selects that server exactly.
        """
        return {
            f"{tool.server}:{tool.tool}": tool.seed_dict()
            for tool in self.tools
            if server is None or tool.server == server
        }

    def tool(self, server: str, tool: str) -> ToolMetrics | None:
        for entry in self.tools:
            if entry.server == server and entry.tool == tool:
                return entry
        return None

    def server(self, server: str) -> ServerMetrics | None:
        for entry in self.servers:
            if entry.server == server:
                return entry
        return None
