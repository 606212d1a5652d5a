"""Remote servers (streamable HTTP and SSE) that misbehave on the wire, each a real HTTP
server on 127.0.0.1 (``tests/servers/http_echo.py --http-errors``, a gateway in front of it
that breaks the answers it is told to)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial

import httpx2
import pytest
import trio

from conftest import settled, wait_until
from actors._http_answers import MAX_RETRY_WAIT
from protocol import (
    BackoffPolicy, DeadlineExceeded, InvalidResult, RetryPolicy, ServerCrashed, ServerSpec, ServerUnavailable,
)
from supervisor import Supervisor
from test_connection import HttpEcho, connection_status, text


def strict(server: HttpEcho) -> ServerSpec:
    """``server`` as "gw": no retry, no health check, restarted at its first timeout (so a
    call that waits out its deadline shows as a restart)."""
    return ServerSpec(
        name="gw", url=server.url(), transport="streamable-http", hang_threshold=1,
        retry=RetryPolicy(max_retries=0), health_check_interval=None,
    )


@pytest.mark.parametrize("era", ["2026-07-28", "handshake"])
async def test_a_json_answer_for_another_request_fails_its_call_at_once_and_is_no_hang(era):
    """A remote server answers a call's POST with a whole JSON-RPC result (as JSON) whose
    id is not the call's. The SDK handed it on as the answer to that other id, which nobody
    waited for, so the call waited out its whole deadline, counted as a hang, and
    ``hang_threshold`` (1 here) restarted a server that answers everything at once. Now the
    call fails there and then, ``InvalidResult`` naming both ids, and the connection goes on."""
    extra = ("--handshake-only",) if era == "handshake" else ()
    async with HttpEcho("--http-errors", *extra) as server:
        async with Supervisor([strict(server)]) as sup:
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


class _Pieces(httpx2.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece


async def _bounded(pieces: list[bytes], most: int) -> bytes:
    from actors._http_answers import _RetryBounded

    return b"".join([piece async for piece in _RetryBounded(_Pieces(pieces), most)])


@pytest.mark.parametrize(
    "stream, bounded",
    [
        (b"id: 1\nretry: 100000000\ndata: \n\n", b"id: 1\nretry: 5000\ndata: \n\n"),
        (b"retry: 300\r\ndata: x\r\n\r\n", b"retry: 300\r\ndata: x\r\n\r\n"),  # within the bound: as it came
        (b"retry:" + b"9" * 400 + b"\rdata: y\r\r", b"retry: 5000\rdata: y\r\r"),  # too large for a float
        (b"retry: soon\n\n", b"retry: soon\n\n"),  # no number: the client ignores it, as before
        (b"data: retry: 100000000\n: retry: 1\nretr: 100000000\nretry\n\n",  # no retry field
         b"data: retry: 100000000\n: retry: 1\nretr: 100000000\nretry\n\n"),
        (b"event: message\ndata: {}\n\nretry: 99999", b"event: message\ndata: {}\n\nretry: 5000"),  # cut off
        (b"\n\nret", b"\n\nret"),
    ],
)
async def test_a_retry_field_is_bounded_wherever_the_stream_is_cut(stream, bounded):
    """An event stream's ``retry:`` over the bound is read as the bound; every other byte
    passes as it came, however the stream is cut into pieces (here: anywhere, in two, and
    one byte at a time)."""
    assert await _bounded([stream], 5000) == bounded
    for cut in range(len(stream) + 1):
        assert await _bounded([stream[:cut], stream[cut:]], 5000) == bounded, cut
    assert await _bounded([stream[i : i + 1] for i in range(len(stream))], 5000) == bounded


@pytest.mark.parametrize("retry", ["100000000", "9" * 400], ids=["a-day", "too-large-for-a-float"])
async def test_an_answer_stream_that_asks_for_a_huge_wait_before_it_is_resumed_fails_its_call_alone(retry):
    """A call's answer stream gives an event id, asks (``retry:``) for a day's wait before
    it is resumed, and ends with no answer. The SDK waited that long: the call waited out
    its whole deadline and counted as a hang (``hang_threshold`` 1: the connection was
    restarted); asked for a wait too large for a float, it raised ``OverflowError``, which
    ended the whole connection and every call on it. Now the wait is at most
    ``MAX_RETRY_WAIT``: the SDK tries to resume the stream, the server cannot, and the call
    fails ``ServerCrashed`` saying its answer stream ended; the connection goes on."""
    async with HttpEcho("--http-errors") as server:
        async with Supervisor([strict(server)]) as sup:
            await sup.wait_connected("gw", timeout=20)
            incarnation = sup.link("gw").conn
            await sup.call_tool("break_next", {"how": f"sse-retry={retry}"}, server="gw", timeout=10)
            with trio.fail_after(4 * MAX_RETRY_WAIT + 10):  # was: the call's whole 120 s
                with pytest.raises(ServerCrashed, match="answer stream ended without an answer") as broke:
                    await sup.call_tool("echo", {"text": "a"}, server="gw", timeout=120)
            assert "reconnection attempts were exhausted" in broke.value.message, broke.value.message
            assert sup.link("gw").conn is incarnation, "the connection was restarted"
            assert text(await sup.call_tool("echo", {"text": "b"}, server="gw", timeout=10)) == "b"


async def test_an_sse_post_with_no_http_answer_holds_up_the_calls_behind_it_for_connect_timeout_at_most():
    """Over SSE the SDK sends one POST at a time. One got no HTTP answer at all (the
    server, or a proxy, holds it): every later message waited behind it, for the read
    timeout the SDK gives its client (300 s), so each later call waited out its deadline
    and counted as a hang. Now a POST's answer is awaited for ``connect_timeout`` at most
    (a legacy SSE server acknowledges a message at once, before it handles it): the POST
    then fails, which ends the SDK's transport as any failed POST does; the held call fails
    ``ServerCrashed`` (a destructive tool, not retried), the call behind it runs on the next
    incarnation."""
    async with HttpEcho("--http-errors", "--sse") as server:
        spec = ServerSpec(
            name="gw", url=server.url("/sse"), transport="sse", connect_timeout=3.0, hang_threshold=100,
            backoff=BackoffPolicy(min=0.1, max=1.0, jitter=0.0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            await settled(sup, "gw")  # no POST of its own in flight
            await sup.call_tool("break_next", {"how": "no-answer"}, server="gw", timeout=10)
            outcomes: dict[str, object] = {}

            async def call(tool: str, argument: str) -> None:
                try:
                    outcomes[argument] = text(await sup.call_tool(tool, {"text": argument}, server="gw", timeout=120))
                except Exception as exc:
                    outcomes[argument] = exc

            with trio.fail_after(3.0 + 20):  # was: both calls' whole 120 s
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, "write_note", "held")
                    await wait_until(lambda: sup.link("gw").inflight == 1, timeout=10, what="the held call")
                    nursery.start_soon(call, "echo", "behind")
            held = outcomes["held"]
            assert isinstance(held, ServerCrashed), held
            assert "the call's POST got no answer (ReadTimeout after 3 s, the connect_timeout)" in held.message, held.message
            assert outcomes["behind"] == "behind"
            assert connection_status(sup, "gw").restarts == 1
            assert "a message's POST got no answer" in sup.link("gw").last_error


async def test_a_notification_s_post_with_no_http_answer_holds_up_later_calls_for_connect_timeout_at_most():
    """Over streamable HTTP the SDK sends a request's POST in a task of its own, but a
    notification's (and our answer to a server's question) in line, one at a time. In a
    handshake-era session the courtesy cancel of a call that timed out is such a POST; the
    server (or a proxy) never answered it, and every later message waited behind it for
    the SDK's read timeout (300 s): each call to the server waited out its deadline, and
    counted as a hang. Now such a POST is given up after ``connect_timeout`` (lost alone,
    the connection goes on), and the call behind it is answered."""
    async with HttpEcho("--http-errors", "--handshake-only") as server:
        spec = ServerSpec(
            name="gw", url=server.url(), transport="streamable-http", connect_timeout=3.0, hang_threshold=100,
            retry=RetryPolicy(max_retries=0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            incarnation = sup.link("gw").conn
            await sup.call_tool("hold_next", {"method": "notifications/cancelled"}, server="gw", timeout=10)
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("sleep", {"seconds": 5.0}, server="gw", timeout=0.5)  # its cancel is held
            with trio.fail_after(3.0 + 10):  # was: the call's whole 60 s
                assert text(await sup.call_tool("echo", {"text": "behind"}, server="gw", timeout=60)) == "behind"
            assert sup.link("gw").conn is incarnation, "the connection was restarted"


async def _answered_after_silence(transport: str, timeout: float, call_timeout: float | None) -> None:
    """A call to ``sleep`` 2.5 s on a real server (``timeout``: the server's) answers."""
    sse = transport == "sse"
    async with HttpEcho(*(["--sse"] if sse else ["--json-response"])) as server:
        spec = ServerSpec(
            name="slow", url=server.url("/sse") if sse else server.url(), transport=transport, timeout=timeout,
            retry=RetryPolicy(max_retries=0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("slow", timeout=20)
            with trio.fail_after(30):
                result = await sup.call_tool("sleep", {"seconds": 2.5}, server="slow", timeout=call_timeout)
            assert not result.is_error and "2.5" in text(result), result


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_a_call_answered_after_more_silence_than_the_sdk_reads_is_not_cut_off(monkeypatch, transport):
    """A streamable-HTTP call's answer may come as one JSON body after all its silence, and
    the SDK's client gives up reading after 300 s of it, whatever the server's ``timeout``:
    a call allowed 10 minutes failed at 5. Now the read waits for the server's timeout (plus
    a margin) when that is longer. Over SSE every answer comes on the event stream (the
    GET), whose read was held to 300 s (the SDK's, then ours) all the same; it gets the
    server's timeout and the margin too. The SDK's 300 s (and ours) are scaled down to 1 s
    here (and the server's timeout to 5 s) so the test takes seconds, not minutes."""
    import mcp.shared._httpx_utils

    import actors._http_answers

    monkeypatch.setattr(mcp.shared._httpx_utils, "MCP_DEFAULT_SSE_READ_TIMEOUT", 1.0)
    monkeypatch.setattr(actors._http_answers, "GET_READ_TIMEOUT", 1.0)
    await _answered_after_silence(transport, timeout=5, call_timeout=None)


async def test_a_call_given_longer_than_its_server_s_timeout_is_read_until_its_own_deadline(monkeypatch):
    """A call's own ``timeout=`` may be longer than its server's, and its POST's answer was
    read only as long as the server's timeout allowed (plus a margin): a silent call within
    its deadline failed at the read timeout, as a lost transport. Now each call's POST reads
    until that call's deadline (plus the margin). The SDK's 300 s is scaled down to 1 s and
    the 10 s margin to 0.5 s here, so the test takes seconds, not minutes. (Over SSE the
    answers' stream is opened at connect, before any call: it reads for the server's
    timeout, not a longer call's.)"""
    import mcp.shared._httpx_utils

    import actors._connection
    import actors._http_answers

    monkeypatch.setattr(mcp.shared._httpx_utils, "MCP_DEFAULT_SSE_READ_TIMEOUT", 1.0)
    monkeypatch.setattr(actors._connection, "READ_MARGIN", 0.5)
    monkeypatch.setattr(actors._http_answers, "READ_MARGIN", 0.5)
    await _answered_after_silence("streamable-http", timeout=0.5, call_timeout=20)


async def test_the_event_stream_keeps_the_sdk_s_silence_bound_when_posts_wait_longer():
    """A server allowed calls longer than the SDK's 300 s of silence has its POSTs read for
    that long; its event stream (the GET) got the same read timeout, so a dead stream went
    unnoticed for as long as the longest call (an hour, for a timeout of 3600 s; found by
    a review). The GET keeps the SDK's 300 s; a POST keeps what it was given."""
    import mcp.shared._httpx_utils
    from actors._http_answers import GET_READ_TIMEOUT, HttpAnswerWatch

    assert GET_READ_TIMEOUT == mcp.shared._httpx_utils.MCP_DEFAULT_SSE_READ_TIMEOUT
    watch = HttpAnswerWatch(lambda: None)
    timeout = httpx2.Timeout(30.0, read=3610.0).as_dict()
    get = httpx2.Request("GET", "http://127.0.0.1:1/mcp", extensions={"timeout": timeout})
    post = httpx2.Request("POST", "http://127.0.0.1:1/mcp", extensions={"timeout": timeout})
    await watch.on_request(get)
    await watch.on_request(post)
    assert get.extensions["timeout"]["read"] == GET_READ_TIMEOUT and get.extensions["timeout"]["connect"] == 30.0
    assert post.extensions["timeout"]["read"] == 3610.0


class RawHttp:
    """A handshake-era streamable-HTTP MCP server written on raw trio sockets (HTTP/1.1 with
    keep-alive), for misbehaviour the SDK's server cannot show: each request goes to
    ``answer(conn, method, message, headers)``, which returns True when it answered;
    otherwise the handshake, ``tools/list`` (one tool, ``echo``), ``ping`` and notifications
    are answered as a sound server does, and ``echo`` echoes. A DELETE is answered 200
    unless ``hang_deletes``; each incarnation's session is ``s<n>``."""

    def __init__(self, answer=None) -> None:
        self.answer = answer
        self.port = 0
        self.sessions = 0
        self.hang_deletes = False
        self.deletes = 0

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve_one, listeners)

    @staticmethod
    async def send(stream, status: int, body: bytes = b"", kind: str = "application/json", **headers: str) -> None:
        head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n"
        if body:
            head += f"content-type: {kind}\r\n"
        head += "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
        await stream.send_all(head.encode() + b"\r\n" + body)

    async def _serve_one(self, stream) -> None:
        import json

        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                verb = lines[0].split(" ")[0]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                while len(buffer) < int(headers.get("content-length", "0")):
                    buffer += await stream.receive_some(65536)
                size = int(headers.get("content-length", "0"))
                body, buffer = buffer[:size], buffer[size:]
                message = json.loads(body) if body else {}
                method = message.get("method")
                if self.answer is not None and await self.answer(stream, verb, message, headers):
                    continue
                session = f"s{self.sessions}"
                if verb == "DELETE":
                    self.deletes += 1
                    if self.hang_deletes:
                        await trio.sleep_forever()
                    await self.send(stream, 200)
                elif verb != "POST":
                    await self.send(stream, 405, allow="POST")
                elif method == "server/discover":
                    error = {"code": -32601, "message": "Method not found"}
                    await self.send(stream, 200, json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error}).encode())
                elif "id" not in message:
                    await self.send(stream, 202)
                else:
                    if method == "initialize":
                        self.sessions += 1
                        session = f"s{self.sessions}"
                        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                  "serverInfo": {"name": "raw", "version": "0"}}
                    elif method == "tools/list":
                        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
                        result = {"tools": [{"name": "echo", "inputSchema": schema}]}
                    elif method == "tools/call":
                        said = message["params"]["arguments"].get("text", "")
                        result = {"content": [{"type": "text", "text": said}], "isError": False}
                    else:
                        result = {}
                    answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
                    await self.send(stream, 200, answer, mcp_session_id=session)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass


