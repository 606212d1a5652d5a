"""The stdio wire (actors._stdio): large lines, lines over max_message_bytes, blank lines,
lines that are not UTF-8, and messages the SDK's serializer cannot encode, against real
server processes; then the framing alone, under every way the reads may cut the stream.

How fast a large answer comes through is measured in ``bench/large_answer.py``, not here.
"""

from __future__ import annotations

import json
from typing import Any
import os
import signal
import subprocess
import sys
import tracemalloc

import anyio
import mcp_types
import pytest
import trio
from trio.testing import wait_all_tasks_blocked
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import MCPError
from mcp.shared.message import SessionMessage

from actors._pipes import PipeReader
from actors._stdio import MalformedRequest, OversizedRequest, oversized, read_messages, refusal
from conftest import server_spec, settled, wait_until
from protocol import BackoffPolicy, DeadlineExceeded, InvalidResult
from supervisor import Supervisor
from supervisor.__main__ import render_tree

MIB = 1024 * 1024


async def quiet(sup: Supervisor, name: str) -> int:
    """Wait until the server has nothing of its own left to write (`settled`): big.py's raw
    lines would interleave with it. Returns its pid."""
    await settled(sup, name)
    return sup.link(name).process.pid


def text(result) -> str:
    return result.content[0].text


async def test_a_large_answer_arrives_whole():
    spec = server_spec("big", "big.py")
    async with Supervisor([spec]) as sup:
        result = await sup.call_tool("blob", {"kib": 12 * 1024}, server="big", timeout=60)
        assert text(result) == "x" * (12 * MIB)
        assert text(await sup.call_tool("echo", {"text": "after"}, server="big", timeout=10)) == "after"


async def test_an_answer_over_max_message_bytes_fails_its_call_at_once_and_the_server_serves_on():
    """The answer is dropped as it streams in (never held whole): the call gets a typed
    failure that says how large the answer was, without waiting out its deadline, and the
    connection stays up: the next call is answered by the same process."""
    spec = server_spec("big", "big.py", max_message_bytes=MIB)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("big", timeout=30)
        pid = sup.link("big").process.pid
        with trio.fail_after(50):  # the call's own deadline is 60 s: this is no timeout
            with pytest.raises(InvalidResult, match=r"answer was \d+ bytes, over max_message_bytes \(1048576\); it was dropped"):
                await sup.call_tool("blob", {"kib": 2048}, server="big", timeout=60)
        assert text(await sup.call_tool("echo", {"text": "after"}, server="big", timeout=10)) == "after"
        assert sup.link("big").process.pid == pid
        assert sup.link("big").conn.garbage_lines == 0
        # The status says so, for whoever looks without the logs.
        (status,) = [line for line in render_tree(sup.status()).splitlines() if "connection:big" in line]
        assert "1 messages over max_message_bytes dropped" in status


@pytest.mark.parametrize(
    ("what", "garbage"),
    [("notification", 0), ("garbage", 1)],
)
async def test_a_line_over_max_message_bytes_is_dropped_and_the_wire_goes_on(what, garbage):
    """Written straight onto the wire in the middle of a call: a notification is dropped, a
    line that is no JSON-RPC counts as one garbage line. The call's own answer, the next
    line, comes through. The metrics count the drops over every incarnation (an operator
    alerts on them), here across a kill -9 and restart."""
    spec = server_spec("big", "big.py", max_message_bytes=MIB, backoff=BackoffPolicy(min=0.05, max=0.1, jitter=0.0))
    async with Supervisor([spec]) as sup:
        pid = await quiet(sup, "big")
        for _ in range(2):
            result = await sup.call_tool("shout", {"kib": 3 * 1024, "what": what}, server="big", timeout=30)
            assert text(result) == "done"
        assert sup.link("big").conn.garbage_lines == 2 * garbage
        assert sup.link("big").process.pid == pid
        assert sup.link("big").detail()["oversized_dropped"] == 2
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(30):
            while sup.link("big").process.pid == pid or sup.link("big").conn is None:
                await trio.sleep(0.05)
        await quiet(sup, "big")
        await sup.call_tool("shout", {"kib": 3 * 1024, "what": what}, server="big", timeout=30)
        assert sup.link("big").detail()["oversized_dropped"] == 1  # this incarnation's
        server = (await sup.metrics_snapshot()).server("big")
        assert (server.oversized_dropped, server.garbage_lines) == (3, 3 * garbage)
        exposition = (await sup.metrics_text()).decode()
        assert 'mcp_supervisor_server_dropped_messages_total{reason="over_max_message_bytes",server="big"} 3.0' in exposition
        assert f'mcp_supervisor_server_dropped_messages_total{{reason="not_json_rpc",server="big"}} {3.0 * garbage}' in exposition


