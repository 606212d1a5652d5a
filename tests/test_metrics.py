"""Metrics: the latency sketch, the metrics actor, the seed summary and the Prometheus text.

The actor tests run real actors under trio (no mocks), most on the autojump MockClock; the
sketch tests are property tests against exact quantiles computed by sorting.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from actors._breaker import ConnectionDown, ConnectionUp, ForceOpen, Reset, spawn_breaker
from actors._events import _BUS, EventBus
from actors._metrics import Gauge, MetricsRef, Snapshot, Sync, spawn_metrics
from actors._sketch import LatencySketch
from conftest import server_spec, wait_until
from protocol import BackoffPolicy, BreakerPolicy, CallOutcome, Event, ServerUnavailable
from protocol._metrics import DURATION_BUCKETS, OTHER_TOOL, MetricsSnapshot, ToolMetrics
from supervisor import ChildSpec, Strategy, Supervisor, TreeSupervisor
from supervisor._prometheus import render_metrics

# A hair of slack over 1% for float rounding at bucket edges.
ACCURACY = 0.01 * (1 + 1e-9)

positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
# Values that hit the fixed bounds exactly, or sit right next to them, as well as anything.
near_bounds = st.sampled_from(DURATION_BUCKETS).flatmap(
    lambda b: st.sampled_from([b, math.nextafter(b, 0.0), math.nextafter(b, math.inf)])
)
durations = st.one_of(positive, near_bounds, st.just(0.0))


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


# ---------------------------------------------------------------------------------------------
# The sketch


@settings(max_examples=300, deadline=None)
@given(st.lists(positive, min_size=1, max_size=400), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_sketch_quantiles_are_within_one_percent(values, qs):
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    for q, estimate in zip(qs, sketch.quantiles(qs)):
        exact = exact_quantile(values, q)
        assert abs(estimate - exact) <= ACCURACY * exact, (q, exact, estimate)
        assert sketch.quantile(q) == estimate
    assert sketch.quantile(0.0) == min(values)
    assert sketch.quantile(1.0) == max(values)
    assert sketch.count == len(values)
    assert sketch.sum == pytest.approx(math.fsum(values))


@settings(max_examples=300, deadline=None)
@given(st.lists(durations, max_size=300))
def test_sketch_fixed_buckets_are_exact(values):
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    assert sketch.cumulative_buckets() == [sum(1 for v in values if v <= bound) for bound in DURATION_BUCKETS]


@settings(max_examples=100, deadline=None)
@given(st.lists(durations, max_size=200), st.lists(durations, max_size=200))
def test_sketch_merge_equals_the_sketch_of_all_values(left, right):
    a, b, both = LatencySketch(), LatencySketch(), LatencySketch()
    for value in left:
        a.add(value)
        both.add(value)
    for value in right:
        b.add(value)
        both.add(value)
    a.merge(b)
    assert a.bins == both.bins and a.zero_count == both.zero_count and a.count == both.count
    assert a.cumulative_buckets() == both.cumulative_buckets()
    assert a.quantiles([0.5, 0.95, 0.99]) == both.quantiles([0.5, 0.95, 0.99])
    assert (a.min, a.max) == (both.min, both.max)


def test_sketch_edges():
    sketch = LatencySketch()
    assert sketch.quantile(0.5) is None and sketch.mean is None
    assert sketch.cumulative_buckets() == [0] * len(DURATION_BUCKETS)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises((ValueError, OverflowError)):
            sketch.add(bad)
    assert sketch.count == 0
    sketch.add(0.0)
    sketch.add(0.0)
    sketch.add(1.0)
    assert sketch.quantile(0.5) == 0.0 and sketch.quantile(0.99) == 0.0 and sketch.quantile(1.0) == 1.0
    with pytest.raises(ValueError):
        sketch.quantile(1.5)
    with pytest.raises(ValueError):
        sketch.merge(LatencySketch(relative_accuracy=0.02))


# ---------------------------------------------------------------------------------------------
# The actor


def outcome(kind: str, *, server: str = "s", tool: str = "t", duration: float = 0.01, **kw) -> CallOutcome:
    return CallOutcome(server=server, tool=tool, outcome=kind, duration=duration, at=trio.current_time(), **kw)


async def settle(metrics: MetricsRef) -> None:
    """Let the event forwarder deliver what the bus holds, then wait until all is handled."""
    await trio.testing.wait_all_tasks_blocked()
    await metrics.sync()


@pytest.fixture
async def metrics(nursery) -> MetricsRef:
    return spawn_metrics(nursery, subscribe=False)


async def test_counts_outcomes_per_server_and_tool(metrics, autojump_clock):
    await trio.sleep(5)
    for duration in (0.010, 0.020, 0.030):
        metrics.report(outcome("success", duration=duration))
    metrics.report(outcome("tool_error", duration=0.040, error="bad prompt"))
    metrics.report(outcome("DeadlineExceeded", duration=0.5, error="timed out after 0.5 s"))
    metrics.report(outcome("ServerCrashed", duration=0.060, error="server died", attempt=2))
    # Refusals and cancellations count, but are not latency.
    metrics.report(outcome("CircuitOpen", duration=0.0, error="circuit open"))
    metrics.report(outcome("UnknownTool", duration=0.0, error="no such tool"))
    metrics.report(outcome("cancelled", duration=7.0))
    metrics.report(outcome("success", duration=0.005, slow=True))
    metrics.report(outcome("success", tool="other", duration=1.0))
    metrics.report(outcome("success", server="s2", duration=2.0))
    snap = await metrics.snapshot()

    t = snap.tool("s", "t")
    assert t is not None
    assert t.calls == 10
    assert t.successes == 4
    assert t.failures == {
        "tool_error": 1,
        "DeadlineExceeded": 1,
        "ServerCrashed": 1,
        "CircuitOpen": 1,
        "UnknownTool": 1,
    }
    assert t.cancelled == 1 and t.retries == 1 and t.slow == 1
    assert t.success_rate == pytest.approx(4 / 9)
    timed = [0.010, 0.020, 0.030, 0.040, 0.5, 0.060, 0.005]
    assert t.duration_count == len(timed)
    assert t.min == 0.005 and t.max == 0.5
    assert t.mean == pytest.approx(sum(timed) / len(timed))
    assert t.duration_sum == pytest.approx(sum(timed))
    assert t.p50 == pytest.approx(exact_quantile(timed, 0.5), rel=0.01)
    assert t.p99 == pytest.approx(exact_quantile(timed, 0.99), rel=0.01)
    assert t.buckets == [sum(1 for d in timed if d <= b) for b in DURATION_BUCKETS]
    assert t.last_error == "no such tool"  # the last failure's error
    assert t.last_call == pytest.approx(datetime.now().timestamp(), abs=5)

    assert snap.tool("s", "other").calls == 1
    assert snap.tool("s2", "t").calls == 1
    assert [(x.server, x.tool) for x in snap.tools] == [("s", "other"), ("s", "t"), ("s2", "t")]
    assert [s.server for s in snap.servers] == ["s", "s2"]
    assert snap.dropped_reports == 0

    only = await metrics.ref.ask(Snapshot("s2"), 1)
    assert [(x.server, x.tool) for x in only.tools] == [("s2", "t")]


async def test_a_tool_with_only_refusals_has_no_latency(metrics):
    metrics.report(outcome("Overloaded", error="queue full"))
    t = (await metrics.snapshot()).tool("s", "t")
    assert t.failures == {"Overloaded": 1} and t.success_rate == 0.0
    assert t.p50 is None and t.min is None and t.mean is None and t.duration_count == 0
    assert t.last_error == "queue full"
    summary = (await metrics.snapshot()).seed_summary()["s:t"]
    assert summary["avg_time_ms"] == summary["min_time_ms"] == summary["max_time_ms"] == "0.00"


async def test_malformed_reports_do_not_kill_the_actor(metrics):
    metrics.report(outcome("success", duration=math.nan))
    metrics.report(outcome("success", duration=math.inf))
    metrics.report(outcome("success", duration=-1.0))
    metrics.report(outcome("not-a-kind"))
    t = (await metrics.snapshot()).tool("s", "t")
    assert t.calls == 4 and t.successes == 3 and t.failures == {"other": 1}
    assert t.duration_count == 0
    with pytest.raises(TypeError):
        await metrics.ref.ask("hello", 1)
    assert metrics.ref.alive


async def test_dropped_reports_are_counted_when_the_mailbox_is_full(nursery):
    metrics = MetricsRef(size=4, subscribe=False)
    assert metrics.report(outcome("success")) is False  # not running yet: dropped
    await nursery.start(metrics.run)
    await trio.testing.wait_all_tasks_blocked()  # the actor waits in receive()
    # No checkpoint between the reports: the actor cannot drain, the mailbox fills. Reports
    # are posted in batches of at most the mailbox size (4), one batch per channel slot
    # (the first batch may go straight to the waiting actor), plus one batch not yet sent.
    accepted = [metrics.report(outcome("success")) for _ in range(100)]
    taken = accepted.count(True)
    assert 4 * 5 <= taken <= 4 * 7 and accepted == [True] * taken + [False] * (100 - taken)
    assert metrics.dropped == 1 + 100 - taken
    snap = await metrics.snapshot()
    assert snap.dropped_reports == 1 + 100 - taken
    assert snap.tool("s", "t").calls == taken
    # Gauges dropped on a full mailbox are not reports.
    for _ in range(10):
        metrics.gauge("s", 1, 0)
    assert metrics.dropped == 1 + 100 - taken
    await metrics.sync()
    metrics.stop()
    with trio.fail_after(5):
        while metrics.ref is not None:
            await trio.sleep(0)
    assert metrics.report(outcome("success")) is False and metrics.dropped == 2 + 100 - taken


async def test_tool_labels_are_capped_per_server(metrics):
    for i in range(300):
        metrics.report(outcome("success", tool=f"tool{i:03d}"))
    metrics.report(outcome("success", tool="tool000"))  # known: still counted by name
    metrics.report(outcome("ServerCrashed", tool="tool299"))  # folded
    metrics.report(outcome("success", server="b", tool="tool299"))  # another server, own cap
    snap = await metrics.snapshot()
    tools = [t for t in snap.tools if t.server == "s"]
    assert len(tools) == 257
    names = {t.tool for t in tools}
    assert OTHER_TOOL in names and "tool255" in names and "tool256" not in names
    assert snap.tool("s", "tool000").calls == 2
    other = snap.tool("s", OTHER_TOOL)
    assert other.calls == 45 and other.successes == 44 and other.failures == {"ServerCrashed": 1}
    assert snap.tool("b", "tool299").calls == 1
    assert sum(t.calls for t in tools) == 302


async def test_the_cap_is_configurable(nursery):
    metrics = spawn_metrics(nursery, subscribe=False, max_tools_per_server=2)
    for tool in "abcd":
        metrics.report(outcome("success", tool=tool))
    snap = await metrics.snapshot()
    assert [(t.tool, t.calls) for t in snap.tools] == [(OTHER_TOOL, 2), ("a", 1), ("b", 1)]


async def test_gauges(metrics, autojump_clock):
    metrics.gauge("s", 3, 2)
    metrics.gauge("s", 5, 1)
    await metrics.ref.tell(Gauge("t", 1, 0))
    snap = await metrics.snapshot()
    assert (snap.server("s").inflight, snap.server("s").queue_depth) == (5, 1)
    assert snap.server("t").inflight == 1
    assert snap.tools == []


async def test_supervision_and_breaker_events_from_the_bus(nursery, autojump_clock):
    bus = EventBus()
    metrics = spawn_metrics(nursery, bus=bus)
    conn = "root/servers/server:echo/connection:echo"

    def publish(path: str, kind: str, **fields) -> None:
        bus.publish(Event(path=path, kind=kind, at=trio.current_time(), **fields))

    publish("root/servers/server:echo", "started")
    publish("root/servers/server:echo/breaker:echo", "started")
    publish(conn, "started")
    await settle(metrics)
    assert (await metrics.snapshot()).server("echo").state == "starting"
    publish(conn, "ready")
    await trio.sleep(10)
    server = (await metrics.snapshot()).server("echo")
    assert server.state == "running" and server.uptime == pytest.approx(10)
    publish(conn, "exited", reason="RuntimeError: boom")
    publish(conn, "restarting", delay=0.5, reason="RuntimeError: boom")
    publish(
        "root/servers/server:echo/breaker:echo",
        "breaker_state",
        data={"from": "closed", "to": "open", "server": "echo"},
    )
    await settle(metrics)
    server = (await metrics.snapshot()).server("echo")
    assert (server.state, server.restarts, server.uptime) == ("restarting", 1, None)
    assert (server.breaker_state, server.breaker_transitions) == ("open", 1)
    publish(conn, "started")
    publish(conn, "ready")
    publish("root/servers/server:echo/breaker:echo", "breaker_state", data={"from": "open", "to": "closed"})
    # A breaker restart restarts the connection too (rest_for_one): it counts.
    publish("root/servers/server:echo/breaker:echo", "restarting", delay=0.1)
    publish(conn, "started")
    publish(conn, "ready")
    publish("root/servers/server:other/connection:other", "failed", reason="5 consecutive failures")
    publish("root/servers", "restarting")  # no server in the path: ignored
    await trio.sleep(1)
    snap = await metrics.snapshot()
    echo = snap.server("echo")
    assert (echo.state, echo.restarts, echo.breaker_state, echo.breaker_transitions) == ("running", 2, "closed", 2)
    assert echo.uptime == pytest.approx(1)
    assert snap.server("other").state == "failed"
    assert [s.server for s in snap.servers] == ["echo", "other"]
    # Removing the server node forgets the server (config reload) and its tools.
    metrics.report(outcome("success", server="other"))
    publish("root/servers/server:other", "removed")
    await settle(metrics)
    snap = await metrics.snapshot()
    assert [s.server for s in snap.servers] == ["echo"] and snap.tool("other", "t") is None


async def test_a_removed_server_stays_forgotten_until_it_is_added_again(nursery, autojump_clock):
    """A report or gauge that reached the actor after the server's ``removed`` event (a
    call that ended after its server was removed) brought the server back: it stayed in
    every snapshot and in ``/metrics`` for good, state ``unknown``, up 0, with the late
    call's counts. Now what comes for a removed server is not counted, until the server
    is added again; then it counts from zero."""
    bus = EventBus()
    metrics = spawn_metrics(nursery, bus=bus)

    def publish(path: str, kind: str) -> None:
        bus.publish(Event(path=path, kind=kind, at=trio.current_time()))

    publish("root/servers/server:gone", "added")
    metrics.report(outcome("success", server="gone"))
    publish("root/servers/server:gone", "removed")
    metrics.report(outcome("ServerUnavailable", server="gone"))
    metrics.gauge("gone", 0, 0)
    await settle(metrics)
    snap = await metrics.snapshot()
    assert snap.servers == [] and snap.tools == []
    assert b"gone" not in render_metrics(snap)

    publish("root/servers/server:gone", "added")
    metrics.report(outcome("success", server="gone"))
    await settle(metrics)
    snap = await metrics.snapshot()
    assert snap.server("gone").state == "starting"
    assert (snap.tool("gone", "t").calls, snap.tool("gone", "t").failures) == (1, {})


async def test_a_call_failed_by_its_servers_removal_leaves_no_trace_in_the_metrics():
    """The same through a real supervisor: a call made while its server drained for removal
    fails once the server is removed, and its report re-created the server in the metrics."""
    spec = server_spec("leaving", "echo.py", timeout=30, shutdown_timeout=10)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("leaving", timeout=30)
        link = sup.link("leaving")
        failed: list[Exception] = []

        async def late_call() -> None:
            with pytest.raises(ServerUnavailable) as unavailable:
                await sup.call_tool("echo", {"text": "x"}, server="leaving")
            failed.append(unavailable.value)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 1}, server="leaving"))
                await wait_until(lambda: link.inflight == 1, what="the slow call in flight")
                nursery.start_soon(sup.remove_server, "leaving")
                await wait_until(lambda: link.conn is not None and link.conn.stopping, what="the drain")
                nursery.start_soon(late_call)
                await wait_until(lambda: failed, timeout=15, what="the late call's answer")
            snap = await sup.metrics_snapshot()
        assert "was removed" in failed[0].message
        assert snap.servers == [] and snap.tools == [], (snap.servers, snap.tools)


async def test_a_server_whose_name_has_a_slash_is_tracked_under_its_own_name():
    """Event paths were split at every ``/``, so the events of a server named ``team/echo``
    (``root/servers/server:team/echo/connection:team/echo``) went to a server ``team`` that
    does not exist: ``team/echo`` stayed ``unknown`` (up 0) while it ran, ``team`` showed up
    beside it, and removing ``team/echo`` forgot neither. Now its events are its own."""
    spec = server_spec("team/echo", "echo.py", timeout=30)
    async with Supervisor([spec]) as sup:
        with trio.fail_after(30):
            await sup.wait_connected("team/echo", timeout=30)
            await sup.call_tool("echo", {"text": "x"}, server="team/echo")
            await wait_until(lambda: sup.link("team/echo").conn is not None, what="the connection")
            snap = await sup.metrics_snapshot()
            assert [(s.server, s.state) for s in snap.servers] == [("team/echo", "running")]
            up = {x.labels["server"]: x.value for x in families(render_metrics(snap))["mcp_supervisor_server_up"]}
            assert up == {"team/echo": 1}
            await sup.remove_server("team/echo")
            snap = await sup.metrics_snapshot()
            assert snap.servers == [] and snap.tools == []


async def test_a_breaker_disabled_by_its_policy_is_shown_disabled():
    """A breaker starts closed, or disabled when its policy says ``enabled = false``,
    without a ``breaker_state`` event, and the metrics knew the state from events only: a
    disabled breaker was ``closed`` in every snapshot and in ``/metrics``. Now a snapshot
    reads each breaker's state as its view shows it."""
    spec = server_spec("echo", "echo.py", timeout=30, breaker=BreakerPolicy(enabled=False))
    async with Supervisor([spec]) as sup:
        with trio.fail_after(30):
            await sup.wait_connected("echo", timeout=30)
            await sup.call_tool("echo", {"text": "x"}, server="echo")
            snap = await sup.metrics_snapshot()
        assert sup.handle("echo").breaker.state == "disabled"
        assert snap.server("echo").breaker_state == "disabled"
        found = families(render_metrics(snap))["mcp_supervisor_breaker_state"]
        assert {x.labels["state"] for x in found if x.value == 1} == {"disabled"}


