"""A server's stop is bounded by its ``shutdown_timeout``, and servers stop together.

The servers here are small raw JSON-RPC scripts (handshake era) that note, in a file of
their own, ``time.monotonic()`` when they are ready, when their stdin ends and when a
SIGTERM reaches them; they may ignore either. No wall time is asserted: the tests read
the order of those notes (every server's stdin ended before any got a SIGTERM: the stops
ran together) or compare two of a server's notes with the ``shutdown_timeout`` they must
fall within, which the old code missed by a fixed 2 s. The tree's own logic runs on
trio's MockClock.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest
import trio
from mcp import StdioServerParameters

from actors import ConnectionDied, ServerLink, run_connection
from actors._process import ServerProcess, open_stdio
from conftest import procs_with_marker, wait_until
from protocol import ServerSpec
from supervisor import Supervisor
from supervisor._tree import ChildSpec, TreeSupervisor

# IGNORE: "eof" stays alive after its stdin ends, "term" ignores SIGTERM (noted all the
# same), "init" never answers the handshake, "call" never answers a tool call.
STUBBORN = r'''
import json, os, signal, sys, time

IGNORE = os.environ.get("IGNORE", "")

def note(what):
    with open(os.environ["STOP_LOG"], "a") as f:
        f.write(f"{what} {time.monotonic()!r}\n")

def on_term(signum, frame):
    note("sigterm")
    if "term" not in IGNORE:
        os._exit(0)

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

signal.signal(signal.SIGTERM, on_term)
note("ready")
for line in sys.stdin:
    message = json.loads(line)
    method, rid = message.get("method"), message.get("id")
    if rid is None or method is None or "init" in IGNORE or (method == "tools/call" and "call" in IGNORE):
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
            "serverInfo": {"name": "stubborn", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})
note("eof")
if "eof" in IGNORE:
    while True:
        time.sleep(3600)
'''


@pytest.fixture
def stubborn(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)

    def make(name: str, ignore: str, **fields) -> tuple[ServerSpec, str]:
        notes = tmp_path / f"{name}.notes"
        spec = ServerSpec(
            name=name,
            command=sys.executable,
            args=[str(script)],
            env={"IGNORE": ignore, "STOP_LOG": str(notes), "MCP_TEST_MARKER": f"{name}-{tmp_path.name}"},
            **fields,
        )
        return spec, str(notes)

    return make


def read_notes(path: str) -> dict[str, float]:
    """The first time of each note."""
    notes: dict[str, float] = {}
    if not os.path.exists(path):
        return notes
    with open(path) as f:
        for line in f:
            what, _, at = line.partition(" ")
            notes.setdefault(what, float(at))
    return notes


@pytest.mark.parametrize("grace", [1.2])
async def test_sigterm_comes_within_the_shutdown_timeout_of_stdin_closing(stubborn, grace):
    """A server that ignores both the end of its stdin and SIGTERM: its stop (close stdin,
    wait, SIGTERM, grace, SIGKILL) is one budget, ``shutdown_timeout``. The wait after
    stdin closed was a fixed 2 s before the SIGTERM grace even began, so a restart of such a
    server with ``shutdown_timeout`` 5 took 7 s."""
    spec, notes = stubborn("both", "eof term", shutdown_timeout=grace)
    params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env))
    proc = ServerProcess()
    with trio.fail_after(30):
        async with open_stdio(params, proc, name=spec.name, grace=grace, max_message_bytes=1 << 20):
            await wait_until(lambda: "ready" in read_notes(notes), what="the server's signal handler")
        seen = read_notes(notes)
    assert seen["eof"] <= seen["sigterm"] < seen["eof"] + grace, seen
    assert proc.exit_status == "killed by SIGKILL"
    assert procs_with_marker(spec.env["MCP_TEST_MARKER"]) == []


async def test_a_server_that_failed_to_connect_is_seen_to_exit(stubborn):
    """At connect_timeout the whole connection is cancelled, and with it the task that
    watches the server's exit: the server left when its stdin closed, unseen, and the stop
    waited the full 2 s for an exit that had happened (every failed connect cost
    connect_timeout + 2 s). The exit is now seen, and told."""
    spec, notes = stubborn("mute", "init", connect_timeout=0.5)
    link = ServerLink(spec)
    with trio.fail_after(30):
        with pytest.raises(ConnectionDied, match="connect_timeout"):
            await run_connection(link)
    assert "eof" in read_notes(notes)
    assert link.process.exit_status == "exited with code 0"
    assert procs_with_marker(spec.env["MCP_TEST_MARKER"]) == []


@pytest.mark.parametrize("timeout", [0.5, 0.0])
async def test_a_restart_within_its_bound_logs_no_error(stubborn, caplog, timeout):
    """A server that stays alive after its stdin ends (as many Node servers do) and
    dies on SIGTERM, with a short ``shutdown_timeout``: its restart logged an ERROR
    "ignored cancellation ... abandoning it", though its processes were killed as
    designed. No error now, and nothing of the old incarnation is left."""
    spec, notes = stubborn("lingers", "eof", shutdown_timeout=timeout)
    marker = spec.env["MCP_TEST_MARKER"]
    with trio.fail_after(60):
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("lingers", timeout=20)
            old = sup.link("lingers").process.pid
            with caplog.at_level(logging.ERROR, logger="supervisor"):
                await sup.restart_server("lingers")
            await sup.wait_connected("lingers", timeout=20)
            assert old not in procs_with_marker(marker)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert procs_with_marker(marker) == []


async def test_a_restart_of_a_server_that_ignores_sigterm_with_a_call_in_flight_logs_no_error(stubborn, caplog):
    """Its call held the drain for the whole ``shutdown_timeout``; the tree then cancelled
    the connection and gave it ``shutdown_timeout`` again, which is exactly the process
    stop's own budget (stdin, SIGTERM, grace, SIGKILL): the stop lost by the SIGKILL's
    reaping and the tree logged an ERROR "still running ... abandoning it" though nothing
    was left. The wait after a cancel is the child's shutdown plus a moment now."""
    spec, notes = stubborn("holds", "eof term call", shutdown_timeout=1.0, health_check_interval=None)
    marker = spec.env["MCP_TEST_MARKER"]
    with trio.fail_after(60):
        async with Supervisor([spec]) as sup, trio.open_nursery() as nursery:
            await sup.wait_connected("holds", timeout=20)
            outcome: list[BaseException] = []

            async def held() -> None:
                try:
                    await sup.call_tool("echo", {}, server="holds", timeout=60)
                except Exception as exc:
                    outcome.append(exc)

            nursery.start_soon(held)
            await wait_until(lambda: sup.link("holds").inflight == 1, what="the call in flight")
            with caplog.at_level(logging.ERROR, logger="supervisor"):
                await sup.restart_server("holds")
            await wait_until(lambda: outcome, what="the held call's answer")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "sigterm" in read_notes(notes)  # it was the stubborn stop
    assert procs_with_marker(marker) == []


