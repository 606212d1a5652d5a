"""Breaker, retry and registry end to end, against real server processes."""

from __future__ import annotations

import math
import os
import signal
import sys

import pytest
import trio
from mcp.server.mcpserver import MCPServer

from conftest import collect, marker_of, procs_with_marker, server_spec, wait_until
from protocol import (
    BackoffPolicy,
    BreakerPolicy,
    CircuitOpen,
    DeadlineExceeded,
    InvalidArguments,
    RetryPolicy,
    ServerCrashed,
    ServerSpec,
    ServerUnavailable,
    UnknownTool,
)
from supervisor import Supervisor
from supervisor.__main__ import render_tree

QUICK_RETRY = RetryPolicy(max_retries=3, initial_delay=0.2, max_delay=1.0)


def text(result) -> str:
    return result.content[0].text


@pytest.mark.parametrize("annotate", ["destructive", "readonly"])
async def test_crash_mid_call_retries_only_a_retry_safe_tool(tmp_path, annotate):
    log = tmp_path / "exec.log"
    spec = server_spec(
        "crashy",
        "crash_on_call.py",
        "--crash-tool",
        "do_it",
        "--annotate",
        annotate,
        "--crash-once-file",
        str(tmp_path / "crashed"),
        env={"EXEC_LOG": str(log)},
        retry=QUICK_RETRY,
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0),
    )
    async with Supervisor([spec]) as sup:
        if annotate == "destructive":
            with pytest.raises(ServerCrashed, match="may or may not have run") as info:
                await sup.call_tool("do_it", {}, timeout=20)
            assert "not retried" in str(info.value)
            runs = 1
        else:
            result = await sup.call_tool("do_it", {}, timeout=20)
            assert text(result) == "survived"  # the retry ran on the restarted server
            runs = 2
    assert log.read_text().splitlines() == ["do_it"] * runs