async def test_a_snapshot_counts_every_event_published_before_it_was_asked(nursery, autojump_clock):
    """Events reach the actor through a forwarder task, one at a time, and an ask could
    overtake them: a restart the status already showed was missing from the snapshot
    taken right after it (seen as a flaky test under load). The snapshot counts them first."""
    bus = EventBus()
    metrics = spawn_metrics(nursery, bus=bus)
    conn = "root/servers/server:echo/connection:echo"
    for n in range(50):
        bus.publish(Event(path=conn, kind="exited", at=trio.current_time(), data={"cause": "hang"}))
        bus.publish(Event(path=conn, kind="restarting", at=trio.current_time(), delay=0.1))
        server = (await metrics.snapshot()).server("echo")  # no settling in between
        assert (server.exits, server.restarts) == ({"hang": n + 1}, n + 1)


async def test_real_breaker_transitions_are_counted(nursery, autojump_clock):
    bus = EventBus()
    token = _BUS.set(bus)
    try:
        metrics = spawn_metrics(nursery)  # subscribes to the current bus
        ref, _view = spawn_breaker(nursery, BreakerPolicy(), "b1")
    finally:
        _BUS.reset(token)
    await ref.ask(ForceOpen("maintenance"), 1)
    await ref.ask(Reset(), 1)
    await ref.ask(ConnectionDown(reason="crashed"), 1)
    await settle(metrics)
    assert (await metrics.snapshot()).server("b1").breaker_state == "open"
    await ref.ask(ConnectionUp(), 1)
    await settle(metrics)
    server = (await metrics.snapshot()).server("b1")
    assert (server.breaker_state, server.breaker_transitions) == ("closed", 4)


