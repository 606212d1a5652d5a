"""The daemon's ``--stdio`` front when its client is gone: killed, both its pipes closed.

The end of stdin alone means "the client piped its requests in and reads the answers":
they run to their end, for up to ``drain_timeout``. A killed client closes our stdout's
reader too: no answer can be delivered, so the requests are cut off at once (cancelled on
their servers) and the daemon exits, instead of holding them for the whole drain.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from conftest import SERVERS, procs_with_marker, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("closing", [("stdout", "stdin"), ("stdin", "stdout"), ("stdout",)], ids="-then-".join)
async def test_a_killed_stdio_client_has_its_call_cut_off_at_once(tmp_path, closing):
    """A 30 s call runs (it reports progress), then both our ends of the daemon's pipes
    close, in either order, as when the client is killed: the daemon exits and its server
    goes well within ``drain_timeout`` (60 s; the deadline of 30 s catches the old wait).
    The same when only the reader of the daemon's stdout goes (stdin still open): nothing
    can be answered any more, and the session ends as at the end of stdin."""
    marker = f"stdio-gone-{uuid.uuid4().hex[:12]}"
    echo = {"command": sys.executable, "args": [str(SERVERS / "echo.py")], "env": {"MCP_TEST_MARKER": marker}}
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"mcpServers": {"echo": echo}, "supervisor": {"drain_timeout": 60}}))
    log_path = tmp_path / "stderr.log"
    command = [sys.executable, "-m", "supervisor", "run", "--stdio", "--config", str(config)]
    with open(log_path, "wb") as log_file:
        daemon = await trio.lowlevel.open_process(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file
        )
    send = lambda message: daemon.stdin.send_all(json.dumps(message).encode() + b"\n")  # noqa: E731
    try:
        with trio.fail_after(30):
            await send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
            await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "sleep", "arguments": {"seconds": 30}, "_meta": {"progressToken": "p"}}})
            heard = b""
            while b'"notifications/progress"' not in heard:  # the call is on the server: it reports
                chunk = await daemon.stdout.receive_some()
                assert chunk, "the daemon's stdout ended"
                heard += chunk
            assert procs_with_marker(marker), "the server runs"
            for end in closing:  # the killed client's ends of the pipes
                await getattr(daemon, end).aclose()
            assert await daemon.wait() == 0, log_path.read_text()[-2000:]
        await wait_until(lambda: not procs_with_marker(marker), timeout=10, what="no process left behind")
        assert "cutting them off" not in log_path.read_text()  # not the drain running out
    finally:
        await daemon.stdin.aclose()
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
