"""Edges of replacing, restarting and reconciling servers through the façade
(`Supervisor.replace_server`, `restart_server`, `reconcile`, `begin_stop`).

Real servers from ``tests/servers/`` throughout; every wait has a deadline.
"""

from __future__ import annotations

import functools
import sys
import uuid
from pathlib import Path

import msgspec
import pytest
import trio

from conftest import SERVERS, drain, marker_of, procs_with_marker, server_spec, wait_until
from protocol import BackoffPolicy, Failure, ServerSpec, ServerUnavailable, UnknownTool
from supervisor import Supervisor
from test_daemon import text_of


def slow_when_flagged(name: str, flag: Path) -> ServerSpec:
    """The echo server, which sleeps 60 s before serving once ``flag`` exists: the same
    spec connects at once at first, and slowly when restarted after the flag is made."""
    marker = f"{name}-{uuid.uuid4().hex[:12]}"
    return ServerSpec(
        name=name,
        command="sh",
        args=["-c", f'[ -f "{flag}" ] && sleep 60; exec "{sys.executable}" "{SERVERS / "echo.py"}"'],
        env={"MCP_TEST_MARKER": marker},
        connect_timeout=100,
    )


async def a_long_call(sup: Supervisor, server: str, nursery: trio.Nursery) -> trio.CancelScope:
    """A 50 s call on ``server``, in flight once this returns; cancel the scope to end it."""
    call = trio.CancelScope()

    async def long_call() -> None:
        with call:
            await sup.call_tool("sleep", {"seconds": 50}, server=server, timeout=55)

    nursery.start_soon(long_call)
    await wait_until(lambda: sup.link(server).inflight == 1, timeout=10, what="the call in flight")
    return call


def assert_removed_before_started(events) -> None:
    """``before`` was removed before ``after`` started, as the events say."""
    seen = [(e.path.rsplit(":", 1)[1], e.kind) for e in drain(events)
            if e.path.endswith(("server:before", "server:after")) and e.kind in ("removed", "started")]
    assert seen == [("before", "removed"), ("after", "started")], seen


@pytest.mark.parametrize("change", ["replace", "restart"])
async def test_a_stop_cuts_a_replacement_or_restart_short(tmp_path, change):
    """SIGTERM while a reload replaced a server (or an operator restarted one) whose new
    incarnation was slow to connect: the replacement ran shielded to its end, so the daemon
    exited only once that incarnation had connected, up to its ``connect_timeout`` (an
    added server's start was cut short already). Now the stop (`begin_stop`) ends the wait
    for the first attempt: the replacement returns with the new server starting, a call
    waiting for it gets its answer then, and the supervisor's exit leaves nothing running."""
    flag = tmp_path / "slow"
    spec = slow_when_flagged("echo", flag)
    new = server_spec("echo", "slow_start.py", "--delay", "60", connect_timeout=100) if change == "replace" else spec
    done: list = []
    answers: list = []
    with trio.fail_after(40):  # the new incarnation would connect after 60 s
        async with trio.open_nursery() as callers, Supervisor([spec]) as sup:
            await sup.wait_connected("echo", timeout=20)
            old_pid = sup.link("echo").process.pid
            flag.touch()

            async def replace() -> None:
                if change == "replace":
                    done.append(await sup.replace_server(new))
                else:
                    done.append(await sup.restart_server("echo"))

            async def waiting_call() -> None:
                try:
                    answers.append(await sup.call_tool("echo", {"text": "x"}, timeout=60))
                except Failure as failure:
                    answers.append(failure)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(replace)
                await wait_until(lambda: [p for p in procs_with_marker(marker_of(new)) if p != old_pid], timeout=20,
                                 what="the new incarnation to start")
                callers.start_soon(waiting_call)
                await wait_until(lambda: sup.link("echo").conn is None and sup.handle("echo").replacing is not None,
                                 timeout=5, what="the replacement to wait for its new incarnation")
                await trio.sleep(0.2)  # the call is waiting for the new incarnation
                assert not answers
                sup.begin_stop()
            (status,) = done
            assert status.id == "server:echo" and status.state == "starting", status
            assert sup.link("echo").conn is None
        # The call that waited for the new incarnation is answered by the supervisor's exit.
        (answer,) = answers
        assert isinstance(answer, Failure), answer
    assert procs_with_marker(marker_of(spec)) == [] and procs_with_marker(marker_of(new)) == []


