"""Connection actors against real, misbehaving MCP server processes.

Real time here: each server is a real process that must really start. Backoffs are small
and jitter-free, so the delays the supervisor chose are exact in its events.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import mcp_types
import msgspec
import pytest
import trio
from mcp import MCPError
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.jsonrpc_dispatcher import _ABANDON_WRITE_TIMEOUT as ABANDON_WRITE_TIMEOUT  # the SDK's own bound

from actors import kill_every_server_now
from actors._connection import ConnectionDied, _unwrap
from actors._process import INCARNATION_VAR, kill_tree
from conftest import SERVERS, collect, marker_of, procs_with_marker, server_spec, settled, wait_until
from protocol import (
    ActorDown,
    BackoffPolicy,
    BreakerPolicy,
    CircuitOpen,
    DeadlineExceeded,
    InvalidArguments,
    InvalidResult,
    Overloaded,
    ServerCrashed,
    ServerSpec,
    RetryPolicy,
    ServerUnavailable,
    UnknownTool,
)
from supervisor import Supervisor
from supervisor.__main__ import render_tree


def text(result) -> str:
    return result.content[0].text


def connection_status(sup: Supervisor, name: str):
    (servers,) = [c for c in sup.status().children if c.id == "servers"]
    for server in servers.children:
        if server.id == f"server:{name}":
            (conn,) = [c for c in server.children if c.id.startswith("connection:")]
            return conn
    raise AssertionError(f"no server {name}")


async def test_calls_tools_and_reports_status():
    spec = server_spec("echo", "echo.py")
    async with Supervisor([spec]) as sup:
        result = await sup.call_tool("echo", {"text": "hello"}, server="echo", timeout=10)
        assert text(result) == "hello" and not result.is_error
        assert int(text(await sup.call_tool("add", {"a": 2, "b": 3}, server="echo"))) == 5
        failed = await sup.call_tool("fail", {"message": "nope"}, server="echo")
        assert failed.is_error and "nope" in text(failed)  # the tool's own error, as a result
        tools = {t.name: t for t in sup.link("echo").tools}
        assert tools["echo"].annotations.readOnlyHint is True
        assert tools["write_note"].annotations.destructiveHint is True
        conn = connection_status(sup, "echo")
        assert conn.state == "running" and conn.restarts == 0
        assert conn.detail["pid"] in procs_with_marker(marker_of(spec))
        with open(f"/proc/{conn.detail['pid']}/environ", "rb") as f:
            assert f"MCP_SUPERVISOR_INCARNATION={conn.detail['incarnation']}".encode() in f.read().split(b"\0")
        assert conn.detail["tools"] == len(tools)


async def test_kill_9_fails_inflight_restarts_after_backoff_and_serves_again():
    # trust_annotations=False: nothing is retry-safe, so in-flight calls surface ServerCrashed
    spec = server_spec(
        "victim", "echo.py", backoff=BackoffPolicy(min=0.3, max=1.0, jitter=0.0), trust_annotations=False
    )
    events = []
    async with Supervisor([spec]) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sup.subscribe(), events)
            old_pid = sup.link("victim").process.pid
            outcomes = []

            async def slow_call():
                try:
                    await sup.call_tool("sleep", {"seconds": 30}, server="victim", timeout=20)
                except ServerCrashed as exc:
                    outcomes.append(exc)

            for _ in range(3):
                nursery.start_soon(slow_call)
            await wait_until(lambda: sup.link("victim").inflight == 3, what="3 calls in flight")
            t0 = trio.current_time()
            os.kill(old_pid, signal.SIGKILL)
            await wait_until(lambda: len(outcomes) == 3, what="in-flight calls to fail")
            assert trio.current_time() - t0 < 2, "in-flight calls must fail at once"
            assert all("may or may not have run" in str(e) for e in outcomes)

            await sup.wait_connected("victim", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "back"}, server="victim")) == "back"
            conn = connection_status(sup, "victim")
            assert conn.restarts == 1 and conn.state == "running"
            assert (await sup.metrics_snapshot()).server("victim").exits == {"exited": 1}
            new_pid = sup.link("victim").process.pid
            assert new_pid != old_pid
            assert procs_with_marker(marker_of(spec)) == [new_pid]  # only the new tree
            nursery.cancel_scope.cancel()
    restarting = [e for e in events if e.kind == "restarting"]
    assert [e.delay for e in restarting] == [0.3]
    assert "SIGKILL" in restarting[0].reason
    assert procs_with_marker(marker_of(spec)) == []


async def test_crash_on_call_gives_server_crashed_then_recovers():
    spec = server_spec("crashy", "crash_on_call.py")
    async with Supervisor([spec]) as sup:
        with pytest.raises(ServerCrashed, match="crashy"):
            await sup.call_tool("crash", {}, server="crashy", timeout=10)
        await sup.wait_connected("crashy", timeout=20)
        assert text(await sup.call_tool("echo", {"text": "ok"}, server="crashy", timeout=20)) == "ok"
        assert connection_status(sup, "crashy").restarts == 1


async def test_crash_at_start_backs_off_exponentially_and_recovers(tmp_path):
    ready_flag = tmp_path / "ready"
    count_file = tmp_path / "count"
    spec = server_spec(
        "phoenix",
        "crash_at_start.py",
        "--until-file",
        str(ready_flag),
        "--count-file",
        str(count_file),
        backoff=BackoffPolicy(min=0.05, max=0.4, jitter=0.0),
    )
    events = []
    sup = Supervisor([spec])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)  # from before the first attempt
        async with sup:
            await wait_until(
                lambda: len([e for e in events if e.kind == "restarting"]) >= 5, timeout=30, what="5 restarts"
            )
            with pytest.raises(ServerUnavailable, match="phoenix"):
                await sup.call_tool("echo", {"text": "x"}, server="phoenix", timeout=0.01)
            ready_flag.touch()
            await sup.wait_connected("phoenix", timeout=30)
            assert text(await sup.call_tool("echo", {"text": "alive"}, server="phoenix")) == "alive"
    delays = [e.delay for e in events if e.kind == "restarting"]
    assert delays[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]
    reasons = [e.reason for e in events if e.kind == "restarting"]
    assert all("could not connect" in r for r in reasons)
    assert len(count_file.read_text().splitlines()) == len(delays) + 1


@pytest.mark.parametrize("how", ["wait_connected", "call_at_once"])
async def test_a_tool_is_callable_as_soon_as_its_server_is_connected(how):
    """A server's tools reach the registry's view a message after its connection is up
    (the registry compiles each schema, yielding between them): ``wait_connected`` then
    ``call_tool`` failed with ``UnknownTool`` for a tool the server had just listed
    (every time here; rarely, under load, with servers that also list prompts). Now
    ``wait_connected`` returns once the view has the tools, and a call that finds its tool
    unknown looks again once the registry has caught up. The server is in-process so that
    nothing but its tools list comes between the two: it fails its first ``tools/list``s,
    so the supervisor starts with it down."""
    listing = {"ok": False}

    async def list_tools(ctx, params):
        if not listing["ok"]:
            raise RuntimeError("not ready yet")
        schema = {"type": "object", "properties": {"x": {"type": "string"}}}
        return mcp_types.ListToolsResult(tools=[mcp_types.Tool(name=f"t{i}", input_schema=schema) for i in range(3)])

    async def call_tool(ctx, params):
        return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=f"called {params.name}")])

    app = Server("late", on_list_tools=list_tools, on_call_tool=call_tool)
    spec = ServerSpec(name="late", backoff=BackoffPolicy(min=0.01, max=0.02, jitter=0.0))
    with trio.fail_after(20):
        async with Supervisor([spec], inproc={"late": app}) as sup:
            assert sup.link("late").conn is None and sup.list_tools() == []
            listing["ok"] = True
            if how == "wait_connected":
                await sup.wait_connected("late", timeout=10)
                assert [t.name for t in sup.list_tools()] == ["t0", "t1", "t2"]
            else:
                await sup.link("late").wait_connected(trio.current_time() + 10)  # the link's own: no sync
            assert text(await sup.call_tool("t2", {"x": "y"})) == "called t2"
            with pytest.raises(UnknownTool, match="t3"):
                await sup.call_tool("t3", {})  # still unknown once the registry caught up


async def test_hang_times_out_then_restarts_after_hang_threshold(tmp_path):
    log = tmp_path / "exec.log"
    spec = server_spec("frozen", "hang.py", env={"EXEC_LOG": str(log)}, hang_threshold=3)
    async with Supervisor([spec]) as sup:
        first_pid = sup.link("frozen").process.pid
        for _ in range(3):
            with pytest.raises(DeadlineExceeded, match="did not answer in time") as timed_out:
                await sup.call_tool("hang", {}, server="frozen", timeout=0.5)
            said = str(timed_out.value)
            assert said.count("may or may not have run") == 1 and "may have run" not in said, said
        await wait_until(lambda: sup.link("frozen").process.pid not in (None, first_pid), what="a restart")
        await sup.wait_connected("frozen", timeout=20)
        assert text(await sup.call_tool("echo", {"text": "thawed"}, server="frozen")) == "thawed"
        assert connection_status(sup, "frozen").restarts == 1
        assert first_pid not in procs_with_marker(marker_of(spec))
        assert (await sup.metrics_snapshot()).server("frozen").exits == {"hang": 1}
    # the first two timeouts were cancelled on the server (notifications/cancelled)
    assert log.read_text().count("hang cancelled") >= 2


async def test_a_hang_death_cuts_off_the_calls_still_in_flight():
    """At hang_threshold the connection dies; a call still in flight with a long deadline
    fails at once with ServerCrashed: before the hung server is even killed, not when the
    teardown closes the pipe and certainly not at its own 60 s deadline."""
    spec = server_spec("frozen", "hang.py", hang_threshold=2)
    async with Supervisor([spec]) as sup:
        server = sup.link("frozen").process.pid
        server_alive_when_cut_off = []

        async def long_call() -> None:
            with pytest.raises(ServerCrashed, match="consecutive calls timed out"):
                await sup.call_tool("hang", {}, server="frozen", timeout=60)
            server_alive_when_cut_off.append(server in procs_with_marker(marker_of(spec)))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_call)
                await wait_until(lambda: sup.link("frozen").inflight == 1, what="the long call in flight")
                for _ in range(2):
                    with pytest.raises(DeadlineExceeded):
                        await sup.call_tool("hang", {}, server="frozen", timeout=0.5)
        assert server_alive_when_cut_off == [True]


async def test_a_call_that_timed_out_after_waiting_for_its_slot_is_no_sign_of_a_hang():
    """A healthy server busy to its ``max_concurrency``: a call that waited most of its
    deadline for a slot was sent with little time left and timed out, and that counted
    towards ``hang_threshold``, so a server that answered every call it had time for was
    killed as hung and the call in flight with it (found under load by a probe); its breaker
    counted it too, and opened on a server that was only busy. Now such a timeout says how
    its time went, and counts for neither."""
    spec = server_spec("busy", "echo.py", max_concurrency=1, hang_threshold=1,
                       breaker=BreakerPolicy(failure_threshold=1, window=100, min_calls=1000))
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("busy", timeout=30)
        first = sup.link("busy").conn
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 2.0}, server="busy", timeout=20))
                await wait_until(lambda: sup.link("busy").inflight == 1, what="the first call in flight")
                with pytest.raises(DeadlineExceeded, match=r"waited \d+\.\d s for a free slot .* had \d+\.\d s on the wire"):
                    await sup.call_tool("sleep", {"seconds": 10.0}, server="busy", timeout=2.5)
        assert sup.link("busy").conn is first and connection_status(sup, "busy").restarts == 0
        assert text(await sup.call_tool("echo", {"text": "still here"}, server="busy", timeout=10)) == "still here"
        assert sup.handle("busy").breaker.state == "closed"


async def test_a_hung_server_under_steady_load_is_still_restarted():
    """The other side of the slot rule: calls keep coming to a server that hangs, so each
    call sent waited most of its time for the slot of the one before it. Those timeouts
    must still count (the server answered nothing meanwhile), or a hung server under load
    would never be restarted (a review found exactly that)."""
    spec = server_spec("stuck", "hang.py", max_concurrency=1, hang_threshold=2, retry=RetryPolicy(max_retries=0))
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("stuck", timeout=30)
        first = sup.link("stuck").conn

        async def caller() -> None:
            with contextlib.suppress(DeadlineExceeded, ServerCrashed, ServerUnavailable, CircuitOpen):
                await sup.call_tool("hang", {}, server="stuck", timeout=1.0)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                while sup.link("stuck").conn is first:
                    nursery.start_soon(caller)
                    await trio.sleep(0.3)
        assert (await sup.metrics_snapshot()).server("stuck").exits.get("hang") == 1


class _FreezesOnce(MCPServer):
    """An in-process server whose next ``tools/list`` after ``freeze`` never answers."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.freeze = False
        self.lists = 0

    async def list_tools(self):
        self.lists += 1
        if self.freeze:
            self.freeze = False
            await trio.sleep_forever()
        return await super().list_tools()


async def test_an_idle_server_that_stops_answering_is_restarted_by_its_health_check(autojump_clock):
    """The default health check (MockClock): ``tools/list`` after 30 s with no answer and no
    call in flight, 10 s to answer. Answers to calls put it off, a long call in flight holds
    it back, an idle server is asked every 30 s, and the one it leaves unanswered ends the
    incarnation 40 s after its last answer, with no call made."""
    app = _FreezesOnce("idle")

    @app.tool()
    async def nap(seconds: float) -> str:
        await trio.sleep(seconds)
        return "rested"

    spec = ServerSpec(name="idle", backoff=BackoffPolicy(min=1.0, max=1.0, jitter=0.0))
    async with Supervisor([spec], inproc={"idle": app}) as sup:
        await settled(sup, "idle")
        assert app.lists == 2  # the connection's own: at connect, and once its listen stream is acknowledged
        for _ in range(3):
            await trio.sleep(25)
            await sup.call_tool("nap", {"seconds": 0}, server="idle")
        assert app.lists == 2
        assert text(await sup.call_tool("nap", {"seconds": 100}, server="idle", timeout=200)) == "rested"
        assert app.lists == 2
        answered = trio.current_time()
        await trio.sleep_until(answered + 95)
        assert app.lists == 2 + 3  # at +30, +60 and +90
        app.freeze = True  # the check at +120 goes unanswered
        await trio.sleep_until(answered + 129)
        assert connection_status(sup, "idle").restarts == 0 and sup.link("idle").conn is not None
        await trio.sleep_until(answered + 131)
        assert "no answer to a health check" in sup.link("idle").last_error
        await sup.wait_connected("idle", timeout=5)
        assert connection_status(sup, "idle").restarts == 1
        assert text(await sup.call_tool("nap", {"seconds": 0}, server="idle")) == "rested"