class _SlowToStop:
    """A child whose stop takes ``seconds`` (shielded, as a process tree's kill is)."""

    def __init__(self, seconds: float, stops: list[tuple[str, float, float]], name: str) -> None:
        self.seconds, self.stops, self.name = seconds, stops, name

    async def start(self, *, task_status) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                began = trio.current_time()
                await trio.sleep(self.seconds)
                self.stops.append((self.name, began, trio.current_time()))


async def stop_one_brutally(seconds: float, name: str, caplog) -> tuple[list[str], list[str]]:
    """Start and stop a supervisor of one child with ``shutdown`` 0 (brutal kill) whose
    shielded cleanup takes ``seconds``: (the errors logged, the children that stopped)."""
    stops: list[tuple[str, float, float]] = []
    child = _SlowToStop(seconds, stops, name)
    sup = TreeSupervisor("sup", [ChildSpec(id=name, start=child.start, shutdown=0.0)])
    with caplog.at_level(logging.ERROR, logger="supervisor"):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            sup.stop()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR], [n for n, _, _ in stops]


async def test_a_cancelled_child_gets_a_moment_for_its_cleanup(autojump_clock, caplog):
    """A child with ``shutdown`` 0 (brutal kill) whose shielded cleanup takes a moment
    (killing a process tree: SIGKILL, then reaping) is waited for, not logged as having
    ignored its cancellation and abandoned."""
    assert await stop_one_brutally(0.05, "quick", caplog) == ([], ["quick"])


async def test_a_child_that_ignores_cancellation_is_still_abandoned(autojump_clock, caplog):
    """The floor is a moment, not forever: a child whose cleanup outlasts it is abandoned
    and logged."""
    errors, stopped = await stop_one_brutally(60.0, "stuck", caplog)
    assert any("abandoning it" in error for error in errors), errors
    assert stopped == ["stuck"]  # its task still ran to its end


async def test_servers_stop_together(stubborn):
    """Servers start concurrently, and now stop concurrently: every server's stdin closed
    before any got its SIGTERM. One at a time, the supervisor's exit with N servers that
    ignore the end of their stdin took N times a server's stop (5 Node servers: 10 s, past
    a container's stop timeout)."""
    made = [stubborn(f"s{i}", "eof term", shutdown_timeout=2.0, namespace="prefix") for i in range(3)]
    with trio.fail_after(60):
        async with Supervisor([spec for spec, _ in made]) as sup:
            for spec, _ in made:
                await sup.wait_connected(spec.name, timeout=20)
    seen = [read_notes(notes) for _, notes in made]
    assert max(s["eof"] for s in seen) < min(s["sigterm"] for s in seen), seen
    for spec, _ in made:
        assert procs_with_marker(spec.env["MCP_TEST_MARKER"]) == []


async def test_concurrent_starts_means_concurrent_stops(autojump_clock):
    """Under MockClock: a ``concurrent_starts`` supervisor stops its children at once,
    each within its own shutdown; the default one still stops them one at a time, in
    reverse start order."""
    for concurrent in (True, False):
        stops: list[tuple[str, float, float]] = []
        children = [_SlowToStop(3.0, stops, f"c{i}") for i in range(3)]
        sup = TreeSupervisor(
            "sup",
            [ChildSpec(id=c.name, start=c.start, shutdown=5.0) for c in children],
            concurrent_starts=concurrent,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            sup.stop()
        began = [b for _, b, _ in stops]
        ended = [e for _, _, e in stops]
        if concurrent:
            assert max(began) < min(ended)
        else:
            assert [n for n, _, _ in stops] == ["c2", "c1", "c0"]
            assert all(ended[i] <= began[i + 1] for i in range(2))