def connection_status(sup: Supervisor, name: str):
    (servers,) = [c for c in sup.status().children if c.id == "servers"]
    (server,) = [c for c in servers.children if c.id == f"server:{name}"]
    (conn,) = [c for c in server.children if c.id.startswith("connection:")]
    return conn


async def test_a_replacement_that_fixes_a_crashing_server_drops_the_old_definitions_error():
    """A reload that replaced a crash-looping server with a working definition left the
    status saying ``running`` with the old definition's ``last error: could not connect
    ... crash_at_start``: the link (kept across the replacement, so callers wait instead of
    failing) kept it. Now a replacement with another spec starts with no last error; a
    restart with the same spec still keeps it (it may well fail the same way)."""
    broken = server_spec("f", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=2))
    fixed = server_spec("f", "echo.py")
    async with Supervisor([broken]) as sup:
        await wait_until(lambda: connection_status(sup, "f").state == "failed", timeout=20, what="f to give up")
        crash = sup.link("f").last_error
        assert crash is not None and "crash_at_start" in crash, crash

        with trio.fail_after(20):
            await sup.restart_server("f")  # the same spec: fails the same way
        await wait_until(lambda: connection_status(sup, "f").state == "failed", timeout=20, what="f to give up again")
        assert sup.link("f").last_error is not None

        with trio.fail_after(20):
            status = await sup.replace_server(fixed)
        (conn,) = [c for c in status.children if c.id.startswith("connection:")]
        assert conn.state == "running", status
        assert sup.link("f").last_error is None
        assert conn.detail["last_error"] is None and connection_status(sup, "f").detail["last_error"] is None
    assert procs_with_marker(marker_of(fixed)) == []


async def test_a_removed_server_draining_holds_up_no_other_change_of_a_reconcile():
    """A reload removed ``old`` (a long call in flight, a long ``shutdown_timeout``) and
    added ``new``, and renamed ``b``'s tools to the bare names ``old`` exposed: the
    removals ran to their end before any change or addition began, so ``new`` started,
    and ``b`` took its new names, only once ``old`` had drained (21 s in the probe). Now
    the removed server's tools are withdrawn first, so its names are free at once, and
    the rest runs beside its drain: ``new`` serves, and ``b`` holds ``echo`` with no
    collision, while ``old``'s call is still in flight."""
    old = server_spec("old", "echo.py", "--name", "old", shutdown_timeout=60, timeout=60)
    b = server_spec("b", "echo.py", "--name", "b", namespace="prefix")
    new = server_spec("new", "echo.py", "--name", "new", namespace="prefix")
    async with Supervisor([old, b]) as sup:
        with trio.fail_after(20):
            await sup.wait_connected("old", timeout=20)
            await sup.wait_connected("b", timeout=20)
        b_pid = sup.link("b").process.pid
        diffs: list = []
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                async def reload() -> None:
                    diffs.append(await sup.reconcile([msgspec.structs.replace(b, namespace="none"), new]))

                call = await a_long_call(sup, "old", nursery)
                nursery.start_soon(reload)
                await wait_until(lambda: "new" in sup.servers and sup.link("new").conn is not None, timeout=20,
                                 what="the added server to connect while the removed one drains")
                await wait_until(lambda: sup.registry.view.entries.get("echo") is not None
                                 and sup.registry.view.entries["echo"].server == "b", timeout=10,
                                 what="b to hold the bare names old exposed")
                assert sup.link("old").inflight == 1 and "old" in sup.servers  # still draining
                assert text_of(await sup.call_tool("pid", timeout=10)) == str(b_pid)
                assert text_of(await sup.call_tool("new__echo", {"text": "hi"}, timeout=10)) == "hi"
                assert (await sup.registry.snapshot()).collisions == []
                call.cancel()  # the drain ends with it
        (diff,) = diffs
        assert (diff["removed"], diff["updated"], diff["added"]) == (["old"], ["b"], ["new"]), diff
        assert sup.servers == ["b", "new"]
    assert procs_with_marker(marker_of(old)) == []