class _OneAtATime(MCPServer):
    """An in-process server that serves one request at a time, as many a simple server does:
    its tool list waits while its slow prompt runs."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.busy = trio.Lock()

    async def list_tools(self):
        async with self.busy:
            return await super().list_tools()


async def test_a_server_busy_with_a_long_request_is_not_restarted_by_its_health_check(autojump_clock):
    """No health check is sent while calls are in flight (a busy server may be slow to
    answer anything else), but a request in flight (a ``prompts/get``, a ``resources/read``)
    did not count: 30 s into a 45 s prompt the check was sent, went unanswered, and the
    incarnation was ended, the request with it. Now requests in flight hold the check back
    too."""
    app = _OneAtATime("single")

    @app.prompt()
    async def report() -> str:
        async with app.busy:
            await trio.sleep(45)
        return "the report"

    spec = ServerSpec(name="single", timeout=60)
    async with Supervisor([spec], inproc={"single": app}) as sup:
        await settled(sup, "single")
        link = sup.link("single")
        first = link.conn
        result = await link.request(lambda client: client.get_prompt("report", {}))
        assert result.messages[0].content.text == "the report"
        assert link.conn is first and connection_status(sup, "single").restarts == 0


async def test_a_stdio_server_frozen_while_idle_is_restarted_without_a_call():
    """A real hang: the process lives (SIGSTOP), its pipes stay open, nothing answers. The
    health check alone finds it; the frozen process goes, and the new one serves."""
    # A check unanswered for 10 s is a hang (2 s was overrun by a live server on a loaded
    # machine, restarting it before the freeze): the frozen one is found 10 s after.
    spec = server_spec("frozen", "echo.py", health_check_interval=0.3, health_check_timeout=10.0)
    marker = marker_of(spec)
    async with Supervisor([spec]) as sup:
        await trio.sleep(1.5)  # a few checks, each answered
        assert connection_status(sup, "frozen").restarts == 0
        frozen = sup.link("frozen").process.pid
        os.kill(frozen, signal.SIGSTOP)
        await wait_until(lambda: connection_status(sup, "frozen").restarts == 1, timeout=120, what="a restart")
        await sup.wait_connected("frozen", timeout=60)
        assert "no answer to a health check" in sup.link("frozen").last_error
        assert procs_with_marker(marker) == [sup.link("frozen").process.pid] != [frozen]
        assert (await sup.metrics_snapshot()).server("frozen").exits == {"unresponsive": 1}
        assert text(await sup.call_tool("echo", {"text": "thawed"}, server="frozen", timeout=10)) == "thawed"
    assert procs_with_marker(marker) == []


async def test_a_server_that_stops_reading_its_input_still_answers_every_call():
    """A stopped server (SIGSTOP) reads nothing: a request bigger than the pipe buffer is
    never fully written, and the request behind it waits to be written at all. Both calls
    still end with DeadlineExceeded (the SDK bounds the courtesy cancel it then tries to
    write by ABANDON_WRITE_TIMEOUT); at hang_threshold the server is restarted and answers
    again."""
    spec = server_spec("stopped", "echo.py", hang_threshold=2)
    async with Supervisor([spec]) as sup:
        pid = sup.link("stopped").process.pid
        os.kill(pid, signal.SIGSTOP)
        failures: dict[str, BaseException] = {}

        async def note(text: str, label: str) -> None:
            with pytest.raises(DeadlineExceeded) as info:
                await sup.call_tool("write_note", {"text": text}, server="stopped", timeout=0.5)
            failures[label] = info.value

        try:
            with trio.fail_after(0.5 + ABANDON_WRITE_TIMEOUT + 10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(note, "x" * 1_000_000, "big")
                    await wait_until(lambda: sup.link("stopped").inflight == 1, what="the big call in flight")
                    nursery.start_soon(note, "small", "behind")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert set(failures) == {"big", "behind"}
        await wait_until(lambda: sup.link("stopped").process.pid not in (None, pid), what="a restart")
        await sup.wait_connected("stopped", timeout=20)
        assert text(await sup.call_tool("echo", {"text": "reading again"}, server="stopped")) == "reading again"
        assert connection_status(sup, "stopped").restarts == 1
        assert pid not in procs_with_marker(marker_of(spec))


async def test_cancelled_caller_cancels_the_request_on_the_server(tmp_path):
    log = tmp_path / "exec.log"
    spec = server_spec("cancel", "hang.py", env={"EXEC_LOG": str(log)})
    async with Supervisor([spec]) as sup:
        with trio.move_on_after(0.5):
            await sup.call_tool("hang", {}, server="cancel", timeout=60)
        await wait_until(lambda: log.exists() and "hang cancelled" in log.read_text(), what="server-side cancel")
        assert sup.link("cancel").inflight == 0
        assert connection_status(sup, "cancel").restarts == 0  # a caller's cancel is no hang


@pytest.mark.parametrize("message", ["hi", "Connection refused by the database"])
async def test_a_servers_own_error_with_code_32000_is_its_answer_not_a_lost_connection(message):
    """-32000 opens JSON-RPC's range for server errors, and many servers answer any failure
    with it; the SDK's error for a connection that went away has the same code. Such an
    answer was read as the connection lost: the healthy server was restarted, the call
    failed ``ServerCrashed`` (not retried, counted against the server by its breaker) and
    the server's own message was lost. Now it is the server's answer, passed through."""
    spec = server_spec("ev", "everything.py", health_check_interval=None)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("ev", timeout=30)
        pid = sup.link("ev").process.pid
        with pytest.raises(MCPError) as raised:
            await sup.call_tool("jsonrpc_error", {"code": -32000, "message": message}, server="ev", timeout=20)
        assert (raised.value.code, raised.value.message) == (-32000, message)
        assert "still here" in text(await sup.call_tool("tool_error", {"message": "still here"}, server="ev", timeout=20))
        assert sup.link("ev").process.pid == pid and sup.link("ev").last_error is None
        snapshot = await sup.metrics_snapshot()
        assert snapshot.server("ev").exits == {}, snapshot.server("ev").exits


async def test_garbage_on_stdout_past_threshold_restarts():
    spec = server_spec("noisy", "garbage.py", "--when", "call", garbage_threshold=3)
    async with Supervisor([spec]) as sup:
        await sup.call_tool("spew", {"lines": 2}, server="noisy", timeout=10)
        assert connection_status(sup, "noisy").restarts == 0  # under the threshold: tolerated
        first = sup.link("noisy").process.pid
        try:
            await sup.call_tool("spew", {"lines": 5}, server="noisy", timeout=10)
        except ServerCrashed:
            pass  # the garbage may kill the connection before the answer is read
        await wait_until(lambda: connection_status(sup, "noisy").restarts == 1, what="a restart")
        await sup.wait_connected("noisy", timeout=20)
        assert sup.link("noisy").process.pid != first
        assert "not JSON-RPC" in connection_status(sup, "noisy").last_exit
        assert (await sup.metrics_snapshot()).server("noisy").exits == {"garbage": 1}


async def test_a_banner_that_swallows_the_handshake_is_named_in_the_connect_failure():
    """A server prints a banner on stdout without a newline, so its first JSON-RPC message
    (the answer to the handshake) is glued to it and lost: the connection can only time
    out. The failure used to say just that; it now shows what the server wrote. (6 s: the
    server imports the SDK before its banner, which can take seconds on a loaded machine.)"""
    spec = server_spec("banner", "garbage.py", "--when", "start", "--lines", "1", "--glued", connect_timeout=6)
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "connect_timeout" in (sup.link("banner").last_error or ""), timeout=30, what="a timeout")
        last_error = sup.link("banner").last_error
    assert "could not connect and initialize within connect_timeout 6 s; it wrote 1 line on stdout" in last_error
    assert "(the first: 'this is not JSON-RPC {garbage line 0{" in last_error, last_error
    assert "a banner or a log line there can swallow an answer" in last_error


async def test_a_log_line_the_server_writes_while_connecting_reaches_our_log(caplog):
    """A server's log lines were written to the ``supervisor.upstream`` log only once the
    incarnation was ready: one sent while it connected (a startup problem, the line most
    worth reading) was dropped without a trace. Now it is logged like any other."""
    import logging

    caplog.set_level(logging.INFO, logger="supervisor.upstream")
    spec = server_spec("booting", "boot_log.py", health_check_interval=None)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("booting", timeout=20)
        await wait_until(lambda: "config file missing" in caplog.text, timeout=5, what="the log line")
    [record] = [r for r in caplog.records if r.name == "supervisor.upstream"]
    assert record.levelname == "WARNING" and record.getMessage() == "[booting] boot: config file missing, using defaults"


def test_a_long_log_line_is_cut_in_our_log(caplog):
    """A server's log line went to the daemon's log whole, up to ``max_message_bytes`` per
    line (a server that logs an image as base64). Now its head is, with its length."""
    import logging

    from actors._connection import _log_upstream

    caplog.set_level(logging.INFO, logger="supervisor.upstream")
    _log_upstream("big", mcp_types.LoggingMessageNotificationParams(level="info", data="x" * 100_000, logger="img"))
    _log_upstream("big", mcp_types.LoggingMessageNotificationParams(level="debug", data="not enabled"))
    [record] = caplog.records
    assert record.getMessage() == f"[big] img: {'x' * 4096} … (100000 characters)"


async def test_a_question_the_server_asks_while_connecting_is_answered_within_the_timeout(tmp_path):
    """A server asks for the client's roots while the connection reads its tools (as many do
    at startup) and the host's ``on_input_request`` never returns. A question asked once
    the incarnation is ready is answered for after the server's ``timeout``; one asked
    while connecting waited for the host with no bound at all once the connection was up
    (only ``connect_timeout`` held it till then), so the server never got an answer. Now
    it is bounded the same way."""
    ran = tmp_path / "exec.log"

    async def never(server: str, request: Any) -> Any:
        await trio.sleep_forever()

    spec = server_spec(
        "asking", "boot_log.py", "--ask-roots", env={"EXEC_LOG": str(ran)}, timeout=1.0, connect_timeout=10
    )
    async with Supervisor([spec], on_input_request=never) as sup:
        await sup.wait_connected("asking", timeout=20)
        await wait_until(lambda: ran.exists() and ran.read_text(), timeout=10, what="the server's question answered")
    (answer,) = [json.loads(line) for line in ran.read_text().splitlines()]
    assert answer["error"]["message"] == "no answer to the client's roots (roots/list) within 1 s", answer


async def test_a_stray_line_now_and_then_is_no_reason_to_restart(caplog):
    """A server that writes one non-JSON-RPC line per call (a stray ``console.log`` in a
    Node server, the commonest way stdio servers break the wire) but answers every call:
    past ``garbage_threshold`` stray lines in all it used to be restarted every few calls,
    losing its calls in flight; the count is now of lines in a row, which its answers
    interrupt, so it keeps serving. The lines written before an answer are counted before
    the answer reaches its caller (the SDK counts them in tasks of their own: read out of
    order, two calls' lines would look like four in a row). Each such line was a warning
    in the log, for as long as the server ran (a soak: 2,783 of a log's 23,369 lines); the
    first ten of an incarnation are, then the 16th, 32nd, 64th ... (all are counted)."""
    caplog.set_level(logging.WARNING, logger="supervisor.connection")
    spec = server_spec("chatty", "garbage.py", "--when", "call", garbage_threshold=3)
    async with Supervisor([spec]) as sup:
        for i in range(40):
            assert text(await sup.call_tool("spew", {"lines": 2}, server="chatty", timeout=10)) == "spewed 2 via wire"
            assert sup.link("chatty").conn.garbage_lines == 2 * (i + 1)
        assert connection_status(sup, "chatty").restarts == 0
    logged = [r.getMessage() for r in caplog.records if "is not JSON-RPC" in r.getMessage()]
    assert [int(re.search(r"(\d+) in all", m)[1]) for m in logged] == [*range(1, 11), 16, 32, 64], logged


async def test_arguments_that_cannot_be_sent_as_json_are_refused_and_the_connection_lives_on():
    """An argument JSON has no form for, or a string with a lone surrogate: the SDK's stdio
    writer failed on it after the call had left us, and that failure ended the connection
    (the server restarted, its other calls failed). Now the call is refused before it is
    sent, as invalid arguments."""
    spec = server_spec("strict", "echo.py")
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("strict", timeout=30)
        with pytest.raises(InvalidArguments, match="cannot be sent as JSON: Unable to serialize unknown type"):
            await sup.call_tool("echo", {"text": "x", "extra": object()}, server="strict", timeout=10)
        with pytest.raises(InvalidArguments, match="surrogates not allowed"):
            await sup.call_tool("echo", {"text": "half an emoji: \ud83d"}, server="strict", timeout=10)
        with pytest.raises(InvalidArguments, match="invalid _meta for tool 'echo'"):
            await sup.call_tool("echo", {"text": "x"}, server="strict", timeout=10, meta={"trace": "\udc00"})
        with pytest.raises(MCPError, match="resource URI cannot be sent as JSON"):
            await sup.link("strict").subscribe("info://\udc00")  # kept, it would end every incarnation
        assert sup.link("strict").subscriptions == set()
        assert text(await sup.call_tool("echo", {"text": "fine"}, server="strict", timeout=10)) == "fine"
        assert connection_status(sup, "strict").restarts == 0
        failures = (await sup.metrics_snapshot()).tool("strict", "echo").failures
        assert failures == {"InvalidArguments": 3}, failures


async def test_a_nan_or_infinite_argument_is_refused_not_sent_as_null():
    """JSON has no NaN nor infinity. The check before sending (`unsendable`) let them pass,
    and the SDK's writer sent each as ``null``: the tool got a value the caller never gave
    (``{"extra": null}`` for ``{"extra": nan}``), and nobody was told. Now such a call is
    refused before it is sent, as invalid arguments; a string that spells NaN is fine."""
    from actors._wire import unsendable

    assert unsendable({"text": "NaN and -Infinity are words"}) is None
    spec = server_spec("strict", "echo.py")
    async with Supervisor([spec]) as sup:
        for value in (float("nan"), float("inf"), [1.0, float("-inf")]):
            with pytest.raises(InvalidArguments, match="cannot be sent as JSON: NaN and infinity have no JSON form"):
                await sup.call_tool("echo", {"text": "x", "extra": value}, server="strict", timeout=10)
        assert text(await sup.call_tool("echo", {"text": "NaN"}, server="strict", timeout=10)) == "NaN"


async def test_a_call_with_no_time_left_is_not_sent_and_says_nothing_about_the_server():
    """A timeout of 0 (or a deadline spent before the call got to the connection) used to be
    sent anyway, time out at once, say "it may have run", and count towards
    ``hang_threshold``: three such calls restarted a healthy server (and five would have
    opened its breaker). Now it is not sent, says so, and counts for nothing."""
    spec = server_spec("healthy", "echo.py", hang_threshold=3, breaker=BreakerPolicy(failure_threshold=2))
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("healthy", timeout=30)
        for timeout in (0, -1, 0, 0, 0):
            with pytest.raises(DeadlineExceeded, match="deadline had passed before it could be sent; it was not sent$") as late:
                await sup.call_tool("write_note", {"text": "x"}, server="healthy", timeout=timeout)
            assert late.value.data["sent"] is False and late.value.data["attempts"] == 1
        assert text(await sup.call_tool("echo", {"text": "fine"}, server="healthy", timeout=10)) == "fine"
        assert connection_status(sup, "healthy").restarts == 0
        snapshot = await sup.metrics_snapshot()
        assert snapshot.server("healthy").breaker_state == "closed"
        # Counted as the callers saw them (they were counted "cancelled": a queue's wait past
        # the deadline hid from every alert on DeadlineExceeded), judged by no breaker.
        assert snapshot.tool("healthy", "write_note").failures == {"DeadlineExceeded": 5}


async def test_an_answer_that_is_no_valid_result_is_an_invalid_result_failure():
    """JSON-RPC that is well formed but no valid result for the call: a result that does not
    parse as a CallToolResult, or structured content the tool's own output schema rejects.
    The SDK raises a bare ValidationError/RuntimeError for these, which used to reach the
    caller raw (the agents adapter let it abort the run; metrics counted it "cancelled").
    Now it is ``InvalidResult``: typed, not retried though the tool is read-only (it ran),
    counted, no failure for the breaker, and the connection goes on."""
    spec = server_spec("liar", "garbage.py", "--when", "call", breaker=BreakerPolicy(failure_threshold=1))
    async with Supervisor([spec]) as sup:
        with pytest.raises(InvalidResult, match="'misshapen' on server 'liar' answered with no valid result: ValidationError") as shape:
            await sup.call_tool("misshapen", {}, server="liar", timeout=10)
        assert shape.value.data["attempts"] == 1
        with pytest.raises(InvalidResult, match="'3' is not of type 'integer'"):
            await sup.call_tool("miscount", {}, server="liar", timeout=10)
        assert text(await sup.call_tool("echo", {"text": "still here"}, server="liar", timeout=10)) == "still here"
        snapshot = await sup.metrics_snapshot()
        assert snapshot.tool("liar", "misshapen").failures == {"InvalidResult": 1}
        assert snapshot.tool("liar", "miscount").failures == {"InvalidResult": 1}
        assert snapshot.server("liar").breaker_state == "closed"
        assert connection_status(sup, "liar").restarts == 0


@pytest.mark.parametrize(
    "shape, why",
    [
        ("null-result", "result: Input should be an object"),
        ("no-jsonrpc", "jsonrpc: Field required"),
        ("error-without-message", "error.message: Field required"),
    ],
)
async def test_an_answer_that_is_no_json_rpc_fails_its_call_at_once(shape, why):
    """The server answers a call with a line that names the call's id but is no valid
    JSON-RPC (``"result": null``, no ``"jsonrpc"``, an error with no message). It was one
    garbage line: the call waited out its deadline ("did not answer in time", though the
    server had), and ``hang_threshold`` such calls restarted a server that answered each at
    once. Now the call fails at once with ``InvalidResult`` saying what was wrong, which is
    no timeout, no garbage line and no breaker failure."""
    spec = server_spec("liar", "garbage.py", "--when", "call", hang_threshold=1, garbage_threshold=1,
                       breaker=BreakerPolicy(failure_threshold=1))
    async with Supervisor([spec]) as sup:
        with trio.fail_after(20):  # the call's own deadline is 60 s
            for _ in range(2):
                with pytest.raises(InvalidResult, match=f"server's answer is not valid JSON-RPC: {re.escape(why)}"):
                    await sup.call_tool("malformed", {"shape": shape}, server="liar", timeout=60)
        assert text(await sup.call_tool("echo", {"text": "still here"}, server="liar", timeout=10)) == "still here"
        snapshot = await sup.metrics_snapshot()
        assert snapshot.tool("liar", "malformed").failures == {"InvalidResult": 2}
        assert snapshot.server("liar").breaker_state == "closed"
        assert connection_status(sup, "liar").restarts == 0


async def test_flaky_kth_call_is_a_tool_error_not_a_crash():
    spec = server_spec("flaky", "flaky.py", "--every", "3")
    async with Supervisor([spec]) as sup:
        results = [await sup.call_tool("work", {"x": i}, server="flaky") for i in range(6)]
        assert [r.is_error for r in results] == [False, False, True, False, False, True]
        assert connection_status(sup, "flaky").restarts == 0


async def test_a_server_that_cannot_list_its_prompts_or_resources_still_serves_its_tools():
    """A server advertises prompts and resources but answers ``prompts/list`` and
    ``resources/templates/list`` with an error. Before, any failed list failed the
    handshake, so the server restarted forever and its tools were never served; now its
    tools are served, the lists it could give are kept, and the status names the ones it
    could not. A failing ``tools/list`` still fails the connection, and says so."""
    broken = server_spec(
        "partial", "echo.py", "--failing-list", "prompts/list", "--failing-list", "resources/templates/list"
    )
    no_tools = server_spec("toolless", "echo.py", "--failing-list", "tools/list", connect_timeout=20)
    async with Supervisor([broken, no_tools]) as sup:
        await sup.wait_connected("partial", timeout=30)
        assert text(await sup.call_tool("echo", {"text": "served"}, server="partial", timeout=10)) == "served"
        link = sup.link("partial")
        assert link.prompts == [] and link.resource_templates == []
        assert [str(r.uri) for r in link.resources] == ["info://server"]
        assert sorted(link.unread_lists) == ["prompts/list", "resources/templates/list"]
        assert link.unread_lists["prompts/list"] == "the server's answer to prompts/list: MCPError: Internal server error"
        assert "could not read prompts/list, resources/templates/list" in render_tree(sup.status())

        with trio.fail_after(30):
            while "tools/list" not in (sup.link("toolless").last_error or ""):
                await trio.sleep(0.1)
        assert sup.link("toolless").conn is None
        assert "could not connect: UnreadableList: the server's answer to tools/list: MCPError" in sup.link("toolless").last_error


async def test_slow_start_within_and_past_connect_timeout():
    slow = server_spec("slow", "slow_start.py", "--delay", "1.5", connect_timeout=20)
    too_slow = server_spec("tooslow", "slow_start.py", "--delay", "30", connect_timeout=1.0)
    events = []
    async with Supervisor([slow, too_slow]) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sup.subscribe(), events)
            assert text(await sup.call_tool("echo", {"text": "late"}, server="slow", timeout=20)) == "late"
            await wait_until(
                lambda: any(e.kind == "restarting" and "tooslow" in e.path for e in events), what="a timeout"
            )
            nursery.cancel_scope.cancel()
        reason = next(e.reason for e in events if e.kind == "restarting" and "tooslow" in e.path)
        assert "connect_timeout 1 s" in reason
    assert procs_with_marker(marker_of(too_slow)) == []


async def test_a_server_stuck_connecting_does_not_hold_back_another_server():
    """One server hangs in its start (connect_timeout 300 s); a server added meanwhile
    starts and serves at once, and one killed meanwhile is restarted, while the first is
    still connecting. (Servers start concurrently: a server's start is its connect.)"""
    stuck = server_spec("stuck", "slow_start.py", "--delay", "600", connect_timeout=300)
    echo = server_spec("echo", "echo.py")
    late = server_spec("late", "echo.py", namespace="prefix")
    async with Supervisor([echo]) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.add_server, stuck)

            def stuck_starting() -> bool:
                (servers,) = [c for c in sup.status().children if c.id == "servers"]
                return any(c.id == "server:stuck" and c.state == "starting" for c in servers.children)

            await wait_until(stuck_starting, what="the stuck server to be starting")

            def stuck_children() -> dict[str, str]:
                (servers,) = [c for c in sup.status().children if c.id == "servers"]
                (node,) = [c for c in servers.children if c.id == "server:stuck"]
                return {c.id: c.state for c in node.children}

            # The status shows a starting subtree's children: which one it is waiting for.
            want = {"breaker:stuck": "running", "connection:stuck": "starting"}
            await wait_until(lambda: stuck_children() == want, what="the stuck server's children in the status")
            with trio.fail_after(30):
                status = await sup.add_server(late)
            assert status.state == "running", status
            assert text(await sup.call_tool("late__echo", {"text": "here"}, timeout=10)) == "here"
            os.kill(connection_status(sup, "echo").detail["pid"], signal.SIGKILL)
            await wait_until(lambda: connection_status(sup, "echo").restarts == 1, timeout=20, what="echo's restart")
            await sup.wait_connected("echo", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "back"}, server="echo", timeout=10)) == "back"
            assert stuck_starting()
            nursery.cancel_scope.cancel()
    for spec in (stuck, echo, late):
        assert procs_with_marker(marker_of(spec)) == []


