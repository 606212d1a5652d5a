"""Edges of replacing, restarting and reconciling servers through the façade
(`Supervisor.replace_server`, `restart_server`, `reconcile`, `begin_stop`).

Real servers from ``tests/servers/`` throughout; every wait has a deadline.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import trio

from conftest import SERVERS, marker_of, procs_with_marker, server_spec, wait_until
from protocol import BackoffPolicy, Failure, ServerSpec
from supervisor import Supervisor


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