async def test_a_renamed_server_starts_once_its_old_name_has_stopped():
    """The exception to removals running beside the rest: a server renamed (the same
    command, args, cwd and env under another name) may hold what its new self needs (a
    port, a lock file), so it starts once the old one has stopped."""
    old = server_spec("before", "echo.py", shutdown_timeout=60, timeout=60)
    renamed = msgspec.structs.replace(old, name="after")
    async with Supervisor([old]) as sup:
        events = sup.subscribe()
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                call = await a_long_call(sup, "before", nursery)
                nursery.start_soon(sup.reconcile, [renamed])
                await wait_until(lambda: all(e.server != "before" for e in sup.registry.view.entries.values()), timeout=10,
                                 what="the old name's tools withdrawn")
                await trio.sleep(0.5)
                assert "after" not in sup.servers and len(procs_with_marker(marker_of(old))) == 1
                call.cancel()
            await sup.wait_connected("after", timeout=20)
        assert_removed_before_started(events)


async def test_calls_to_a_server_that_never_connected_or_to_no_such_tool_are_counted():
    """Calls to a server that never connected (its tools unknown) failed ServerUnavailable,
    and calls naming a tool its server does not have failed UnknownTool, but neither was
    counted anywhere: ``/metrics`` showed no call at all for a server that gave up. Now
    each is counted in its server's metrics, under the tool ``_OTHER`` (the name asked
    for is the caller's word: as a label, each new one would be a new series)."""
    boom = server_spec("boom", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, max=0.1, jitter=0.0, max_consecutive=1))
    echo = server_spec("echo", "echo.py")
    async with Supervisor([boom, echo]) as sup:
        await wait_until(lambda: connection_status(sup, "boom").state == "failed", timeout=20, what="boom to give up")
        for _ in range(3):
            with pytest.raises(ServerUnavailable):
                await sup.call_tool("echo", {"text": "x"}, server="boom", timeout=5)
        with pytest.raises(UnknownTool):
            await sup.call_tool("no_such_tool", {}, server="echo", timeout=5)
        with pytest.raises(UnknownTool):
            await sup.call_tool("no_such_tool_anywhere", {}, timeout=0.2)  # no server named: nowhere to count
        snapshot = await sup.metrics_snapshot()
        counted = {(t.server, t.tool): (t.calls, t.failures) for t in snapshot.tools}
        assert counted[("boom", "_OTHER")] == (3, {"ServerUnavailable": 3}), counted
        assert counted[("echo", "_OTHER")] == (1, {"UnknownTool": 1}), counted
        assert "_OTHER" in (await sup.metrics_text()).decode()
        assert sup.handle("echo").breaker.state == "closed"


