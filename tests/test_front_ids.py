"""Two requests in flight on one MCP session over HTTP whose ids the SDK's transport takes
as one (``5`` and ``"5"``: ``str(id)`` names each request's event stream), or one id sent
twice: the second took the first one's stream, and the first call's answer never came.
The daemon's front refuses the second now (`supervisor._client_bodies.InFlight`), until
the first is answered. A real daemon over real HTTP on 127.0.0.1 (`test_daemon.Daemon`),
every wait with a deadline."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import httpx2
import trio

from supervisor._client_bodies import InFlight, _maybe_invalid, screen_client_body
from test_daemon import server_entry, start_daemon, write_config  # noqa: F401 (start_daemon: a fixture)
from test_front_bodies import answer_of, call
from test_front_hardening import open_session

IN_FLIGHT = "is still in flight on this session"


def slow_prompt(request_id, seconds: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "prompts/get",
            "params": {"name": "slow", "arguments": {"seconds": seconds}}}


SLOW = "6"
"""Seconds the slow prompt takes: the window in which a second request must reach the
daemon to meet the first still in flight (wide enough for a loaded machine)."""


async def arrived(notes: Path, line: str, count: int = 1) -> None:
    """Until ``notes`` holds ``line`` ``count`` times: the slow prompt is running."""
    while not notes.exists() or notes.read_text().splitlines().count(line) < count:
        await trio.sleep(0.05)


async def echo_daemon(tmp_path: Path, start_daemon) -> tuple[str, Path]:
    notes = tmp_path / "notes.log"
    echo, _ = server_entry("echo.py", "--slow-prompt")
    echo["env"]["EXEC_LOG"] = str(notes)
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}))
    return daemon.url + "/mcp", notes


async def test_an_id_in_flight_on_a_session_is_refused_to_a_second_request(tmp_path, start_daemon):
    """A request with id ``"5"`` (then ``5``) posted while one with id ``5`` runs on the same
    session took that one's stream: the first POST stayed open and silent for good, its
    call run and its answer dropped. Now the second gets at once a 400 with an Invalid
    Request error carrying its own id and saying why, the first its own answer, and the id
    serves again once that answer is out. Another session may use the same id meanwhile."""
    url, notes = await echo_daemon(tmp_path, start_daemon)
    with trio.fail_after(90):
        async with httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, url)
            other = await open_session(http, url)
            for round_, second_id in enumerate(("5", 5), start=1):
                answers: dict = {}

                async def first() -> None:
                    answers["first"] = answer_of(await http.post(url, json=slow_prompt(5, SLOW), headers=session))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(first)
                    await arrived(notes, f"slow prompt {SLOW}", round_)
                    refused = await http.post(url, json=call(second_id, "echo", "second"), headers=session)
                    assert refused.status_code == 400, refused.text
                    error = refused.json()
                    assert error["id"] == second_id and error["error"]["code"] == -32600, error
                    assert f"a request with id {json.dumps(second_id)} " in error["error"]["message"], error
                    assert IN_FLIGHT in error["error"]["message"], error
                    # The same id on another session is another stream: served.
                    elsewhere = answer_of(await http.post(url, json=call(second_id, "echo", "elsewhere"), headers=other))
                    assert elsewhere["id"] == second_id and "result" in elsewhere, elsewhere
                assert answers["first"]["id"] == 5, answers
                assert answers["first"]["result"]["messages"], answers  # the slow prompt's own answer
                again = answer_of(await http.post(url, json=call(second_id, "echo", "again"), headers=session))
                assert again["id"] == second_id and again["result"]["isError"] is False, again
                assert "again" in json.dumps(again["result"]), again


async def test_an_id_whose_client_left_is_held_until_its_call_is_answered(tmp_path, start_daemon):
    """A client that drops a call's connection leaves the call running (the SDK keeps its
    answer for a client that resumes). Its id sent again meanwhile was served on the old
    call's stream: it got the old call's late answer, and its own was dropped. Now it is
    refused while the old call runs, and served, with its own answer, once that call has
    answered."""
    url, notes = await echo_daemon(tmp_path, start_daemon)
    with trio.fail_after(90):
        async with httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, url)
            async with httpx2.AsyncClient(timeout=30) as leaving:
                with trio.CancelScope() as dropped:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(partial(leaving.post, url, json=slow_prompt(7, SLOW), headers=session))
                        await arrived(notes, f"slow prompt {SLOW}")
                        dropped.cancel()
            refused = await http.post(url, json=call(7, "echo", "mine"), headers=session)
            assert refused.status_code == 400 and IN_FLIGHT in refused.text, refused.text
            while True:  # until the old call has answered (the slow prompt), within the deadline
                response = await http.post(url, json=call(7, "echo", "mine"), headers=session)
                if response.status_code == 200:
                    break
                assert IN_FLIGHT in response.text, response.text
                await trio.sleep(0.1)
            answer = answer_of(response)
            assert answer["id"] == 7 and "mine" in json.dumps(answer["result"]), answer  # not the slow prompt's


async def test_in_flight_forgets_what_each_request_held():
    """`InFlight` holds a request's id while its POST is open; when it ends unanswered
    (the client left) until the server answers it or its session ends; never past that."""
    in_flight = InFlight()
    scope = {"type": "http", "headers": [(b"mcp-session-id", b"s1")]}
    sent: list = []

    async def send(message) -> None:
        sent.append(message)

    def body(request_id) -> bytes:
        return json.dumps(slow_prompt(request_id, "1")).encode()

    async def post(request_id):
        async def receive():
            return {"type": "http.request", "body": body(request_id)}

        return await screen_client_body(receive, send, claim)

    with in_flight.request(scope) as claim:
        assert await post(5) is not None
        assert await post("5") is None and json.loads(sent[-1]["body"])["id"] == "5"  # refused
        await claim.watch(send)({"type": "http.response.body", "body": b"", "more_body": False})
    with in_flight.request(scope) as claim:  # answered: the id serves again
        assert await post("5") is not None
        in_flight.answered("s1", "5")  # the server's answer, stored before it is sent
        await claim.watch(send)({"type": "http.response.body", "body": b"", "more_body": False})
    assert in_flight._held == {}
    with in_flight.request(scope) as claim:  # its client left
        assert await post(5) is not None
    assert in_flight._held == {("s1", "5"): "left"}
    in_flight.answered("s1", "5")
    assert in_flight._held == {}
    with in_flight.request(scope) as claim:
        assert await post(5) is not None
    in_flight.session_ended("s1")
    assert in_flight._held == {}
    # A 2026-07-28 request is served on its own, whatever session it names.
    modern = {"type": "http", "headers": [(b"mcp-session-id", b"s1"), (b"mcp-protocol-version", b"2026-07-28")]}
    with in_flight.request(modern) as claim:
        assert await post(5) is not None
        assert in_flight._held == {}


async def test_a_request_that_is_no_valid_json_rpc_gets_the_stdio_fronts_one_line(tmp_path, start_daemon):
    """A request with no ``"jsonrpc"``, or ``params`` that are no object, got a 400 with
    -32602, id null and pydantic's dump of six validation errors over HTTP, where the
    ``--stdio`` front answers -32600 with the request's own id and one line saying what is
    wrong. Now the HTTP front answers as the ``--stdio`` one does (its code): nothing runs,
    a valid request that names ``params`` deeper in is served, and the session serves on."""
    url, notes = await echo_daemon(tmp_path, start_daemon)
    cases = [
        ({"id": 7, "method": "ping"}, 7, "the request is not valid JSON-RPC: jsonrpc: Field required"),
        ({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": [1, 2]}, 10,
         "the request is not valid JSON-RPC: params: Input should be an object"),
        ({"jsonrpc": "2.0", "id": "s", "method": "prompts/get", "params": "slow"}, "s",
         "the request is not valid JSON-RPC: params: Input should be an object"),
        ({"jsonrpc": "1.0", "id": 11, "method": "ping"}, 11, "the request is not valid JSON-RPC: jsonrpc: "),
        ({"method": "notifications/initialized"}, None, "the notification is not valid JSON-RPC: jsonrpc: Field required"),
    ]
    with trio.fail_after(90):
        async with httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, url)
            for body, request_id, why in cases:
                refused = await http.post(url, json=body, headers=session)
                assert refused.status_code == 400, (body, refused.text)
                answer = refused.json()
                assert answer["id"] == request_id and answer["error"]["code"] == -32600, (body, answer)
                assert answer["error"]["message"].startswith(why), (body, answer)
                assert "\n" not in answer["error"]["message"] and len(refused.content) < 300, (body, refused.text)
            deeper = call(12, "echo", "served")
            deeper["params"]["_meta"] = {"params": [1], "jsonrpc": "1.0"}
            assert _maybe_invalid(json.dumps(deeper).encode())  # so read again, and found valid
            served = answer_of(await http.post(url, json=deeper, headers=session))
            assert served["id"] == 12 and served["result"]["isError"] is False, served
    assert not notes.exists()  # nothing ran (the slow prompt writes its note)


async def test_a_request_with_the_transports_name_for_the_get_stream_is_refused(tmp_path, start_daemon):
    """The SDK's transport names a session's GET stream ``"_GET_stream"`` among its requests'
    streams: a request with that id took the GET stream over, and once it was answered
    every later notification of the session (a server's ``list_changed``) went nowhere,
    the GET open and silent. Now such a request is refused (400, Invalid Request, its own
    id, saying why), and the GET stream carries the next notification."""
    everything, _ = server_entry("everything.py")
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"ev": everything}))
    url = daemon.url + "/mcp"

    def mutate(request_id, name: str) -> dict:
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                "params": {"name": "mutate_lists", "arguments": {"name": name}}}

    with trio.fail_after(90):
        async with httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, url)
            get_headers = {**session, "Accept": "text/event-stream"}
            async with http.stream("GET", url, headers=get_headers) as stream:
                assert stream.status_code == 200, stream.status_code
                lines = stream.aiter_lines()

                async def notified() -> str:
                    async for line in lines:
                        if line.startswith("data:") and "list_changed" in line:
                            return json.loads(line[5:])["method"]
                    raise AssertionError("the GET stream ended")

                refused = await http.post(url, json=mutate("_GET_stream", "b"), headers=session)
                assert refused.status_code == 400, refused.text
                error = refused.json()
                assert error["id"] == "_GET_stream" and error["error"]["code"] == -32600, error
                assert "the session's own event stream" in error["error"]["message"], error
                answer = answer_of(await http.post(url, json=mutate(3, "c"), headers=session))
                assert answer["id"] == 3 and "result" in answer, answer
                assert (await notified()).endswith("/list_changed")
