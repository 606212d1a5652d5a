"""The stdio connection at the edges of its pipes: a server that exits during the handshake
while a child of it keeps its stdout open, and one that closes its stdin and keeps running.
Real processes (tests/servers/stdio_edges.py)."""

from __future__ import annotations

import os
from pathlib import Path


from conftest import is_live, procs_with_marker, server_spec, wait_until
from protocol import BackoffPolicy
from supervisor import Supervisor


def _kill_leftovers(pid_file: Path) -> None:
    for line in pid_file.read_text().split() if pid_file.exists() else ():
        try:
            os.kill(int(line), 9)
        except ProcessLookupError:
            pass


async def test_a_server_that_exits_during_the_handshake_is_seen_at_once_with_its_stdout_held(tmp_path):
    """The server exits right after ``notifications/initialized``, but a child of it holds
    its stdout open, so no EOF comes: the connect used to wait out the whole connect_timeout
    and blame it. Now the process exit ends the connect at once, naming the exit and its
    last stderr line; the child holding stdout is killed with the server's tree."""
    pid_file = tmp_path / "child.pid"
    spec = server_spec(
        "quitter",
        "stdio_edges.py",
        "--exit-after-handshake",
        "3",
        "--stdout-child",
        str(pid_file),
        connect_timeout=20,
        shutdown_timeout=1.0,
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1),
    )
    try:
        async with Supervisor([spec]) as sup:
            # The old code reported only once connect_timeout had passed, blaming it.
            reason = await wait_until(lambda: sup.link("quitter").last_error, timeout=30, what="the failed connect")
            assert reason.startswith("could not connect: the server process ended during the handshake"), reason
            assert "connect_timeout" not in reason, reason
            assert "the server process exited with code 3" in reason, reason
            assert "its last stderr lines: stdio_edges: exiting after the handshake" in reason, reason
            children = [int(pid) for pid in pid_file.read_text().split()]
            assert children
            # No orphans: the child that held stdout went with the server's tree.
            await wait_until(lambda: not any(is_live(pid) for pid in children), timeout=10, what="the child killed")
        await wait_until(lambda: not procs_with_marker(spec.env["MCP_TEST_MARKER"]), timeout=10, what="no process left")
    finally:
        _kill_leftovers(pid_file)


async def test_a_request_that_could_not_be_written_at_all_is_sent_to_the_next_incarnation(tmp_path):
    """The server closes its stdin and keeps running: the next call's write fails with EPIPE
    on its first byte, so the request provably never reached the server. It used to be
    answered ``ServerCrashed`` ("may or may not have run"), and a tool that is not
    retry-safe (these have no annotations) was not sent again. Now the incarnation dies as
    before (a transport failure), and the call, never sent, goes to the next incarnation,
    which answers it; no call outcome counts against the breaker."""
    spec = server_spec(
        "earless",
        "stdio_edges.py",
        shutdown_timeout=1.0,
        health_check_interval=None,
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0),
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("earless", timeout=20)
        first = text_of(await sup.call_tool("pid", {}, server="earless", timeout=10))
        assert text_of(await sup.call_tool("close_stdin", {}, server="earless", timeout=10)) == "closed stdin"
        # Not retry-safe (no annotations), yet answered: by the next incarnation.
        second = text_of(await sup.call_tool("pid", {}, server="earless", timeout=20))
        assert second != first
        # The incarnation still died of it (a transport failure, counted as such), but the
        # call, one attempt answered by the next incarnation, is no failure of the server's.
        assert "Connection closed" in (sup.link("earless").last_error or ""), sup.link("earless").last_error
        snapshot = await sup.metrics_snapshot()
        assert snapshot.server("earless").exits.get("transport") == 1, snapshot.server("earless").exits
        tool = snapshot.tool("earless", "pid")
        assert (tool.calls, tool.successes, tool.failures, tool.retries) == (2, 2, {}, 0), tool
    await wait_until(lambda: not procs_with_marker(spec.env["MCP_TEST_MARKER"]), timeout=10, what="no process left")


def text_of(result) -> str:
    return result.content[0].text


def test_only_a_tool_calls_own_request_is_noted_as_never_sent():
    """The SDK may send a request of its own from the caller's task after the call ran (a
    ``tools/list`` to check the answer against a tool's output schema it does not know).
    Noted as never sent when stdin broke under it, it made the call count as never sent,
    and a tool that had run was sent again to the next incarnation (found by a review).
    Only the ``tools/call`` request is noted."""
    import mcp_types
    from mcp.shared.message import SessionMessage

    from actors._pipes import _note_unsent, unsent_requests

    unsent: set = set()
    token = unsent_requests.set(unsent)
    try:
        for rid, method in ((1, "tools/list"), (2, "ping"), (3, "tools/call")):
            _note_unsent(SessionMessage(mcp_types.JSONRPCRequest(jsonrpc="2.0", id=rid, method=method, params={})))
    finally:
        unsent_requests.reset(token)
    assert unsent == {3}