async def test_server_closing_stdout_is_a_crash():
    spec = server_spec("mute", "close_stdout.py")
    async with Supervisor([spec]) as sup:
        with pytest.raises(ServerCrashed):
            await sup.call_tool("close_stdout", {}, server="mute", timeout=10)
        await sup.wait_connected("mute", timeout=20)
        assert connection_status(sup, "mute").restarts == 1
    assert procs_with_marker(marker_of(spec)) == []


async def test_overloaded_when_concurrency_and_queue_are_full():
    """Past ``max_concurrency`` + ``max_queue`` a call is turned away at once. That is load,
    not ill health: a burst of them used to open the breaker of the healthy server, and
    every caller after it failed ``CircuitOpen`` for ``open_seconds`` (the default breaker
    opens at 5 failures in a row)."""
    spec = server_spec("busy", "echo.py", max_concurrency=2, max_queue=2)
    async with Supervisor([spec]) as sup:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 1.0}, server="busy", timeout=10))
            await wait_until(lambda: sup.link("busy").inflight == 2 and sup.link("busy").queued == 2, what="full")
            with pytest.raises(Overloaded, match="max_concurrency 2, max_queue 2"):
                await sup.call_tool("echo", {"text": "one too many"}, server="busy", timeout=10)
            for _ in range(10):  # a burst: more than enough failures in a row to trip
                with pytest.raises(Overloaded):
                    await sup.call_tool("echo", {"text": "and more"}, server="busy", timeout=10)
        assert text(await sup.call_tool("echo", {"text": "room again"}, server="busy")) == "room again"
        assert connection_status(sup, "busy").restarts == 0
        snapshot = await sup.metrics_snapshot()
        assert snapshot.server("busy").breaker_state == "closed"
        assert snapshot.tool("busy", "echo").failures == {"Overloaded": 11}, snapshot.tool("busy", "echo").failures


async def test_a_call_whose_deadline_passes_in_the_queue_says_it_was_never_sent():
    """A destructive call waits for a slot and its deadline passes there: it was never sent,
    and the failure says only that (it used to add "the call was in flight, so it may or
    may not have run", which it was not)."""
    spec = server_spec("busy", "echo.py", max_concurrency=1, max_queue=2)
    async with Supervisor([spec]) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 2.0}, server="busy", timeout=10))
            await wait_until(lambda: sup.link("busy").inflight == 1, what="the slot taken")
            with pytest.raises(DeadlineExceeded) as late:
                await sup.call_tool("write_note", {"text": "x"}, server="busy", timeout=0.3)
        assert late.value.message.endswith("waited for a free slot past its deadline (max_concurrency 1); it was never sent")
        assert late.value.data["sent"] is False and "may or may not" not in late.value.message


class _LateWake(trio.abc.Instrument):
    """Holds the whole run up (real time passes, no task steps) for ``hold`` seconds at the
    moment the task named ``name`` is woken while ``when()`` holds: what a long stretch of
    another task's work with no checkpoint does to a call that was just given a slot.

    Given a queued call's whole timeout (and a little), the hold ends past that call's
    deadline however loaded the machine: the deadline was set before the call parked, and
    the wake comes after. (A hold up to a deadline reckoned from before the call started
    fell short of it when the call took more than the margin to get going.)"""

    def __init__(self, name: str, when: Callable[[], bool], hold: float) -> None:
        self.name, self.when, self.hold, self.fired = name, when, hold, False

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name and not self.fired and self.when():
            self.fired = True
            time.sleep(self.hold)


async def test_a_call_given_its_slot_after_its_deadline_is_not_sent_nor_held_against_the_server(tmp_path):
    """The call ahead of a queued one ends and wakes it, but the queued call's deadline passes
    before it runs (here: the run is held up; in life, the call ahead validating a large
    result). It was sent anyway with its deadline spent, so it timed out at once: reported as
    "may have run" (it never did) and counted towards ``hang_threshold``, which with 1
    restarted a healthy server. Now it fails as never sent, and the server is left alone."""
    ran = tmp_path / "exec.log"
    spec = server_spec("busy", "echo.py", env={"EXEC_LOG": str(ran)}, max_concurrency=1, max_queue=2, hang_threshold=1)
    async with Supervisor([spec]) as sup:
        link = sup.link("busy")
        first = link.conn
        failed: list[DeadlineExceeded] = []

        async def queued() -> None:
            with pytest.raises(DeadlineExceeded) as late:
                await sup.call_tool("write_note", {"text": "x"}, server="busy", timeout=1.0)
            failed.append(late.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 0.2}, server="busy", timeout=10))
            await wait_until(lambda: link.inflight == 1, what="the slot taken")
            late_wake = _LateWake("queued call", lambda: link.queued == 1, hold=1.0 + 0.05)
            trio.lowlevel.add_instrument(late_wake)
            try:
                nursery.start_soon(queued, name="queued call")
                await wait_until(lambda: late_wake.fired, timeout=5, what="the queued call woken")
            finally:
                trio.lowlevel.remove_instrument(late_wake)
        [late] = failed
        assert late.data["sent"] is False, late.message
        assert link.conn is first and link.conn.consecutive_timeouts == 0
        assert "write_note" not in (ran.read_text() if ran.exists() else "")


async def test_a_slot_given_to_a_call_whose_deadline_passed_goes_to_the_next_in_the_queue():
    """The call ahead ends and wakes the first queued call, whose deadline passes before it
    runs (the run held up, as above): it fails as never sent, but it used to take the wakeup
    with it, so the next queued call stayed parked beside a free slot until its own deadline
    and failed "waited for a free slot past its deadline". Now the slot is passed on."""
    spec = server_spec("busy", "echo.py", max_concurrency=1, max_queue=2)
    async with Supervisor([spec]) as sup:
        link = sup.link("busy")
        answers: list[str] = []

        async def first_queued() -> None:
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("echo", {"text": "late"}, server="busy", timeout=1.0)

        async def second_queued() -> None:
            answers.append(text(await sup.call_tool("echo", {"text": "next"}, server="busy", timeout=6.0)))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 0.3}, server="busy", timeout=10))
                await wait_until(lambda: link.inflight == 1, what="the slot taken")
                late_wake = _LateWake("first queued", lambda: link.queued == 2, hold=1.0 + 0.05)
                trio.lowlevel.add_instrument(late_wake)
                try:
                    nursery.start_soon(first_queued, name="first queued")
                    await wait_until(lambda: link.queued == 1, what="the first call queued")
                    nursery.start_soon(second_queued)
                    await wait_until(lambda: late_wake.fired, timeout=5, what="the first queued call woken")
                finally:
                    trio.lowlevel.remove_instrument(late_wake)
                t0 = trio.current_time()
                await wait_until(lambda: answers == ["next"], timeout=5, what="the next queued call answered")
                assert trio.current_time() - t0 < 3, "the free slot must not wait for the next call's deadline"


class _Watch(trio.abc.Instrument):
    """Records ``read()`` after every task step: what a status read at any moment saw."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read, self.seen = read, set()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.seen.add(self.read())


async def test_the_queued_count_never_goes_below_zero_when_the_server_dies_with_calls_queued():
    """Calls waiting for a slot when the server died (here: ``hang_threshold``) are failed as
    never sent, and each took itself off ``link.queued``, which the death had already set to
    0: until the incarnation had ended (half a second and more, for a hung stdio server) the
    status and the metrics' queue depth said ``queued: -2``. Now a dead incarnation no longer
    writes the counts: they are 0 from its death on."""
    spec = server_spec("frozen", "hang.py", max_concurrency=1, max_queue=2, hang_threshold=1)
    async with Supervisor([spec]) as sup:
        link = sup.link("frozen")
        first = link.conn
        answers: list[str] = []

        async def queued() -> None:
            answers.append(text(await sup.call_tool("echo", {"text": "later"}, server="frozen", timeout=20)))

        async def hanging() -> None:
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("hang", {}, server="frozen", timeout=1.0)

        watch = _Watch(lambda: (link.inflight, link.queued))
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hanging)
                await wait_until(lambda: link.inflight == 1, what="the hanging call in flight")
                for _ in range(2):
                    nursery.start_soon(queued)
                await wait_until(lambda: link.queued == 2, what="two calls queued")
                trio.lowlevel.add_instrument(watch)
                try:
                    await wait_until(lambda: first.death is not None, what="the hang death")
                    await wait_until(lambda: link.conn is not None and link.conn is not first, what="the next incarnation")
                finally:
                    trio.lowlevel.remove_instrument(watch)
        assert answers == ["later", "later"]
        assert min(queued for _, queued in watch.seen) == 0, watch.seen
        assert min(inflight for inflight, _ in watch.seen) == 0, watch.seen


class _StepCounter(trio.abc.Instrument):
    """Counts the steps run by the task named ``name``."""

    def __init__(self, name: str) -> None:
        self.name, self.steps = name, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.steps += 1


async def test_a_call_made_while_its_server_drains_for_removal_waits_quietly_and_fails_once_removed():
    """While ``remove_server`` drains the calls in flight, the old incarnation is still
    published. A call made then retried it in a busy loop (some 350,000 tries in 3 s, one
    core spent) and, the server gone, waited out its whole deadline. Now it waits for the
    drain without spinning and fails as soon as the server is removed."""
    spec = server_spec("leaving", "echo.py", timeout=30, shutdown_timeout=10)
    async with Supervisor([spec]) as sup:
        link = sup.link("leaving")
        steps = _StepCounter("late call")
        failed: list[Exception] = []

        async def late_call() -> None:
            with pytest.raises(ServerUnavailable) as unavailable:
                await sup.call_tool("echo", {"text": "x"}, server="leaving")
            failed.append(unavailable.value)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 1.5}, server="leaving"))
                await wait_until(lambda: link.inflight == 1, what="the slow call in flight")
                nursery.start_soon(sup.remove_server, "leaving")
                await wait_until(lambda: link.conn is not None and link.conn.stopping, what="the drain")
                trio.lowlevel.add_instrument(steps)
                try:
                    nursery.start_soon(late_call, name="late call")
                    await wait_until(lambda: failed, timeout=15, what="the late call's answer")
                finally:
                    trio.lowlevel.remove_instrument(steps)
        [unavailable] = failed
        assert "was removed" in unavailable.message, unavailable.message
        assert steps.steps < 100, f"the call took {steps.steps} steps to wait for the drain"


async def test_progress_reaches_the_caller():
    spec = server_spec("progress", "echo.py")
    seen = []

    async def on_progress(progress, total, message):
        seen.append(progress)

    async with Supervisor([spec]) as sup:
        await sup.call_tool("sleep", {"seconds": 0.5}, server="progress", timeout=10, progress=on_progress)
        await wait_until(lambda: len(seen) >= 3, timeout=5, what="progress notifications")


async def test_a_progress_callback_that_never_returns_holds_back_neither_the_answer_nor_memory(autojump_clock):
    """The caller's progress callback blocks (a client that stopped reading its stream, a
    host's callback stuck on a lock). Each delivery was unbounded: an in-process server's
    ``report_progress`` waited on it, so the call failed ``DeadlineExceeded`` at its deadline
    100 s on (and counted towards ``hang_threshold``); over a wire the result came, but
    the call waited for the deliveries still running (`_settle`) until its deadline, and
    each was a task of the connection that outlived the call. Now each delivery is bounded
    (1 s), as a log line's is: the answer comes, and nothing is left running."""
    app = MCPServer("chatty")

    @app.tool()
    async def work(ctx: Context) -> str:
        for step in range(3):
            await ctx.report_progress(step, 3)
        return "done"

    stuck = 0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal stuck
        stuck += 1
        await trio.sleep_forever()

    async with Supervisor([ServerSpec(name="chatty")], inproc={"chatty": app}) as sup:
        t0 = trio.current_time()
        result = await sup.call_tool("work", {}, server="chatty", timeout=100, progress=on_progress)
        assert text(result) == "done" and stuck >= 1
        assert trio.current_time() - t0 < 5, "the answer waited for the progress callbacks"
        await trio.sleep(5)
        assert not sup.link("chatty").conn.relaying