class Connection:
    """A child standing in for a connection: ready, crashes once after 1 s, then runs."""

    def __init__(self) -> None:
        self.starts = 0

    async def start(self, *, task_status) -> None:
        self.starts += 1
        task_status.started(None)
        if self.starts == 1:
            await trio.sleep(1)
            raise RuntimeError("server died")
        await trio.sleep_forever()


async def test_metrics_under_a_real_supervision_tree(autojump_clock):
    metrics = MetricsRef()
    connection = Connection()

    async def start_server(*, task_status) -> None:
        subtree = TreeSupervisor(
            "server:x",
            [ChildSpec(id="connection:x", start=connection.start)],
            strategy=Strategy.REST_FOR_ONE,
        )
        await subtree.run(task_status=task_status)

    root = TreeSupervisor(
        "root",
        [ChildSpec(id="metrics", start=metrics.run), ChildSpec(id="server:x", start=start_server, supervisor=True)],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert root.which("metrics") is metrics
        await trio.sleep(30)
        server = (await metrics.snapshot()).server("x")
        assert connection.starts == 2
        assert (server.state, server.restarts) == ("running", 1)
        assert server.uptime is not None and 0 < server.uptime < 30
        root.stop()
    assert metrics.ref is None  # the actor stopped with the tree; reports now drop
    assert metrics.report(outcome("success")) is False


# ---------------------------------------------------------------------------------------------
# The seed summary and the Prometheus text

SEED_KEYS = [
    "server",
    "tool",
    "requests",
    "successes",
    "failures",
    "success_rate",
    "avg_time_ms",
    "min_time_ms",
    "max_time_ms",
    "last_error",
    "last_call",
]


async def test_seed_summary_has_the_seed_keys_and_formats(metrics):
    for _ in range(39):
        metrics.report(outcome("success", duration=0.0123))
    metrics.report(outcome("ServerCrashed", duration=0.5, error="boom"))
    metrics.report(outcome("success", server="s2", tool="u", duration=1.0))
    snap = await metrics.snapshot()
    summary = snap.seed_summary()
    assert list(summary) == ["s:t", "s2:u"]
    entry = summary["s:t"]
    assert list(entry) == SEED_KEYS
    assert (entry["server"], entry["tool"], entry["requests"], entry["successes"], entry["failures"]) == (
        "s",
        "t",
        40,
        39,
        1,
    )
    assert entry["success_rate"] == "97.5%"
    for key in ("avg_time_ms", "min_time_ms", "max_time_ms"):
        assert re.fullmatch(r"\d+\.\d{2}", entry[key]), entry[key]
    assert entry["min_time_ms"] == "12.30" and entry["max_time_ms"] == "500.00"
    assert entry["avg_time_ms"] == f"{(39 * 0.0123 + 0.5) / 40 * 1000:.2f}"
    assert entry["last_error"] == "boom"
    assert abs((datetime.fromisoformat(entry["last_call"]) - datetime.now()).total_seconds()) < 5
    assert summary["s2:u"]["success_rate"] == "100.0%" and summary["s2:u"]["last_error"] is None
    assert list(snap.seed_summary("s2")) == ["s2:u"]
    # The snapshot round-trips through msgspec at the edges.
    assert msgspec.json.decode(msgspec.json.encode(snap), type=MetricsSnapshot) == snap


def families(text: bytes) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text.decode()):
        found.setdefault(family.name, []).extend(family.samples)
    return found