async def test_a_line_that_is_not_utf8_is_garbage_not_the_end_of_the_connection():
    """The SDK's transport decoded stdout strictly as one stream: a byte that is not UTF-8
    ended its reader, and with it the connection."""
    spec = server_spec("big", "big.py")
    async with Supervisor([spec]) as sup:
        pid = await quiet(sup, "big")
        assert text(await sup.call_tool("shout", {"kib": 0, "what": "invalid-utf8"}, server="big", timeout=10)) == "done"
        assert text(await sup.call_tool("echo", {"text": "after"}, server="big", timeout=10)) == "after"
        assert sup.link("big").conn.garbage_lines == 1
        assert sup.link("big").process.pid == pid


@pytest.mark.parametrize(
    ("text_json", "text"),
    [
        (rb"cut at \ud83d", "cut at \ufffd"),  # half an emoji at the end
        (rb"\ude00 low, \ud83d\ude00 whole", "\ufffd low, \U0001f600 whole"),
        (rb"\\\ud83d", "\\\ufffd"),  # an escaped backslash, then the lone half
        (rb"\\ud83d", "\\ud83d"),  # no escape at all: a backslash and text
    ],
)
async def test_half_an_emoji_costs_one_character_not_the_answer(text_json, text):
    """JSON allows a lone surrogate escape (``"\\ud83d"``: a JavaScript server that cuts a
    string in the middle of an emoji writes it), and the SDK's parser refuses it, with the
    whole line: the answer counted as garbage and its call waited out its deadline. It is
    read as U+FFFD now."""
    line = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"' + text_json + b'"}]}}'
    send, receive = anyio.create_memory_object_stream(10)
    await read_messages(_Chunks([line + b"\n"]), send, MIB, "s")
    assert receive.receive_nowait().message.result["content"][0]["text"] == text


async def test_half_an_emoji_from_a_real_server_is_answered():
    spec = server_spec("big", "big.py")
    async with Supervisor([spec]) as sup:
        await quiet(sup, "big")
        result = await sup.call_tool("half_emoji", {}, server="big", timeout=10)
        assert text(result) == "cut at \ufffd"  # its own answer, not the SDK's later one
        assert sup.link("big").conn.garbage_lines == 0


async def test_blank_lines_are_no_garbage():
    """A server that ends its lines with blank ones (or ``\\r\\n``): the SDK's transport
    counted each as a line that is not JSON-RPC, and past garbage_threshold in a row the
    server was restarted."""
    spec = server_spec("airy", "big.py", garbage_threshold=3)
    async with Supervisor([spec]) as sup:
        pid = await quiet(sup, "airy")
        assert text(await sup.call_tool("shout", {"kib": 4, "what": "blank"}, server="airy", timeout=10)) == "done"
        assert sup.link("airy").conn.garbage_lines == 0
        assert sup.link("airy").process.pid == pid


async def test_a_request_the_serializer_cannot_encode_is_answered_with_an_error_not_written():
    """Past the supervisor's own checks (straight through the SDK client): the SDK's writer
    raised and ended the connection; the wire now answers the request with an error and
    writes nothing, so the call is answered and the connection lives on."""
    spec = server_spec("strict", "echo.py")
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("strict", timeout=30)
        client = sup.link("strict").conn.client
        pid = sup.link("strict").process.pid
        with trio.fail_after(10):
            with pytest.raises(MCPError, match="cannot be sent as JSON: .*surrogates not allowed") as raised:
                await client.call_tool("echo", {"text": "half an emoji: \ud83d"})
        assert raised.value.error.code == mcp_types.INVALID_PARAMS
        assert text(await sup.call_tool("echo", {"text": "after"}, server="strict", timeout=10)) == "after"
        assert sup.link("strict").process.pid == pid


