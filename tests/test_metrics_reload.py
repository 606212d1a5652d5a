"""Metrics across a replacement: a server whose name stays in the config keeps its counters.

A reload that changes a server's spec outside ``LIVE_KEYS`` (or an operator's restart)
stops its subtree and starts a new one; the tree's ``removed`` event made the metrics
actor forget the server, so every per-server and per-tool counter started again from
zero, in the snapshot and in ``/metrics`` (a Prometheus counter that goes down reads as
a restart of the process). A real supervisor over a real stdio server, and the actor on
its own for the paths a real supervisor reaches only when something else broke.
"""

from __future__ import annotations

import trio
import trio.testing

from actors._events import EventBus
from actors._metrics import spawn_metrics
from conftest import server_spec
from protocol import Event
from supervisor import Supervisor
from supervisor._prometheus import render_metrics
from test_metrics import families, outcome, settle

COUNTERS = (
    "mcp_supervisor_tool_calls_total",
    "mcp_supervisor_tool_call_duration_seconds_count",
    "mcp_supervisor_tool_call_duration_seconds_bucket",
    "mcp_supervisor_server_restarts_total",
    "mcp_supervisor_server_exits_total",
)


def counters(text: bytes) -> dict[tuple, float]:
    found = families(text)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in found.values()
        for sample in family
        if sample.name in COUNTERS
    }


async def test_a_replaced_server_keeps_its_counters_and_a_removed_one_drops_them():
    spec = server_spec("echo", "echo.py", timeout=30)
    async with Supervisor([spec]) as sup:
        with trio.fail_after(60):
            await sup.wait_connected("echo", timeout=30)
            for _ in range(3):
                await sup.call_tool("echo", {"text": "x"}, server="echo")
            await sup.call_tool("fail", {"message": "no"}, server="echo")
            before = await sup.metrics_snapshot()
            text_before = render_metrics(before)
            first_pid = sup.link("echo").process.pid

            changed = server_spec("echo", "echo.py", timeout=30, env={"SOMETHING": "else"})
            result = await sup.reconcile([changed])
            assert result["replaced"] == ["echo"], result
            second_pid = sup.link("echo").process.pid
            await sup.call_tool("echo", {"text": "y"}, server="echo")
            await sup.restart_server("echo")  # an operator's restart is a replacement too
            assert sup.link("echo").process.pid not in (first_pid, second_pid)
            await sup.call_tool("echo", {"text": "z"}, server="echo")
            after = await sup.metrics_snapshot()

        echo = after.tool("echo", "echo")
        assert (echo.calls, echo.successes, echo.duration_count) == (5, 5, 5)
        assert after.tool("echo", "fail").failures == {"tool_error": 1}
        assert after.server("echo").state == "running"
        text_after = render_metrics(after)
        old, new = counters(text_before), counters(text_after)
        assert old and set(old) <= set(new)
        went_down = {key: (old[key], new[key]) for key in old if new[key] < old[key]}
        assert not went_down, went_down
        calls = {
            x.labels["outcome"]: x.value
            for x in families(text_after)["mcp_supervisor_tool_calls"]
            if x.labels["tool"] == "echo"
        }
        assert calls == {"success": 5}

        with trio.fail_after(30):
            await sup.remove_server("echo")
            gone = await sup.metrics_snapshot()
        assert gone.servers == [] and gone.tools == []
        assert b'server="echo"' not in render_metrics(gone)


async def test_retain_keeps_a_series_through_one_removal_only(nursery, autojump_clock):
    """The actor's side of it: a late report of the old incarnation counts; a replacement
    that ends with no new subtree forgets the server (as a removal does, late reports
    included); a mark that no removal used does not make a later removal keep a ghost."""
    bus = EventBus()
    metrics = spawn_metrics(nursery, bus=bus)

    def publish(name: str, kind: str) -> None:
        bus.publish(Event(path=f"root/servers/server:{name}", kind=kind, at=trio.current_time()))

    def report(name: str) -> None:
        metrics.report(outcome("success", server=name))

    for name in ("kept", "failed", "unused"):
        publish(name, "added")
        report(name)

    assert await metrics.retain("kept")
    publish("kept", "stopped")
    publish("kept", "removed")
    report("kept")  # a call that ended on the old incarnation
    await settle(metrics)
    snap = await metrics.snapshot()
    assert snap.server("kept").state == "stopped" and snap.tool("kept", "t").calls == 2
    publish("kept", "added")
    assert await metrics.retain("kept", keep=False)
    report("kept")
    await settle(metrics)
    snap = await metrics.snapshot()
    assert snap.server("kept").state == "starting" and snap.tool("kept", "t").calls == 3

    assert await metrics.retain("failed")
    publish("failed", "removed")
    assert await metrics.retain("failed", keep=False)  # never added back
    report("failed")
    await settle(metrics)
    snap = await metrics.snapshot()
    assert "failed" not in {s.server for s in snap.servers}

    assert await metrics.retain("unused")
    assert await metrics.retain("unused", keep=False)
    publish("unused", "removed")
    report("unused")
    await settle(metrics)
    snap = await metrics.snapshot()
    assert [s.server for s in snap.servers] == ["kept"]
    assert {t.server for t in snap.tools} == {"kept"}
