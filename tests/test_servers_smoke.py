"""Smoke tests for the test MCP servers in tests/servers/.

Each server runs as a real subprocess and is driven through the mcp 2.3 SDK client, so
these tests also pin down how the SDK reports each failure mode (the connection actor
relies on exactly these shapes):

- a server that dies or closes stdout with a call in flight: ``MCPError`` with code
  ``CONNECTION_CLOSED`` (-32000) from ``call_tool``, and from every call after it;
- a server that dies before/during the handshake: ``Client.__aenter__`` raises an
  ``ExceptionGroup`` (trio nurseries) whose only leaf is that same ``MCPError``;
- a non-JSON line on stdout: the session survives and ``message_handler`` receives the
  parse error (a pydantic ``ValidationError``, a ``ValueError``) as an ``Exception``;
- ``read_timeout_seconds`` elapsing: ``MCPError`` ``REQUEST_TIMEOUT`` (-32001);
- a cancelled ``call_tool``: the SDK sends ``notifications/cancelled`` and the server's
  handler is interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.subscriptions import ToolsListChanged
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from conftest import is_live

SERVERS = Path(__file__).parent / "servers"
MODERN = "2026-07-28"


def stdio(name: str, *args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(SERVERS / name), *args], env=env)


def leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from leaves(sub)
    else:
        yield exc


def only_leaf(exc: BaseException) -> BaseException:
    found = list(leaves(exc))
    assert len(found) == 1, f"expected one leaf exception, got {found!r}"
    return found[0]


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def wait_until(predicate, timeout: float, interval: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- echo ---------------------------------------------------------------------------------


async def test_echo_tools_annotations_prompt_resource_progress(tmp_path: Path) -> None:
    exec_log = tmp_path / "exec.log"
    with trio.fail_after(15):
        async with Client(stdio("echo.py", "--name", "smoke-echo", env={"EXEC_LOG": str(exec_log)})) as client:
            assert client.server_info is not None and client.server_info.name == "smoke-echo"
            assert client.protocol_version == MODERN  # mode="auto" against a 2.3 server

            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) >= {"echo", "add", "write_note", "sleep", "fail", "pid"}
            assert tools["echo"].annotations is not None and tools["echo"].annotations.read_only_hint is True
            assert tools["add"].annotations is not None and tools["add"].annotations.idempotent_hint is True
            note = tools["write_note"].annotations
            assert note is not None
            assert (note.destructive_hint, note.read_only_hint, note.idempotent_hint) == (True, False, False)

            assert text(await client.call_tool("echo", {"text": "hi"})) == "hi"
            added = await client.call_tool("add", {"a": 2, "b": 3})
            assert added.structured_content == {"result": 5} and not added.is_error

            failed = await client.call_tool("fail", {"message": "boom"})
            assert failed.is_error is True and "boom" in text(failed)

            server_pid = (await client.call_tool("pid", {})).structured_content["result"]
            assert server_pid != os.getpid() and is_live(server_pid)

            await client.call_tool("write_note", {"text": "one"})
            await client.call_tool("write_note", {"text": "two"})
            assert read_lines(exec_log) == ["write_note one", "write_note two"]

            assert [p.name for p in (await client.list_prompts()).prompts] == ["greet"]
            assert [str(r.uri) for r in (await client.list_resources()).resources] == ["info://server"]
            contents = (await client.read_resource("info://server")).contents[0]
            assert isinstance(contents, types.TextResourceContents) and f"pid={server_pid}" in contents.text

            progress: list[tuple[float, float | None]] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append((value, total))

            slept = await client.call_tool("sleep", {"seconds": 0.35}, progress_callback=on_progress)
            assert text(slept) == "slept 0.35"
            await wait_until(lambda: len(progress) >= 4, timeout=1)
            values = [v for v, _ in progress]
            assert values == sorted(values) and values[-1] == pytest.approx(0.35)
            assert all(total == pytest.approx(0.35) for _, total in progress)


# --- crashes ------------------------------------------------------------------------------


async def test_crash_on_call_fails_the_call_with_connection_closed(tmp_path: Path) -> None:
    exec_log = tmp_path / "exec.log"
    params = stdio("crash_on_call.py", "--crash-tool", "boom", env={"EXEC_LOG": str(exec_log)})
    with trio.fail_after(15):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "boom" in names and "crash" not in names
            server_pid = (await client.call_tool("pid", {})).structured_content["result"]
            with pytest.raises(MCPError) as info:
                with trio.fail_after(5):
                    await client.call_tool("boom", {})
            assert info.value.code == CONNECTION_CLOSED
            assert read_lines(exec_log) == ["boom"]  # the request did reach the server
            with pytest.raises(MCPError) as again:
                await client.call_tool("echo", {"text": "after"})
            assert again.value.code == CONNECTION_CLOSED
        assert not is_live(server_pid)


@pytest.mark.parametrize("when", ["before", "during"])
async def test_crash_at_start_fails_client_entry(tmp_path: Path, when: str) -> None:
    count = tmp_path / "starts"
    with trio.fail_after(10):
        with pytest.raises(BaseException) as info:
            async with Client(stdio("crash_at_start.py", "--when", when, "--count-file", str(count))):
                pytest.fail("the handshake should not succeed")
    leaf = only_leaf(info.value)
    assert isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED
    assert len(read_lines(count)) == 1


async def test_crash_at_start_recovers_once_the_file_exists(tmp_path: Path) -> None:
    count, until = tmp_path / "starts", tmp_path / "ok"
    params = stdio("crash_at_start.py", "--when", "during", "--until-file", str(until), "--count-file", str(count))
    with trio.fail_after(15):
        with pytest.raises(BaseException) as info:
            async with Client(params):
                pytest.fail("the handshake should not succeed")
        assert isinstance(only_leaf(info.value), MCPError)
        until.touch()
        async with Client(params) as client:
            assert text(await client.call_tool("echo", {"text": "back"})) == "back"
    assert len(read_lines(count)) == 2


async def _close_stdout_mid_call(exec_log: Path) -> None:
    async with Client(stdio("close_stdout.py", env={"EXEC_LOG": str(exec_log)})) as client:
        server_pid = (await client.call_tool("pid", {})).structured_content["result"]
        with pytest.raises(MCPError) as info:
            with trio.fail_after(5):
                await client.call_tool("close_stdout", {})
        assert info.value.code == CONNECTION_CLOSED
        # The server writes its log line just after closing the wire: the EOF can win.
        await wait_until(lambda: read_lines(exec_log) == ["close_stdout"], timeout=2)
        assert is_live(server_pid)  # EOF on the pipe, yet the process still runs
    # Leaving the client closed the server's stdin, and it exited.
    assert not is_live(server_pid)


async def _close_stdout_at_start() -> None:
    with pytest.raises(BaseException) as at_start:
        async with Client(stdio("close_stdout.py", "--when", "start")):
            pytest.fail("the handshake should not succeed")
    leaf = only_leaf(at_start.value)
    assert isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED


async def test_close_stdout_mid_call_and_at_start(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:  # two servers at once: the suite stays fast
            nursery.start_soon(_close_stdout_mid_call, tmp_path / "exec.log")
            nursery.start_soon(_close_stdout_at_start)


# --- hang and slow start ------------------------------------------------------------------


async def test_hang_times_out_and_cancel_reaches_the_server(tmp_path: Path) -> None:
    exec_log = tmp_path / "exec.log"
    with trio.fail_after(15):
        async with Client(stdio("hang.py", env={"EXEC_LOG": str(exec_log)})) as client:
            await client.list_tools()
            with trio.move_on_after(0.5) as scope:
                await client.call_tool("hang", {})
            assert scope.cancelled_caught
            # The caller's cancel went out as notifications/cancelled and interrupted the handler.
            await wait_until(lambda: read_lines(exec_log) == ["hang start", "hang cancelled"], timeout=2)
            assert text(await client.call_tool("echo", {"text": "still here"})) == "still here"

            with pytest.raises(MCPError) as info:
                await client.call_tool("hang", {}, read_timeout_seconds=0.3)
            assert info.value.code == REQUEST_TIMEOUT
            await wait_until(lambda: len(read_lines(exec_log)) == 4, timeout=2)
            assert read_lines(exec_log)[2:] == ["hang start", "hang cancelled"]


async def test_slow_start_delays_the_handshake() -> None:
    with trio.fail_after(15):
        start = trio.current_time()
        async with Client(stdio("slow_start.py", "--delay", "0.5")) as client:
            assert trio.current_time() - start >= 0.5
            assert text(await client.call_tool("echo", {"text": "late"})) == "late"


# --- garbage ------------------------------------------------------------------------------


async def test_garbage_lines_reach_message_handler_and_the_session_survives() -> None:
    """A non-JSON stdout line is handed to message_handler as an Exception (a pydantic
    ValidationError, which is a ValueError); the session and later calls are unaffected."""
    seen: list[object] = []

    async def handler(message: object) -> None:
        seen.append(message)

    with trio.fail_after(15):
        async with Client(stdio("garbage.py", "--when", "start", "--lines", "3"), message_handler=handler) as client:
            assert text(await client.call_tool("echo", {"text": "ok"})) == "ok"
            await wait_until(lambda: len(seen) >= 3, timeout=2)

            # Garbage in the middle of a call: the call still gets its answer.
            assert text(await client.call_tool("spew", {"lines": 4})) == "spewed 4 via wire"
            await wait_until(lambda: len(seen) >= 7, timeout=2)
            assert all(isinstance(m, ValueError) and "garbage line" in str(m) for m in seen)

            # fd 1 inside an mcp 2.3 stdio server points at stderr: nothing reaches the wire.
            assert text(await client.call_tool("spew", {"lines": 2, "via": "fd1"})) == "spewed 2 via fd1"
            assert text(await client.call_tool("echo", {"text": "ok"})) == "ok"
            await trio.sleep(0.1)
            assert len(seen) == 7


# --- flaky --------------------------------------------------------------------------------


async def _flaky_error_mode() -> None:
    async with Client(stdio("flaky.py", "--every", "3")) as client:
        outcomes = []
        for x in range(1, 7):
            result = await client.call_tool("work", {"x": x})
            outcomes.append("error" if result.is_error else result.structured_content["result"])
    assert outcomes == [2, 4, "error", 8, 10, "error"]


async def _flaky_crash_mode() -> None:
    async with Client(stdio("flaky.py", "--every", "2", "--mode", "crash")) as client:
        assert (await client.call_tool("work", {"x": 1})).structured_content == {"result": 2}
        with pytest.raises(MCPError) as info:
            with trio.fail_after(5):
                await client.call_tool("work", {"x": 2})
        assert info.value.code == CONNECTION_CLOSED


async def test_flaky_kth_call_fails_as_tool_error_or_crash() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flaky_error_mode)
            nursery.start_soon(_flaky_crash_mode)


# --- process trees ------------------------------------------------------------------------


async def test_spawns_grandchild_leaves_an_orphan_when_the_server_exits(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = None
    try:
        with trio.fail_after(15):
            async with Client(stdio("spawns_grandchild.py", "--child-pid-file", str(pid_file))) as client:
                child = (await client.call_tool("child_pid", {})).structured_content["result"]
                server = (await client.call_tool("pid", {})).structured_content["result"]
                assert child == int(pid_file.read_text()) and is_live(child)
                # Same process group as the server (the SDK made the server a group leader).
                assert os.getpgid(child) == os.getpgid(server) == server
            # The server exited on stdin close within the SDK's grace period, so the SDK did not
            # kill its process tree: the child lives on. The supervisor must kill the group.
            assert not is_live(server)
            assert is_live(child)
    finally:
        if child is None and pid_file.exists():
            child = int(pid_file.read_text())
        if child is not None:
            kill_quietly(child)


async def _server_exits_mid_session(tmp_path: Path, child_stdio: str) -> None:
    pid_file = tmp_path / f"child-{child_stdio}.pid"
    exit_now = tmp_path / f"exit-{child_stdio}"
    args = ("--exit-when", str(exit_now), "--child-stdio", child_stdio, "--child-pid-file", str(pid_file))
    outcome: list[BaseException | str] = []
    try:
        async with Client(stdio("spawns_grandchild.py", *args)) as client:
            server = (await client.call_tool("pid", {})).structured_content["result"]

            in_flight = trio.Event()

            async def sleeping(progress: float, total: float | None, message: str | None) -> None:
                in_flight.set()

            async def long_call() -> None:
                try:
                    await client.call_tool("sleep", {"seconds": 30}, progress_callback=sleeping)
                    outcome.append("returned")
                except MCPError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_call)
                await in_flight.wait()  # the server is running the call (it said so)
                exit_now.touch()
                await wait_until(lambda: not is_live(server), timeout=60)
                if child_stdio == "devnull":
                    await wait_until(lambda: bool(outcome), timeout=60)
                    exc = outcome[0]
                    assert isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED
                else:
                    # The orphan holds the stdout pipe open: no EOF, so the SDK never notices
                    # that the server died and the call would wait forever.
                    await trio.sleep(0.4)
                    assert outcome == []
                    nursery.cancel_scope.cancel()
        assert is_live(int(pid_file.read_text()))
    finally:
        if pid_file.exists():
            kill_quietly(int(pid_file.read_text()))


async def test_spawns_grandchild_server_exits_mid_session(tmp_path: Path) -> None:
    """--exit-when: the server dies with a call in flight, its child survives. With the child
    detached from the pipes the call fails with CONNECTION_CLOSED; with the child holding
    stdout (the default) the call hangs."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_server_exits_mid_session, tmp_path, "devnull")
            nursery.start_soon(_server_exits_mid_session, tmp_path, "inherit")