async def test_a_remote_server_that_never_answers_the_session_s_delete_is_restarted_after_connect_timeout():
    """A handshake-era server hangs a call (``hang_threshold`` 1 ends the incarnation), and
    never answers the DELETE the SDK sends to end the session as the incarnation ends (a
    proxy that takes it and holds it, say). The SDK gave that DELETE the read timeout of
    every POST (at least 300 s): the next incarnation did not start for that long, every
    call meanwhile got ``CircuitOpen``, and the exit's reason was then a
    ``ClosedResourceError`` (cause "other") instead of the hang. Now the DELETE waits
    ``connect_timeout`` at most, and the death keeps its reason and cause."""

    async def hang_calls(stream, verb, message, headers) -> bool:
        if message.get("method") == "tools/call" and message["params"]["arguments"].get("text") == "hang":
            await trio.sleep_forever()
        return False

    server = RawHttp(hang_calls)
    server.hang_deletes = True
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        spec = ServerSpec(
            name="gw", url=server.url(), transport="streamable-http", connect_timeout=2.0, hang_threshold=1,
            retry=RetryPolicy(max_retries=0), health_check_interval=None, shutdown_timeout=1.0,
            backoff=BackoffPolicy(min=0.1, max=0.5, jitter=0.0),
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("echo", {"text": "hang"}, server="gw", timeout=0.5)
            with trio.fail_after(20):  # was: some 300 s
                await wait_until(lambda: connection_status(sup, "gw").restarts == 1, timeout=20, what="a restart")
                await sup.wait_connected("gw", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "back"}, server="gw", timeout=10)) == "back"
            assert server.deletes >= 1
            assert (await sup.metrics_snapshot()).server("gw").exits == {"hang": 1}
            assert "1 consecutive calls timed out (hang_threshold)" in sup.link("gw").last_error
        nursery.cancel_scope.cancel()


