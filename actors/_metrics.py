"""The metrics actor: counts every call outcome and tracks every server, off the hot path.

Three pieces:

- ``MetricsRef`` is what the call path and the tree hold. It outlives the actor's
  incarnations (like ``BreakerView``): ``run()`` is the actor's start function and attaches
  each new mailbox to it. ``report(outcome)`` never waits and never raises: it is one
  ``tell_nowait``, and a report that finds the mailbox full (or the actor down) is dropped
  and counted in ``dropped``, which every snapshot shows as ``dropped_reports``.
- ``metrics_actor`` owns the counters. It reads ``CallOutcome`` reports, supervision and
  breaker ``Event``s, ``Gauge`` updates from the connections, and answers ``Snapshot`` and
  ``Sync`` asks.
- ``spawn_metrics`` starts one in a nursery (tests, benchmarks, embedding without a tree).

Guarantees:

- The caller pays one ``tell_nowait`` per report (about 0.6 µs, the runtime's channel).
  The actor handles a report in about 1 µs (two dict lookups, a few increments, one
  sketch add), draining up to 256 queued messages per checkpoint; nothing is sorted and
  no percentile is computed until a ``Snapshot`` is asked (``bench/metrics_add.py``).
- Cardinality is bounded: labels are server, tool and outcome only. Each server has at
  most ``max_tools_per_server`` (256) named tool entries, in first-seen order; reports for
  any further tool are counted under the tool ``_OTHER``. An outcome kind the protocol does
  not define is counted as the failure ``other``.
- A malformed report (a NaN, negative or infinite duration) is counted but not timed; no
  report can kill the actor. Neither is an attempt that was never sent (``sent=False``: its
  deadline passed while it waited for a free slot): the wait is not the server's latency.
- Events come from the ``EventBus`` (the one passed in, else the current one), put in the
  actor's mailbox as they are published: ``MetricsRef.run`` and ``spawn_metrics`` attach
  the mailbox before the actor counts as started, so no event published after that is
  missed (unless the mailbox is full: the bus counts those), and a snapshot counts every
  event published before it was asked (a restart the status shows is in the next
  snapshot). Events may also be told directly (``MetricsRef.event``). Per server:

  - ``restarts`` counts every ``restarting`` event in its subtree
    (``.../server:<name>``, ``.../server:<name>/connection:<name>`` or ``.../breaker:<name>``):
    each one restarts the connection, which is the last child under ``rest_for_one``;
  - ``state`` follows the connection's ``started``/``ready``/``exited``/``restarting``/
    ``failed``/``stopped`` events and the subtree's own ``restarting``/``failed``/``gave_up``/
    ``stopped``; ``uptime`` counts from the last ``ready`` (trio clock) while running;
  - ``exits`` counts the connection's ``exited`` events by the cause in their ``data``
    (one of ``DEATH_CAUSES``; ``other`` when it names none of them);
  - ``breaker_state`` and ``breaker_transitions`` follow ``breaker_state`` events
    (``data = {"from": ..., "to": ..., "server": ...}``); a `Gauge` that carries the
    breaker's state sets it too (a breaker starts closed, or disabled by its policy,
    without an event);
  - a ``removed`` event of the ``server:<name>`` node forgets the server and its tools,
    so config reloads do not leak labels; what comes for it after that (the report of a
    call that ended after the removal, a gauge, an event) is not counted, until an
    ``added`` or ``started`` event of the node brings it back, counting from zero;
  - except when the server is being replaced (`Retain`, asked by the façade before a
    reload that changes its spec, or an operator's restart, stops the old subtree): a name
    that stays in the config is one series, so every counter (calls by outcome, latency
    sketches and histograms, retries, slow calls, restarts, exits, breaker transitions)
    goes on from where it was, as a Prometheus counter must (one that goes down reads as
    a restart of the whole process). Only what describes the running incarnation starts
    over at that ``removed``: state ``stopped``, no uptime, no calls in flight or queued.
    Reports of calls that end on the old incarnation after it are counted. If the
    replacement ends without a new incarnation (``Retain(keep=False)`` with no ``added``
    or ``started`` of the node since the ``removed``), the server is forgotten then, as
    by a plain removal.
- ``Gauge(server, inflight, queue_depth)`` replaces that server's gauges; a gauge update
  that finds the mailbox full is dropped silently (the next one replaces it anyway).
- Each incarnation of the metrics actor itself starts from zero counts (Prometheus
  treats that as a counter reset); ``MetricsRef.dropped`` survives restarts.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec
import trio

from protocol import ActorDown, CallOutcome, DeadlineExceeded, Event, Overloaded
from protocol._calls import OutcomeKind
from protocol._metrics import DEATH_CAUSES, OTHER_TOOL, TIMED_OUTCOMES, MetricsSnapshot, ServerMetrics, ToolMetrics

from ._events import EventBus, current_bus
from ._runtime import Mailbox, Ref, Reply, serve
from ._sketch import LatencySketch

__all__ = [
    "DEFAULT_MAX_TOOLS",
    "Gauge",
    "MetricsMessage",
    "MetricsRef",
    "Retain",
    "Snapshot",
    "Sync",
    "metrics_actor",
    "spawn_metrics",
]

DEFAULT_MAX_TOOLS: Final = 256
DEFAULT_MAILBOX: Final = 4096
#: Messages handled in one go without a checkpoint once the mailbox has some.
_BATCH: Final = 256

#: Failure names a report may carry: the typed failures and ``tool_error``.
_FAILURE_KINDS: Final = frozenset(typing.get_args(OutcomeKind)) - {"success", "cancelled"}
_QUANTILES: Final = (0.5, 0.95, 0.99)


class Gauge(msgspec.Struct, frozen=True):
    """Tell: the connection's current calls in flight and calls waiting for a slot, the
    server's running totals of what it wrote that was dropped (see `ServerMetrics`), and
    its breaker's state as the breaker's view shows it now (None: not told)."""

    server: str
    inflight: int
    queue_depth: int
    garbage_lines: int = 0
    oversized_dropped: int = 0
    breaker_state: str | None = None


class Retain(msgspec.Struct, frozen=True):
    """Ask (answered with None): ``server`` is about to be replaced, so the next ``removed``
    event of its ``server:<name>`` node keeps its counters (see the module docstring).

    ``keep=False`` says the replacement is over: a mark not used yet is dropped, and a
    server whose node was removed under the mark and not added again is forgotten.
    """

    server: str
    keep: bool = True


class Snapshot(msgspec.Struct, frozen=True):
    """Ask: answer a ``MetricsSnapshot`` (of one server only, when ``server`` is given)."""

    server: str | None = None


class Sync(msgspec.Struct, frozen=True):
    """Ask: answer the number of messages handled before it (the mailbox is FIFO).

    Events from the bus reach the mailbox through the actor's forwarder task, so an event
    published just before a ``Sync`` may still be on its way.
    """


MetricsMessage = CallOutcome | Event | Gauge | Retain | Snapshot | Sync


# ---------------------------------------------------------------------------------------------
# The actor's state


class _ToolStats:
    __slots__ = ("calls", "cancelled", "failures", "last_at", "last_error", "retries", "sketch", "slow", "successes")

    def __init__(self) -> None:
        self.calls = 0
        self.successes = 0
        self.cancelled = 0
        self.retries = 0
        self.slow = 0
        self.failures: dict[str, int] = {}
        self.sketch = LatencySketch()
        self.last_error: str | None = None
        self.last_at: float | None = None

    def to_metrics(self, server: str, tool: str, wall_offset: float) -> ToolMetrics:
        sketch = self.sketch
        decided = self.successes + sum(self.failures.values())
        p50, p95, p99 = sketch.quantiles(_QUANTILES)
        timed = sketch.count > 0
        return ToolMetrics(
            server=server,
            tool=tool,
            calls=self.calls,
            successes=self.successes,
            failures=dict(self.failures),
            cancelled=self.cancelled,
            retries=self.retries,
            slow=self.slow,
            success_rate=self.successes / decided if decided else 0.0,
            p50=p50,
            p95=p95,
            p99=p99,
            min=sketch.min if timed else None,
            max=sketch.max if timed else None,
            mean=sketch.mean,
            duration_count=sketch.count,
            duration_sum=sketch.sum,
            buckets=sketch.cumulative_buckets(),
            last_error=self.last_error,
            last_call=None if self.last_at is None else self.last_at + wall_offset,
        )


class _ServerStats:
    __slots__ = ("breaker_state", "breaker_transitions", "exits", "garbage_lines", "inflight", "max_tools", "name",
                 "named", "oversized_dropped", "queue_depth", "ready_at", "restarts", "state", "tools")  # fmt: skip

    def __init__(self, name: str, max_tools: int) -> None:
        self.name = name
        self.max_tools = max_tools
        self.tools: dict[str, _ToolStats] = {}
        self.named = 0  # tool entries other than _OTHER
        self.state = "unknown"
        self.restarts = 0
        self.exits: dict[str, int] = {}
        self.breaker_state = "closed"
        self.breaker_transitions = 0
        self.inflight = 0
        self.queue_depth = 0
        self.garbage_lines = 0
        self.oversized_dropped = 0
        self.ready_at: float | None = None

    def new_tool(self, tool: str) -> _ToolStats:
        """The entry for a tool not in ``tools`` yet: a new one, or ``_OTHER`` past the cap."""
        tools = self.tools
        if self.named >= self.max_tools or tool == OTHER_TOOL:
            stats = tools.get(OTHER_TOOL)
            if stats is None:
                stats = tools[OTHER_TOOL] = _ToolStats()
            return stats
        self.named += 1
        stats = tools[tool] = _ToolStats()
        return stats

    def detach(self) -> None:
        """Its incarnation is gone (a replacement): what describes it starts over, the
        counters do not."""
        self.state = "stopped"
        self.ready_at = None
        self.inflight = 0
        self.queue_depth = 0

    def to_metrics(self, now: float) -> ServerMetrics:
        running = self.state == "running" and self.ready_at is not None
        return ServerMetrics(
            server=self.name,
            state=self.state,
            restarts=self.restarts,
            exits=dict(self.exits),
            breaker_state=self.breaker_state,
            breaker_transitions=self.breaker_transitions,
            inflight=self.inflight,
            queue_depth=self.queue_depth,
            garbage_lines=self.garbage_lines,
            oversized_dropped=self.oversized_dropped,
            uptime=max(0.0, now - self.ready_at) if running and self.ready_at is not None else None,
        )


def _locate(path: str) -> tuple[str | None, str]:
    """``(server name, node)`` of an event path; node is ``server``, ``connection``, ``breaker``, ...

    ``root/servers/server:echo/connection:echo`` -> ``("echo", "connection")``. A server's
    name may hold ``/`` (``server:team/echo/connection:team/echo`` is ``team/echo``'s
    connection): a node below the server is ``<kind>:<server name>``. Paths outside any
    ``server:<name>`` node give ``(None, "")``.
    """
    if path.startswith("server:"):
        start = len("server:")
    else:
        start = path.find("/server:")
        if start < 0:
            return None, ""
        start += len("/server:")
    rest = path[start:]
    slash = rest.find("/")
    while slash >= 0:
        name = rest[:slash]
        kind, colon, owner = rest[slash + 1 :].partition(":")
        if colon and "/" not in kind and (owner == name or owner.startswith(name + "/")):
            return name, kind
        slash = rest.find("/", slash + 1)
    return rest, "server"


# Connection events -> the server's state. Subtree (server node) events are handled apart.
_CONNECTION_STATES: Final = {
    "started": "starting",
    "down": "restarting",  # or its data's "state": the link went down, the exit is to come
    "ready": "running",
    "exited": "stopped",
    "restarting": "restarting",
    "failed": "failed",
    "stopped": "stopped",
    "removed": "stopped",
}
_SUBTREE_STATES: Final = {
    "restarting": "restarting",
    "failed": "failed",
    "gave_up": "failed",
    "stopped": "stopped",
    "exited": "stopped",
}


class _Metrics:
    """Everything one incarnation counts. Only the actor's task calls it."""

    def __init__(self, max_tools: int, owner: MetricsRef | None) -> None:
        self.max_tools = max_tools
        self.owner = owner
        self.servers: dict[str, _ServerStats] = {}
        self.removed: set[str] = set()
        #: Servers marked by `Retain`: their next ``removed`` keeps their counters.
        self.retaining: set[str] = set()
        #: Servers whose node was removed under the mark, not added again yet.
        self.between: set[str] = set()
        self.handled = 0
        self.malformed = 0

    def server(self, name: str) -> _ServerStats:
        stats = self.servers.get(name)
        if stats is None:
            stats = self.servers[name] = _ServerStats(name, self.max_tools)
        return stats

    def on_outcome(self, report: CallOutcome) -> None:
        # The hot path: a success costs two dict lookups, a few increments and a sketch add.
        server = self.servers.get(report.server)
        if server is None:
            if report.server in self.removed:
                return
            server = self.server(report.server)
        stats = server.tools.get(report.tool)
        if stats is None:
            stats = server.new_tool(report.tool)
        stats.calls += 1
        kind = report.outcome
        if kind == "success":
            stats.successes += 1
            timed = True
        elif kind == "cancelled":
            stats.cancelled += 1
            timed = False
        else:
            if kind not in _FAILURE_KINDS:
                kind = "other"
            failures = stats.failures
            failures[kind] = failures.get(kind, 0) + 1
            stats.last_error = report.error if report.error is not None else kind
            # A deadline passed before the call could be sent (a wait for a free slot, a
            # timeout of 0) is no time of the server's.
            timed = kind in TIMED_OUTCOMES and report.sent
        if timed:
            duration = report.duration
            if 0.0 <= duration < 1e9:  # False for NaN; inf and absurd values are malformed
                stats.sketch.add(duration)
            else:
                self.malformed += 1
        if report.attempt > 1:
            stats.retries += 1
        if report.slow:
            stats.slow += 1
        stats.last_at = report.at

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "breaker_state":
            data = event.data or {}
            name = data.get("server")
            if not isinstance(name, str):
                name, _ = _locate(event.path)
                if name is None:
                    return
            if name in self.removed:
                return
            server = self.server(name)
            to = data.get("to")
            if isinstance(to, str):
                server.breaker_state = to
            server.breaker_transitions += 1
            return
        name, node = _locate(event.path)
        if name is None:
            return
        if node == "server" and kind == "removed":
            if name in self.retaining:
                self.retaining.discard(name)
                self.between.add(name)
                kept = self.servers.get(name)
                if kept is not None:
                    kept.detach()
                return
            self.forget(name)
            return
        if name in self.removed:
            if node != "server" or kind not in ("added", "started"):
                return
            self.removed.discard(name)
        server = self.server(name)
        if node == "server" and kind in ("added", "started") and name in self.between:
            self.between.discard(name)
            server.state = "unknown"  # so that it reads ``starting`` below
        if kind == "restarting":
            server.restarts += 1
        if kind == "exited" and node == "connection":
            cause = (event.data or {}).get("cause")
            cause = cause if cause in DEATH_CAUSES else "other"
            server.exits[cause] = server.exits.get(cause, 0) + 1
        if node == "connection":
            state = _CONNECTION_STATES.get(kind)
            if kind == "down":  # its link went down; its exit comes after the teardown
                shown = (event.data or {}).get("state")
                state = shown if shown in ("restarting", "stopped") else "restarting"
        elif node == "server":
            state = _SUBTREE_STATES.get(kind)
            if kind in ("started", "added") and server.state == "unknown":
                state = "starting"
        else:
            state = "restarting" if kind == "restarting" else None
        if state is None:
            return
        server.state = state
        if state == "running":
            server.ready_at = event.at
        else:
            server.ready_at = None

    def forget(self, name: str) -> None:
        self.servers.pop(name, None)
        self.removed.add(name)
        self.retaining.discard(name)
        self.between.discard(name)

    def on_retain(self, msg: Retain) -> None:
        name = msg.server
        if msg.keep:
            self.retaining.add(name)
            return
        self.retaining.discard(name)
        if name in self.between:
            self.forget(name)

    def on_gauge(self, gauge: Gauge) -> None:
        if gauge.server in self.removed:
            return
        server = self.server(gauge.server)
        server.inflight = gauge.inflight
        server.queue_depth = gauge.queue_depth
        server.garbage_lines = gauge.garbage_lines
        server.oversized_dropped = gauge.oversized_dropped
        if gauge.breaker_state is not None:
            server.breaker_state = gauge.breaker_state

    def snapshot(self, only: str | None = None) -> MetricsSnapshot:
        now = trio.current_time()
        wall_offset = time.time() - now
        servers = sorted(self.servers.values(), key=lambda s: s.name)
        if only is not None:
            servers = [s for s in servers if s.name == only]
        tools = [
            stats.to_metrics(server.name, tool, wall_offset)
            for server in servers
            for tool, stats in sorted(server.tools.items())
        ]
        return MetricsSnapshot(
            tools=tools,
            servers=[server.to_metrics(now) for server in servers],
            dropped_reports=self.owner.dropped if self.owner is not None else 0,
        )

    def handle(self, msg: Any, reply: Reply | None) -> None:
        """Handle one message (the loop counts ``CallOutcome`` reports itself, inline)."""
        kind = type(msg)
        if kind is CallOutcome:
            self.on_outcome(msg)
        elif kind is Event:
            self.on_event(msg)
        elif kind is Gauge:
            self.on_gauge(msg)
        elif kind is Retain:
            self.on_retain(msg)
            if reply is not None:
                reply.send(None)
        elif kind is Snapshot:
            if reply is not None:
                reply.send(self.snapshot(msg.server))
        elif kind is Sync:
            if reply is not None:
                reply.send(self.handled)
        elif reply is not None:
            reply.fail(TypeError(f"the metrics actor does not understand {kind.__name__}"))
        self.handled += 1