# --- list_changed -------------------------------------------------------------------------


async def _list_changed_handshake_era() -> None:
    seen: list[object] = []

    async def handler(message: object) -> None:
        seen.append(message)

    async with Client(stdio("list_changed.py"), mode="legacy", message_handler=handler) as client:
        assert client.server_capabilities.tools is not None
        assert client.server_capabilities.tools.list_changed is True
        assert "dyn" not in {t.name for t in (await client.list_tools()).tools}
        assert text(await client.call_tool("add_tool", {"name": "dyn"})) == "added dyn"
        await wait_until(lambda: any(isinstance(m, types.ToolListChangedNotification) for m in seen), timeout=2)
        assert "dyn" in {t.name for t in (await client.list_tools()).tools}
        assert text(await client.call_tool("dyn", {"text": "x"})) == "dyn: x"


async def _list_changed_modern_era() -> None:
    seen: list[object] = []

    async def handler(message: object) -> None:
        seen.append(message)

    async with Client(stdio("list_changed.py"), message_handler=handler) as client:
        assert client.protocol_version == MODERN
        await client.call_tool("add_tool", {"name": "quiet"})
        await trio.sleep(0.2)
        assert seen == []  # at 2026-07-28 the bare notification is not sent
        assert "quiet" in {t.name for t in (await client.list_tools()).tools}

        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("add_tool", {"name": "loud"})
            events = []
            with trio.fail_after(2):
                async for event in subscription:
                    events.append(event)
                    break
            assert isinstance(events[0], ToolsListChanged)
        # Listen events are also teed to message_handler as the notification type.
        await wait_until(lambda: any(isinstance(m, types.ToolListChangedNotification) for m in seen), timeout=2)
        assert "loud" in {t.name for t in (await client.list_tools()).tools}