async def _checked(pieces: list[bytes], asked) -> tuple[bytes, str | None]:
    from actors._http_answers import NotItsEvent, _AnswerIdChecked

    out = []
    try:
        async for piece in _AnswerIdChecked(_Pieces(pieces), asked, 1 << 20):
            out.append(piece)
    except NotItsEvent as exc:
        return b"".join(out), str(exc)
    return b"".join(out), None


@pytest.mark.parametrize(
    "stream, passed",
    [
        (b'event: message\ndata: {"jsonrpc": "2.0", "id": 7, "result": {}}\n\n', None),
        (b'data: {"jsonrpc": "2.0",\r\ndata: "id": "7", "result": {}}\r\n\r\n', None),  # two data lines, CRLF
        (b'data: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}\r\r'
         b'data: {"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {}}\r\r'
         b'data: {"jsonrpc": "2.0", "id": 7, "error": {"code": 1, "message": "no"}}\r\r', None),
        (b'id: 1\nretry: 0\ndata: \n\nevent: other\ndata: {"id": 8, "result": {}}\n\n: {"id": 8}\n\n', None),
        (b'data: not json\n\n', None),  # the SDK's own parse error says so
        (b'data: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}\n\n'
         b'data: {"jsonrpc": "2.0", "id": 8, "result": {}}\n\n',
         b'data: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}\n\n'
         b'data: {"jsonrpc": "2.0", "id": 8, "result": {}}\n'),
        (b'data: {"jsonrpc": "2.0", "id": 8, "result": {}}\r\n\r\n', b'data: {"jsonrpc": "2.0", "id": 8, "result": {}}\r\n'),
        (b'data:{"jsonrpc": "2.0", "result": {}}\r\r', b'data:{"jsonrpc": "2.0", "result": {}}\r'),  # no id
    ],
    ids=["its-own", "crlf-two-lines", "notification-question-error", "no-message-events", "not-json",
         "another-after-a-notification", "another-crlf", "no-id"],
)
async def test_an_answer_event_for_another_id_is_stopped_before_its_end_wherever_the_stream_is_cut(stream, passed):
    """Each message event that is a JSON-RPC answer on request 7's stream is checked for
    its id: one for another id (or none) raises before the line that ends it passes (the
    SDK never dispatches it); everything else passes on as it came, however the stream is
    cut into pieces."""
    expected = (stream, None) if passed is None else (passed, "for another request")
    cuts = [[stream]] + [[stream[:cut], stream[cut:]] for cut in range(len(stream) + 1)]
    cuts.append([stream[i : i + 1] for i in range(len(stream))])
    for pieces in cuts:
        out, why = await _checked(pieces, 7)
        assert out == expected[0], pieces
        assert (why is None) == (expected[1] is None) and (why is None or expected[1] in why), (pieces, why)