async def test_a_removed_server_draining_does_not_publish_its_tools_again():
    """A reload withdraws a removed server's tools first and drains it beside the rest; its
    connection, still up for the drain, re-read its tools (``tools_ttl``) and published them
    again: listed and callable once more until the drain ended (a review)."""
    old = server_spec("old", "echo.py", "--name", "old", shutdown_timeout=60, timeout=60, tools_ttl=0.3,
                      namespace="prefix")
    kept = server_spec("b", "echo.py", "--name", "b", namespace="prefix")
    async with Supervisor([old, kept]) as sup:
        await sup.wait_connected("old", timeout=20)
        await sup.wait_connected("b", timeout=20)
        async with trio.open_nursery() as nursery:
            call = await a_long_call(sup, "old", nursery)
            nursery.start_soon(sup.reconcile, [kept])
            servers = lambda: {e.server for e in sup.registry.view.entries.values()}  # noqa: E731
            await wait_until(lambda: servers() == {"b"}, timeout=10, what="the removed server's tools withdrawn")
            refreshed = sup.link("old").tools_version
            await wait_until(lambda: sup.link("old").tools_version > refreshed + 2, timeout=20,
                             what="a few re-reads of its tools while it drains")
            await sup.registry.sync()
            assert servers() == {"b"}
            assert "old" in sup.servers  # still draining
            call.cancel()



async def test_a_renamed_server_waits_for_an_operators_removal_of_its_old_name_too():
    """The same rename while an operator's `remove_server` of the old name drains it: the
    renamed server started at once, beside the old one still draining (a review). It waits
    for that removal now, and the reload's own removal, which finds the name gone once the
    operator's is over, is no error."""
    old = server_spec("before", "echo.py", shutdown_timeout=60, timeout=60)
    renamed = msgspec.structs.replace(old, name="after")
    errors: list = []
    async with Supervisor([old]) as sup:
        events = sup.subscribe()
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                call = await a_long_call(sup, "before", nursery)
                nursery.start_soon(sup.remove_server, "before")
                await wait_until(lambda: "before" in sup._changing, timeout=10, what="the operator's removal")
                nursery.start_soon(functools.partial(sup.reconcile, [renamed], on_error=lambda n, e: errors.append(n)))
                await trio.sleep(0.5)
                assert "after" not in sup.servers and len(procs_with_marker(marker_of(old))) == 1
                call.cancel()
            await sup.wait_connected("after", timeout=20)
        assert errors == []
        assert_removed_before_started(events)


async def test_a_reload_removes_a_server_an_operator_is_restarting_once_the_restart_is_over(tmp_path):
    """A reload renames ``before`` to ``after`` while an operator's `restart_server` of
    ``before`` is connecting its new incarnation. The reload's removal was refused (the name
    was being changed) and reported, and once the restart was over ``after`` started beside
    the restarted ``before``: the two ran side by side, and ``before`` stayed supervised
    though the config no longer had it (a review). The removal now waits for the restart and
    then removes ``before``; ``after`` starts after that."""
    flag = tmp_path / "slow"
    marker = f"before-{uuid.uuid4().hex[:12]}"
    old = ServerSpec(
        name="before",
        command="sh",
        args=["-c", f'[ -f "{flag}" ] && sleep 2; exec "{sys.executable}" "{SERVERS / "echo.py"}"'],
        env={"MCP_TEST_MARKER": marker},
        connect_timeout=30,
    )
    renamed = msgspec.structs.replace(old, name="after")
    errors: list = []
    async with Supervisor([old]) as sup:
        await sup.wait_connected("before", timeout=20)
        events = sup.subscribe()
        flag.touch()
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.restart_server, "before")
                await wait_until(lambda: "before" in sup._changing, timeout=10, what="the operator's restart")
                done = await sup.reconcile([renamed], on_error=lambda n, e: errors.append((n, e)))
            assert errors == [] and done["removed"] == ["before"] and done["added"] == ["after"], (errors, done)
            assert sorted(sup.servers) == ["after"]
            await sup.wait_connected("after", timeout=20)
            assert len(procs_with_marker(marker)) == 1
        seen = [(e.path.rsplit(":", 1)[1], e.kind) for e in drain(events)
                if e.path.endswith(("server:before", "server:after")) and e.kind in ("removed", "started")]
        # the restart's own removal and start of ``before``, then the reload's
        assert seen == [("before", "removed"), ("before", "started"), ("before", "removed"), ("after", "started")], seen
