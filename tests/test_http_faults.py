"""Remote servers (streamable HTTP and SSE) that misbehave on the wire, each a real HTTP
server on 127.0.0.1 (``tests/servers/http_echo.py --http-errors``, a gateway in front of it
that breaks the answers it is told to)."""

from __future__ import annotations

import pytest
import trio

from conftest import wait_until
from protocol import InvalidResult, RetryPolicy, ServerSpec
from supervisor import Supervisor
from test_connection import HttpEcho, connection_status, text


@pytest.mark.parametrize("era", ["2026-07-28", "handshake"])
async def test_a_json_answer_for_another_request_fails_its_call_at_once_and_is_no_hang(era):
    """A remote server answers a call's POST with a whole JSON-RPC result (as JSON) whose
    id is not the call's. The SDK handed it on as the answer to that other id, which nobody
    waited for, so the call waited out its whole deadline, counted as a hang, and
    ``hang_threshold`` (1 here) restarted a server that answers everything at once. Now the
    call fails there and then, ``InvalidResult`` naming both ids, and the connection goes on."""
    extra = ("--handshake-only",) if era == "handshake" else ()
    async with HttpEcho("--http-errors", *extra) as server:
        spec = ServerSpec(
            name="gw", url=server.url(), transport="streamable-http", hang_threshold=1,
            retry=RetryPolicy(max_retries=0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            incarnation = sup.link("gw").conn
            await sup.call_tool("break_next", {"how": "wrong-id"}, server="gw", timeout=10)
            with trio.fail_after(10):  # was: the call's whole 60 s
                with pytest.raises(InvalidResult, match="for another request") as wrong:
                    await sup.call_tool("echo", {"text": "a"}, server="gw", timeout=60)
            message = wrong.value.message
            assert message.startswith("tool 'echo' on server 'gw': "), message
            assert "answer to another request" in message  # the start of what came
            assert sup.link("gw").conn is incarnation, "the connection was restarted"
            assert connection_status(sup, "gw").restarts == 0
            assert text(await sup.call_tool("echo", {"text": "b"}, server="gw", timeout=10)) == "b"


@pytest.mark.parametrize(
    "asked, body, theirs",
    [
        (7, b'{"jsonrpc": "2.0", "id": 7, "result": {}}', True),
        (7, b'{"jsonrpc": "2.0", "id": "7", "result": {}}', True),  # the SDK correlates "7" with 7
        ("a", b'{"jsonrpc": "2.0", "id": "a", "error": {"code": 1, "message": "no"}}', True),
        (7, b'not json', True),  # no JSON-RPC at all: the SDK's own parse error says so
        (7, b'{"jsonrpc": "2.0", "id": 8, "result": {}}', False),
        (7, b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}', False),
        (7, b'{"jsonrpc": "2.0", "method": "notifications/message", "params": {}}', False),
        (1, b'{"jsonrpc": "2.0", "id": true, "result": {}}', False),
    ],
)
def test_which_json_answers_are_the_request_s(asked, body, theirs):
    from actors._http_answers import NOT_ITS_ANSWER, _not_its_answer

    why = _not_its_answer(body, asked)
    assert (why is None) == theirs, why
    if why is not None:
        assert NOT_ITS_ANSWER in why