async def test_prometheus_text_matches_the_outcomes_sent(nursery, autojump_clock):
    bus = EventBus()
    metrics = spawn_metrics(nursery, bus=bus)
    sent = {
        ("s", "t", "success"): 7,
        ("s", "t", "tool_error"): 2,
        ("s", "t", "DeadlineExceeded"): 1,
        ("s", "u", "success"): 3,
        ("s", "u", "cancelled"): 2,
        ("s2", "t", "CircuitOpen"): 4,
    }
    for (server, tool, kind), n in sent.items():
        for i in range(n):
            metrics.report(outcome(kind, server=server, tool=tool, duration=0.003 * (i + 1)))
    at = trio.current_time()
    bus.publish(Event(path="root/servers/server:s/connection:s", kind="ready", at=at))
    for cause in ("hang", "hang", "exited", "a-word-we-do-not-know", None):
        bus.publish(Event(path="root/servers/server:s2/connection:s2", kind="exited", at=at,
                          data={"cause": cause} if cause else None))
    bus.publish(Event(path="root/servers/server:s2/breaker:s2", kind="exited", at=at, data={"cause": "hang"}))
    bus.publish(Event(path="root/servers/server:s2/connection:s2", kind="restarting", at=at, delay=1.0))
    bus.publish(Event(path="", kind="breaker_state", at=at, data={"from": "closed", "to": "half_open", "server": "s2"}))
    metrics.gauge("s", 4, 1)
    await settle(metrics)
    snap = await metrics.snapshot()
    text = render_metrics(snap)
    found = families(text)

    calls = {
        (x.labels["server"], x.labels["tool"], x.labels["outcome"]): x.value
        for x in found["mcp_supervisor_tool_calls"]
        if x.name == "mcp_supervisor_tool_calls_total"
    }
    assert {k: v for k, v in calls.items() if v} == sent
    assert all(x.value >= 0 for x in found["mcp_supervisor_tool_calls"])

    hist = found["mcp_supervisor_tool_call_duration_seconds"]
    count = {(x.labels["server"], x.labels["tool"]): x.value for x in hist if x.name.endswith("_count")}
    assert count == {("s", "t"): 10, ("s", "u"): 3, ("s2", "t"): 0}  # cancelled and refusals untimed
    inf = {(x.labels["server"], x.labels["tool"]): x.value for x in hist if x.labels.get("le") == "+Inf"}
    assert inf == count
    le_005 = {(x.labels["server"], x.labels["tool"]): x.value for x in hist if x.labels.get("le") == "0.005"}
    assert le_005[("s", "u")] == 1  # 0.003 only
    total = {(x.labels["server"], x.labels["tool"]): x.value for x in hist if x.name.endswith("_sum")}
    assert total[("s", "u")] == pytest.approx(0.003 + 0.006 + 0.009)

    restarts = {x.labels["server"]: x.value for x in found["mcp_supervisor_server_restarts"]}
    assert restarts == {"s": 0, "s2": 1}
    exits = {(x.labels["server"], x.labels["cause"]): x.value for x in found["mcp_supervisor_server_exits"]}
    assert exits == {("s2", "hang"): 2, ("s2", "exited"): 1, ("s2", "other"): 2}  # the connection's only
    assert snap.server("s2").exits == {"hang": 2, "exited": 1, "other": 2}
    up = {x.labels["server"]: x.value for x in found["mcp_supervisor_server_up"]}
    assert up == {"s": 1, "s2": 0}
    breaker = {(x.labels["server"], x.labels["state"]): x.value for x in found["mcp_supervisor_breaker_state"]}
    assert breaker[("s2", "half_open")] == 1 and breaker[("s", "closed")] == 1
    assert sum(v for (server, _), v in breaker.items() if server == "s2") == 1
    assert {state for (server, state) in breaker if server == "s"} == {
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
    }
    assert {x.labels["server"]: x.value for x in found["mcp_supervisor_inflight_calls"]} == {"s": 4, "s2": 0}
    assert found["mcp_supervisor_metrics_dropped_reports"][0].value == 0