@pytest.mark.parametrize("max_consecutive", [None, 1])
async def test_a_retry_waits_for_the_next_incarnation_not_through_every_restart(tmp_path, max_consecutive):
    """A retry-safe call whose server crashed under it is retried on the next incarnation,
    and waited for it up to the call's deadline: with every restart failing (or none
    coming: the server failed for good), it waited the whole deadline (5 minutes at the
    seed's timeout) while new calls failed fast. Each retry now waits for one incarnation
    only, and fails, never sent, when that one fails too or none is coming."""
    crashed = str(tmp_path / "crashed")
    spec = server_spec(
        "fragile", "crash_on_call.py", "--crash-tool", "do_it", "--crash-once-file", crashed, "--no-start-after", crashed,
        retry=QUICK_RETRY,
        retry_safe_tools=["do_it"],
        backoff=BackoffPolicy(min=0.05, max=0.2, jitter=0.0, max_consecutive=max_consecutive),
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("fragile", timeout=20)
        with trio.fail_after(60), pytest.raises(ServerCrashed) as info:  # the call's own deadline: 10 minutes
            await sup.call_tool("do_it", {}, timeout=600)
        assert "retrying it failed: server 'fragile' did not come back" in info.value.message, info.value.message
        if max_consecutive is not None:
            # Given up on: a wait for the next incarnation (a later retry's) ends at once.
            link = sup.link("fragile")
            await wait_until(lambda: link.no_restart is not None, what="the server failed for good")
            with trio.fail_after(10), pytest.raises(ServerUnavailable, match="failed for good"):
                await link.wait_connected(trio.current_time() + 600, until_failures=link.failures)


async def test_a_retry_waiting_for_the_next_incarnation_ends_when_the_supervisor_stops(tmp_path):
    """A caller's task outside ``async with Supervisor``: its retry-safe call crashed the
    server and its retry waits for the incarnation due after a 30 s backoff. The
    supervisor stopped, and the call waited on to its own deadline (2 minutes here). It
    ends at the stop now, never sent, saying why."""
    crashed = str(tmp_path / "crashed")
    spec = server_spec(
        "fragile", "crash_on_call.py", "--crash-tool", "do_it", "--crash-once-file", crashed,
        retry=QUICK_RETRY,
        retry_safe_tools=["do_it"],
        backoff=BackoffPolicy(min=30, max=30, jitter=0.0),
    )
    outcome: list[BaseException] = []
    async with trio.open_nursery() as outside:
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("fragile", timeout=20)

            async def caller() -> None:
                try:
                    await sup.call_tool("do_it", {}, timeout=120)
                except Exception as exc:
                    outcome.append(exc)

            outside.start_soon(caller)
            link = sup.link("fragile")
            await wait_until(lambda: os.path.exists(crashed) and link.conn is None, what="the crash")
        with trio.fail_after(20):  # was: the call's 120 s
            await wait_until(lambda: outcome, what="the call's answer", timeout=20)
    (failure,) = outcome
    assert isinstance(failure, ServerCrashed), failure
    assert "the supervisor is stopping; the call was not sent" in failure.message, failure.message


async def test_a_call_waiting_for_an_incarnation_ends_when_the_stop_begins_not_after_it(tmp_path):
    """The stop of ``async with Supervisor`` takes as long as its slowest server's (here one
    that ignores SIGTERM and is killed at its shutdown timeout). A call of a task outside
    that waited for another server's next incarnation waited through all of it, though no
    incarnation comes once the stop has begun. It ends as the stop begins now: the
    stubborn server is still there when the call has its answer."""
    crashed = str(tmp_path / "crashed")
    fragile = server_spec(
        "fragile", "crash_on_call.py", "--crash-tool", "do_it", "--crash-once-file", crashed,
        retry=QUICK_RETRY, retry_safe_tools=["do_it"], backoff=BackoffPolicy(min=30, max=30, jitter=0.0),
    )
    stubborn = server_spec("stubborn", "echo.py", env={"MCP_TEST_STUBBORN": "1"}, shutdown_timeout=8.0)
    outcome: list[tuple[BaseException, list[int]]] = []
    async with trio.open_nursery() as outside:
        async with Supervisor([fragile, stubborn]) as sup:
            await sup.wait_connected("fragile", timeout=20)
            await sup.wait_connected("stubborn", timeout=20)

            async def caller() -> None:
                try:
                    await sup.call_tool("do_it", {}, server="fragile", timeout=120)
                except Exception as exc:
                    outcome.append((exc, procs_with_marker(marker_of(stubborn))))

            outside.start_soon(caller)
            link = sup.link("fragile")
            await wait_until(lambda: os.path.exists(crashed) and link.conn is None, what="the crash")
        with trio.fail_after(20):
            await wait_until(lambda: outcome, what="the call's answer", timeout=20)
    ((failure, stubborn_then),) = outcome
    assert isinstance(failure, ServerCrashed), failure
    assert "the supervisor is stopping; the call was not sent" in failure.message, failure.message
    assert stubborn_then, "the call had its answer only once every server had stopped"
    assert procs_with_marker(marker_of(stubborn)) == []


async def test_retry_safe_tools_in_config_overrides_missing_annotations(tmp_path):
    log = tmp_path / "exec.log"
    spec = server_spec(
        "listed",
        "crash_on_call.py",
        "--crash-tool",
        "do_it",
        "--crash-once-file",
        str(tmp_path / "crashed"),
        env={"EXEC_LOG": str(log)},
        retry=QUICK_RETRY,
        retry_safe_tools=["do_it"],
    )
    async with Supervisor([spec]) as sup:
        assert text(await sup.call_tool("do_it", {}, timeout=20)) == "survived"
    assert len(log.read_text().splitlines()) == 2


async def test_untrusted_annotations_are_not_retried(tmp_path):
    spec = server_spec(
        "wary",
        "crash_on_call.py",
        "--crash-tool",
        "do_it",
        "--annotate",
        "readonly",
        "--crash-once-file",
        str(tmp_path / "crashed"),
        retry=QUICK_RETRY,
        trust_annotations=False,
    )
    async with Supervisor([spec]) as sup:
        with pytest.raises(ServerCrashed, match="not retried"):
            await sup.call_tool("do_it", {}, timeout=20)


async def test_consecutive_timeouts_trip_the_breaker_and_a_half_open_trial_closes_it():
    spec = server_spec(
        "sticky",
        "hang.py",
        hang_threshold=100,  # keep the connection: this is the breaker's job
        breaker=BreakerPolicy(failure_threshold=3, open_seconds=1.0, window=20, min_calls=10),
        retry=RetryPolicy(max_retries=0),
    )
    events = []
    sup = Supervisor([spec])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        async with sup:
            for _ in range(3):
                with pytest.raises(DeadlineExceeded):
                    await sup.call_tool("hang", {}, timeout=0.2)
            # outcomes reach the breaker with tell, off the call path: it opens a moment later
            await wait_until(lambda: sup.handle("sticky").breaker.state == "open", what="the breaker to open")
            with pytest.raises(CircuitOpen, match=r"3 consecutive failures.*next trial in") as info:
                await sup.call_tool("echo", {"text": "x"}, timeout=5)
            assert 0 < info.value.data["retry_in"] <= 1.0
            await trio.sleep(1.1)
            assert text(await sup.call_tool("echo", {"text": "trial"}, timeout=5)) == "trial"
            await wait_until(lambda: sup.handle("sticky").breaker.state == "closed", what="the trial to close it")
    transitions = [(e.data["from"], e.data["to"]) for e in events if e.kind == "breaker_state"]
    assert transitions[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    opened = next(e for e in events if e.kind == "breaker_state" and e.data["to"] == "open")
    assert opened.data["counts"]["consecutive_failures"] == 3


async def test_failed_trial_reopens_with_a_doubled_open_time():
    spec = server_spec(
        "stubborn",
        "hang.py",
        hang_threshold=100,
        breaker=BreakerPolicy(failure_threshold=2, open_seconds=0.5, max_open_seconds=10),
        retry=RetryPolicy(max_retries=0),
    )
    events = []
    sup = Supervisor([spec])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        async with sup:
            for _ in range(2):
                with pytest.raises(DeadlineExceeded):
                    await sup.call_tool("hang", {}, timeout=0.2)
            await wait_until(lambda: sup.handle("stubborn").breaker.state == "open", what="the breaker to open")
            await trio.sleep(0.6)
            with pytest.raises(DeadlineExceeded):  # the half-open trial, and it fails
                await sup.call_tool("hang", {}, timeout=0.2)
            reopened = await wait_until(
                lambda: [e for e in events if e.kind == "breaker_state" and e.data["from"] == "half_open"],
                timeout=30, what="the failed trial to reopen the breaker")
            before = trio.current_time()
            with pytest.raises(CircuitOpen) as info:
                await sup.call_tool("echo", {"text": "x"})
            after = trio.current_time()
    [reopen] = reopened
    assert reopen.data["to"] == "open" and reopen.data["retry_in"] == pytest.approx(1.0)  # 0.5 s doubled
    # The refusal counts down to that same moment: whenever it came (a loaded machine may
    # take long between the reopening and the call), retry_in is what was left of it then.
    retry_in = info.value.data["retry_in"]
    assert 0 < retry_in <= 1.0
    assert before - 1e-3 <= reopen.data["retry_at"] - retry_in <= after + 1e-3, (reopen.data, retry_in, before, after)


async def test_killed_server_fails_fast_with_circuit_open_during_backoff_then_recovers():
    spec = server_spec("victim", "echo.py", backoff=BackoffPolicy(min=3.0, max=3.0, jitter=0.0))
    async with Supervisor([spec]) as sup:
        killed = trio.current_time()
        os.kill(sup.link("victim").process.pid, signal.SIGKILL)
        await wait_until(lambda: sup.handle("victim").breaker.state == "open", what="the breaker to open")
        retry_at = await wait_until(lambda: sup.handle("victim").breaker.retry_at, what="the restart time")
        seen = trio.current_time()
        assert killed + 3.0 <= retry_at <= seen + 3.0, (retry_at - killed, seen - killed)  # the backoff's 3 s
        with pytest.raises(CircuitOpen, match="next trial") as info:
            await sup.call_tool("echo", {"text": "x"}, timeout=30)
        refused = trio.current_time()
        assert sup.link("victim").conn is None and refused < retry_at, "must fail fast, not wait for the restart"
        # It counts down to that restart, whenever it came (time passes on a loaded machine).
        retry_in = info.value.data["retry_in"]
        assert seen - 1e-3 <= retry_at - retry_in <= refused + 1e-3, (retry_at, retry_in, seen, refused)
        # The status says when, in seconds from now: it said retry_at, a reading of trio's
        # clock (which starts at a random offset), meaningless outside the process.
        (breaker,) = [c for s in sup.status().children if s.id == "servers" for srv in s.children
                      for c in srv.children if c.id == "breaker:victim"]
        assert "retry_at" not in breaker.detail and 0.0 <= breaker.detail["retry_in"] <= 3.0, breaker.detail
        assert "next trial in" in render_tree(sup.status())
        await sup.wait_connected("victim", timeout=20)
        assert text(await sup.call_tool("echo", {"text": "back"}, timeout=10)) == "back"


async def test_an_operator_fences_a_server_off_with_its_breaker_until_reset():
    """``set_breaker``: the breaker's operator states (forced open, disabled), which the
    breaker had but nothing could reach. Forced open, every call fails fast with
    ``CircuitOpen`` naming the operator's reason while the server keeps running (same
    process), also across a crash and restart of the server; reset, calls go through."""
    spec = server_spec("fenced", "echo.py", backoff=BackoffPolicy(min=0.05, max=0.1, jitter=0.0))
    async with Supervisor([spec]) as sup:
        pid = sup.link("fenced").process.pid
        status = await sup.set_breaker("fenced", "open", "wrong answers since 10:02")
        (breaker,) = [child for child in status.children if child.id == "breaker:fenced"]
        assert breaker.detail["state"] == "forced_open"
        with pytest.raises(CircuitOpen, match="wrong answers since 10:02"):
            await sup.call_tool("echo", {"text": "x"}, timeout=10)
        assert sup.link("fenced").process.pid == pid  # not touched
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: sup.link("fenced").conn is None, what="the connection to end")
        await sup.wait_connected("fenced", timeout=20)  # restarted, still fenced
        with pytest.raises(CircuitOpen, match="wrong answers since 10:02"):
            await sup.call_tool("echo", {"text": "x"}, timeout=10)
        assert (await sup.metrics_snapshot()).server("fenced").breaker_state == "forced_open"
        await sup.set_breaker("fenced", "reset")
        assert text(await sup.call_tool("echo", {"text": "back"}, timeout=10)) == "back"
        await sup.set_breaker("fenced", "disable")
        assert (await sup.metrics_snapshot()).server("fenced").breaker_state == "disabled"
        with pytest.raises(ValueError, match="no breaker action 'close'"):
            await sup.set_breaker("fenced", "close")
        with pytest.raises(KeyError, match="no server 'other'"):
            await sup.set_breaker("other", "open")


async def test_a_fence_outlives_a_crash_loop(tmp_path):
    """A server crash-looping faster than 10 restarts a minute had its whole subtree
    (breaker and connection) restarted by ``servers`` (its intensity): the new breaker
    started closed, and a server the operator had fenced off took calls again once it
    recovered. Server subtrees have no intensity now, and the fence holds through the
    whole loop (a breaker that does restart is told the fence at once: `run_breaker`)."""
    ok = tmp_path / "ok"
    ok.touch()
    spec = server_spec("s", "crash_at_start.py", "--until-file", str(ok), backoff=BackoffPolicy(min=0.05, max=0.1, jitter=0.0))
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("s", timeout=30)
        await sup.set_breaker("s", "open", "fenced by the operator")
        first = sup.link("s").failures
        ok.unlink()
        os.kill(sup.link("s").process.pid, signal.SIGKILL)  # a crash loop: over 10 restarts in 60 s
        await wait_until(lambda: sup.link("s").failures > first + 12, timeout=60, what="a dozen restarts")
        ok.touch()
        await sup.wait_connected("s", timeout=30)
        with pytest.raises(CircuitOpen, match="fenced by the operator"):
            await sup.call_tool("echo", {"text": "x"}, server="s", timeout=10)
        await sup.set_breaker("s", "reset")
        assert text(await sup.call_tool("echo", {"text": "back"}, server="s", timeout=10)) == "back"


async def test_a_server_failed_for_good_is_not_promised_back(tmp_path):
    """A connection marked ``failed`` (``backoff.max_consecutive``) is not restarted, but its
    breaker kept the last restart's time: every call was told the server was "expected in
    0 s", for good. Now the failure says it failed for good, and how to bring it back."""
    ok = tmp_path / "ok"
    ok.touch()
    spec = server_spec(
        "s", "crash_at_start.py", "--until-file", str(ok), backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=2),
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("s", timeout=30)
        ok.unlink()
        os.kill(sup.link("s").process.pid, signal.SIGKILL)
        await wait_until(lambda: "failed for good" in (sup.handle("s").breaker.reason or ""), timeout=30, what="it to fail")
        with pytest.raises(CircuitOpen) as refused:
            await sup.call_tool("echo", {"text": "x"}, server="s", timeout=5)
        assert "expected in" not in str(refused.value) and "restart_server brings it back" in str(refused.value)
        assert "the CLI: `restart s`" in str(refused.value)


@pytest.mark.parametrize("restart", ["temporary", "transient"])
async def test_a_server_that_ends_for_good_by_its_restart_type_says_so(restart):
    """A ``temporary`` server that exits, or a ``transient`` one that exits normally (by
    itself, with code 0), is not restarted (OTP's restart types). The transient one was
    restarted all the same (any end of a stdio connection counted as abnormal); the
    temporary one's status went on saying ``running`` and every call was told the circuit
    would be tried "when the connection is back", which never came. Now the server shows
    ``stopped`` and a call says it ended for good, why, and how to start it again."""
    spec = server_spec("ex", "crash_on_call.py", "--exit-code", "0", restart=restart)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("ex", timeout=30)
        with pytest.raises(ServerCrashed):
            await sup.call_tool("crash", {}, server="ex", timeout=10)
        await wait_until(lambda: "not restarted" in (sup.handle("ex").breaker.reason or ""), timeout=30,
                         what="the breaker to be told")
        with pytest.raises(CircuitOpen) as refused:
            await sup.call_tool("echo", {"text": "x"}, server="ex", timeout=5)
        said = str(refused.value)
        assert "when the connection is back" not in said and f"restart: {restart}" in said, said
        assert "the CLI: `restart ex`" in said, said
        (servers,) = [child for child in sup.status().children if child.id == "servers"]
        (server,) = [child for child in servers.children if child.id == "server:ex"]
        assert server.state == "stopped", server


async def test_a_call_to_a_server_that_gave_up_says_so_not_that_it_has_not_connected_yet():
    """A server that never connected and has given up (``backoff.max_consecutive``): a call
    to one of its tools said it "has not connected yet", as if it were still trying. Now it
    says it gave up and what brings it back, and the last error."""
    spec = server_spec("s", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1))
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "failed for good" in (sup.handle("s").breaker.reason or ""), timeout=30, what="it to fail")
        with pytest.raises(ServerUnavailable) as named:
            await sup.call_tool("echo", {"text": "x"}, server="s", timeout=5)
        assert "gave up connecting" in str(named.value) and "restart_server brings it back" in str(named.value)
        assert "`restart s`" in str(named.value) and "exiting before the handshake" in str(named.value)
        with pytest.raises(UnknownTool) as unnamed:
            await sup.call_tool("echo", {"text": "x"}, timeout=5)
        assert "gave up, until restart_server: 's'" in str(unnamed.value)


