"""What the daemon's HTTP front answers a body that is no single JSON-RPC message (a batch,
``null``), and a request for a list the gateway cannot answer as asked. A real daemon
over real HTTP on 127.0.0.1 (`test_daemon.Daemon`), every wait with a deadline."""

from __future__ import annotations

import json

import httpx2
import trio

from test_daemon import server_entry, start_daemon, write_config  # noqa: F401 (start_daemon: a fixture)
from test_front_hardening import MCP_HEADERS, open_session


#: The ``--stdio`` front's words for the same bodies (`actors._stdio`; tests/test_stdio_wire.py).
IN_A_BATCH = "the request is part of a batch (a JSON array): MCP takes one message at a time"
NO_REQUEST = "a batch (a JSON array) with no request in it: MCP takes one message at a time"
NO_MESSAGE = "no JSON-RPC 2.0 message: "


def call(request_id, tool: str, text: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"text": text}}}


def answer_of(response: httpx2.Response) -> dict:
    """The JSON-RPC answer in ``response``: its JSON body, or its event stream's last data."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        return json.loads(data[-1])
    return response.json()


async def test_a_body_that_is_no_object_gets_the_stdio_fronts_invalid_request(tmp_path, start_daemon):
    """A batch (``[...]``), ``[]`` or ``null`` posted in a handshake-era session got a 400
    with code -32602 and pydantic's 1.7 KB dump of four validation errors. Now it is
    refused as the ``--stdio`` front refuses it (-32600, the same words): each request of a
    batch gets its own error with its id (MCP 2025-06-18 and later take no batch; JSON-RPC
    answers one with an array), anything else one error whose id is null. Nothing runs, a
    body that is not JSON is still a parse error, and the session serves on."""
    notes = tmp_path / "notes.log"
    echo, _ = server_entry("echo.py")
    echo["env"]["EXEC_LOG"] = str(notes)
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}))
    url = daemon.url + "/mcp"
    with trio.fail_after(90):
        async with httpx2.AsyncClient(timeout=20) as http:
            session = await open_session(http, url)
            batch = [call(7, "write_note", "batched"), {"jsonrpc": "2.0", "method": "notifications/progress"},
                     {"jsonrpc": "2.0", "id": "b", "method": "ping"}, {"jsonrpc": "2.0", "id": 1.5, "method": "ping"}]
            refused = await http.post(url, json=batch, headers=session)
            assert refused.status_code == 400, refused.text
            assert refused.json() == [
                {"jsonrpc": "2.0", "id": 7, "error": {"code": -32600, "message": IN_A_BATCH}},
                {"jsonrpc": "2.0", "id": "b", "error": {"code": -32600, "message": IN_A_BATCH}},
            ], refused.text
            for body, why in ((b"[]", NO_REQUEST), (b' [{"jsonrpc": "2.0", "method": "notifications/progress"}]', NO_REQUEST),
                              (b"null", NO_MESSAGE), (b"5", NO_MESSAGE), (b'"tools/list"', NO_MESSAGE)):
                refused = await http.post(url, content=body, headers=session)
                assert refused.status_code == 400, (body, refused.text)
                answer = refused.json()
                assert answer["id"] is None and answer["error"]["code"] == -32600, (body, answer)
                assert answer["error"]["message"].startswith(why), (body, answer)
                assert "pydantic" not in refused.text and len(refused.content) < 400, (body, refused.text)
            # A 2026-07-28 request (no session) says the same.
            stateless = {**MCP_HEADERS, "MCP-Protocol-Version": "2026-07-28"}
            refused = await http.post(url, json=[{"jsonrpc": "2.0", "id": 9, "method": "tools/list"}], headers=stateless)
            assert refused.status_code == 400, refused.text
            assert refused.json() == [{"jsonrpc": "2.0", "id": 9, "error": {"code": -32600, "message": IN_A_BATCH}}]
            # Not JSON: still the SDK's parse error.
            unreadable = await http.post(url, content=b'[{"jsonrpc": "2.0", "id": 3,', headers=session)
            assert unreadable.status_code == 400 and unreadable.json()["error"]["code"] == -32700, unreadable.text
            after = await http.post(url, json=call(3, "write_note", "alone"), headers=session)
            assert after.status_code == 200 and answer_of(after)["result"]["isError"] is False, after.text
    assert notes.read_text() == "write_note alone\n"  # the batched one never ran
    assert "Traceback" not in daemon.log.read_text()


async def test_a_list_asked_with_a_cursor_is_refused_invalid_params(tmp_path, start_daemon):
    """``tools/list``, ``prompts/list``, ``resources/list`` and ``resources/templates/list``
    asked with ``params.cursor: "bogus"`` answered the whole list, as if the cursor had been
    one the gateway gave: it gives none (each list is one page), so a client paging on such
    a cursor took the list twice over. Now a cursor is refused -32602 (the spec's answer to
    an invalid cursor), saying why; asked without one (no params, ``cursor: null``, or an
    empty cursor, which a client paging until a falsy cursor reads as none) each list is
    answered whole, with no ``nextCursor``."""
    everything, _ = server_entry("everything.py")
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"ev": everything}))
    url = daemon.url + "/mcp"
    lists = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources",
             "resources/templates/list": "resourceTemplates"}
    with trio.fail_after(90):
        async with httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, url)
            for number, (method, field) in enumerate(lists.items()):
                for cursor in ("bogus", "0", "x" * 100):
                    request = {"jsonrpc": "2.0", "id": number, "method": method, "params": {"cursor": cursor}}
                    error = answer_of(await http.post(url, json=request, headers=session)).get("error")
                    assert error is not None and error["code"] == -32602, (method, cursor, error)
                    shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."  # a long one cut short
                    assert error["message"].startswith(f"invalid cursor {shown!r}: "), (method, error)
                    assert f"{method} is answered in one page" in error["message"], (method, error)
                for params in (None, {}, {"cursor": None}, {"cursor": ""}):
                    request = {"jsonrpc": "2.0", "id": number, "method": method, **({} if params is None else {"params": params})}
                    result = answer_of(await http.post(url, json=request, headers=session)).get("result")
                    assert result is not None and result[field] and "nextCursor" not in result, (method, params, result)
    assert "Traceback" not in daemon.log.read_text()