def connection_state(sup: Supervisor, name: str) -> str | None:
    """The state of ``name``'s connection in the status tree (None while it has none)."""
    for server in sup.status().children:
        for node in [server, *server.children]:
            if node.id == f"server:{name}":
                for child in node.children:
                    if child.id == f"connection:{name}":
                        return child.state
    return None


async def test_a_server_that_gave_up_is_told_apart_from_one_restarting():
    """``/metrics`` had ``server_up`` (0 or 1) and the breaker's state only: a server that
    failed for good (``backoff.max_consecutive`` failed starts in a row: only an operator
    brings it back) and one waiting for its next restart were the same series (up 0,
    breaker open), so "gave up" could not be alerted on (found by a probe). Now
    ``mcp_supervisor_server_state{server,state}`` is 1 for the server's state and 0 for
    the others, as kube-state-metrics shows a pod's phase."""
    gave_up = server_spec(
        "gave_up", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, jitter=0.0, max_consecutive=1)
    )
    # Its next start is an hour away: it is still restarting when the test looks.
    waiting = server_spec("waiting", "crash_at_start.py", backoff=BackoffPolicy(min=3600, max=3600, jitter=0.0))
    echo = server_spec("echo", "echo.py", timeout=30)
    async with Supervisor([echo, gave_up, waiting]) as sup:
        with trio.fail_after(30):
            await sup.wait_connected("echo", timeout=30)
            await wait_until(lambda: connection_state(sup, "gave_up") == "failed", timeout=20, what="give-up")
            await wait_until(lambda: connection_state(sup, "waiting") == "restarting", what="the restart wait")
            snap = await sup.metrics_snapshot()
    found = families(render_metrics(snap))
    assert "mcp_supervisor_server_state" in found, sorted(found)
    state = {(x.labels["server"], x.labels["state"]): x.value for x in found["mcp_supervisor_server_state"]}
    assert {(server, s) for (server, s), v in state.items() if v == 1} == {
        ("echo", "running"), ("gave_up", "failed"), ("waiting", "restarting")
    }
    every = {"starting", "running", "restarting", "failed", "stopped"}
    for server in ("echo", "gave_up", "waiting"):  # one-hot: every state, always, so a series never vanishes
        assert {s for (name, s) in state if name == server} == every
        assert sum(v for (name, _), v in state.items() if name == server) == 1
    up = {x.labels["server"]: x.value for x in found["mcp_supervisor_server_up"]}
    assert up == {"echo": 1, "gave_up": 0, "waiting": 0}