async def test_a_server_that_gave_up_shows_no_pid_of_a_process_that_is_gone():
    """Status showed the pid of the last attempt long after it exited: a pid the system may
    since have given to another process, which an operator could kill by mistake."""
    spec = server_spec("s", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1))
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "failed for good" in (sup.handle("s").breaker.reason or ""), timeout=30, what="it to fail")
        assert sup.link("s").process is not None and sup.link("s").process.pid is not None
        assert sup.link("s").detail()["pid"] is None
        assert sup.link("s").detail()["stderr_tail"], "its last words stay"


async def test_what_call_tool_is_given_by_mistake_is_refused_saying_what_it_was(tmp_path):
    """A timeout given as a string failed with a TypeError from deep inside, a NaN one with
    trio's "deadline must not be NaN", a name of None with "'NoneType' object is not
    iterable", and a ``meta`` that is no dict as the server's invalid answer (InvalidResult)
    though nothing had been sent. Each is now refused at once, saying what it was, and
    nothing reaches the server."""
    log = tmp_path / "exec.log"
    spec = server_spec("strict", "echo.py", env={"EXEC_LOG": str(log)})
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("strict", timeout=30)
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds.*not '5'"):
            await sup.call_tool("write_note", {"text": "x"}, timeout="5")
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ValueError, match="timeout must be a finite number"):
                await sup.call_tool("write_note", {"text": "x"}, timeout=bad)
        with pytest.raises(TypeError, match="the tool name must be a str, not NoneType"):
            await sup.call_tool(None)
        with pytest.raises(InvalidArguments, match="the _meta of tool 'write_note' must be a dict"):
            await sup.call_tool("write_note", {"text": "x"}, meta="notadict")
        with pytest.raises(InvalidArguments, match="the arguments of tool 'write_note' must be a dict"):
            await sup.call_tool("write_note", ["x"])
        # A key JSON has no form for (its object keys are strings): it too was the server's
        # "invalid answer", from the SDK's failure to build the request.
        with pytest.raises(InvalidArguments, match="the _meta of tool 'write_note' has a key that is no string: 1"):
            await sup.call_tool("write_note", {"text": "x"}, meta={1: "x"})
        with pytest.raises(InvalidArguments, match="the arguments of tool 'write_note' have a key that is no string: None"):
            await sup.call_tool("write_note", {"text": "x", None: 2})
        assert not log.exists()
        assert text(await sup.call_tool("echo", {"text": "fine"}, timeout=10)) == "fine"