async def test_a_request_s_event_ids_are_noted_for_its_resumption_until_its_answer_comes():
    """Each ``id:`` on request 7's answer stream is noted as 7's, in place of the one
    before (a GET resuming after it is checked for 7's answer, and replaces the id it
    resumed after); its answer forgets them; at most ``MAX_RESUMES`` are kept, the latest
    ones, and one busy stream holds one (before, a call with many events pushed every
    other call's out: a review)."""
    from actors._http_answers import MAX_RESUMES, _AnswerIdChecked

    async def read(stream: bytes, asked, resumes, after=None) -> None:
        async for _ in _AnswerIdChecked(_Pieces([stream]), asked, 1 << 20, resumes, after):
            pass

    resumes: dict[str, object] = {"e0": 3}
    await read(b'id: e1\ndata: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}\n\nid:\n\n', 7, resumes)
    assert resumes == {"e0": 3, "e1": 7}
    await read(b"id: e1b\n\n", 7, resumes, after="e1")  # resumed after e1: e1b replaces it
    assert resumes == {"e0": 3, "e1b": 7}
    await read(b'id: e2\r\ndata: {"jsonrpc": "2.0", "id": "7", "result": {}}\r\n\r\n', 7, resumes)
    assert resumes == {"e0": 3}
    await read(b"".join(b"id: %d\n\n" % i for i in range(MAX_RESUMES + 5)), 8, resumes)
    assert resumes == {"e0": 3, str(MAX_RESUMES + 4): 8}  # one busy stream: its latest id only
    for stream in range(MAX_RESUMES + 5):  # as many streams: the oldest go
        await read(b"id: s%d\n\n" % stream, 100 + stream, resumes)
    assert len(resumes) == MAX_RESUMES and "e0" not in resumes and resumes[f"s{MAX_RESUMES + 4}"] == MAX_RESUMES + 104