async def test_list_changed_updates_the_cache_without_restart():
    spec = server_spec("growing", "list_changed.py")
    events = []
    async with Supervisor([spec]) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sup.subscribe(), events)
            before = {t.name for t in sup.link("growing").tools}
            await sup.call_tool("add_tool", {"name": "brand_new"}, server="growing", timeout=10)
            await wait_until(lambda: "brand_new" in {t.name for t in sup.link("growing").tools}, what="new tool")
            assert {t.name for t in sup.link("growing").tools} == before | {"brand_new"}
            assert connection_status(sup, "growing").restarts == 0
            await wait_until(lambda: any(e.kind == "tools_changed" for e in events), what="the event")
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("era", ["2026-07-28", "handshake"])
async def test_a_burst_of_list_changed_is_a_few_reads_and_the_last_change_is_seen(era):
    """300 announcements in a row: the tool list is re-read a few times, one read at a time
    (the handshake era used to start a concurrent tools/list per notification; the
    2026-07-28 one read once per event), and a change made after the burst still reaches
    the cache."""
    server = None
    if era == "handshake":  # over HTTP: a stdio server in mcp 2.3 serves whichever era is asked
        server, port = await trio.to_thread.run_sync(start_http_server, 0, "--handshake-only", "--list-changed")
        spec = ServerSpec(name="noisy", url=f"http://127.0.0.1:{port}/mcp", transport="streamable-http")
    else:
        spec = server_spec("noisy", "list_changed.py")
    async with contextlib.AsyncExitStack() as stack:
        if server is not None:
            stack.callback(server.wait)
            stack.callback(server.kill)
        sup = await stack.enter_async_context(Supervisor([spec]))
        assert (sup.link("noisy").protocol_version == "2026-07-28") == (era == "2026-07-28")

        async def lists_served() -> dict:
            return json.loads(text(await sup.call_tool("lists_served", {}, server="noisy", timeout=10)))

        before = await lists_served()
        await sup.call_tool("announce", {"times": 300}, server="noisy", timeout=30)
        await sup.call_tool("add_tool", {"name": "after_the_burst"}, server="noisy", timeout=10)
        await wait_until(lambda: "after_the_burst" in {t.name for t in sup.link("noisy").tools}, what="the last change")
        await trio.sleep(0.3)  # any read still to come
        after = await lists_served()
        assert after["most_at_once"] == 1, after  # one read at a time, never a pile of them
        assert after["served"] - before["served"] <= 30, (before, after)
        assert connection_status(sup, "noisy").restarts == 0


@pytest.mark.parametrize("era", ["handshake", "2026-07-28"])
async def test_a_list_changed_announced_while_the_lists_are_read_at_connect_is_not_lost(era):
    """A server announces a new tool while the connection is still reading its lists (here:
    during ``resources/list``, after ``tools/list`` was answered), as a server that loads its
    tools in the background does. The cache missed the tool until some later change (health
    checks off here to show it): a handshake-era announcement came before the incarnation
    was ready and was dropped; a 2026-07-28 one came before any ``subscriptions/listen``
    stream was open, so it went nowhere. Now the first is read again once ready, and the
    lists a listen stream watches are read again once the server has acknowledged it."""
    handshake = ("--handshake-only",) if era == "handshake" else ()
    spec = server_spec(
        "early", "list_changed.py", *handshake, "--change-while-listing-resources", "early_bird",
        health_check_interval=None,
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("early", timeout=30)
        assert (sup.link("early").protocol_version == "2026-07-28") == (era == "2026-07-28")
        await wait_until(lambda: "early_bird" in {t.name for t in sup.list_tools()}, timeout=10, what="the tool")
        assert text(await sup.call_tool("early_bird", {"text": "hi"}, timeout=10)) == "early_bird: hi"
        assert connection_status(sup, "early").restarts == 0


async def test_a_tool_list_changed_without_a_word_is_found_by_the_health_check():
    """The server adds a tool and announces nothing: the cache stays as it was until the
    next health check, whose tools/list answer differs from it, and then it is updated."""
    spec = server_spec("quiet", "list_changed.py", health_check_interval=0.3, health_check_timeout=5)
    async with Supervisor([spec]) as sup:
        await settled(sup, "quiet")  # the lists read after its listen stream opened: read before the change
        await sup.call_tool("add_tool", {"name": "unannounced", "notify": False}, server="quiet", timeout=10)
        assert "unannounced" not in {t.name for t in sup.link("quiet").tools}  # nothing said so yet
        await wait_until(lambda: "unannounced" in {t.name for t in sup.link("quiet").tools}, what="the check")
        version = sup.link("quiet").tools_version
        await trio.sleep(1.0)  # more checks, the same list: nothing is published again
        assert sup.link("quiet").tools_version == version
        assert connection_status(sup, "quiet").restarts == 0


async def test_a_listen_stream_the_server_ends_is_reopened_and_what_it_missed_is_caught_up(caplog):
    """2026-07-28: list changes reach us only on a subscriptions/listen stream, and the SDK's
    server ends such streams (a graceful close, a capped backlog) expecting the client to
    listen again. We do, and re-read the list in case a change came while none was open."""
    caplog.set_level(logging.INFO, logger="supervisor.connection")
    spec = server_spec("noisy", "list_changed.py")
    async with Supervisor([spec]) as sup:
        assert sup.link("noisy").protocol_version == "2026-07-28"
        await settled(sup, "noisy")  # the first stream's own catch-up read is over: not the one to find the change

        async def call(tool: str, **arguments) -> str:
            return text(await sup.call_tool(tool, arguments, server="noisy", timeout=10))

        def tool_names() -> set[str]:
            return {t.name for t in sup.link("noisy").tools}

        assert await call("listen_streams") == "1"
        await call("end_listen_streams")
        # A change made while the ended stream is still flushing its last events reaches us
        # on it (flaky 1 run in ~20): make it once that stream is gone (we said so) and before
        # ours is reopened (0.5 s after its end).
        await wait_until(lambda: any("subscriptions/listen stream lost" in r.getMessage() for r in caplog.records),
                         timeout=60, what="the ended stream gone")
        await call("add_tool", name="while_none_was_open")
        await wait_until(lambda: "while_none_was_open" in tool_names(), what="the catch-up read")
        assert await call("listen_streams") == "1"  # reopened
        await call("add_tool", name="on_the_new_stream")
        await wait_until(lambda: "on_the_new_stream" in tool_names(), what="the event on the new stream")
        assert connection_status(sup, "noisy").restarts == 0


async def test_a_server_that_dies_logs_no_listen_stream_to_reopen(caplog):
    """A server that died took its listen stream with it, and every crash logged "stream
    lost ...; reopening in 0.5 s" beside the death, though that incarnation reopens nothing:
    the next one opens its own. Only a stream lost while its connection lives says so now."""
    caplog.set_level(logging.INFO, logger="supervisor.connection")
    spec = server_spec("crashy", "crash_on_call.py", backoff=BackoffPolicy(min=0.5, max=0.5, jitter=0.0))
    async with Supervisor([spec]) as sup:
        await settled(sup, "crashy")
        for _ in range(3):
            version = sup.link("crashy").tools_version
            with pytest.raises(ServerCrashed):
                await sup.call_tool("crash", {}, server="crashy", timeout=10)
            await sup.wait_connected("crashy", timeout=20)
            await wait_until(lambda: sup.link("crashy").tools_version > version, what="the next incarnation's lists")
        assert connection_status(sup, "crashy").restarts == 3
    lines = [r.getMessage() for r in caplog.records if "stream" in r.getMessage()]
    assert not [line for line in lines if "reopening" in line], lines


@pytest.mark.parametrize("session", ["same", "new"], ids=["child-in-group", "child-left-group"])
@pytest.mark.parametrize("exits_by_itself", [False, True], ids=["server-killed", "server-exits"])
async def test_no_orphans_from_a_server_that_spawns_a_grandchild(exits_by_itself, session, tmp_path):
    """The orphan goes whether or not it stayed in the server's process group: one that
    started a session of its own is found by the incarnation id in its environment."""
    exit_now = tmp_path / "exit"
    args = ["--child-session", session] + (["--exit-when", str(exit_now)] if exits_by_itself else [])
    spec = server_spec("parent", "spawns_grandchild.py", *args, backoff=BackoffPolicy(min=0.5, max=0.5, jitter=0.0))
    marker = marker_of(spec)
    async with Supervisor([spec]) as sup:
        grandchild = int(text(await sup.call_tool("child_pid", {}, server="parent", timeout=10)))
        server_pid = sup.link("parent").process.pid
        assert set(procs_with_marker(marker)) == {server_pid, grandchild}
        if exits_by_itself:
            exit_now.touch()  # it exits (and takes the file: its restart stays up)
        else:
            os.kill(server_pid, signal.SIGKILL)
        # either way the server is gone; its orphaned child must go with it (the next
        # incarnation's processes carry the same marker, so the old pids are what is checked)
        await wait_until(lambda: not {server_pid, grandchild} & set(procs_with_marker(marker)),
                         timeout=60, what="the orphan to be reaped")
        await wait_until(lambda: connection_status(sup, "parent").restarts == 1, timeout=60, what="restart")
        await sup.wait_connected("parent", timeout=20)
        new_child = int(text(await sup.call_tool("child_pid", {}, server="parent", timeout=10)))
        assert set(procs_with_marker(marker)) == {sup.link("parent").process.pid, new_child}
    assert procs_with_marker(marker) == []


async def test_shutdown_leaves_no_process_behind():
    sessions = ["same", "new", "same"]  # a child that left its server's group goes too
    specs = [
        server_spec(f"s{i}", "spawns_grandchild.py", "--child-session", session, namespace="prefix")
        for i, session in enumerate(sessions)
    ]
    async with Supervisor(specs) as sup:
        for spec in specs:
            await sup.call_tool("child_pid", {}, server=spec.name, timeout=10)
            assert len(procs_with_marker(marker_of(spec))) == 2
    for spec in specs:
        assert procs_with_marker(marker_of(spec)) == []


async def test_helpers_started_while_the_tree_is_being_killed_go_too():
    """A server answers SIGTERM by starting daemonizing helpers (each in a session of its
    own) every millisecond. The last kill scanned /proc once, then SIGKILLed the group: a
    helper that left the group between the two survived (5 runs in 6), carrying the
    incarnation id that marks it as the server's. Now the scan is repeated once the group
    is dead (it can start no more) until none is found."""
    spec = server_spec("spawner", "spawns_grandchild.py", "--spawn-on-term", env={"MCP_TEST_STUBBORN": "1"},
                       shutdown_timeout=0.3)
    marker = marker_of(spec)
    async with Supervisor([spec]) as sup:
        await sup.call_tool("child_pid", {}, server="spawner", timeout=10)
    with trio.move_on_after(2.0):  # anything still dying goes; a survivor does not
        while procs_with_marker(marker):
            await trio.sleep(0.05)
    survivors = procs_with_marker(marker)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert survivors == []


async def test_kill_every_server_now_takes_each_servers_whole_tree_at_once():
    """The forced exit's sweep (synchronous, before ``os._exit``): every server, its group and
    a child that left the group, all SIGKILLed there and then, not by the reaper later."""
    specs = [
        server_spec(
            f"k{i}", "spawns_grandchild.py", "--child-session", session, namespace="prefix",
            backoff=BackoffPolicy(min=30.0, max=30.0, jitter=0.0),  # no new incarnation meanwhile
        )
        for i, session in enumerate(["same", "new"])
    ]
    async with Supervisor(specs) as sup:
        for spec in specs:
            await sup.call_tool("child_pid", {}, server=spec.name, timeout=10)
            assert len(procs_with_marker(marker_of(spec))) == 2
        assert kill_every_server_now() == 2
        # Blocking on purpose: before os._exit nothing else runs, so the supervisor's own
        # cleanup (which would also find these processes) must get no turn here.
        deadline = time.monotonic() + 2.0
        while any(procs_with_marker(marker_of(spec)) for spec in specs) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [procs_with_marker(marker_of(spec)) for spec in specs] == [[], []]


_SUPERVISOR_SCRIPT = """
import os, sys, time, msgspec, trio
from protocol import ServerSpec
from supervisor import Supervisor

async def main():
    spec = msgspec.json.decode(sys.argv[1], type=ServerSpec)
    async with Supervisor([spec]) as sup:
        await sup.call_tool("child_pid", {}, server=spec.name, timeout=10)
        forked = 0
        if sys.argv[2:] == ["fork"]:  # a fork that never execs, as multiprocessing's default makes
            forked = os.fork()
            if forked == 0:
                time.sleep(30)
                os._exit(0)
        print("ready", forked, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def start_supervisor_process(spec: ServerSpec, *extra: str, env: dict[str, str] | None = None) -> tuple[trio.Process, int]:
    """``_SUPERVISOR_SCRIPT`` in a session of its own, once it is ready; and the pid of its
    fork (``extra == ("fork",)``), else 0."""
    supervisor = await trio.lowlevel.open_process(
        [sys.executable, "-c", _SUPERVISOR_SCRIPT, msgspec.json.encode(spec).decode(), *extra],
        stdout=subprocess.PIPE,
        start_new_session=True,
        env=None if env is None else {**os.environ, **env},
    )
    line = b""
    try:
        with trio.fail_after(30):
            while not line.endswith(b"\n"):  # print() may write in pieces (PYTHONUNBUFFERED)
                chunk = await supervisor.stdout.receive_some(100)
                assert chunk, line
                line += chunk
        assert line.startswith(b"ready"), line
    except BaseException:
        supervisor.kill()  # its reaper then takes the servers
        raise
    return supervisor, int(line.split()[1])


async def test_a_helper_out_of_reach_holding_stdout_does_not_hold_up_the_restart(tmp_path):
    """A helper that left the server's group and cleared its environment cannot be found
    (nothing marks it as the server's: the documented escape), and it keeps the server's
    stdout open. The server is killed: the old incarnation must end without waiting for
    that stdout to close (it never does), so the server is back, and the supervisor stops,
    in bounded time. The test kills the helper itself."""
    pid_file = tmp_path / "helper.pid"
    spec = server_spec(
        "escapee", "spawns_grandchild.py", "--child-session", "new", "--child-env", "clear",
        "--child-pid-file", str(pid_file),
    )
    try:
        with trio.fail_after(60):
            async with Supervisor([spec]) as sup:
                await sup.wait_connected("escapee", timeout=30)
                first = sup.link("escapee").process.pid
                os.kill(first, signal.SIGKILL)
                await wait_until(
                    lambda: sup.link("escapee").conn is not None and sup.link("escapee").process.pid != first,
                    timeout=30, what="the restart",
                )
                assert text(await sup.call_tool("echo", {"text": "back"}, server="escapee", timeout=10)) == "back"
    finally:
        for line in pid_file.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line), signal.SIGKILL)


@pytest.mark.parametrize("session", ["same", "new"], ids=["child-in-group", "child-left-group"])
@pytest.mark.parametrize("whole_group", [False, True], ids=["kill-the-process", "kill-its-group"])
async def test_a_supervisor_killed_by_sigkill_leaves_no_process_behind(whole_group, session):
    """SIGKILL gives the supervisor no chance to clean up. The reaper it started sees its
    pipe close and kills every process group the supervisor was running: the server (which
    would at most exit on its own stdin EOF) and the grandchild it started (which would not),
    and the grandchild also when it left the server's group (found by the incarnation id
    in its environment)."""
    spec = server_spec("orphaned", "spawns_grandchild.py", "--child-session", session)

    async def kill(supervisor: trio.Process) -> None:
        if whole_group:  # as a terminal's hangup would: the reaper, in a session of its own, is spared
            os.killpg(supervisor.pid, signal.SIGKILL)
        else:
            supervisor.kill()

    await assert_the_reaper_takes_the_servers(spec, kill)


async def assert_the_reaper_takes_the_servers(spec: ServerSpec, kill: Callable[[trio.Process], Any], env: dict | None = None) -> None:
    """A supervisor process over ``spec`` (a server with a child), killed by ``kill``: its
    reaper kills the server and the child."""
    marker = marker_of(spec)
    supervisor, _ = await start_supervisor_process(spec, env=env)
    try:
        assert len(procs_with_marker(marker)) == 2  # the server and its child
        await kill(supervisor)
        await supervisor.wait()
        await wait_until(lambda: procs_with_marker(marker) == [], timeout=10, what="the reaper to kill the servers")
    finally:
        supervisor.kill()
        await supervisor.stdout.aclose()
        for pid in procs_with_marker(marker):
            os.kill(pid, signal.SIGKILL)


async def test_a_supervisor_that_is_itself_a_supervised_server_leaves_no_process_behind():
    """A supervisor run as a stdio server of another (a gateway chained under a gateway)
    carries the outer incarnation id, and its reaper inherited it: the outer supervisor's
    kill of the whole tree killed the reaper too, and the inner servers (in sessions of
    their own, with ids of their own) outlived everything. Now the reaper carries no id,
    and takes the inner servers once the inner supervisor is gone."""
    spec = server_spec("inner", "spawns_grandchild.py")
    outer = "outer-" + marker_of(spec)

    async def kill(supervisor: trio.Process) -> None:
        await kill_tree(supervisor.pid, outer, 5.0)  # what the outer supervisor does to its server

    await assert_the_reaper_takes_the_servers(spec, kill, env={INCARNATION_VAR: outer})


async def test_a_fork_of_the_supervisor_does_not_keep_its_servers_alive_after_a_sigkill():
    """A fork that never execs (multiprocessing's default start method on Linux) inherits the
    reaper's pipe. It must not hold it open: the reaper has to see the pipe close when the
    supervisor dies, whoever else is still running."""
    spec = server_spec("forked", "spawns_grandchild.py")
    marker = marker_of(spec)
    supervisor, fork = await start_supervisor_process(spec, "fork")
    try:
        assert len(procs_with_marker(marker)) == 2
        supervisor.kill()
        await supervisor.wait()
        assert os.path.exists(f"/proc/{fork}")  # the fork lives on, holding what it inherited
        await wait_until(lambda: procs_with_marker(marker) == [], timeout=5, what="the reaper to kill the servers")
    finally:
        supervisor.kill()
        await supervisor.stdout.aclose()
        for pid in procs_with_marker(marker) + [fork]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


REAPER_STALL = """
import fcntl, logging, os, signal, sys, time
sys.path.insert(0, ROOT)
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from actors import _process as p
FAKE = 5_000_000  # above any pid a Linux kernel hands out (PID_MAX_LIMIT is 4194304): no such group
p._watch_group(FAKE, "a", "")
reaper = p._reaper
print("reaper", reaper.pid, flush=True)
fcntl.fcntl(reaper.stdin.fileno(), 1031, 4096)  # F_SETPIPE_SZ: one page
os.kill(reaper.pid, signal.SIGSTOP)
# Stopped only once it is back in user space: a reaper woken inside its read (by the signal)
# still takes what is in the pipe first, and a pipe emptied in the middle of the writes below
# is a second stall.
deadline = time.monotonic() + 10
while open(f"/proc/{reaper.pid}/stat").read().rpartition(")")[2].split()[0] != "T" and time.monotonic() < deadline:
    time.sleep(0.001)
for i in range(1, 1000):  # ~20 kB of "+pgid id" lines
    p._watch_group(FAKE + i, "b", "")
print("held back", len(p._reaper_backlog) > 0, flush=True)
os.kill(reaper.pid, signal.SIGCONT)
deadline = time.monotonic() + 10
while p._reaper_backlog and time.monotonic() < deadline:
    p._tell_reaper("")
    time.sleep(0.01)
print("caught up", not p._reaper_backlog, flush=True)
"""


def test_a_reaper_that_stops_reading_never_blocks_the_supervisor():
    """The reaper's pipe was written blocking: a reaper that stopped reading (SIGSTOPped,
    or starved) froze the whole supervisor once its pipe filled, every task of the thread
    and an embedding host's loop with it. Now the writes never block: what the pipe cannot
    take waits, in order, for the next write, with one warning per stall.

    The lines are the reaper's own (``_watch_group``, as a server start sends them), for
    groups that cannot exist: filling even a one-page pipe takes ~200 server starts."""
    script = REAPER_STALL.replace("ROOT", repr(str(SERVERS.parent.parent)))
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = run.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        run.kill()
        out, err = run.communicate()
        with contextlib.suppress(IndexError, ValueError, ProcessLookupError):
            os.kill(int(out.splitlines()[0].split()[1]), signal.SIGKILL)  # the stopped reaper
        pytest.fail(f"the supervisor blocked on the reaper's pipe; it printed {out!r}")
    lines = out.splitlines()
    reaper = int(lines[0].split()[1])
    assert lines[1:] == ["held back True", "caught up True"], (out, err)
    assert err.count("the reaper is not reading its pipe") == 1, err
    for _ in range(300):  # the script's exit closed the pipe: the reaper acts, then exits
        if not os.path.exists(f"/proc/{reaper}"):
            break
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{reaper}")


REAPER_LISTS = """
import sys
sys.path.insert(0, ROOT)
from actors import _process as p
p._watch_group(int(sys.argv[1]), "0123456789abcdef", sys.argv[2])
print(p._reaper.pid, flush=True)
"""


@pytest.mark.parametrize("listed_start", ["its own", "another"])
def test_the_reaper_spares_a_group_that_took_the_number_of_one_long_gone(listed_start):
    """The reaper killed every group still listed when we died, by number. A group whose
    end it never heard of (its line lost in a stall) may be long gone, and its number
    taken by a stranger's group since: that one went instead. Now a group whose number
    names a process that started at another time than the listed leader is spared.

    The stranger is a real process group (``sleep`` in a session of its own); this
    process lists it as a server's group, with its leader's true start time (it is then
    ours: killed) or another one (it is the number of a gone group: spared), then exits."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = start_time_of(stranger.pid) if listed_start == "its own" else "1"
        script = REAPER_LISTS.replace("ROOT", repr(str(SERVERS.parent.parent)))
        run = subprocess.run([sys.executable, "-c", script, str(stranger.pid), start],
                             capture_output=True, text=True, timeout=30)
        reaper = int(run.stdout.split()[0])
        for _ in range(500):  # the script's exit closed the pipe: the reaper acts, then exits
            if not os.path.exists(f"/proc/{reaper}"):
                break
            time.sleep(0.01)
        assert not os.path.exists(f"/proc/{reaper}")
        if listed_start == "its own":
            assert stranger.wait(timeout=5) == -signal.SIGTERM
        else:
            assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def start_time_of(pid: int) -> str:
    from actors._process import _start_time

    start = _start_time(pid)
    assert start.isdigit(), start
    return start


async def test_stderr_is_kept_in_a_ring_buffer_and_shown_in_status():
    spec = server_spec("chatty", "crash_at_start.py", "--when", "before")
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: connection_status(sup, "chatty").restarts >= 1, what="a failed start")
        await wait_until(lambda: connection_status(sup, "chatty").detail["stderr_tail"], what="stderr")
        tail = connection_status(sup, "chatty").detail["stderr_tail"]
        assert any("crash_at_start" in line for line in tail)
        # The failed start says why, without a look at the logs: how it exited, what it said.
        last_error = sup.link("chatty").last_error
        assert last_error.startswith("could not connect: MCPError: Connection closed; ")
        assert "; the server process exited with code 1; its last stderr lines: crash_at_start: exiting" in last_error