async def test_a_line_without_end_is_never_held_in_memory():
    """A writer that sends 64 MiB with no newline, then a newline and a valid message: with
    max_message_bytes 1 MiB the reader holds no more than a few read chunks at any time
    (tracemalloc's peak), and the message after the long line is delivered."""
    script = (
        "import os, sys\n"
        "block = b'z' * (1024 * 1024)\n"
        "for _ in range(64):\n"
        "    sys.stdout.buffer.write(block)\n"
        "sys.stdout.buffer.write(b'\\n{\"jsonrpc\": \"2.0\", \"method\": \"notifications/initialized\"}\\n')\n"
    )
    process = await trio.lowlevel.open_process([sys.executable, "-c", script], stdout=subprocess.PIPE)
    send, receive = anyio.create_memory_object_stream(0)
    received = []

    async def take() -> None:
        async with receive:
            async for message in receive:
                received.append(message)

    tracemalloc.start()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take)
                await read_messages(process.stdout, send, MIB, "endless")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await process.wait()
    assert peak < 4 * MIB, f"the reader held {peak} bytes at its peak"
    assert len(received) == 2
    assert isinstance(received[0], ValueError)  # the long line: over the limit, no JSON-RPC answer
    assert "67108864 bytes, over max_message_bytes (1048576)" in str(received[0])
    assert received[1].message.method == "notifications/initialized"


async def test_large_requests_sent_at_once_reach_the_server_whole_and_apart():
    """The session's messages are written by the tasks that send them (`PipeWriter`), and
    a request of 300 KiB takes several writes through a 64 KiB pipe: one sender writes
    at a time, so no line is cut into by another."""
    spec = server_spec("echo", "echo.py", max_concurrency=8)
    texts = [chr(ord("a") + i) * (300 * 1024) for i in range(6)]
    answers: dict[int, str] = {}
    async with Supervisor([spec]) as sup:
        pid = await quiet(sup, "echo")

        async def call(i: int) -> None:
            answers[i] = text(await sup.call_tool("echo", {"text": texts[i]}, server="echo", timeout=30))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(len(texts)):
                    nursery.start_soon(call, i)
        assert sup.link("echo").process.pid == pid, "no restart"
    assert [answers[i] == texts[i] for i in range(len(texts))] == [True] * len(texts)


async def test_a_sender_cancelled_half_way_leaves_its_line_whole_and_one_not_begun_sends_nothing(tmp_path):
    """The server stops reading (SIGSTOP): a 1 MiB request fills the pipe and its caller
    times out half-way; the rest of its line is written once the server reads again, so
    the next call is understood. A call that waited for its turn meanwhile and timed out
    sent nothing: the server never ran it."""
    log = tmp_path / "exec.log"
    spec = server_spec("echo", "echo.py", env={"EXEC_LOG": str(log)})
    async with Supervisor([spec]) as sup:
        pid = await quiet(sup, "echo")
        os.kill(pid, signal.SIGSTOP)
        try:
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:

                    async def big() -> None:
                        with pytest.raises(DeadlineExceeded):
                            await sup.call_tool("echo", {"text": "x" * MIB}, server="echo", timeout=0.5)

                    async def note() -> None:
                        with pytest.raises(DeadlineExceeded):
                            await sup.call_tool("write_note", {"text": "never"}, server="echo", timeout=0.5)

                    nursery.start_soon(big)
                    await trio.sleep(0.1)  # the big line holds the pipe
                    nursery.start_soon(note)
        finally:
            os.kill(pid, signal.SIGCONT)
        with trio.fail_after(30):
            assert text(await sup.call_tool("echo", {"text": "after"}, server="echo", timeout=20)) == "after"
            assert sup.link("echo").process.pid == pid, "the same process, its wire still sound"
    assert not log.exists() or "never" not in log.read_text()


async def test_a_server_that_dies_while_the_rest_of_a_line_waits_is_restarted_like_any_other(caplog):
    """The rest of a line whose sender was cancelled half-way is written by a task; when the
    server dies meanwhile (stdin broken), that task ends quietly and the server is
    restarted as after any death: nothing of the broken write escapes as an error."""
    spec = server_spec("echo", "echo.py", backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0))
    async with Supervisor([spec]) as sup:
        pid = await quiet(sup, "echo")
        os.kill(pid, signal.SIGSTOP)
        with trio.fail_after(30):
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("echo", {"text": "x" * MIB}, server="echo", timeout=0.5)
            os.kill(pid, signal.SIGKILL)
            await wait_until(lambda: sup.link("echo").conn is not None and sup.link("echo").process.pid != pid,
                             timeout=20, what="a new incarnation")
            assert text(await sup.call_tool("echo", {"text": "after"}, server="echo", timeout=20)) == "after"
    assert not [r for r in caplog.records if "BrokenResourceError" in r.getMessage() or r.exc_info], [
        r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")
    ]


def _pipe() -> tuple[trio.lowlevel.FdStream, int]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    return trio.lowlevel.FdStream(read_fd), write_fd


PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'