async def test_two_calls_whose_event_streams_carry_each_other_s_answer_both_fail_invalid_result():
    """Two calls in flight on a handshake-era streamable-HTTP server, each answered on its
    own POST's event stream with the other's answer (its id). The SDK rewrote each
    answer's id to its stream's request: each call got the other's result as its own. Now
    each fails ``InvalidResult``, as a JSON body for another id does, and the connection
    goes on."""
    import json

    pending: list[tuple[object, object]] = []
    both = trio.Event()

    async def swap(stream, verb, message, headers) -> bool:
        if message.get("method") != "tools/call" or message["params"]["arguments"].get("text") not in ("a", "b"):
            return False
        pending.append((stream, message["id"]))
        if len(pending) == 2:
            both.set()
        await both.wait()
        other = next(rid for s, rid in pending if s is not stream)
        said = message["params"]["arguments"]["text"]
        result = {"content": [{"type": "text", "text": f"answer for {said}"}], "isError": False}
        event = json.dumps({"jsonrpc": "2.0", "id": other, "result": result})
        body = f"event: message\ndata: {event}\n\n".encode()
        await RawHttp.send(stream, 200, body, "text/event-stream", mcp_session_id=f"s{server.sessions}")
        return True

    server = RawHttp(swap)
    async with supervising(server) as sup:
        incarnation = sup.link("gw").conn
        outcomes: dict[str, object] = {}

        async def call(said: str) -> None:
            try:
                outcomes[said] = text(await sup.call_tool("echo", {"text": said}, server="gw", timeout=60))
            except Exception as exc:
                outcomes[said] = exc

        with trio.fail_after(15):  # was: each call answered at once, with the other's answer
            async with trio.open_nursery() as calls:
                calls.start_soon(call, "a")
                calls.start_soon(call, "b")
        for said in ("a", "b"):
            failure = outcomes[said]
            assert isinstance(failure, InvalidResult), (said, failure)
            assert failure.message.startswith("tool 'echo' on server 'gw': "), failure.message
            assert "for another request" in failure.message, failure.message
        assert sup.link("gw").conn is incarnation, "the connection was restarted"
        assert text(await sup.call_tool("echo", {"text": "c"}, server="gw", timeout=10)) == "c"