async def test_a_spec_made_in_code_with_a_number_out_of_range_is_refused_before_anything_changes():
    """A config file's numbers are checked; a spec made in code (``embed``, ``reload`` with
    specs, ``add_server``) was not: a breaker window of 0 crashed the breaker actor at
    start, and in a reload it was found half-way (a bare exception group, some servers
    changed, others not). Now it is refused at once, naming the key and the reason."""
    bad = server_spec("echo", "echo.py", breaker=BreakerPolicy(window=0))
    with pytest.raises(ValueError, match=r"server 'echo': breaker.window: must be >= 1, got 0"):
        Supervisor([bad])
    good = server_spec("echo", "echo.py")
    async with Supervisor([good]) as sup:
        await sup.wait_connected("echo", timeout=30)
        pid = sup.link("echo").process.pid
        for change in (lambda: sup.reconcile([bad]), lambda: sup.replace_server(bad), lambda: sup.add_server(server_spec("x", "echo.py", timeout=0))):
            with pytest.raises(ValueError, match=r"must be (>= 1|> 0), got 0"):
                await change()
        assert sup.servers == ["echo"] and sup.link("echo").process.pid == pid
        assert text(await sup.call_tool("echo", {"text": "untouched"}, timeout=10)) == "untouched"
    # A header value no HTTP request can carry (a token read from a file, its newline kept)
    # was found only at every connect, where the HTTP client's error quoted it, secret and
    # all, into the status and the log while the server restarted for good.
    leaky = ServerSpec(name="remote", url="http://127.0.0.1:9/mcp", headers={"Authorization": "Bearer sk-SECRET\n"})
    with pytest.raises(ValueError, match=r"server 'remote': headers.Authorization: the value holds a line break") as refused:
        Supervisor([leaky])
    assert "sk-SECRET" not in str(refused.value)