async def test_a_pipe_reader_cancelled_while_reading_loses_nothing():
    """The session reads the pipe itself (`PipeReader`): a receive cancelled while bytes
    were there must not have read them and dropped them."""
    stdout, write_fd = _pipe()
    async with trio.open_nursery() as nursery:
        reader = PipeReader(stdout, nursery, MIB, "s")
        os.write(write_fd, PING)
        got = None
        with trio.CancelScope() as scope:
            scope.cancel()
            got = await reader.receive()
        with trio.fail_after(5):
            got = got or await reader.receive()
        assert got.message.method == "ping"
        os.close(write_fd)
        with trio.fail_after(5), pytest.raises(anyio.EndOfStream):
            await reader.receive()
        reader.close()


async def test_a_pipe_reader_waiting_for_the_server_takes_our_own_answer_and_sees_the_end():
    """What the writer hands the session (an error answer to a request it could not
    encode, the end when stdin broke) reaches a session that waits for the server's next
    line, at once."""
    stdout, write_fd = _pipe()
    answer = refusal(MalformedRequest(7, mcp_types.INVALID_PARAMS, "no"))
    got = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            reader = PipeReader(stdout, nursery, MIB, "s")

            async def receive() -> None:
                got.append(await reader.receive())
                with pytest.raises(anyio.EndOfStream):
                    await reader.receive()
                got.append("end")

            nursery.start_soon(receive)
            await wait_all_tasks_blocked()  # it waits for the pipe
            reader.inject(answer)
            await wait_all_tasks_blocked()
            assert got == [answer]
            reader.end()
            await wait_all_tasks_blocked()
            assert got == [answer, "end"]
            os.close(write_fd)
            reader.close()  # its drain ends at the pipe's end


async def test_a_pipe_reader_closed_by_the_session_drains_the_pipe():
    """Once the session stops reading, the rest of stdout is read and dropped, so a server
    blocked writing a full pipe can go on (and exit)."""
    stdout, write_fd = _pipe()
    try:
        async with trio.open_nursery() as nursery:
            reader = PipeReader(stdout, nursery, MIB, "s")
            reader.close()
            with pytest.raises(anyio.ClosedResourceError):
                await reader.receive()
            with trio.fail_after(10):  # 4 MiB through a 64 KiB pipe: only if someone reads
                await trio.to_thread.run_sync(os.write, write_fd, b"x" * (4 * MIB), abandon_on_cancel=True)
            nursery.cancel_scope.cancel()
    finally:
        os.close(write_fd)


async def test_a_server_whose_bytes_always_wait_does_not_starve_the_other_tasks():
    """The reader reads a pipe without trio's leading checkpoint (one scheduling round less
    per message), so it must yield itself when bytes were there at once: a server that
    floods stdout would otherwise hold the whole supervisor. Here 1 MiB of blank lines
    waits in a pipe (16 reads, none of which has to wait): another task gets a turn
    between reads."""
    import fcntl

    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, MIB)
    os.write(write_fd, b"\n" * MIB)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    send, receive = anyio.create_memory_object_stream(0)
    turns = 0
    reading = True

    async def other() -> None:
        nonlocal turns
        while reading:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with receive, trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await read_messages(trio.lowlevel.FdStream(read_fd), send, MIB, "flood")
        reading = False
    assert turns >= 16


@pytest.mark.parametrize(
    ("head", "tail", "answers"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"xx', b'xx"}]}}', 7),
        # serializers that put the id last (after the result, or just before "jsonrpc")
        (b'{"jsonrpc":"2.0","result":{"x":"yy', b'yy"},"id":12}', 12),
        (b'{"result":{"x":"yy', b'yy"},"id":"a\\"b","jsonrpc":"2.0"}', 'a"b'),
        (b'{"jsonrpc":"2.0","error":{"code":1,"message":"yy', b'yy"},"id":3}', 3),
        # the head ends inside the id: 10 cut to 1 (found by the cut-anywhere property test)
        (b'{"jsonrpc":"2.0","result":{"x":"yy"},"id":1', b'yy"},"id":10}', 10),
        # an id inside the result is not the answer's
        (b'{"jsonrpc":"2.0","result":{"x":{"id":5,"y":"zz', b'zz"}}}', None),
        (b'{"jsonrpc":"2.0","result":{"x":{"y":"zz', b'zz","id":5}}', None),
        # a request from the server names an id of its own: never taken for an answer
        (b'{"jsonrpc":"2.0","id":3,"params":{"x":"yy', b'yy"},"method":"sampling/createMessage"}', None),
        (b'{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{"x":"yy', b'yy"}}', None),
        (b"zzzzzzzz", b"zzzz", None),
    ],
)
def test_an_oversized_line_is_answered_only_when_it_is_surely_an_answer(head, tail, answers):
    """The stand-in for a dropped line: an error answer to the request it answered, when its
    first or last bytes show that it is an answer and to which request."""
    stand_in = oversized(head, tail, 50 * MIB, MIB, "s")
    if answers is None:
        assert not isinstance(stand_in, SessionMessage)
    else:
        assert isinstance(stand_in.message, mcp_types.JSONRPCError)
        assert stand_in.message.id == answers
        assert stand_in.message.error.data == {"max_message_bytes": MIB, "size": 50 * MIB}