@pytest.mark.parametrize("whose", ["another", "its-own"])
async def test_an_answer_stream_resumed_after_an_event_id_is_checked_for_the_call_s_answer_too(whose):
    """A call's answer stream (its POST's) ends after one event with an SSE ``id:``; the
    SDK resumes it with a GET that carries ``Last-Event-ID``, and rewrites every answer
    there to the call's id as well. An answer for another request (999) on the resumed
    stream was handed to the call as its own. Now it fails the call ``InvalidResult``, as
    on the POST's stream, and the connection goes on; the call's own answer there still
    answers it."""
    import json

    asked: list[object] = []
    resumed: list[str] = []

    async def resume(stream, verb, message, headers) -> bool:
        if verb == "POST" and message.get("method") == "tools/call" and message["params"]["arguments"].get("text") == "a":
            asked.append(message["id"])
            note = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}})
            body = f"id: e1\nretry: 0\nevent: message\ndata: {note}\n\n".encode()
            await RawHttp.send(stream, 200, body, "text/event-stream", mcp_session_id=f"s{server.sessions}")
            return True
        if verb == "GET" and headers.get("last-event-id") == "e1":
            resumed.append("e1")
            result = {"content": [{"type": "text", "text": f"{whose}'s answer"}], "isError": False}
            answer = {"jsonrpc": "2.0", "id": 999 if whose == "another" else asked[-1], "result": result}
            body = f"id: e2\nevent: message\ndata: {json.dumps(answer)}\n\n".encode()
            await RawHttp.send(stream, 200, body, "text/event-stream")
            return True
        return False

    server = RawHttp(resume)
    async with supervising(server) as sup:
        incarnation = sup.link("gw").conn
        with trio.fail_after(15):
            if whose == "another":  # was: the call answered with "another's answer"
                with pytest.raises(InvalidResult) as failed:
                    await sup.call_tool("echo", {"text": "a"}, server="gw", timeout=10)
                assert "for another request" in failed.value.message, failed.value.message
            else:
                assert text(await sup.call_tool("echo", {"text": "a"}, server="gw", timeout=10)) == "its-own's answer"
        assert resumed == ["e1"], resumed
        assert sup.link("gw").conn is incarnation, "the connection was restarted"
        assert text(await sup.call_tool("echo", {"text": "c"}, server="gw", timeout=10)) == "c"


@contextlib.asynccontextmanager
async def supervising(server: RawHttp) -> AsyncIterator[Supervisor]:
    """``server`` served, and supervised as `strict_raw`'s ``gw``, connected."""
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with Supervisor([strict_raw(server)]) as sup:
            await sup.wait_connected("gw", timeout=20)
            yield sup
        nursery.cancel_scope.cancel()


def strict_raw(server: RawHttp) -> ServerSpec:
    return ServerSpec(
        name="gw", url=server.url(), transport="streamable-http", hang_threshold=1, connect_timeout=5.0,
        retry=RetryPolicy(max_retries=0), health_check_interval=None, shutdown_timeout=1.0,
    )