def start_http_server(port: int = 0, *extra: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / "http_echo.py"), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("LISTENING"), line
    return proc, int(line.split()[1])


class HttpEcho:
    """``tests/servers/http_echo.py`` in a subprocess, on one port for its whole life:
    ``stop()`` kills it, ``start()`` brings it back on the same port, and leaving the
    ``async with`` kills it."""

    def __init__(self, *extra: str) -> None:
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc, self.port = await trio.to_thread.run_sync(start_http_server, self.port, *self.extra)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def url(self, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> HttpEcho:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_remote_server_goes_away_and_comes_back(transport):
    extra = ("--sse",) if transport == "sse" else ()
    async with HttpEcho(*extra) as server:
        spec = ServerSpec(
            name="remote",
            url=server.url("/sse" if transport == "sse" else "/mcp"),
            transport=transport,
            headers={"X-Session-Id": "abc"},
            # Slow enough that the server's restart intensity (10 in 60 s) holds for the ~16 s a
            # loaded machine may take to bring the HTTP server back: with 0.1-0.5 s the subtree
            # gave up, was restarted whole by ``servers`` and the connection's count began again.
            backoff=BackoffPolicy(min=0.3, max=2.0, jitter=0.0),
            connect_timeout=5,
        )
        async with Supervisor([spec]) as sup:
            assert text(await sup.call_tool("echo", {"text": "one"}, server="remote", timeout=10)) == "one"
            server.stop()
            # Any typed failure that says the server is gone; ActorDown when the call met the
            # dying connection (never sent) and its retry ran into the deadline.
            with pytest.raises((ServerCrashed, ServerUnavailable, ActorDown, DeadlineExceeded, CircuitOpen, MCPError)):
                await sup.call_tool("echo", {"text": "gone"}, server="remote", timeout=3)
            await server.start()
            await wait_until(lambda: connection_status(sup, "remote").restarts >= 1, timeout=20, what="restart")
            await sup.wait_connected("remote", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "two"}, server="remote", timeout=10)) == "two"


@pytest.mark.parametrize("transport", ["sse", "handshake-era streamable-http"])
async def test_calls_to_a_stalled_remote_server_end_at_their_deadlines(transport):
    """A remote server stops answering (SIGSTOP: its socket still accepts). Over SSE, and
    in a handshake-era streamable HTTP session, the SDK sends one POST at a time, so the
    courtesy cancel of a call that timed out waited behind the stalled POST, for the SDK's
    whole ABANDON_WRITE_TIMEOUT: every call answered that much past its deadline (6 s for
    1). Now each call (and each other request) ends at its deadline."""
    sse = transport == "sse"
    async with HttpEcho("--sse" if sse else "--handshake-only") as server:
        spec = ServerSpec(
            name="remote", url=server.url("/sse" if sse else "/mcp"), transport="sse" if sse else "streamable-http",
            timeout=1.0, hang_threshold=100, health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("remote", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "one"}, server="remote", timeout=10)) == "one"
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                for attempt in range(2):
                    with trio.fail_after(1.0 + ABANDON_WRITE_TIMEOUT / 2):
                        with pytest.raises(DeadlineExceeded, match="did not answer in time"):
                            await sup.call_tool("echo", {"text": f"stalled {attempt}"}, server="remote", timeout=1.0)
                with trio.fail_after(1.0 + ABANDON_WRITE_TIMEOUT / 2):
                    with pytest.raises(DeadlineExceeded, match="did not answer within 1 s"):
                        await sup.link("remote").request(lambda client: client.list_prompts())
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            with trio.fail_after(30):
                while True:  # the stalled POSTs drain first
                    with contextlib.suppress(DeadlineExceeded):
                        assert text(await sup.call_tool("echo", {"text": "two"}, server="remote", timeout=5)) == "two"
                        break


async def test_a_request_cut_off_by_the_server_s_death_is_server_crashed_naming_the_server(tmp_path):
    """A ``prompts/get`` (any request but a tool call, as the gateway passes them upstream)
    is in flight when the stdio server dies: its caller got the SDK's bare ``MCPError``
    "Connection closed", which names no server and which the gateway handed its client as
    if it were the server's own answer. Now it is ``ServerCrashed`` naming the server and
    the death, as for a tool call."""
    ran = tmp_path / "exec.log"
    spec = server_spec("frozen", "hang.py", env={"EXEC_LOG": str(ran)}, timeout=20)
    async with Supervisor([spec]) as sup:
        link = sup.link("frozen")
        first = link.conn

        async def kill_once_asked() -> None:
            await wait_until(lambda: ran.exists() and "prompt start" in ran.read_text(), what="the prompt asked")
            os.kill(link.process.pid, signal.SIGKILL)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_once_asked)
                with pytest.raises(ServerCrashed, match="server 'frozen' died while") as crashed:
                    await link.request(lambda client: client.get_prompt("stuck", {}))
        assert crashed.value.data["server"] == "frozen"
        assert first.death is not None


async def test_a_request_in_flight_when_the_server_is_restarted_is_answered():
    """``restart_server`` drains the old incarnation: its tool calls in flight finish. A
    request in flight (any request but a tool call: a ``prompts/get``, or what the agents
    adapter sends through ``ServerLink.request``; here a slow one) was not waited for: the
    drain ended at once and cut it off, "died while the call was in flight", though nothing
    died. Now the drain waits for requests too, and one made while it drains goes to the
    next incarnation, as a call does."""
    spec = server_spec("slow", "echo.py", timeout=20)
    async with Supervisor([spec]) as sup:
        link = sup.link("slow")
        first = link.conn
        answers: list[tuple[str, bool]] = []
        running = trio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            running.set()

        async def ask(word: str) -> None:
            result = await link.request(
                lambda client: client.call_tool("sleep", {"seconds": 1.5}, progress_callback=progress)
            )
            answers.append((word, text(result) == "slept 1.5"))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "before")
                await running.wait()  # the server is working on it
                nursery.start_soon(sup.restart_server, "slow")
                await wait_until(lambda: first.stopping, what="the drain")
                nursery.start_soon(ask, "during")
        assert sorted(answers) == [("before", True), ("during", True)]
        assert link.conn is not first


async def test_lists_a_server_no_longer_offers_are_not_kept_from_its_last_incarnation():
    """The server is restarted (updated, say) and no longer advertises prompts or
    resources. Only advertised lists were read, so the last incarnation's stayed on the
    link: the gateway kept listing prompts and resources that were gone (a ``prompts/get``
    of one went upstream and failed), and a list the old one failed to give stayed named in
    the status. Now a list the server does not advertise is empty."""

    class Changing(Server):
        def __init__(self) -> None:
            async def list_tools(ctx, params):
                return mcp_types.ListToolsResult(tools=[mcp_types.Tool(name="t", input_schema={"type": "object"})])

            async def list_prompts(ctx, params):
                return mcp_types.ListPromptsResult(prompts=[mcp_types.Prompt(name="old_prompt")])

            async def list_resources(ctx, params):
                return mcp_types.ListResourcesResult(resources=[mcp_types.Resource(name="old", uri="old://r")])

            async def list_templates(ctx, params):
                raise MCPError(code=mcp_types.INTERNAL_ERROR, message="templates broken")

            super().__init__(
                "changing", on_list_tools=list_tools, on_list_prompts=list_prompts,
                on_list_resources=list_resources, on_list_resource_templates=list_templates,
            )
            self.only_tools = False

        def get_capabilities(self, *args: Any, **kwargs: Any) -> mcp_types.ServerCapabilities:
            caps = super().get_capabilities(*args, **kwargs)
            return caps.model_copy(update={"prompts": None, "resources": None}) if self.only_tools else caps

    app = Changing()
    spec = ServerSpec(name="changing", health_check_interval=None)
    async with Supervisor([spec], inproc={"changing": app}) as sup:
        link = sup.link("changing")
        assert [p.name for p in link.prompts] == ["old_prompt"] and [str(r.uri) for r in link.resources] == ["old://r"]
        assert "resources/templates/list" in link.unread_lists
        app.only_tools = True
        with trio.fail_after(30):
            await sup.restart_server("changing")
        assert link.conn is not None and link.capabilities.prompts is None
        assert (link.prompts, link.resources, link.resource_templates, link.unread_lists) == ([], [], [], {})


async def test_every_page_of_the_prompts_and_resources_lists_is_read():
    """Tools were read page after page, prompts, resources and templates only their first
    page: what a paginating server listed after it was unknown (``resources/read`` and
    ``prompts/get`` through the gateway failed "unknown")."""

    def paged(result: type, field: str, first: Any, second: Any) -> Callable[..., Any]:
        async def handler(ctx: Any, params: Any) -> Any:
            if params is not None and params.cursor == "2":
                return result(**{field: [second]})
            return result(**{field: [first]}, next_cursor="2")

        return handler

    server = Server(
        "paged",
        on_list_prompts=paged(mcp_types.ListPromptsResult, "prompts", mcp_types.Prompt(name="first"), mcp_types.Prompt(name="second")),
        on_list_resources=paged(
            mcp_types.ListResourcesResult, "resources",
            mcp_types.Resource(uri="doc://page1", name="page1"), mcp_types.Resource(uri="doc://page2", name="page2"),
        ),
        on_list_resource_templates=paged(
            mcp_types.ListResourceTemplatesResult, "resource_templates",
            mcp_types.ResourceTemplate(uri_template="a://{x}", name="a"), mcp_types.ResourceTemplate(uri_template="b://{x}", name="b"),
        ),
    )
    async with Supervisor([ServerSpec(name="paged")], inproc={"paged": server}) as sup:
        await sup.wait_connected("paged", timeout=30)
        link = sup.link("paged")
        assert [p.name for p in link.prompts] == ["first", "second"]
        assert [str(r.uri) for r in link.resources] == ["doc://page1", "doc://page2"]
        assert [t.uri_template for t in link.resource_templates] == ["a://{x}", "b://{x}"]