async def one_in_flight_one_queued(sup: Supervisor, nursery: trio.Nursery, second):
    """On server "one" (``max_concurrency`` 1): a ``sleep`` of 1 s in flight, then
    ``second()`` started and waiting for the slot; the server's link."""
    await sup.wait_connected("one", timeout=30)
    link = sup.link("one")
    nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 1.0}, server="one"))
    await wait_until(lambda: link.inflight == 1, what="the first call in flight")
    nursery.start_soon(second)
    await wait_until(lambda: link.queued == 1, what="the second call waiting for the slot")
    return link


async def test_a_call_that_timed_out_waiting_for_a_slot_is_no_server_latency(mock_clock):
    """A call whose deadline passed while it waited for a free slot (``max_concurrency``)
    was never sent (``DeadlineExceeded``, ``sent=False``), yet its whole wait went into the
    latency histogram and percentiles as if the server had taken that long (found by a
    probe). It is counted under its kind, and not timed. The clock runs at real speed and
    jumps 100 s while the second call waits, past its 50 s deadline."""
    mock_clock.rate = 1.0
    spec = server_spec("one", "echo.py", timeout=10_000, max_concurrency=1, health_check_interval=None)
    refused = []

    async def second() -> None:
        with pytest.raises(Exception) as caught:
            await sup.call_tool("sleep", {"seconds": 0.1}, server="one", timeout=50)
        refused.append(caught.value)

    async with Supervisor([spec]) as sup:
        with trio.fail_after(200):  # 60 s of real time, past the jump
            async with trio.open_nursery() as nursery:
                await one_in_flight_one_queued(sup, nursery, second)
                mock_clock.jump(100)
            timed = (await sup.metrics_snapshot()).tool("one", "sleep")
    assert type(refused[0]).__name__ == "DeadlineExceeded" and "never sent" in str(refused[0]), refused
    assert (timed.calls, timed.successes, timed.failures) == (2, 1, {"DeadlineExceeded": 1})
    assert timed.duration_count == 1 and 100 <= timed.max < 1000  # the first call only