async def test_an_sse_transport_that_fails_in_a_task_of_its_own_is_a_transport_death_named_as_such():
    """A legacy SSE server sends an event over the SDK's limit (1 MiB): the SDK's reader
    task fails (``SSEError``), which ends the SDK's transport from outside the calls. The
    call in flight was told the server "died while the call was in flight (stopped by the
    supervisor)", the breaker's reason said the same, and the exit counted as cause
    "other". Now all of them name the transport's error, and the exit's cause is
    "transport"."""
    async with HttpEcho("--sse", "--blob") as server:
        spec = ServerSpec(
            name="gw", url=server.url("/sse"), transport="sse", hang_threshold=100,
            retry=RetryPolicy(max_retries=0), health_check_interval=None,
            backoff=BackoffPolicy(min=0.1, max=1.0, jitter=0.0),
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            with trio.fail_after(20):
                with pytest.raises(ServerCrashed) as crashed:
                    await sup.call_tool("blob", {"kib": 2048}, server="gw", timeout=15)
            message = crashed.value.message
            assert "stopped by the supervisor" not in message, message
            assert "transport error: " in message and "SSEError" in message, message
            await wait_until(lambda: connection_status(sup, "gw").restarts >= 1, timeout=20, what="a restart")
            exits = (await sup.metrics_snapshot()).server("gw").exits
            assert exits.get("transport") == 1 and "other" not in exits, exits


@pytest.mark.parametrize(
    "mode, failure, words",
    [
        ("accepted-202", ServerCrashed, "answered the call's POST with HTTP 202 Accepted"),
        ("no-content-204", InvalidResult, "no JSON-RPC answer (content type: none;"),
        ("wrong-type", InvalidResult, "no JSON-RPC answer (content type: text/plain;"),
        ("redirect-elsewhere", ServerUnavailable, "answered the call's POST with a redirect, so the call did not run"),
        ("redirect-to-itself", ServerUnavailable, "answered the call's POST with a redirect, so the call did not run"),
    ],
)
async def test_an_http_answer_to_a_call_that_is_no_json_rpc_answer_is_the_server_s_typed_failure(mode, failure, words):
    """A call's POST answered 202 Accepted, 204 No Content, a 200 in plain text or a
    redirect: the SDK stood in a JSON-RPC error of its own ("Unexpected content type",
    "Redirect to ... not followed"), which passed for the tool's own error (not retried,
    a success for the breaker). Now each is a typed failure of the server; and a POST
    redirected to its own URL is sent ``MAX_REDIRECTS`` + 1 (4) times at most (httpx
    followed 20 hops: 21 sends)."""
    from actors._connection import MAX_REDIRECTS

    posts = []

    async def misanswer(stream, verb, message, headers) -> bool:
        if message.get("method") != "tools/call" or message["params"]["arguments"].get("text") != "x":
            return False
        posts.append(message["id"])
        if mode == "accepted-202":
            await RawHttp.send(stream, 202)
        elif mode == "no-content-204":
            await RawHttp.send(stream, 204)
        elif mode == "wrong-type":
            await RawHttp.send(stream, 200, b"ok", "text/plain")
        elif mode == "redirect-elsewhere":
            await RawHttp.send(stream, 307, location="http://127.0.0.1:1/mcp")
        else:
            await RawHttp.send(stream, 307, location="/mcp")
        return True

    server = RawHttp(misanswer)
    async with supervising(server) as sup:
        incarnation = sup.link("gw").conn
        with trio.fail_after(15):
            with pytest.raises(failure) as failed:
                await sup.call_tool("echo", {"text": "x"}, server="gw", timeout=10)
        assert words in failed.value.message, failed.value.message
        assert len(posts) <= MAX_REDIRECTS + 1, posts
        assert sup.link("gw").conn is incarnation, "the connection was restarted"
        assert text(await sup.call_tool("echo", {"text": "y"}, server="gw", timeout=10)) == "y"


@pytest.mark.parametrize("hops", [1, 2, 3])
async def test_a_call_s_post_still_follows_a_chain_of_redirects_within_the_endpoint_s_origin(hops):
    """Redirects within the endpoint's origin are still followed, a chain of them too
    (``MAX_REDIRECTS``, 3): a 308 (http to https, say) then a 307 (a trailing slash
    added) was the common two; only one was followed, and the call failed
    ``ServerUnavailable``. The call is answered after them."""
    posts = []

    async def redirect_hops(stream, verb, message, headers) -> bool:
        if message.get("method") != "tools/call":
            return False
        posts.append(message["id"])
        if len(posts) <= hops:
            await RawHttp.send(stream, 308 if len(posts) % 2 else 307, location="/mcp/" if len(posts) % 2 else "/mcp")
            return True
        return False

    server = RawHttp(redirect_hops)
    async with supervising(server) as sup:
        assert text(await sup.call_tool("echo", {"text": "y"}, server="gw", timeout=10)) == "y"
        assert len(posts) == hops + 1, posts


async def test_garbage_on_a_remote_event_stream_is_named_as_such_not_as_stdout():
    """A streamable-HTTP server's event stream (the GET) carries events that are no
    JSON-RPC, past ``garbage_threshold``: the incarnation ends, as for a stdio server's
    garbled stdout, and the reason said "lines in a row on stdout", which such a server
    does not have. Now it names the event stream."""

    go = trio.Event()  # set once connected and a call was answered: no answer comes between

    async def garbled_stream(stream, verb, message, headers) -> bool:
        if verb != "GET":
            return False
        await go.wait()
        events = b"".join(b"event: message\ndata: {not json %d\n\n" % i for i in range(3))
        await RawHttp.send(stream, 200, events, "text/event-stream")
        await trio.sleep_forever()

    server = RawHttp(garbled_stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        spec = ServerSpec(
            name="gw", url=server.url(), transport="streamable-http", garbage_threshold=2, health_check_interval=None,
            backoff=BackoffPolicy(min=5.0, max=5.0, jitter=0.0), shutdown_timeout=1.0, connect_timeout=5.0,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("gw", timeout=20)
            assert text(await sup.call_tool("echo", {"text": "x"}, server="gw", timeout=10)) == "x"
            go.set()
            await wait_until(
                lambda: "garbage_threshold" in (sup.link("gw").last_error or ""), timeout=20, what="the garbled stream's end"
            )
            reason = sup.link("gw").last_error
            assert reason == "3 messages in a row on its event stream were not JSON-RPC (garbage_threshold)", reason
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "events, connect_timeout, said, unsaid",
    [
        (b"event: endpoint\ndata: /messages?session_id=1\n\n"
         b"event: message\ndata: {not json 0\n\nevent: message\ndata: {not json 1\n\n",
         2.0, ["it sent 2 messages on its event stream that are not JSON-RPC"], ["stdout"]),
        (b": hello\r\nevent: endpoint\r\ndata: http://127.0.0.1:1/messages?session_id=1\r\n\r\n",
         30.0, ["endpoint event names http://127.0.0.1:1/messages", "another origin"], ["connect_timeout"]),
    ],
    ids=["garbage-while-connecting", "endpoint-on-another-origin"],
)
async def test_a_legacy_sse_server_s_bad_handshake_is_named_for_what_it_is(events, connect_timeout, said, unsaid):
    """Two handshakes of a legacy SSE server gone wrong, each failure named for what it was
    (a raw server on trio sockets: the SDK's cannot misbehave so):

    - its event stream carries events that are no JSON-RPC, and no answer comes by
      ``connect_timeout``: the failure said it "wrote 2 lines on stdout", with stdio's hint
      of a banner; it names the event stream now;
    - its ``endpoint`` event names another origin: the SDK refuses it at once, but its error
      went where nobody read it, so the attempt waited out ``connect_timeout`` (30 s here)
      and said only that; it ends at once now, naming the endpoint (its session id redacted).
    """

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = await stream.receive_some(65536)
            if request.startswith(b"GET"):
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + events)
                await trio.sleep_forever()
            await stream.send_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")  # answered never

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        spec = ServerSpec(
            name="gw", url=f"http://127.0.0.1:{port}/sse", transport="sse", health_check_interval=None,
            backoff=BackoffPolicy(min=30.0, max=30.0, jitter=0.0), shutdown_timeout=1.0,
            connect_timeout=connect_timeout,
        )
        async with Supervisor([spec]) as sup:
            with trio.fail_after(10):  # past it, the foreign endpoint waited out its connect_timeout
                while not sup.link("gw").last_error:
                    await trio.sleep(0.05)
            reason = sup.link("gw").last_error
            assert all(words in reason for words in said) and not any(words in reason for words in unsaid), reason
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("answers", ["sse", "json"])
async def test_a_remote_answer_over_max_message_bytes_is_counted_as_dropped(answers):
    """A remote answer over ``max_message_bytes`` fails its call (``InvalidResult``), and
    was not counted where a stdio server's is (``oversized_dropped`` in the status, the
    metrics' gauge): it stayed 0. Now each one counts."""
    flags = {"sse": ("--handshake-only",), "json": ("--json-response",)}
    async with HttpEcho(*flags[answers], "--blob") as server:
        spec = ServerSpec(
            name="tight", url=server.url(), transport="streamable-http", max_message_bytes=64 * 1024,
            retry=RetryPolicy(max_retries=0), health_check_interval=None,
        )
        async with Supervisor([spec]) as sup:
            await sup.wait_connected("tight", timeout=20)
            for _ in range(2):
                with pytest.raises(InvalidResult, match="over max_message_bytes"):
                    await sup.call_tool("blob", {"kib": 128}, server="tight", timeout=30)
            assert sup.link("tight").oversized == 2
            assert sup.link("tight").detail()["oversized_dropped"] == 2