async def test_a_subscription_the_server_never_acknowledges_fails_at_the_timeout():
    """A 2026-07-28 server is subscribed through a ``subscriptions/listen`` stream. One that
    never acknowledged the stream had the subscription reported made at the timeout, though
    no update would ever come; now it fails there, typed, and is not kept."""

    async def never_acknowledged(ctx: Any, params: Any) -> Any:
        await trio.sleep_forever()

    server = MCPServer("mute")

    @server.resource("doc://{name}")
    def doc(name: str) -> str:
        return name

    server._lowlevel_server.add_request_handler(
        "subscriptions/listen", mcp_types.SubscriptionsListenRequestParams, never_acknowledged
    )
    async with Supervisor([ServerSpec(name="mute", timeout=1.0)], inproc={"mute": server}) as sup:
        await sup.wait_connected("mute", timeout=30)
        link = sup.link("mute")
        assert link.conn.modern
        with trio.fail_after(10):
            with pytest.raises(DeadlineExceeded, match="did not open a subscriptions/listen stream within 1 s"):
                await link.subscribe("doc://a")
        assert link.subscriptions == set()


async def test_a_stalled_sse_server_is_found_by_its_health_check_in_time():
    """An idle SSE server stops answering (SIGSTOP: its socket still accepts). The health
    check's unanswered tools/list was cancelled at ``health_check_timeout``, and the SDK's
    courtesy cancel then waited behind the stalled POST for up to 5 s more before the
    connection was declared dead. Now it dies at the check's timeout."""
    async with HttpEcho("--sse") as server:
        spec = ServerSpec(
            name="remote", url=server.url("/sse"), transport="sse", health_check_interval=0.5, health_check_timeout=1.0,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("remote", timeout=20)
            await settled(sup, "remote")
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                with trio.fail_after(0.5 + 1.0 + ABANDON_WRITE_TIMEOUT / 2):
                    await wait_until(lambda: sup.link("remote").conn is None, timeout=60, what="the check to find it")
                assert "no answer to a health check" in sup.link("remote").last_error
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)


async def test_a_broken_sse_stream_is_noticed_at_once_without_a_call():
    """An SSE server dies while we are idle: its event stream breaks, and the connection
    ends there and then (health checks off to show it), rather than at the next call."""
    async with HttpEcho("--sse") as server:
        spec = ServerSpec(
            name="remote", url=server.url("/sse"), transport="sse",
            backoff=BackoffPolicy(min=0.3, max=2.0, jitter=0.0), connect_timeout=5, health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            assert text(await sup.call_tool("echo", {"text": "one"}, server="remote", timeout=10)) == "one"
            server.stop()
            await wait_until(lambda: sup.link("remote").conn is None, timeout=10, what="the broken stream to be noticed")
            assert "transport error" in sup.link("remote").last_error
            await server.start()
            await sup.wait_connected("remote", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "two"}, server="remote", timeout=10)) == "two"


class PostBreaker:
    """A TCP proxy on 127.0.0.1 in front of a real server: it passes every connection
    through until ``break_posts`` makes a message's POST get no answer, while the SSE event
    stream (its GET connection) stays up. ``"refused"`` stops listening (a new connection is
    refused); ``"reset"`` closes each new POST connection as soon as its request comes. Either
    first closes the POST connections already open, so the next POST needs a new one.
    ``heal`` passes everything through again, on the same port."""

    def __init__(self, nursery: trio.Nursery, upstream: int) -> None:
        self.nursery = nursery
        self.upstream = upstream
        self.port = 0
        self.mode = "pass"
        self.listening: trio.CancelScope | None = None
        self.posts: dict[trio.CancelScope, trio.Event] = {}  # each open POST connection -> closed

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def listen(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        try:
            with trio.CancelScope() as self.listening:
                task_status.started()
                await trio.serve_listeners(self._relay, listeners, handler_nursery=self.nursery)
        finally:
            for listener in listeners:
                await listener.aclose()

    async def _relay(self, client: trio.SocketStream) -> None:
        scope, closed = trio.CancelScope(), trio.Event()
        try:
            with scope:
                async with client:
                    first = await client.receive_some(65536)
                    post = first.startswith(b"POST ")
                    if post:
                        self.posts[scope] = closed
                    if post and self.mode == "reset":
                        return  # the request came, and the connection closes unanswered
                    async with await trio.open_tcp_stream("127.0.0.1", self.upstream) as server:
                        await server.send_all(first)
                        async with trio.open_nursery() as pipes:
                            pipes.start_soon(self._pipe, client, server, pipes.cancel_scope)
                            pipes.start_soon(self._pipe, server, client, pipes.cancel_scope)
        except (trio.BrokenResourceError, OSError):
            pass
        finally:
            self.posts.pop(scope, None)
            closed.set()

    @staticmethod
    async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        both.cancel()

    async def break_posts(self, mode: str) -> None:
        self.mode = mode
        if mode == "refused":
            assert self.listening is not None
            self.listening.cancel()
        open_posts = list(self.posts.items())
        with trio.fail_after(5):
            for scope, closed in open_posts:
                scope.cancel()
                await closed.wait()

    async def heal(self) -> None:
        if self.mode == "refused":
            await self.nursery.start(self.listen)
        self.mode = "pass"


@pytest.mark.parametrize("failure", ["refused", "reset"])
async def test_an_sse_post_with_no_answer_fails_its_call_at_once_and_ends_the_connection(failure):
    """Over SSE each message is a POST of its own, while the answers come on the event
    stream. A POST that got no HTTP answer (the connection refused, or reset once the
    request was out) was only logged by the SDK, whose transport then sent nothing more:
    the call waited out its whole timeout and the connection still looked up. Now the
    incarnation ends at once, as on any transport error, and is restarted once the server
    can be reached. A call whose POST never connected was not sent: it goes out on the next
    incarnation (and runs once); one whose POST was reset may have run: ``ServerCrashed``
    (a destructive tool here, so not retried)."""
    async with HttpEcho("--sse") as server, trio.open_nursery() as nursery:
        proxy = PostBreaker(nursery, server.port)
        await nursery.start(proxy.listen)
        spec = ServerSpec(
            name="remote", url=proxy.url("/sse"), transport="sse", timeout=60, connect_timeout=5,
            backoff=BackoffPolicy(min=0.3, max=2.0, jitter=0.0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await settled(sup, "remote")  # no POST of its own in flight when they break
            assert text(await sup.call_tool("echo", {"text": "one"}, server="remote", timeout=10)) == "one"
            await proxy.break_posts(failure)
            with trio.fail_after(10):  # was: the call's whole 60 s, and the connection "up" all along
                if failure == "refused":
                    async with trio.open_nursery() as calls:
                        noted: list[str] = []

                        async def write_note() -> None:
                            result = await sup.call_tool("write_note", {"text": "x"}, server="remote", timeout=60)
                            noted.append(text(result))

                        calls.start_soon(write_note)
                        await wait_until(lambda: sup.link("remote").conn is None, timeout=10, what="the connection to end")
                        assert "a message's POST got no answer (ConnectError" in sup.link("remote").last_error
                        await proxy.heal()
                    assert noted == ["noted: x"]
                else:
                    with pytest.raises(ServerCrashed, match="the call may or may not have run") as failed:
                        await sup.call_tool("write_note", {"text": "x"}, server="remote", timeout=60)
                    assert "the call's POST got no answer" in failed.value.message, failed.value.message
                    assert sup.link("remote").conn is None
                    assert "a message's POST got no answer" in sup.link("remote").last_error
                    await proxy.heal()
            await sup.wait_connected("remote", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "two"}, server="remote", timeout=10)) == "two"
            assert (await sup.metrics_snapshot()).server("remote").exits.get("transport") == 1
        nursery.cancel_scope.cancel()  # the proxy


@pytest.mark.parametrize("noticed_by", ["a-call", "a-health-check"])
async def test_a_remote_server_that_forgot_our_session_gets_a_new_one(noticed_by):
    """A handshake-era streamable-HTTP server keeps our session in memory. Restarted on the
    same port (or expiring the session), it answers the old session with 404, and the mcp
    client would keep that dead session for good (every call failing "Session not found").
    The 404 ends the incarnation and the next one opens a new session: found by the next
    call (which fails, typed, as one in flight when a server dies does), or by a health
    check while idle."""
    async with HttpEcho("--handshake-only") as server:
        spec = ServerSpec(
            name="remote", url=server.url(), transport="streamable-http",
            backoff=BackoffPolicy(min=0.3, max=2.0, jitter=0.0), connect_timeout=5,
            health_check_interval=0.5 if noticed_by == "a-health-check" else None, health_check_timeout=5,
        )
        async with Supervisor([spec]) as sup:
            assert text(await sup.call_tool("echo", {"text": "one"}, server="remote", timeout=10)) == "one"
            assert sup.link("remote").protocol_version == "2025-11-25"  # a session, not 2026-07-28
            if noticed_by == "a-call":  # the server restarts; the call is destructive, so not retried
                server.stop()
                await server.start()
                with pytest.raises(ServerCrashed, match="no longer knows our MCP session"):
                    await sup.call_tool("write_note", {"text": "x"}, server="remote", timeout=10)
            else:  # the server expires the session and stays up: the check's 404 is the only sign
                await sup.call_tool("forget_sessions", {}, server="remote", timeout=10)
            await wait_until(lambda: connection_status(sup, "remote").restarts >= 1, timeout=20, what="a new session")
            assert "no longer knows our MCP session" in sup.link("remote").last_error
            assert (await sup.metrics_snapshot()).server("remote").exits == {"session_lost": 1}
            await sup.wait_connected("remote", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "two"}, server="remote", timeout=10)) == "two"


@pytest.mark.parametrize("answers", ["sse", "json", "json+gzip"])
async def test_a_large_remote_answer_is_bounded_by_max_message_bytes(answers):
    """A streamable-HTTP server answers a call on an SSE stream (a handshake-era server
    here) or with one plain JSON body, perhaps gzipped. The SDK capped one SSE event at
    1 MiB, so a 600 KiB text answer (1.2 MiB with its structured copy) failed as "connection
    closed" and the connection was restarted, every call in flight lost with it; and it read
    a JSON body whole with no bound at all, so one runaway answer could take all the memory
    of the process every server shares. Now both are held to ``max_message_bytes`` (a JSON
    body as it is decoded: a gzip body small on the wire counts at its real size; refused
    unread when its Content-Length says it is larger), an answer over it fails its call
    alone, as ``InvalidResult``, and the connection lives on. The memory this process takes
    while a 16 MiB text (32 MiB of JSON with its structured copy) is refused stays a small
    part of it."""
    flags = {"sse": ("--handshake-only",), "json": ("--json-response",), "json+gzip": ("--json-response", "--gzip")}
    async with HttpEcho(*flags[answers], "--blob") as server:
        specs = [
            ServerSpec(name="roomy", url=server.url(), transport="streamable-http", namespace="prefix"),
            ServerSpec(name="tight", url=server.url(), transport="streamable-http", max_message_bytes=1024 * 1024),
        ]
        async with Supervisor(specs) as sup:
            await sup.wait_connected("roomy", timeout=10)
            result = await sup.call_tool("blob", {"kib": 2048}, server="roomy", timeout=30)
            assert text(result) == "x" * (2048 * 1024)
            await sup.wait_connected("tight", timeout=10)
            said = r"(answer was|\(its Content-Length\),) over max_message_bytes \(1048576\); it was dropped"
            with pytest.raises(InvalidResult, match=said) as refused:
                await sup.call_tool("blob", {"kib": 600}, server="tight", timeout=30)
            assert ("Content-Length" in refused.value.message) == (answers == "json")
            tracemalloc.start()
            try:
                with pytest.raises(InvalidResult, match=said):
                    await sup.call_tool("blob", {"kib": 16 * 1024}, server="tight", timeout=60)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 8 * 1024 * 1024, peak
            assert text(await sup.call_tool("echo", {"text": "after"}, server="tight", timeout=10)) == "after"
            assert connection_status(sup, "tight").restarts == 0
            assert connection_status(sup, "roomy").restarts == 0