async def test_the_latency_histogram_leaves_out_the_wait_for_a_free_slot(mock_clock):
    """``mcp_supervisor_tool_call_duration_seconds`` is the server's latency: a call that
    waited for a free slot (``max_concurrency``) before it was sent counted that wait as
    the server's time, so a queue on the supervisor's side read as a slow server (found by
    a probe). The clock runs at real speed, and jumps at two moments: 100 s while the first
    call is in flight and the second waits for its slot, 1000 s once the second is sent."""
    mock_clock.rate = 1.0
    spec = server_spec("one", "echo.py", timeout=10_000, max_concurrency=1, health_check_interval=None)
    async with Supervisor([spec]) as sup:
        with trio.fail_after(1200):  # 60 s of real time, past the jumps
            async with trio.open_nursery() as nursery:
                link = await one_in_flight_one_queued(
                    sup, nursery, lambda: sup.call_tool("sleep", {"seconds": 1.0}, server="one")
                )
                mock_clock.jump(100)
                await wait_until(lambda: link.queued == 0 and link.inflight == 1, what="the second call sent")
                mock_clock.jump(1000)
            timed = (await sup.metrics_snapshot()).tool("one", "sleep")
    assert timed.duration_count == 2 and timed.successes == 2
    assert 100 <= timed.min < 1000  # the first call: in flight through the first jump
    assert 1000 <= timed.max < 1100, timed.max  # the second: sent after the first jump


