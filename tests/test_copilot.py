"""The copilot example (``examples/copilot``) itself, run against its real servers.

The agents, the scripted model, the local tool, the handoff and ``Runner.run_streamed`` are
the example's own: these tests only swap in server specs tagged with a /proc marker (and a
quicker restart delay), and use the model's ``before_turn`` hook to act between two model
turns of a run in progress. The embedding API's own behaviour is in ``test_embed.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import msgspec
import pytest
import trio

from protocol import BackoffPolicy, ServerSpec, ToolResult
from supervisor import Supervisor

from actors._session_header import session_of
from conftest import SERVERS, procs_with_marker
from examples.copilot import Copilot, default_servers
from test_embed import eventually, node, run_asyncio, server_pid

LOADERS = ["CheckpointLoaderSimple", "LoraLoader"]


def marked(spec: ServerSpec, **changes: Any) -> ServerSpec:
    """``spec`` with a unique /proc marker in its environment (see ``conftest``)."""
    env = {**spec.env, "MCP_TEST_MARKER": f"{spec.name}-{uuid.uuid4().hex[:12]}"}
    return msgspec.structs.replace(spec, env=env, **changes)


def servers(event_log: str | None = None, **search_changes: Any) -> tuple[list[ServerSpec], dict[str, str]]:
    specs = default_servers(event_log)
    specs = [marked(s, **(search_changes if s.name == "search" else {})) for s in specs]
    return specs, {s.name: s.env["MCP_TEST_MARKER"] for s in specs}


def assert_a_good_turn(turn: Any, session_id: str) -> int:
    """Every tool of the scripted turn answered correctly; returns the backend's pid."""
    assert turn.agents == ["copilot", "workflow_rewriter"]
    recalled = json.loads(turn.output_of("recall_workflow"))["result"]
    assert recalled and recalled[0]["nodes"][0] == "CheckpointLoaderSimple"
    assert json.loads(turn.output_of("search__search_nodes"))["result"] == LOADERS
    assert json.loads(turn.output_of("search__get_node_info"))["category"] == "loaders"
    assert turn.output_of("remember_preference") == "noted: square images"
    assert json.loads(turn.output_of("validate_workflow"))["valid"] is True
    session = json.loads(turn.output_of("session_info"))
    assert session["session_id"] == session_id
    assert turn.final_output.endswith("valid: True; node details checked")
    return session["pid"]


def test_copilot_uses_both_servers_cancels_with_its_task_and_stops_without_orphans(tmp_path):
    log = tmp_path / "backend.log"
    specs, markers = servers(str(log))
    read_log = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731

    async def main() -> None:
        copilot = Copilot(specs)
        await copilot.start()
        try:
            # the scripted agent calls tools on both servers (and a local one, and hands off)
            pid = assert_a_good_turn(await copilot.chat("sess-1", "text to image"), "sess-1")
            assert pid == server_pid(await copilot.supervisor.status(), "backend")
            # another session: its own id in _meta, on the same connection (same process)
            assert assert_a_good_turn(await copilot.chat("sess-2", "lora text to image"), "sess-2") == pid

            # cancelling the host task mid-call cancels the call on the server
            chat = asyncio.create_task(copilot.chat("sess-3", "preview please"))
            await eventually(lambda: "render_preview start sess-3" in read_log(), what="the render to start")
            chat.cancel()
            try:
                await chat
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the cancelled chat turn finished anyway")
            await eventually(lambda: "render_preview cancelled" in read_log(), what="the server to see the cancel")
            assert "render_preview done" not in read_log()
            inflight = lambda: copilot.supervisor.run_in_trio(lambda sup: sup.link("backend").inflight == 0)  # noqa: E731
            await eventually(inflight, what="the call to leave the connection")
            assert node(await copilot.supervisor.status(), "connection:backend").restarts == 0
        finally:
            await copilot.stop()
        assert procs_with_marker(markers["backend"]) == [] and procs_with_marker(markers["search"]) == []

    run_asyncio(main, timeout=40)