@pytest.mark.parametrize("content_type", ["application/json", "text/event-stream"])
async def test_a_remote_answer_that_is_no_json_rpc_is_an_invalid_result(content_type):
    """A remote server (or something in front of it) answers a call's POST with a body that
    is no JSON-RPC, as JSON or as an SSE event. The SDK resolves the call with a JSON-RPC
    parse error of its own making, which passed for the server's own error; it is now
    ``InvalidResult`` like any answer that is no valid result: typed, naming what was
    wrong, not retried (the read-only echo here), no breaker failure, and the connection
    goes on."""
    async with HttpEcho("--http-errors") as server:
        spec = ServerSpec(
            name="gw", url=server.url(), transport="streamable-http", breaker=BreakerPolicy(failure_threshold=1),
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            arguments = {"status": 200, "count": 1, "content_type": content_type}
            await sup.call_tool("fail_next", arguments, server="gw", timeout=10)
            with pytest.raises(InvalidResult, match=r"'echo' on server 'gw': its answer was no JSON-RPC: Failed to parse") as bad:
                await sup.call_tool("echo", {"text": "a"}, server="gw", timeout=10)
            assert bad.value.data["attempts"] == 1
            assert text(await sup.call_tool("echo", {"text": "b"}, server="gw", timeout=10)) == "b"
            snapshot = await sup.metrics_snapshot()
            assert snapshot.tool("gw", "echo").failures == {"InvalidResult": 1}
            assert snapshot.server("gw").breaker_state == "closed"
            assert connection_status(sup, "gw").restarts == 0


@pytest.mark.parametrize("how", ["cut-short", "sse-empty"])
async def test_one_answer_that_breaks_off_fails_its_call_alone(how):
    """Over streamable HTTP each POST is an exchange of its own. One call's answer broke
    off (a JSON body shorter than its Content-Length, the connection closed; an event
    stream that ended with no answer): the first ended the SDK's whole transport, the
    second was taken for a lost connection, and either way every other call in flight on
    the server failed ``ServerCrashed`` and the next ones ``CircuitOpen``. Now that call
    alone fails (``ServerCrashed``: it may have run), and the others are answered on the
    same connection."""
    async with HttpEcho("--http-errors") as server:
        spec = ServerSpec(name="gw", url=server.url("/mcp"), retry=RetryPolicy(max_retries=0), health_check_interval=None)
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            incarnation = sup.link("gw").conn
            outcomes: list[str] = []

            async def sleeper() -> None:
                outcomes.append(text(await sup.call_tool("sleep", {"seconds": 1.0}, server="gw", timeout=20)))

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(sleeper)
                    await wait_until(lambda: sup.link("gw").inflight >= 3, timeout=10, what="the calls in flight")
                    await sup.call_tool("break_next", {"how": how}, server="gw", timeout=10)
                    with pytest.raises(ServerCrashed, match="may or may not have run") as broke:
                        await sup.call_tool("write_note", {"text": "x"}, server="gw", timeout=10)
                    said = "an answer cut short" if how == "cut-short" else "answer stream ended without an answer"
                    assert said in broke.value.message, broke.value
            assert len(outcomes) == 3 and all(outcome.startswith("slept") for outcome in outcomes), outcomes
            assert sup.link("gw").conn is incarnation, "the connection was not restarted"
            assert text(await sup.call_tool("echo", {"text": "after"}, server="gw", timeout=10)) == "after"


async def test_an_event_stream_that_asks_for_no_wait_is_not_reopened_in_a_loop():
    """A handshake-era server's event stream (the GET) ends at once, asking for no wait
    before it is opened again (``retry: 0``). The SDK opened it again at once, forever:
    some thousand GETs a second, the process's CPU on the loop every server shares, and
    nothing in the status. Now a connection's GETs are spaced (`GET_SPACING`)."""
    async with HttpEcho("--http-errors", "--handshake-only") as server:
        spec = ServerSpec(name="gw", url=server.url("/mcp"), health_check_interval=None)
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            began = trio.current_time()
            before = int(text(await sup.call_tool("end_gets", {"count": 100_000}, server="gw", timeout=10)))
            await sup.restart_server("gw")  # its next event stream is the first to end so
            await sup.wait_connected("gw", timeout=20)
            await trio.sleep(2.0)  # the stream ends, and is reopened, as often as it will be
            after = int(text(await sup.call_tool("end_gets", {"count": 0}, server="gw", timeout=10)))
            took = trio.current_time() - began  # 2 s and the restart; more on a loaded machine
            # One GET per GET_SPACING over the whole window (the restart included), and
            # slack for each incarnation's first; the loop made thousands a second.
            from actors._http_answers import GET_SPACING

            assert after - before <= took / GET_SPACING + 10, (after - before, took)
            assert text(await sup.call_tool("echo", {"text": "fine"}, server="gw", timeout=10)) == "fine"


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_http_errors_from_a_gateway_become_typed_failures(transport):
    """A gateway in front of a remote server answers some calls' POSTs with an HTTP error and
    a plain-text body, and the call never reaches the server. Before, streamable HTTP handed
    that on as the tool's own error ("Server returned an error response": not retried, a
    success for the breaker), and the SDK's SSE transport silently stopped sending, so the
    call waited out its whole deadline. Now a 5xx is ``ServerCrashed`` (it may have run:
    retried only when the tool is retry-safe), a 429 is ``ServerUnavailable`` (it did not
    run: retried, so a destructive call runs once), and another 4xx is the answer to that
    request, with its status. Over SSE each refusal also ends the connection, at once."""
    extra = ("--http-errors", "--sse") if transport == "sse" else ("--http-errors",)
    async with HttpEcho(*extra) as server:
        spec = ServerSpec(
            name="gw", url=server.url("/sse" if transport == "sse" else "/mcp"), transport=transport,
            retry=RetryPolicy(initial_delay=0.05, max_delay=0.1, budget_ratio=1.0),
            backoff=BackoffPolicy(min=0.1, max=0.5, jitter=0.0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:

            async def fail_next(status: int, count: int = 1, retry_after: str | None = None, method: str = "tools/call") -> None:
                arguments = {"status": status, "count": count, "retry_after": retry_after, "method": method}
                await sup.wait_connected("gw", timeout=20)  # over SSE, after a refusal ended one
                await sup.call_tool("fail_next", arguments, server="gw", timeout=10)

            async def served() -> int:  # tools/call POSTs that reached the server
                await sup.wait_connected("gw", timeout=20)  # over SSE, after the refusal ended one
                return int(text(await sup.call_tool("calls_served", {}, server="gw", timeout=10)))

            await fail_next(502)
            with pytest.raises(ServerCrashed, match=r"HTTP 502 Bad Gateway \(body: 'upstream answered 502'\)") as crashed:
                await sup.call_tool("write_note", {"text": "a"}, server="gw", timeout=20)
            assert "may or may not have run" in crashed.value.message and crashed.value.data["http_status"] == 502
            assert crashed.value.data["attempts"] == 1  # destructive: not retried
            assert await served() == 0

            await fail_next(503, 2)  # a read-only tool is retried past both
            assert text(await sup.call_tool("echo", {"text": "b"}, server="gw", timeout=20)) == "b"
            assert await served() == 1

            await fail_next(429)  # turned away unread: even a destructive call is sent again
            assert text(await sup.call_tool("write_note", {"text": "c"}, server="gw", timeout=20)) == "noted: c"
            assert await served() == 2  # and ran once

            await fail_next(429, retry_after="3600")  # past the deadline: no use waiting
            with pytest.raises(ServerUnavailable, match="asks to wait 3600 s") as limited:
                await sup.call_tool("echo", {"text": "f"}, server="gw", timeout=20)
            assert limited.value.data["retry_stopped"] == "deadline" and limited.value.data["attempts"] == 1
            await fail_next(429, retry_after="1")  # waited for, then retried (a retry's own wait is <= 0.1 s)
            started = trio.current_time()
            assert text(await sup.call_tool("echo", {"text": "g"}, server="gw", timeout=20)) == "g"
            assert trio.current_time() - started >= 1.0
            await fail_next(503, retry_after="1")  # may have run, but echo is read-only: retried, after the wait
            started = trio.current_time()
            assert text(await sup.call_tool("echo", {"text": "h"}, server="gw", timeout=20)) == "h"
            assert trio.current_time() - started >= 1.0

            # Refused access (a token that expired): it did not run, and says nothing of this
            # request but of our credentials, so the breaker counts it. It was the tool's own
            # error, a success for the breaker: a server every call of which met a 401 showed
            # "running", its breaker closed. Once, it is retried past; for good, it fails
            # saying what failed and, the hint, where the supervisor's credentials come from.
            await fail_next(401)
            assert text(await sup.call_tool("echo", {"text": "d"}, server="gw", timeout=20)) == "d"
            await fail_next(401, 10)
            with pytest.raises(ServerUnavailable, match="refused the call unread, so the call did not run; the server "
                                                        "wants credentials: give them in this server's \"headers\""):
                await sup.call_tool("write_note", {"text": "d"}, server="gw", timeout=20)
            await fail_next(401, 0)  # the refusals its retries left are dropped
            assert text(await sup.call_tool("echo", {"text": "e"}, server="gw", timeout=20)) == "e"
            await fail_next(401, method="tools/list")  # the next incarnation cannot connect: why, and the fix
            await sup.restart_server("gw")
            await wait_until(lambda: "could not connect" in (sup.link("gw").last_error or ""), timeout=20, what="a refusal")
            refused = sup.link("gw").last_error or ""
            assert "HTTP 401 Unauthorized" in refused, refused
            assert refused.endswith('; the server wants credentials: give them in this server\'s "headers" in the config '
                                    '(for example "Authorization": "Bearer ${TOKEN}")'), refused
            await sup.wait_connected("gw", timeout=20)

            snapshot = await sup.metrics_snapshot()
            echo = snapshot.tool("gw", "echo")
            assert echo.failures == {"ServerCrashed": 3, "ServerUnavailable": 3}, echo.failures
            exits = snapshot.server("gw").exits
            assert exits == ({"transport": 12, "connect": 1} if transport == "sse" else {"connect": 1}), exits


def test_a_declared_death_is_the_exit_cause_among_its_symptoms():
    """An SSE connection declared dead by a refused POST ("transport") could exit as
    ``BrokenResourceError`` ("other" in its exit counts): a send on the stream the SDK had
    closed failed in another task of the connection, first. The declared death is the
    cause; whatever failed with it is a symptom (seen once in
    ``test_http_errors_from_a_gateway_become_typed_failures[sse]``, on Python 3.13).
    `_live` raises the declared death in place of such a failure; ``_unwrap`` picks it out
    of a group of them."""
    died = ConnectionDied("transport error: a message's POST got HTTP 503", "transport")
    symptoms = BaseExceptionGroup("", [trio.BrokenResourceError(), ExceptionGroup("", [died, OSError()])])
    assert _unwrap(symptoms) is died
    alone = trio.BrokenResourceError()
    assert _unwrap(BaseExceptionGroup("", [alone, trio.Cancelled._create()])) is alone


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_a_handshake_refused_by_a_gateway_fails_at_once_says_why_and_is_retried(transport):
    """The first POST of a connection gets a 503 from a gateway. Over SSE the SDK's transport
    then sends nothing more, so the attempt waited out ``connect_timeout`` (60 s here);
    over streamable HTTP it failed with the SDK's "Server returned an error response" and
    no status. Now the attempt ends at once, says what the gateway answered, and the next
    one connects. (A streamable-HTTP client in ``auto`` mode that is refused
    ``server/discover`` falls back to ``initialize``: both are refused here.)"""
    extra = ("--refuse-first", "1", "--sse") if transport == "sse" else ("--refuse-first", "2")
    async with HttpEcho("--http-errors", *extra) as server:
        spec = ServerSpec(
            name="gw", url=server.url("/sse" if transport == "sse" else "/mcp"), transport=transport,
            connect_timeout=60, backoff=BackoffPolicy(min=0.1, max=0.5, jitter=0.0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=30)
            assert text(await sup.call_tool("echo", {"text": "in"}, server="gw", timeout=10)) == "in"
            assert (await sup.metrics_snapshot()).server("gw").exits == {"connect": 1}
            assert "could not connect: " in sup.link("gw").last_error
            assert "HTTP 503 Service Unavailable (body: 'upstream answered 503')" in sup.link("gw").last_error


@pytest.mark.parametrize("status", [502, 401, 429])
async def test_a_health_check_a_gateway_answers_with_a_5xx_ends_the_incarnation(status):
    """An idle remote server behind a gateway, whose health check (tools/list) the gateway
    answers with a 502: the server behind it did not answer. Any answer used to count, so
    the connection stayed "running" while nobody could reach the server; now the
    incarnation ends (``unresponsive``, naming the status) and the next one connects once
    the gateway lets requests through. So does a 401 (our token expired: every call would
    fail, and the status said "running"). A 429 is a rate limiter's answer: someone is
    there, and the connection stays."""
    async with HttpEcho("--http-errors") as server:
        spec = ServerSpec(
            name="gw", url=server.url(), transport="streamable-http", health_check_interval=0.3,
            health_check_timeout=5, backoff=BackoffPolicy(min=0.1, max=0.5, jitter=0.0),
        )
        async with Supervisor([spec]) as sup:
            first_incarnation = await settled(sup, "gw")  # its own tools/list reads are done
            arguments = {"status": status, "count": 1, "method": "tools/list"}
            await sup.call_tool("fail_next", arguments, server="gw", timeout=10)

            async def refusals_pending() -> int:
                await sup.wait_connected("gw", timeout=20)  # after the refusal ended one
                return int(text(await sup.call_tool("refusals_pending", {}, server="gw", timeout=10)))

            with trio.fail_after(20):
                while await refusals_pending():
                    await trio.sleep(0.5)  # idle long enough for a health check to meet the refusal
                await sup.wait_connected("gw", timeout=20)
            exits = (await sup.metrics_snapshot()).server("gw").exits
            if status == 429:
                assert exits == {} and sup.link("gw").conn is first_incarnation
            else:
                assert exits == {"unresponsive": 1}, exits
                said = {502: "HTTP 502 Bad Gateway", 401: "HTTP 401 Unauthorized"}[status]
                assert f"the health check (tools/list) got {said}" in sup.link("gw").last_error
                assert sup.link("gw").conn is not first_incarnation
            assert text(await sup.call_tool("echo", {"text": "up"}, server="gw", timeout=10)) == "up"


async def _serve_a_sign_in_page(stream: trio.SocketStream) -> None:
    """A web server that answers every request with a 200 HTML page, as a proxy's sign-in
    page does (one request per connection)."""
    data = b""
    with trio.move_on_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            rest += await stream.receive_some(65536)
        page = b"<html><body>Please sign in to Example Corp</body></html>"
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nConnection: close\r\n"
            + b"Content-Length: " + str(len(page)).encode() + b"\r\n\r\n" + page
        )
    await stream.aclose()


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_a_web_page_where_the_endpoint_should_be_is_named_in_the_connect_failure(transport):
    """The URL reaches a proxy's sign-in page (200, HTML) instead of the MCP endpoint. The
    SDK says only "Unexpected content type"; the failure now shows the page's first words."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), _serve_a_sign_in_page, 0)
        port = listeners[0].socket.getsockname()[1]
        spec = ServerSpec(name="portal", url=f"http://127.0.0.1:{port}/mcp", transport=transport, connect_timeout=5)
        async with Supervisor([spec]) as sup:
            await wait_until(lambda: sup.link("portal").last_error, timeout=20, what="a failed connect")
            last_error = sup.link("portal").last_error
        nursery.cancel_scope.cancel()
    assert last_error.startswith("could not connect: "), last_error
    assert "text/html" in last_error and "(HTTP 200 OK (body: '<html><body>Please sign in to Example Corp" in last_error


@pytest.mark.parametrize(
    ("status", "headers", "body", "lost"),
    [
        (404, {"mcp-session-id": "s1"}, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}', True),
        (404, {"mcp-session-id": "s1"}, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}', True),
        (404, {"mcp-session-id": "s1"}, b"Not Found", True),
        (404, {"mcp-session-id": "s1"}, b'{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no such method"}}', False),
        (404, {}, b"Not Found", False),  # no session yet: the SDK's METHOD_NOT_FOUND stand-in
        (200, {"mcp-session-id": "s1"}, b'{"jsonrpc":"2.0","id":3,"result":{}}', False),
        (400, {"mcp-session-id": "s1"}, b"Bad Request", False),
    ],
    ids=["python-sdk", "typescript-sdk", "plain-404", "method-not-found", "no-session", "ok", "other-status"],
)
async def test_which_responses_mean_the_session_is_lost(status, headers, body, lost):
    """The hook on httpx responses as the transport sees them (built here: the HTTP exchange
    itself is the test above), and the body still readable after it looked."""
    import httpx2

    from actors._http_answers import HttpAnswerWatch

    calls = []
    request = httpx2.Request("POST", "http://127.0.0.1:1/mcp", headers=headers)
    response = httpx2.Response(status, content=body, request=request)
    await HttpAnswerWatch(lambda: calls.append(1))(response)
    assert calls == ([1] if lost else [])
    assert await response.aread() == body


@pytest.mark.parametrize(
    ("method", "status", "body", "refused"),
    [
        ("POST", 503, b"no healthy upstream", "HTTP 503 Service Unavailable (body: 'no healthy upstream')"),
        ("POST", 429, b"", "HTTP 429 Too Many Requests"),
        ("POST", 500, b'{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"boom"}}', None),  # the server's
        ("POST", 400, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"bad"}}', None),
        ("POST", 200, b'{"jsonrpc":"2.0","id":3,"result":{}}', None),
        ("GET", 502, b"bad gateway", None),  # not a message we sent: the SDK's listening stream
    ],
    ids=["gateway-503", "rate-limited", "jsonrpc-500", "jsonrpc-400", "ok", "get"],
)
@pytest.mark.parametrize("sse", [False, True])
async def test_which_responses_are_refusals(method, status, body, refused, sse):
    """What the watch records in the sender's context, and when it says the SSE transport is
    broken (any error status to a POST: the SDK's SSE transport stops sending after one)."""
    import httpx2

    from actors._http_answers import HttpAnswerWatch, refusals

    broken = []
    request = httpx2.Request(method, "http://127.0.0.1:1/mcp")
    response = httpx2.Response(status, content=body, request=request)
    heard: list = []
    token = refusals.set(heard)
    try:
        await HttpAnswerWatch(lambda: None, broken.append if sse else None)(response)
    finally:
        refusals.reset(token)
    assert [str(r) for r in heard] == ([refused] if refused else [])
    assert len(broken) == (1 if sse and method == "POST" and status >= 400 else 0)
    assert await response.aread() == body


def test_retry_after_in_seconds_or_as_a_date():
    import email.utils

    from actors._http_answers import _seconds

    assert _seconds("120") == 120.0 and _seconds(None) is None and _seconds("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < _seconds(in_a_minute) <= 60
    assert _seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0  # already past


async def test_a_garbled_or_absurd_retry_after_is_read_without_raising():
    """``Retry-After: ²`` (a byte 0xB2, as httpx decodes it: ``str.isdigit`` says yes,
    ``float`` says no) made the response hook raise ValueError in the transport, which it
    must never do; 400 digits were read as an infinite wait (``inf`` in the failure's
    data). Now only ASCII digits are seconds, and a wait is at most a year."""
    import httpx2

    from actors._http_answers import HttpAnswerWatch, _seconds, refusals

    assert _seconds("²") is None and _seconds("٣") is None
    assert _seconds("9" * 400) == 365 * 86400.0
    request = httpx2.Request("POST", "http://127.0.0.1:1/mcp")
    response = httpx2.Response(429, headers=[(b"retry-after", b"\xb2")], content=b"", request=request)
    heard: list = []
    token = refusals.set(heard)
    try:
        await HttpAnswerWatch(lambda: None)(response)
    finally:
        refusals.reset(token)
    [refusal] = heard
    assert refusal.status == 429 and refusal.retry_after is None


async def test_in_process_server_object():
    app = MCPServer("inproc")

    @app.tool()
    def double(x: int) -> int:
        return 2 * x

    spec = ServerSpec(name="inproc")
    async with Supervisor([spec], inproc={"inproc": app}) as sup:
        assert text(await sup.call_tool("double", {"x": 21}, server="inproc")) == "42"
        assert sup.link("inproc").process is None


async def test_a_tool_list_that_never_ends_is_read_up_to_a_limit_and_said_so(caplog):
    """A paginator that hands out a next cursor forever (in process: the low-level server
    is the only way to write one): the connection reads 100 pages, uses them and says so,
    rather than looping or hanging."""
    from mcp.server.lowlevel import Server

    pages = 0

    async def list_tools(ctx, params):
        nonlocal pages
        pages += 1
        tool = mcp_types.Tool(name=f"t{pages}", input_schema={"type": "object"})
        return mcp_types.ListToolsResult(tools=[tool], next_cursor=str(pages))

    app = Server("endless", on_list_tools=list_tools)
    with trio.fail_after(30):
        async with Supervisor([ServerSpec(name="endless", health_check_interval=None)], inproc={"endless": app}) as sup:
            await sup.wait_connected("endless", timeout=20)
            assert len(sup.link("endless").tools) == 100 and pages == 100
    assert "its tools/list did not end after 100 pages; the 100 read so far are used" in caplog.text


async def test_hundreds_of_servers_starting_at_once_all_reach_the_registry():
    """300 in-process servers start together (more than any actor mailbox holds): each one's
    tools are listed and callable; none is lost on the way to the registry."""
    n = 300
    apps = {}
    for i in range(n):
        app = MCPServer(f"p{i}")

        @app.tool()
        def echo(text: str) -> str:
            return text

        apps[f"p{i}"] = app
    specs = [ServerSpec(name=name, namespace="prefix") for name in apps]
    with trio.fail_after(120):
        async with Supervisor(specs, inproc=apps) as sup:
            assert {tool.name for tool in sup.list_tools()} == {f"{name}__echo" for name in apps}
            for name in ("p0", f"p{n // 2}", f"p{n - 1}"):
                assert text(await sup.call_tool(f"{name}__echo", {"text": name})) == name


async def test_a_connect_failure_never_shows_the_urls_credentials_or_query(tmp_path):
    """A remote server that answers the SSE connect with an HTTP error (here a plain web
    server's 404): the connect failure was httpx's own message, which quotes the whole URL
    (``Client error '404 File not found' for url 'http://user:secret@host/sse?token=...'``),
    credentials and query included, into the status (``last error``, ``last exit``, the CLI's
    ``status``) and the daemon's log. Now a URL in a connect failure is shown as `check`
    shows it: no userinfo, no query values."""
    port_file = tmp_path / "port"
    web = subprocess.Popen(
        [sys.executable, "-c", "import http.server, sys\n"
         "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n"
         "open(sys.argv[1], 'w').write(str(s.server_address[1])); s.serve_forever()", str(port_file)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: port_file.exists() and port_file.read_text(), timeout=10, what="the web server")
        url = f"http://apikey:pw-s3cret1@127.0.0.1:{port_file.read_text()}/sse?token=s3cret2"
        spec = ServerSpec(name="remote", url=url, transport="sse",
                          connect_timeout=5.0, backoff=BackoffPolicy(min=0.2, max=0.2, jitter=0.0))
        with trio.fail_after(30):
            async with Supervisor([spec]) as sup:
                await wait_until(lambda: (connection_status(sup, "remote").detail or {}).get("last_error"),
                                 timeout=20, what="the connect failure")
                shown = render_tree(sup.status())
        assert "404" in shown and "s3cret" not in shown, shown
        assert f"'http://***@127.0.0.1:{port_file.read_text()}/sse?token=***'" in shown, shown
    finally:
        web.kill()
        web.wait()


async def stderr_kept(script: str) -> list[str]:
    """The stderr lines a `ServerProcess` keeps of a Python ``script``'s stderr."""
    from actors._process import ServerProcess, _read_stderr

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    child = subprocess.Popen([sys.executable, "-c", script], stderr=write_fd, stdin=subprocess.DEVNULL)
    os.close(write_fd)
    proc = ServerProcess()
    try:
        with trio.fail_after(30):
            await _read_stderr(read_fd, proc)
    finally:
        child.kill()
        child.wait(timeout=10)
    return list(proc.stderr)


async def test_a_runaway_stderr_line_takes_one_entry_of_the_ring_buffer():
    """A server that writes megabytes to stderr without a newline: the reader kept the head
    of each 64 KiB or so of it as a line of its own, so one runaway line (32 MiB: over 200
    entries) pushed every earlier line out of the 200-line tail, the ones that said what went wrong.
    Now a runaway line is one entry (its head, then " …"); the rest of it up to its newline
    is dropped, and the lines before and after it are kept."""
    script = (
        "import sys; w = sys.stderr.buffer.write; w(b'before\\n');"
        "[w(b'x' * 65536) for _ in range(512)]; w(b'\\nafter\\n'); sys.stderr.flush()"
    )
    lines = await stderr_kept(script)
    assert lines[0] == "before" and lines[-1] == "after"
    assert len(lines) == 3 and lines[1].startswith("x" * 4096) and lines[1].endswith(" …")


async def test_each_stderr_line_kept_is_at_most_its_head():
    """Long stderr lines that do end (100 KB each, a giant log record or repr): the reader
    cut only a line still open past 64 KiB, so one that ended within the next read was kept
    whole, up to 128 KiB, and the 200-line tail held up to 25 MiB per server (each shown
    whole by status --stderr). Now every line is kept as at most its first 4,096
    characters, marked " …" when cut."""
    from actors._process import STDERR_LINES

    script = "import sys\nfor i in range(300):\n    sys.stderr.write(str(i % 10) * 100_000 + '\\n')\n"
    lines = await stderr_kept(script)
    assert len(lines) == STDERR_LINES
    assert lines[-1] == "9" * 4096 + " …"
    assert max(len(line) for line in lines) <= 4096 + 2


_PID_REUSE = """
import json, subprocess, sys, trio
from mcp import StdioServerParameters
from actors._process import ServerProcess, open_stdio

async def main():
    proc = ServerProcess()
    params = StdioServerParameters(command=sys.executable, args=["-c", "import sys; sys.exit(3)"])
    async with open_stdio(params, proc, name="gone", grace=0.2, max_message_bytes=1 << 20):
        with trio.fail_after(10):
            await proc.exited.wait()
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:  # the next pid: the server's, if free
            f.write(str(proc.pid - 1))
        other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    print(json.dumps({"reused": other.pid == proc.pid, "other": other.poll(), "status": proc.exit_status}))
    other.kill()

trio.run(main)
"""


@pytest.mark.skipif(
    shutil.which("unshare") is None,
    reason="making the kernel hand out a given pid needs a pid namespace of our own, made with util-linux's unshare, which is not installed here",
)
async def test_kill_tree_never_signals_a_group_that_took_the_servers_pid():
    """A server that exits by itself is reaped at once; its pid, free from then on, could
    be handed to a process of someone else (another server we start, a shell job) that
    leads a group of its own, before ``kill_tree`` of the ended incarnation ran: that
    killpg'd a stranger's group. In a pid namespace of its own the test makes the kernel
    hand out the server's pid next (ns_last_pid). Now the server stays a zombie until its
    tree is killed, so its pid (the group's id) cannot be taken meanwhile."""
    probe = subprocess.run(["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(
            "making the kernel hand out a given pid needs a user and pid namespace of our own, "
            f"and this kernel refuses them (unshare: {probe.stderr.decode(errors='replace').strip()})"
        )
    root = str(SERVERS.parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    with trio.fail_after(30):
        done = await trio.run_process(
            ["unshare", "-Urpf", "--mount-proc", sys.executable, "-c", _PID_REUSE],
            capture_stdout=True, capture_stderr=True, env=env, cwd=root, check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["status"] == "exited with code 3"
    assert result["other"] is None, result  # the stranger lives on


async def test_a_queued_call_keeps_its_place_when_a_slot_frees():
    """A call that waits in the queue is woken when a slot frees, and runs a moment later. A
    call arriving in that moment took the free slot (it saw one), and the woken call went
    back to the end of the queue: under steady load a queued call could be passed over
    until its deadline, and the queue outgrew ``max_queue`` (seen: 66 waiting with
    ``max_queue`` 64). Now a newcomer queues behind those already waiting."""
    spec = server_spec("busy", "echo.py", max_concurrency=1, max_queue=4)
    async with Supervisor([spec]) as sup:
        link = sup.link("busy")
        for _ in range(10):
            order: list[str] = []

            async def call(name: str, tool: str, arguments: dict) -> None:
                await sup.call_tool(tool, arguments, server="busy", timeout=10)
                order.append(name)

            async with trio.open_nursery() as nursery:
                # Long enough for the second call to queue behind it on a loaded machine.
                nursery.start_soon(call, "first", "sleep", {"seconds": 0.4})
                await wait_until(lambda: link.inflight == 1, what="the slot taken")
                nursery.start_soon(call, "queued", "echo", {"text": "q"})
                await wait_until(lambda: link.queued == 1, what="a call queued")
                while link.inflight:  # arrive the moment the slot frees (in the same batch, or one later)
                    await trio.sleep(0)
                await call("newcomer", "echo", {"text": "n"})
            assert order == ["first", "queued", "newcomer"], order


async def test_a_call_that_takes_its_slot_wakes_the_next_when_another_is_free():
    """Two slots free in one moment (two callers give up together) while one call waits: it
    is woken for one of them, and a call arriving before it runs queues behind it (see
    above), with the other slot free. That one must not wait for a call to end: the woken
    call, taking its slot, wakes it."""
    spec = server_spec("busy", "echo.py", max_concurrency=2, max_queue=4)
    async with Supervisor([spec]) as sup:
        link = sup.link("busy")
        for _ in range(12):  # the newcomer comes after both slots freed in about one round of three
            order: list[str] = []

            async def call(name: str, tool: str, arguments: dict) -> None:
                await sup.call_tool(tool, arguments, server="busy", timeout=10)
                order.append(name)

            pair = trio.CancelScope()

            async def two_callers() -> None:
                with pair:
                    async with trio.open_nursery() as both:
                        for name in ("a", "b"):
                            both.start_soon(call, name, "sleep", {"seconds": 5})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(two_callers)
                await wait_until(lambda: link.inflight == 2, what="both slots taken")
                nursery.start_soon(call, "long", "sleep", {"seconds": 0.3})
                await wait_until(lambda: link.queued == 1, what="a call queued")
                pair.cancel()  # both slots free in one batch
                while link.inflight == 2:  # arrive the moment a slot frees
                    await trio.sleep(0)
                await call("newcomer", "echo", {"text": "n"})
            assert order == ["newcomer", "long"], order


async def test_the_queue_never_holds_more_than_max_queue():
    """Admission counted the calls parked for a slot, not one woken for a slot that had not
    run yet: a newcomer in that moment was let in past ``max_queue`` (a probe saw "2 calls
    in flight and 5 waiting" with ``max_queue`` 4). Now every call admitted to the queue
    counts until it takes its slot or leaves, so that newcomer is turned away; a burst with
    nothing ending still lets in exactly ``max_concurrency`` + ``max_queue``."""
    spec = server_spec("busy", "echo.py", max_concurrency=1, max_queue=2, health_check_interval=None)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("busy", timeout=20)
        link = sup.link("busy")
        most_queued = 0

        async def sample() -> None:
            nonlocal most_queued
            while True:
                most_queued = max(most_queued, link.queued)
                await trio.sleep(0)

        turned_away: list[str] = []
        admitted = 0

        async def one() -> None:
            nonlocal admitted
            try:
                await sup.call_tool("sleep", {"seconds": 1.0}, server="busy", timeout=30)
            except Overloaded as exc:
                turned_away.append(str(exc))
            else:
                admitted += 1

        with trio.fail_after(60):
            async with trio.open_nursery() as outer:
                outer.start_soon(sample)
                async with trio.open_nursery() as burst:
                    for _ in range(8):
                        burst.start_soon(one)
                assert admitted == 3 and len(turned_away) == 5, (admitted, turned_away)
                for _ in range(10):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(functools.partial(sup.call_tool, "sleep", {"seconds": 0.3}, server="busy", timeout=30))
                        await wait_until(lambda: link.inflight == 1, what="the slot taken")
                        for _ in range(2):
                            nursery.start_soon(functools.partial(sup.call_tool, "echo", {"text": "q"}, server="busy", timeout=30))
                        await wait_until(lambda: link.queued == 2, what="the queue full")
                        while link.inflight:  # arrive the moment the slot frees, before the woken call runs
                            await trio.sleep(0)
                        try:
                            await sup.call_tool("echo", {"text": "n"}, server="busy", timeout=30)
                        except Overloaded as exc:
                            turned_away.append(str(exc))
                outer.cancel_scope.cancel()
        assert most_queued <= 2, most_queued
        assert len(turned_away) > 5, turned_away  # the newcomers: the woken call runs after them, mostly
        for message in turned_away:
            flight, waiting = map(int, re.search(r"(\d+) calls in flight and (\d+) waiting", message).groups())
            assert flight <= 1 and waiting == 2, message


_BAD_TOOLS = ["42", "bad_output", "empty_schema", "no_schema", "string_schema"]


@pytest.mark.parametrize("paged", [False, True], ids=["one-page", "paged"])
async def test_a_server_listing_invalid_tools_serves_its_valid_ones(paged):
    """A server lists tools that are no valid MCP tools (an ``inputSchema`` of ``{}`` or
    ``{"type": "string"}`` or none, a name that is no string, an ``outputSchema`` that is
    no object's) next to good ones. The SDK rejected the whole list, so the server never
    connected and restarted forever, its good tools never served (found by a probe). Now
    the invalid tools are left out, named in the status, and the rest are served, over
    every page of the list; the SDK still checks each good tool's result against its
    listed output schema."""
    args = ("--paged",) if paged else ()
    spec = server_spec("bad", "bad_tools.py", *args, health_check_interval=None, connect_timeout=10)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("bad", timeout=20)
        link = sup.link("bad")
        assert sorted(t.name for t in link.tools) == ["break", "echo", "liar"]
        result = await sup.call_tool("echo", {"text": "served"}, server="bad", timeout=10)
        assert text(result) == "served" and result.structured_content == {"text": "served"}
        with pytest.raises(InvalidResult, match="Invalid structured content returned by tool liar"):
            await sup.call_tool("liar", {}, server="bad", timeout=10)
        note = link.unread_lists["tools/list"]
        assert all(repr(name) in note for name in _BAD_TOOLS), note
        assert "inputSchema" in note and "outputSchema" in note, note
        shown = render_tree(sup.status())
        assert "tools/list: left out" in shown and "could not read" not in shown, shown
        assert connection_status(sup, "bad").restarts == 0


async def test_invalid_tools_listed_later_leave_the_served_ones_in_place():
    """A connected server's tool list gains invalid tools (announced by ``list_changed``).
    The refresh failed whole ("refreshing tools failed"), the list stayed as it was, and
    the status said nothing. Now the valid tools are published, the invalid ones named."""
    spec = server_spec("later", "bad_tools.py", "--bad-later", health_check_interval=None, connect_timeout=10)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("later", timeout=20)
        link = sup.link("later")
        assert "tools/list" not in link.unread_lists
        version = link.tools_version
        await sup.call_tool("break", {}, server="later", timeout=10)
        await wait_until(lambda: "tools/list" in link.unread_lists, what="the invalid tools named")
        assert link.tools_version > version
        assert sorted(t.name for t in link.tools) == ["break", "echo", "liar"]
        assert text(await sup.call_tool("echo", {"text": "still"}, server="later", timeout=10)) == "still"


@pytest.mark.parametrize("era", ["2026-07-28", "handshake"])
async def test_calls_waiting_on_the_clients_answer_do_not_restart_the_server(era):
    """A server asks the client mid-call (an elicitation) and the client takes longer to
    answer than the call may (a person filling in a form). Each such call timed out as a
    hang, and after ``hang_threshold`` of them a healthy server was restarted (found by a
    probe). Now such a call's ``DeadlineExceeded`` says it was waiting on the client's
    answer, and it does not count towards ``hang_threshold``."""
    async def slow_person(server: str, request: mcp_types.InputRequest):
        if isinstance(request, mcp_types.ElicitRequest):
            await trio.sleep(5)
            return mcp_types.ElicitResult(action="decline")
        return mcp_types.ListRootsResult(roots=[])

    args = ("--handshake-only",) if era == "handshake" else ()
    spec = server_spec("asks", "everything.py", *args, hang_threshold=2, timeout=10, health_check_interval=None)
    async with Supervisor([spec], on_input_request=slow_person) as sup:
        await sup.wait_connected("asks", timeout=20)
        pid = sup.link("asks").process.pid
        for i in range(3):
            with pytest.raises(DeadlineExceeded, match="waiting on the client's answer to .*elicitation"):
                await sup.call_tool("ask_elicitation", {"question": f"q{i}"}, server="asks", timeout=1.0)
        assert json.loads(text(await sup.call_tool("ask_roots", {}, server="asks", timeout=10)))["roots"] == []
        assert sup.link("asks").process.pid == pid and sup.link("asks").conn is not None
        assert connection_status(sup, "asks").restarts == 0


async def test_a_connect_that_times_out_names_the_request_it_waited_on():
    """A server that never answers requests it does not know leaves the SDK's era probe
    (``server/discover``) unanswered; the SDK gives up on it after its own bound and falls
    back to ``initialize``. Within a shorter ``connect_timeout`` the server never connected,
    and the failure said only that it did not connect and initialize in time (found by a
    probe). Now it names the request whose answer it was waiting for; with a longer
    ``connect_timeout`` the fallback connects it."""
    from mcp.client.session import DISCOVER_TIMEOUT_SECONDS

    short = server_spec("deaf", "deaf.py", connect_timeout=1.0, health_check_interval=None)
    patient = server_spec(
        "patient", "deaf.py", connect_timeout=DISCOVER_TIMEOUT_SECONDS + 10, health_check_interval=None
    )
    async with Supervisor([short, patient]) as sup:
        await wait_until(lambda: sup.link("deaf").last_error, timeout=20, what="the connect failure")
        error = sup.link("deaf").last_error
        assert "within connect_timeout 1 s" in error, error
        assert "waiting for the server's answer to server/discover" in error, error
        await sup.wait_connected("patient", timeout=DISCOVER_TIMEOUT_SECONDS + 20)
        assert text(await sup.call_tool("echo", {"text": "late"}, server="patient", timeout=10)) == "late"