async def test_a_spec_made_in_code_with_no_server_behind_it_is_refused():
    """``ServerSpec(name="x")`` made in code, with neither ``command`` nor ``url`` and no
    in-process server for it, started, then restarted for ever, each connect failing
    "could not connect: AssertionError: " (a probe). It is refused at once now, as is a
    spec with both; a config file refuses both already."""
    nothing = ServerSpec(name="x")
    both = ServerSpec(name="y", command="true", url="http://127.0.0.1:9/mcp")
    for spec, words in ((nothing, "neither command .stdio. nor url"), (both, "both command and url are set")):
        with pytest.raises(ValueError, match=rf"server '{spec.name}': {words}"):
            Supervisor([spec])
    async with Supervisor([server_spec("echo", "echo.py")]) as sup:
        await sup.wait_connected("echo", timeout=30)
        for spec in (nothing, both):
            for change in (lambda: sup.add_server(spec), lambda: sup.reconcile([spec])):
                with pytest.raises(ValueError, match=rf"server '{spec.name}'"):
                    await change()
        assert sup.servers == ["echo"]
    async with Supervisor([nothing], inproc={"x": MCPServer("x")}) as sup:  # one given: fine
        await sup.wait_connected("x", timeout=30)


async def test_invalid_arguments_never_reach_the_server(tmp_path):
    log = tmp_path / "exec.log"
    spec = server_spec("strict", "echo.py", env={"EXEC_LOG": str(log)})
    async with Supervisor([spec]) as sup:
        with pytest.raises(InvalidArguments, match=r"\$\.text.*required|required.*'text'"):
            await sup.call_tool("write_note", {}, timeout=5)
        with pytest.raises(InvalidArguments, match=r"\$\.a.*integer"):
            await sup.call_tool("add", {"a": "one", "b": 2}, timeout=5)
        assert not log.exists()
        assert sup.handle("strict").breaker.state == "closed"
        await sup.call_tool("write_note", {"text": "ok"}, timeout=5)
        assert log.read_text().splitlines() == ["write_note ok"]