# ---------------------------------------------------------------------------------------------
# The actor


def _attach(bus: EventBus | None, subscribe: bool, ref: Ref[MetricsMessage]) -> Callable[[], None] | None:
    """Deliver every later event of ``bus`` (None: the current bus) straight into ``ref``'s
    mailbox as it is published, so it is ahead of any later ask: a snapshot counts every
    event published before it was asked (a forwarding task held each event across a
    scheduling step, and an ask could overtake it). Returns the detach, or None."""
    if not subscribe:
        return None
    if bus is None:
        bus = current_bus()
    if bus is None:
        return None

    def deliver(event: Event) -> None:
        try:
            ref.tell_nowait(event)
        except Overloaded:
            raise trio.WouldBlock from None  # the bus counts it dropped
        except ActorDown:
            raise trio.ClosedResourceError from None  # the bus detaches us

    return bus.attach(deliver)


async def metrics_actor(
    mailbox: Mailbox[MetricsMessage],
    *,
    owner: MetricsRef | None = None,
    max_tools_per_server: int = DEFAULT_MAX_TOOLS,
) -> None:
    """Count outcomes and track servers until the mailbox is stopped and drained.

    Events arrive in the mailbox like any message (see `_attach`: whoever starts the actor
    attaches its mailbox to the bus first, so nothing published after that is missed).
    ``owner``'s drop count is reported in every snapshot. Returns when the mailbox is
    stopped and drained.
    """
    state = _Metrics(max_tools_per_server, owner)
    handle, on_outcome = state.handle, state.on_outcome
    receive, receive_nowait = mailbox.receive, mailbox.receive_nowait
    try:
        while True:
            msg, reply = await receive()
            if type(msg) is CallOutcome:
                on_outcome(msg)
                state.handled += 1
            else:
                handle(msg, reply)
            # Drain what is already queued without a checkpoint per message.
            for _ in range(_BATCH):
                try:
                    msg, reply = receive_nowait()
                except trio.WouldBlock:
                    break
                if type(msg) is CallOutcome:
                    on_outcome(msg)
                    state.handled += 1
                else:
                    handle(msg, reply)
    except (trio.EndOfChannel, trio.ClosedResourceError):
        pass