@pytest.mark.parametrize(
    ("head", "tail", "stand_in"),
    [
        (b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"x":"yy', b'yy"}}', OversizedRequest(4, 50 * MIB, MIB)),
        # the method after the params: known from the end of the line
        (b'{"jsonrpc":"2.0","id":"r1","params":{"x":"yy', b'yy"},"method":"sampling/createMessage"}',
         OversizedRequest("r1", 50 * MIB, MIB)),
        # a notification has no one to answer: dropped
        (b'{"jsonrpc":"2.0","method":"notifications/message","params":{"x":"yy', b'yy"}}', None),
        # the id last, as the TypeScript SDK writes ({...request, jsonrpc, id}): it was dropped as a notification
        (b'{"method":"tools/call","params":{"x":"yy', b'yy"},"jsonrpc":"2.0","id":7}', OversizedRequest(7, 50 * MIB, MIB)),
    ],
)
def test_an_oversized_request_is_refused_with_its_id(head, tail, stand_in):
    """A request over the limit (the daemon's stdio client sending an image, a server's
    sampling request) is answered at once with an error naming its size; before, a server's
    request that long was dropped (its caller waited out its own timeout), and one whose
    method came after its params counted as a garbage line."""
    assert oversized(head, tail, 50 * MIB, MIB, "s") == stand_in
    if stand_in is not None:
        error = refusal(stand_in).message
        assert isinstance(error, mcp_types.JSONRPCError) and error.id == stand_in.id
        assert error.error.code == mcp_types.INVALID_REQUEST
        assert error.error.message == f"the request was {50 * MIB} bytes, over the limit of {MIB}; it was not read"