async def test_unknown_tool_suggests_the_closest_name():
    spec = server_spec("echo", "echo.py")
    async with Supervisor([spec]) as sup:
        with pytest.raises(UnknownTool, match="did you mean 'echo'"):
            await sup.call_tool("ecko", {"text": "x"})


async def test_prefix_namespacing_and_collision_refusal():
    first = server_spec("alpha", "echo.py")
    second = server_spec("beta", "echo.py")  # same tool names, bare: refused
    third = server_spec("gamma", "echo.py", namespace="prefix")
    events = []
    sup = Supervisor([first, second, third])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        async with sup:
            names = {t.name: t.server for t in sup.list_tools()}
            assert names["echo"] in ("alpha", "beta")  # one of them, never both
            winner = names["echo"]
            loser = "beta" if winner == "alpha" else "alpha"
            assert names["gamma__echo"] == "gamma"
            assert text(await sup.call_tool("gamma__echo", {"text": "prefixed"})) == "prefixed"
            with pytest.raises(UnknownTool, match=f"'{loser}'.*'{winner}'|'{winner}'.*'{loser}'"):
                await sup.call_tool("echo", {"text": "x"}, server=loser)
    collisions = [e for e in events if e.kind == "tool_collision"]
    assert collisions and all(loser in e.reason and winner in e.reason for e in collisions)