def _not_started(_: Any) -> None:
    raise ActorDown("the metrics actor is not running", actor="metrics")


class MetricsRef:
    """The metrics actor as the call path sees it, stable across the actor's restarts.

    ``report`` and ``gauge`` never block and never raise; ``snapshot`` is an ask.
    ``dropped`` counts outcome reports that were dropped (mailbox full, or no actor running).
    """

    __slots__ = ("_post", "_tell", "bus", "dropped", "max_tools_per_server", "ref", "size", "subscribe")

    def __init__(
        self,
        *,
        size: int = DEFAULT_MAILBOX,
        max_tools_per_server: int = DEFAULT_MAX_TOOLS,
        bus: EventBus | None = None,
        subscribe: bool = True,
    ) -> None:
        self.size = size
        self.max_tools_per_server = max_tools_per_server
        self.bus = bus
        self.subscribe = subscribe
        self.dropped = 0
        self.ref: Ref[MetricsMessage] | None = None
        self._tell: Callable[[Any], None] = _not_started
        self._post: Callable[[Any], None] = _not_started

    def __repr__(self) -> str:
        return f"<MetricsRef {self.ref!r} dropped={self.dropped}>"

    def attach(self, ref: Ref[MetricsMessage] | None) -> None:
        """Point at a new incarnation's mailbox (None: none is running)."""
        self.ref = ref
        self._tell = ref.tell_nowait if ref is not None else _not_started
        self._post = ref.post if ref is not None else _not_started

    def report(self, outcome: CallOutcome) -> bool:
        """Post one outcome report (it reaches the actor before any later ask, such as a
        snapshot); never waits. False (and ``dropped`` += 1) if dropped."""
        try:
            self._post(outcome)
        except (Overloaded, ActorDown):
            self.dropped += 1
            return False
        return True

    def gauge(
        self,
        server: str,
        inflight: int,
        queue_depth: int,
        garbage_lines: int = 0,
        oversized: int = 0,
        breaker_state: str | None = None,
    ) -> bool:
        """Publish a connection's gauges without waiting; False if dropped (not counted)."""
        try:
            self._tell(Gauge(server, inflight, queue_depth, garbage_lines, oversized, breaker_state))
        except (Overloaded, ActorDown):
            return False
        return True

    def event(self, event: Event) -> bool:
        """Tell one event without waiting (for when the actor does not subscribe to a bus)."""
        try:
            self._tell(event)
        except (Overloaded, ActorDown):
            return False
        return True

    async def snapshot(self, server: str | None = None, timeout: float = 5.0) -> MetricsSnapshot:
        """Ask the actor for a snapshot; raises ``ActorDown`` or ``DeadlineExceeded``."""
        if self.ref is None:
            _not_started(None)
        assert self.ref is not None
        return await self.ref.ask(Snapshot(server), timeout)

    async def retain(self, server: str, keep: bool = True, timeout: float = 5.0) -> bool:
        """Ask `Retain` (``server`` is about to be replaced, or with ``keep=False``: its
        replacement is over); once this returns True, every event published after it
        sees the mark. False (nothing marked) when the actor is down or does not answer
        within ``timeout``: the replaced server then counts from zero, as a new one."""
        ref = self.ref
        if ref is None:
            return False
        try:
            await ref.ask(Retain(server, keep), timeout)
        except (ActorDown, DeadlineExceeded):
            return False
        return True

    async def sync(self, timeout: float = 5.0) -> int:
        """Wait until everything sent so far is handled; answer the count of messages handled."""
        if self.ref is None:
            _not_started(None)
        assert self.ref is not None
        return await self.ref.ask(Sync(), timeout)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """One incarnation of the actor: a child spec's ``start``. Reports ready with this ref."""
        mailbox: Mailbox[MetricsMessage] = Mailbox("metrics", self.size)
        self.attach(mailbox.ref)
        detach = _attach(self.bus, self.subscribe, mailbox.ref)  # before ready: no later event is missed

        async def behaviour(box: Mailbox[MetricsMessage]) -> None:
            await metrics_actor(box, owner=self, max_tools_per_server=self.max_tools_per_server)

        task_status.started(self)
        try:
            await serve(mailbox, behaviour)
        finally:
            mailbox.close("stopped")
            if detach is not None:
                detach()
            if self.ref is mailbox.ref:
                self.attach(None)

    def stop(self) -> None:
        """Stop gracefully: refuse new messages, handle the queued ones, then return."""
        if self.ref is not None:
            self.ref.stop()


def spawn_metrics(nursery: trio.Nursery, **options: Any) -> MetricsRef:
    """Start a metrics actor in ``nursery`` and return its ``MetricsRef`` (ready at once)."""
    metrics = MetricsRef(**options)
    mailbox: Mailbox[MetricsMessage] = Mailbox("metrics", metrics.size)
    metrics.attach(mailbox.ref)
    detach = _attach(metrics.bus, metrics.subscribe, mailbox.ref)  # now: no later event is missed

    async def behaviour(box: Mailbox[MetricsMessage]) -> None:
        try:
            await metrics_actor(box, owner=metrics, max_tools_per_server=metrics.max_tools_per_server)
        finally:
            if detach is not None:
                detach()
            if metrics.ref is box.ref:
                metrics.attach(None)

    nursery.start_soon(serve, mailbox, behaviour, name="actor:metrics")
    return metrics