def test_copilot_run_survives_a_server_killed_mid_run_and_a_later_turn_succeeds():
    # restarts wait 1.5 s: the turn right after the kill meets the server down
    specs, markers = servers(backoff=BackoffPolicy(min=1.5, max=1.5, jitter=0.0))
    killed: list[int] = []

    async def is_down(name: str) -> bool:
        return await copilot.supervisor.run_in_trio(lambda sup: sup.link(name).conn is None)

    async def kill_search_before_second_turn(model: str, turn: int) -> None:
        if model == "copilot" and turn == 2 and not killed:
            (pid,) = procs_with_marker(markers["search"])
            killed.append(pid)
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            await eventually(lambda: is_down("search"), what="the supervisor to see the search server down")

    copilot = Copilot(specs, before_model_turn=kill_search_before_second_turn)

    async def main() -> None:
        await copilot.start()
        try:
            turn = await copilot.chat("sess-k", "text to image")
            assert killed, "the hook never ran"
            # before the kill: both servers answered
            assert json.loads(turn.output_of("search__search_nodes"))["result"] == LOADERS
            # after it: the dead server's call is a readable failure, and the run went on
            failure = ToolResult.from_json(turn.output_of("search__get_node_info"))
            assert failure.success is False and failure.tool_name == "search__get_node_info"
            assert "'search'" in failure.error
            assert json.loads(turn.output_of("validate_workflow"))["valid"] is True  # the backend
            assert turn.agents == ["copilot", "workflow_rewriter"]
            assert turn.final_output.endswith("valid: True; node details unavailable (search server down)")

            # the supervisor restarts it; the next turn works end to end
            async def restarted() -> bool:
                pid = server_pid(await copilot.supervisor.status(), "search")
                return pid is not None and pid != killed[0] and not await is_down("search")

            await eventually(restarted, timeout=15, what="the search server to come back")
            assert_a_good_turn(await copilot.chat("sess-k", "text to image"), "sess-k")
            assert node(await copilot.supervisor.status(), "connection:search").restarts >= 1
        finally:
            await copilot.stop()
        assert procs_with_marker(markers["backend"]) == [] and procs_with_marker(markers["search"]) == []

    run_asyncio(main, timeout=40)


async def test_copilot_runs_under_trio_with_trio_asyncio():
    # Imported here: importing trio_asyncio changes asyncio.run's default loop (test_embed).
    import trio_asyncio

    specs, markers = servers()
    with trio.fail_after(30):
        async with Supervisor(specs) as sup:
            async with trio_asyncio.open_loop():
                copilot = Copilot(specs)
                copilot.attach(sup)
                turn = await trio_asyncio.aio_as_trio(copilot.chat)("sess-t", "text to image")
                pid = assert_a_good_turn(turn, "sess-t")
                assert pid == sup.link("backend").detail()["pid"]
        assert procs_with_marker(markers["backend"]) == [] and procs_with_marker(markers["search"]) == []


# -- the session id as an HTTP header on remote servers -----------------------------------------


def start_headers_server(*extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / "http_headers.py"), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("LISTENING"), line
    return proc, int(line.split()[1])


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_session_id_travels_as_a_header_of_each_request_on_one_connection(transport):
    extra = ("--sse",) if transport == "sse" else ()
    server, port = await trio.to_thread.run_sync(start_headers_server, *extra)
    spec = ServerSpec(
        name="remote",
        url=f"http://127.0.0.1:{port}/{'sse' if transport == 'sse' else 'mcp'}",
        transport=transport,
        headers={"X-Session-Id": "static", "Authorization": "Bearer t0ken"},
        connect_timeout=10,
    )

    async def headers_seen(meta: dict[str, Any] | None) -> dict[str, str]:
        result = await sup.call_tool("headers", {}, server="remote", timeout=10, meta=meta)
        return result.structured_content["headers"]

    try:
        with trio.fail_after(30):
            async with Supervisor([spec]) as sup:
                for session in ("sess-a", "sess-b", "sess-a"):
                    seen = await headers_seen({"session_id": session, "trace": "t"})
                    assert seen["x-session-id"] == session
                    assert seen["authorization"] == "Bearer t0ken"  # the static headers stay
                # a request without a session keeps the configured header
                assert (await headers_seen(None))["x-session-id"] == "static"
                assert (await headers_seen({"trace": "t"}))["x-session-id"] == "static"
                # a session id that is no header value goes in _meta only: no header (not the
                # static one either); a line break in it used to end the connection
                for odd in ("a\r\nInjected: x", "会话-1"):
                    seen = await headers_seen({"session_id": odd})
                    assert "x-session-id" not in seen and "injected" not in seen, seen
                # ... all on the one connection the supervisor opened
                assert connection_of(sup).restarts == 0
    finally:
        server.kill()
        server.wait()


def connection_of(sup: Supervisor) -> Any:
    return node(sup.status(), "connection:remote")


def test_session_of_reads_only_a_string_session_in_params_meta():
    assert session_of(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"session_id":"s"}}}') == "s"
    for body in (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"session_id"}}',  # not in _meta
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"session_id":7}}}',  # not a string
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"session_id":""}}}',
        b'[{"jsonrpc":"2.0","id":1,"params":{"_meta":{"session_id":"s"}}}]',  # a batch
        b'{"session_id": "s", "params": null}',
        b'not json "session_id"',
        b"",
    ):
        assert session_of(body) is None, body