async def test_categories_from_metadata_and_config_and_toolsets():
    demo = ServerSpec(name="demo", command=sys.executable, args=["-m", "supervisor._demo_server"])
    echo = server_spec("echo", "echo.py", namespace="prefix", categories={"echo": "search"})
    async with Supervisor([demo, echo]) as sup:
        by_name = {t.name: t.category for t in sup.list_tools()}
        assert by_name["recall_workflow"] == "workflow"  # from the server's _meta
        assert by_name["search_nodes"] == "node"
        assert by_name["echo__echo"] == "search"  # from config
        main = {t.name for t in sup.list_tools(toolset="main")}
        assert {"recall_workflow", "search_nodes", "echo__echo"} <= main
        assert "validate_workflow" not in main  # validation is not in the main toolset
        rewrite = {t.name for t in sup.list_tools(toolset="rewrite")}
        assert "validate_workflow" in rewrite and "search_nodes" not in rewrite
        with pytest.raises(ValueError, match="unknown toolset"):
            sup.list_tools(toolset="nope")


async def test_retry_budget_stops_a_retry_storm(tmp_path):
    # Every call crashes the server before answering; the tool is retry-safe, so each call
    # would retry up to 3 times, but the budget (20% of calls) cuts that short.
    spec = server_spec(
        "storm",
        "crash_on_call.py",
        "--crash-tool",
        "do_it",
        "--annotate",
        "readonly",
        retry=RetryPolicy(max_retries=3, initial_delay=0.05, max_delay=0.1, budget_ratio=0.2),
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0),
        breaker=BreakerPolicy(enabled=False),
    )
    attempts = []
    async with Supervisor([spec]) as sup:
        for _ in range(3):
            await sup.wait_connected("storm", timeout=20)
            with pytest.raises(ServerCrashed) as info:
                await sup.call_tool("do_it", {}, timeout=20)
            attempts.append(info.value.data.get("attempts"))
        assert sup.handle("storm").budget.refused >= 1
    assert sum(attempts) < 3 * 4


async def test_flaky_server_that_keeps_crashing_trips_the_breaker():
    # Every call kills the server. Each crash opens the breaker while the connection is
    # down; the consecutive failures trip it for real, so once the server is back the next
    # call is a half-open trial instead of business as usual.
    spec = server_spec(
        "flaky",
        "flaky.py",
        "--every",
        "1",
        "--mode",
        "crash",
        trust_annotations=False,
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0),
        breaker=BreakerPolicy(failure_threshold=3, open_seconds=30.0),
        retry=RetryPolicy(max_retries=0),
    )
    events = []
    sup = Supervisor([spec])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        async with sup:
            for _ in range(3):
                await sup.wait_connected("flaky", timeout=20)
                await wait_until(lambda: sup.handle("flaky").breaker.state == "closed", what="closed again")
                with pytest.raises(ServerCrashed):
                    await sup.call_tool("work", {"x": 1}, timeout=10)
            await sup.wait_connected("flaky", timeout=20)
            await wait_until(lambda: sup.handle("flaky").breaker.state != "open", what="the reconnect")
            assert sup.handle("flaky").breaker.state == "half_open"
    trials = [e for e in events if e.kind == "breaker_state" and e.data["to"] == "half_open"]
    assert trials and trials[-1].data["counts"]["trips"] == 1