async def test_the_reader_hands_an_oversized_request_to_refuse_and_goes_on():
    line = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"x": "y" * 5000}}).encode()
    after = b'{"jsonrpc": "2.0", "method": "notifications/initialized"}'
    send, receive = anyio.create_memory_object_stream(10)
    refused: list[OversizedRequest] = []
    await read_messages(_Chunks([line[:3000], line[3000:] + b"\n" + after + b"\n"]), send, 1000, "s", refuse=refused.append)
    assert refused == [OversizedRequest(9, len(line), 1000)]
    assert receive.receive_nowait().message.method == "notifications/initialized"
    with pytest.raises(anyio.EndOfStream):  # nothing else was delivered
        receive.receive_nowait()


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":"str"}',
         MalformedRequest(5, mcp_types.INVALID_REQUEST, "the request is not valid JSON-RPC: params: Input should be an object")),
        (b'{"jsonrpc":"1.0","id":"r","method":"ping"}',
         MalformedRequest("r", mcp_types.INVALID_REQUEST, "the request is not valid JSON-RPC: jsonrpc: Input should be '2.0'")),
        (b'{"jsonrpc":"2.0","id":8,"method":"ping","params":{"t":"\xff"}}',
         MalformedRequest(8, mcp_types.PARSE_ERROR, "the request is not UTF-8 text (invalid start byte at byte 55)")),
        (b'\xef\xbb{"jsonrpc":"2.0","id":4,"method":"ping"}',
         MalformedRequest(4, mcp_types.PARSE_ERROR, "the request is not UTF-8 text (invalid continuation byte at byte 0)")),
        # A method that is no string: still a request (an id, no result or error), and the
        # peer waits on its id.
        (b'{"jsonrpc":"2.0","id":20,"method":5}',
         MalformedRequest(20, mcp_types.INVALID_REQUEST, "the request is not valid JSON-RPC: method: Input should be a valid string")),
        (b'{"jsonrpc":"2.0","id":"n","method":null,"params":{}}',
         MalformedRequest("n", mcp_types.INVALID_REQUEST, "the request is not valid JSON-RPC: method: Input should be a valid string")),
    ],
)
async def test_a_malformed_request_with_a_readable_id_is_refused_not_dropped(line, refused):
    """It was handed on as garbage: the SDK logs it, and the peer's call waited out its
    timeout for an answer that never came (over HTTP the same body gets its 400 at once)."""
    send, receive = anyio.create_memory_object_stream(10)
    got: list[Any] = []
    await read_messages(_Chunks([line + b"\n" + b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n']), send, 1000, "s", refuse=got.append)
    assert got == [refused]
    assert refusal(refused).message.error.code == refused.code and refusal(refused).message.id == refused.id
    assert receive.receive_nowait().message.method == "ping"  # the wire goes on
    with pytest.raises(anyio.EndOfStream):
        receive.receive_nowait()


async def test_each_request_of_a_batch_and_a_request_cut_short_are_refused_not_dropped():
    """A batch (a JSON array: MCP has none since 2025-06-18) and a request whose JSON ends
    early were garbage: no answer, and the peer's calls waited out their timeouts (over
    HTTP both get their error at once). Now each request in the batch gets an error, and a
    request cut short after its ``id`` and ``method`` a parse error."""
    batch = (b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},'
             b'{"jsonrpc":"2.0","id":"b","method":"tools/list"}]')
    cut = b'{"jsonrpc":"2.0","id":2,"method":"ping"'
    send, receive = anyio.create_memory_object_stream(10)
    got: list[MalformedRequest] = []
    await read_messages(_Chunks([batch + b"\n" + cut + b"\n" + b'{"jsonrpc":"2.0","id":3,"method":"ping"}\n']), send, 1000, "s",
                        refuse=got.append)
    assert [(r.id, r.code) for r in got] == [(1, mcp_types.INVALID_REQUEST), ("b", mcp_types.INVALID_REQUEST), (2, mcp_types.PARSE_ERROR)]
    assert "part of a batch" in got[0].reason and got[2].reason.startswith("the request is not JSON: ")
    assert receive.receive_nowait().message.id == 3  # the wire goes on
    with pytest.raises(anyio.EndOfStream):
        receive.receive_nowait()


async def test_a_last_line_without_a_newline_and_a_first_after_a_bom_are_read_not_dropped():
    """``printf '...'`` and many writers end a file without a newline: the last request of
    a client that piped one in was dropped at the end of its input, unanswered."""
    send, receive = anyio.create_memory_object_stream(10)
    bom = b"\xef\xbb\xbf"  # and a file that starts with a byte order mark (an editor's) loses nothing
    await read_messages(_Chunks([bom + b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n{"jsonrpc":"2.0",', b'"id":2,"method":"ping"}']),
                        send, 1000, "s")
    assert [receive.receive_nowait().message.id for _ in range(2)] == [1, 2]
    with pytest.raises(anyio.EndOfStream):
        receive.receive_nowait()
    # A server's pipe, the same: its last answer before it exits is not lost.
    stdout, write_fd = _pipe()
    async with trio.open_nursery() as nursery:
        reader = PipeReader(stdout, nursery, MIB, "s")
        os.write(write_fd, PING.rstrip(b"\n"))
        os.close(write_fd)
        with trio.fail_after(5):
            assert (await reader.receive()).message.method == "ping"
            with pytest.raises(anyio.EndOfStream):
                await reader.receive()
        reader.close()


async def test_other_lines_that_are_not_json_rpc_are_still_garbage():
    send, receive = anyio.create_memory_object_stream(10)
    got: list[Any] = []
    lines = [b"garbage", b"[1, 2]", b'{"jsonrpc":"2.0","method":"n","params":3}']  # no request with an id
    await read_messages(_Chunks([b"\n".join(lines) + b"\n"]), send, 1000, "s", refuse=got.append)
    assert got == []
    assert [isinstance(receive.receive_nowait(), Exception) for _ in lines] == [True, True, True]


async def test_a_clients_line_that_names_no_usable_id_is_answered_with_a_null_id():
    """Over ``--stdio`` a line that was no JSON, JSON of another shape, or a request whose id
    no answer can carry (the SDK's parser reads ``"id": 1.5`` as a notification) got no
    answer at all: the client waited out its timeout. JSON-RPC 2.0 answers each with an
    error whose id is null (over HTTP, a 400); a server's stray lines stay garbage."""
    lines = {
        b"not json": (mcp_types.PARSE_ERROR, "the line is not JSON ("),
        b'{"foo": 1}': (mcp_types.INVALID_REQUEST, "no JSON-RPC 2.0 message"),
        b"[]": (mcp_types.INVALID_REQUEST, "a batch (a JSON array) with no request in it"),
        b'[{"jsonrpc":"2.0","method":"notifications/x"}]': (mcp_types.INVALID_REQUEST, "a batch"),
        b'{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}': (mcp_types.INVALID_REQUEST, "the request's id 1.5 is no string"),
        b'{"jsonrpc":"2.0","id":null,"method":"tools/list"}': (mcp_types.INVALID_REQUEST, "the request's id null is no"),
        b'{"jsonrpc":"2.0","id":true,"method":5}': (mcp_types.INVALID_REQUEST, "the request's id true is no"),
        b'{"jsonrpc":"2.0","method":"notifications/x","params":3}':
            (mcp_types.INVALID_REQUEST, "the notification is not valid JSON-RPC: params: "),
        b'{"jsonrpc":"2.0","method":"n","params":{"t":"\\ud83d"}}': (mcp_types.INVALID_PARAMS, "lone surrogate"),
    }
    fine = [  # an "id" inside the params, and a BOM before it, are no reason to refuse
        b'\xef\xbb\xbf{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"id":1}}',
        b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
    ]
    send, receive = anyio.create_memory_object_stream(10)
    got: list[Any] = []
    await read_messages(_Chunks([b"\n".join([*lines, *fine]) + b"\n"]), send, 1000, "s", refuse=got.append, from_client=True)
    assert [(r.id, r.code) for r in got] == [(None, code) for code, _ in lines.values()]
    for refused, (_, why) in zip(got, lines.values(), strict=True):
        assert why in refused.reason, (refused, why)
    assert refusal(got[0]).message.id is None
    assert [receive.receive_nowait().message.method for _ in fine] == ["notifications/cancelled", "ping"]
    with pytest.raises(anyio.EndOfStream):
        receive.receive_nowait()
    # Over the limit and no request: refused the same way (a notification is only dropped).
    send, receive = anyio.create_memory_object_stream(10)
    got.clear()
    long = b'{"jsonrpc":"2.0","method":"n","params":{"t":"' + b"x" * 2000 + b'"}}'
    await read_messages(_Chunks([b"x" * 2000 + b"\n" + long + b"\n"]), send, 1000, "s", refuse=got.append, from_client=True)
    assert [(r.id, r.code) for r in got] == [(None, mcp_types.INVALID_REQUEST)] and "a line of 2000 bytes, over the limit of 1000" in got[0].reason


class _Chunks(trio.abc.ReceiveStream):
    """A stream that yields exactly the given chunks: a pipe's reads cannot be cut where a
    test wants (the kernel joins writes), and the framing must not depend on the cuts."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if max_bytes is not None and len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self.chunks.insert(0, rest)
        return chunk

    async def aclose(self) -> None:
        self.chunks = []


LIMIT = 300
_LINES = st.one_of(
    st.builds(
        lambda n, text: json.dumps({"jsonrpc": "2.0", "id": n, "result": {"text": text}}).encode(),
        st.integers(0, 10**6),
        st.text(max_size=400),
    ),
    st.builds(  # the id last, as some serializers write it, past the kept head (4 KiB)
        lambda n, size: json.dumps({"jsonrpc": "2.0", "result": {"text": "y" * size}, "id": n}).encode(),
        st.integers(0, 10**6),
        st.integers(0, 6000),
    ),
    st.builds(
        lambda text: json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": text}}).encode(),
        st.text(max_size=400),
    ),
    st.sampled_from([b"", b" ", b"\r", b"\t \r"]),
    st.binary(max_size=400).map(lambda b: b.replace(b"\n", b"")),
)


def _seen(item) -> object:
    if isinstance(item, SessionMessage):
        return item.message.model_dump(by_alias=True, exclude_unset=True)
    return ("not JSON-RPC", type(item).__name__)


def _one_line_at_a_time(line: bytes) -> object | None:
    """What the wire must make of one whole line, however the reads cut it."""
    if not line or line.isspace():
        return None
    if len(line) > LIMIT:
        stand_in = oversized(line[:4096], line[-256:], len(line), LIMIT, "s")
        return None if stand_in is None else _seen(stand_in)
    try:
        return _seen(SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line.decode(), by_name=False)))
    except ValueError as exc:
        return _seen(exc)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(_LINES, max_size=12), data=st.data())
def test_the_messages_do_not_depend_on_where_the_reads_cut_the_stream(lines, data):
    stream = b"".join(line + b"\n" for line in lines)
    ends = [len(b"".join(line + b"\n" for line in lines[: i + 1])) - 1 for i in range(len(lines))]
    cuts = data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=25))
    # and some within a line's last bytes, where an id may be
    cuts |= {end - back for end, back in zip(ends, data.draw(st.lists(st.integers(1, 20), max_size=len(ends))))}
    cuts = sorted(cut for cut in cuts if 0 < cut < len(stream))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)]) if stream[a:b]]
    expected = [seen for seen in map(_one_line_at_a_time, lines) if seen is not None]

    async def read() -> list[object]:
        send, receive = anyio.create_memory_object_stream(0)
        got: list[object] = []

        async def take() -> None:
            async with receive:
                async for item in receive:
                    got.append(_seen(item))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            await read_messages(_Chunks(chunks), send, LIMIT, "s")
        return got

    assert trio.run(read) == expected


def _tasks_under(task: trio.lowlevel.Task) -> int:
    return 1 + sum(_tasks_under(child) for nursery in task.child_nurseries for child in nursery.child_tasks)


async def test_refusals_to_a_peer_that_does_not_read_are_bounded():
    """A server writes 5,000 malformed requests (each refused with an error answer) and
    never reads its stdin. Each refusal was a task of its own, waiting for the writer,
    which waited for the server to read: 5,000 tasks held, without bound as the server
    went on. Now at most a few refusals wait; those past them are dropped (logged), and
    the wire reads on."""
    from mcp import StdioServerParameters

    from actors._process import ServerProcess, open_stdio

    script = (
        "import sys, time\n"
        "sys.stdout.buffer.write(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":5}\\n' * 5000)\n"
        "sys.stdout.buffer.write(b'{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\\n')\n"
        "sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    params = StdioServerParameters(command=sys.executable, args=["-c", script])
    root = trio.lowlevel.current_root_task()
    before = _tasks_under(root)
    with trio.fail_after(60):
        async with open_stdio(params, ServerProcess(), name="deaf", grace=0.2, max_message_bytes=MIB) as (read, _write):
            message = await read.receive()  # after every malformed request was read
            assert message.message.method == "notifications/initialized"
            waiting = _tasks_under(root) - before
    assert waiting < 200, f"{waiting} tasks held"


@pytest.mark.parametrize("where", ["notify", "result", "id"])
async def test_a_line_nested_too_deeply_for_json_is_one_bad_line_not_the_end_of_the_wire(where):
    """A server wrote one line nested deeper than Python's json module reads (it raises
    RecursionError, no ValueError): the error escaped the reader and ended the connection,
    failing the call in flight ``ServerCrashed`` and every call after it ``CircuitOpen``
    until the restart. Now it is one bad line: a notification is dropped (a garbage line),
    an answer to the call fails that call at once with ``InvalidResult``, and an answer
    whose id itself is too deep, which no call can be told, is a garbage line; the
    connection goes on."""
    spec = server_spec("deep", "deep.py", "--where", where, garbage_threshold=10, hang_threshold=10)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("deep", timeout=30)
        first = sup.link("deep").conn
        if where == "notify":
            result = await sup.call_tool("deep", {}, server="deep", timeout=30)
            assert result.content[0].text == "after notify"
        elif where == "result":
            with trio.fail_after(20), pytest.raises(InvalidResult, match="nested too deeply to read"):
                await sup.call_tool("deep", {}, server="deep", timeout=60)
        else:
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("deep", {}, server="deep", timeout=1)
        assert (await sup.call_tool("ok", {}, server="deep", timeout=30)).content[0].text == "ok"
        assert sup.link("deep").conn is first  # the same connection: no restart
        assert sup.link("deep").conn.garbage_lines == (0 if where == "result" else 1)


async def test_a_client_line_nested_too_deeply_is_refused_and_reading_goes_on():
    """A client's request of 2.4 KB nested 1200 deep raised RecursionError in the reader of
    the daemon's ``--stdio`` front: it ended as if stdin had, so the daemon stopped, exit 0,
    answering neither that request nor any after it. Now it is refused with its id (or
    ``id: null`` when even the id is too deep), and the lines after it are read."""
    nest = b"[" * 1200 + b"]" * 1200
    lines = [
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":' + nest + b"}}}",
        b'{"jsonrpc":"2.0","id":' + nest + b',"method":"ping"}',
        b'{"jsonrpc":"2.0","id":8,"method":"ping"}',
    ]
    send, receive = anyio.create_memory_object_stream(10)
    got: list[Any] = []
    await read_messages(_Chunks([b"\n".join(lines) + b"\n"]), send, 100_000, "s", refuse=got.append, from_client=True)
    assert [(r.id, r.code) for r in got] == [(7, mcp_types.PARSE_ERROR), (None, mcp_types.PARSE_ERROR)]
    assert got[0].reason == "the request is nested too deeply to read", got[0].reason
    assert "nested too deeply to read" in got[1].reason, got[1].reason
    assert receive.receive_nowait().message.id == 8
