"""The log lines an upstream server sends while serving a client's calls reach that client
through the daemon, for every call it has in flight.

Real processes: ``python -m supervisor run --stdio`` fronting ``tests/servers/everything.py``,
driven by the SDK ``Client``. ``log_together(tag, calls)`` holds each call until ``calls`` of
them are in flight at the server, so the lines are logged while several calls are in flight
without relying on timing. Every wait has a deadline; no process a test started may remain.
"""

import json

import pytest
import trio

from test_gateway_fidelity import (
    SERVER_NAME,
    Recorder,
    assert_no_orphans,
    daemon_logger,
    daemon_params,
    new_marker,
    result_text,
)

# logging is the handshake era's API, deprecated at 2026-07-28.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

CALLS = 4


async def test_a_modern_stdio_clients_concurrent_calls_each_get_their_log_lines(tmp_path):
    """A 2026-07-28 client of the ``--stdio`` front makes four calls at once; the server logs
    two lines for each while all four are in flight. Every line reaches the client, named
    after the server. Before, each 2026-07-28 request counted as a client of its own, so with
    two or more of one client's calls in flight no line was relayed at all (the handshake
    era, one connection per client, got them all)."""
    marker = new_marker("logs-stdio")
    recorder = Recorder()
    answers: dict[str, str] = {}
    with trio.fail_after(30):
        async with recorder.client(daemon_params(tmp_path, marker), "modern") as client:

            async def call(tag: str) -> None:
                answers[tag] = result_text(await client.call_tool("log_together", {"tag": tag, "calls": CALLS}))

            async with trio.open_nursery() as nursery:
                for i in range(CALLS):
                    nursery.start_soon(call, f"c{i}")
            await recorder.wait_for(lambda: len(recorder.logs) >= 2 * CALLS)
        await assert_no_orphans(marker)

    assert answers == {f"c{i}": f"logged c{i}" for i in range(CALLS)}
    expected = sorted(
        json.dumps({"level": level, "logger": daemon_logger(SERVER_NAME, "everything.logs"), "data": f"c{i}: {level} line"})
        for i in range(CALLS)
        for level in ("info", "error")
    )
    assert sorted(json.dumps(line) for line in recorder.logs) == expected, recorder.logs