async def test_prometheus_text_parses_and_counts_match_the_calls_made():
    from prometheus_client.parser import text_string_to_metric_families

    spec = server_spec("metered", "echo.py", retry=RetryPolicy(max_retries=0))
    async with Supervisor([spec]) as sup:
        for i in range(5):
            await sup.call_tool("echo", {"text": str(i)})
        for _ in range(2):
            assert (await sup.call_tool("fail", {"message": "no"})).is_error
        with pytest.raises(InvalidArguments):
            await sup.call_tool("add", {"a": "x", "b": 1})
        text = (await sup.metrics_text()).decode()
        snapshot = await sup.metrics_snapshot()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def calls(tool, outcome):
        key = ("mcp_supervisor_tool_calls_total", (("outcome", outcome), ("server", "metered"), ("tool", tool)))
        return samples.get(key)

    assert calls("echo", "success") == 5
    assert calls("fail", "tool_error") == 2
    assert calls("add", "InvalidArguments") == 1
    count = samples[
        ("mcp_supervisor_tool_call_duration_seconds_count", (("server", "metered"), ("tool", "echo")))
    ]
    assert count == 5
    assert samples[("mcp_supervisor_server_up", (("server", "metered"),))] == 1
    assert samples[("mcp_supervisor_breaker_state", (("server", "metered"), ("state", "closed")))] == 1
    echo = snapshot.tool("metered", "echo")
    assert echo.calls == 5 and echo.successes == 5 and 0 < echo.p50 <= echo.p99
    seed = snapshot.seed_summary()["metered:echo"]
    assert seed["requests"] == 5 and seed["success_rate"] == "100.0%"


async def test_while_a_trial_call_runs_no_other_call_gets_through_the_half_open_breaker():
    """Refused calls are reported too (as ``CircuitOpen``, which the breaker ignores): each
    report handed back the running trial's permit, so every other call got in as a second
    trial (5 of 10 here) on a server the breaker was still unsure of."""
    spec = server_spec(
        "sick", "echo.py", retry=RetryPolicy(max_retries=0), hang_threshold=100, health_check_interval=None,
        breaker=BreakerPolicy(failure_threshold=2, open_seconds=0.5, half_open_permits=1),
    )
    async with Supervisor([spec]) as sup:
        for _ in range(2):  # two timeouts trip it
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("sleep", {"seconds": 2}, server="sick", timeout=0.2)
        await wait_until(lambda: sup.handle("sick").breaker.state == "half_open", timeout=5, what="half-open")
        admitted: list[int] = []

        async def other(i: int) -> None:
            try:
                await sup.call_tool("echo", {"text": str(i)}, server="sick", timeout=5)
                admitted.append(i)
            except CircuitOpen:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 1.5}, server="sick", timeout=5))  # the trial
            await wait_until(lambda: sup.link("sick").inflight == 1, what="the trial in flight")
            for i in range(10):
                nursery.start_soon(other, i)
                await trio.sleep(0.03)
        assert admitted == []
        await wait_until(lambda: sup.handle("sick").breaker.state == "closed", timeout=5, what="the trial to close it")


async def test_back_to_back_failures_open_the_breaker_before_the_next_call():
    """In-process, each failure's report reached the breaker only when its actor next ran,
    and a caller making its calls back to back got a third call past ``failure_threshold=2``
    (sent, and waited out). The call after the second failure now fails fast."""
    spec = server_spec(
        "stuck", "hang.py", hang_threshold=100,
        breaker=BreakerPolicy(failure_threshold=2, window=100, min_calls=1000, open_seconds=60),
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("stuck", timeout=30)
        for _ in range(2):
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("hang", {}, server="stuck", timeout=0.2)
        with pytest.raises(CircuitOpen, match="2 consecutive failures"):
            await sup.call_tool("hang", {}, server="stuck", timeout=0.2)
        assert (await sup.metrics_snapshot()).tool("stuck", "hang").failures == {"DeadlineExceeded": 2, "CircuitOpen": 1}