def test_render_metrics_of_nothing_parses():
    found = families(render_metrics(None))
    assert found["mcp_supervisor_tool_calls"] == []
    empty_tool = ToolMetrics(server="s", tool="t", calls=0, successes=0, failures={})
    found = families(render_metrics(MetricsSnapshot(tools=[empty_tool])))
    assert [x.value for x in found["mcp_supervisor_tool_call_duration_seconds"] if x.name.endswith("_count")] == [0]


async def test_sync_answers_after_earlier_messages(metrics):
    for _ in range(1000):
        metrics.report(outcome("success"))
    handled = await metrics.ref.ask(Sync(), 1)
    assert handled == 1000
    assert (await metrics.snapshot()).tool("s", "t").calls == 1000


def test_a_call_within_the_seeds_timeout_lands_in_a_bucket_of_its_own():
    """The seed's servers time out at 300 s (``COMFYUI_MCP_*_TIMEOUT``), and a workflow run
    takes minutes; the buckets stopped at 60 s, so every call between 60 and 300 s was
    only in ``+Inf`` (found by a probe)."""
    sketch = LatencySketch()
    for seconds in (90.0, 200.0, 299.0):
        sketch.add(seconds)
    finite = sketch.cumulative_buckets()
    assert DURATION_BUCKETS[-1] >= 300.0 and finite[-1] == 3
    assert [DURATION_BUCKETS[i] for i, count in enumerate(finite) if count and (i == 0 or finite[i - 1] < count)] == [
        120.0, 300.0
    ]