async def test_list_changed_reaches_the_client_in_both_eras() -> None:
    """Handshake era (mode="legacy"): a bare notifications/tools/list_changed reaches
    message_handler. 2026-07-28 era (mode="auto"): only through Client.listen()."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_list_changed_handshake_era)
            nursery.start_soon(_list_changed_modern_era)


# --- HTTP ---------------------------------------------------------------------------------


async def _start_http(*extra: str) -> tuple[trio.Process, int]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(SERVERS / "http_echo.py"), *extra], stdout=subprocess.PIPE
    )
    buffer = b""
    try:
        with trio.fail_after(120):  # catches a hang: starting Python is seconds on a loaded CI
            while b"\n" not in buffer:
                chunk = await proc.stdout.receive_some()
                assert chunk, "http_echo exited before listening"
                buffer += chunk
    except BaseException:
        proc.kill()
        raise
    word, port = buffer.split(b"\n", 1)[0].split()
    assert word == b"LISTENING"
    return proc, int(port)


async def _stop(proc: trio.Process) -> None:
    proc.terminate()
    with trio.move_on_after(5):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def _http_echo(transport: str) -> None:
    proc, port = await _start_http(*(["--sse"] if transport == "sse" else []))
    try:
        target = sse_client(f"http://127.0.0.1:{port}/sse") if transport == "sse" else f"http://127.0.0.1:{port}/mcp"
        async with Client(target) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert tools["echo"].annotations is not None and tools["echo"].annotations.read_only_hint
            assert text(await client.call_tool("echo", {"text": "over http"})) == "over http"
            assert (await client.call_tool("fail", {"message": "no"})).is_error is True
    finally:
        await _stop(proc)


async def test_http_echo_streamable_http_and_sse() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_http_echo, "streamable-http")
            nursery.start_soon(_http_echo, "sse")
