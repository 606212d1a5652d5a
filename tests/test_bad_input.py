"""Bad input gets a clear error, loses nothing, and the daemon serves on.

One real daemon (``python -m supervisor run``) over one real stdio server (echo, whose
destructive ``write_note`` records each execution in ``EXEC_LOG``). Hypothesis throws at it,
over plain HTTP: bytes that are not JSON, JSON that is not JSON-RPC, unknown methods, tool
names full of path and shell characters, arguments that fail the tool's schema, bodies over
``max_body_bytes``. Each answer must be a 4xx (never a 5xx, never a hang: every request has a
5 s deadline) carrying a JSON-RPC error (or, for 413, the limit's message); after each test
the daemon process is alive, healthy and still answers a real call, and nothing ran upstream
that should not have. A config with mistakes is refused by ``POST /reload`` naming the file,
the key and the reason, and the running config stays as it was; a fuzzed config either loads
or raises ``ConfigError``, never anything else.

Raw requests use the 2026-07-28 stateless form (the envelope keys in ``params._meta`` and
the ``Mcp-Method``/``Mcp-Name`` headers the spec requires), so each one stands alone.
"""

from __future__ import annotations

import json

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from supervisor import ConfigError, load_config
from test_daemon import Daemon, server_entry, write_config

MAX_BODY = 65_536
PROTOCOL = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bad-input", "version": "0"},
}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
KNOWN_METHODS = {
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
    "resources/read", "resources/templates/list", "resources/subscribe", "resources/unsubscribe",
    "completion/complete", "logging/setLevel", "subscriptions/listen", "server/discover",
}
TOOLS = {"echo", "add", "write_note", "sleep", "fail", "pid"}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# What a header may carry as is (RFC 9110 field values, no leading or trailing blanks).
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    echo, _ = server_entry("echo.py")
    echo["env"]["EXEC_LOG"] = str(tmp / "exec.log")
    daemon = Daemon(write_config(tmp / "c.json", {"echo": echo}, max_body_bytes=MAX_BODY), tmp)
    daemon.config = tmp / "c.json"
    daemon.exec_log = tmp / "exec.log"
    daemon.canary = tmp / "canary"
    try:
        daemon.wait_healthy_sync()
        with httpx2.Client(timeout=5.0) as daemon.http:  # every request has a 5 s deadline
            yield daemon
    finally:
        daemon.stop()


def modern(daemon: Daemon, method: str, params: dict | None = None, *, id: object = 1) -> httpx2.Response:
    """One stateless 2026-07-28 request, with the headers the spec requires."""
    params = {**(params or {}), "_meta": ENVELOPE}
    headers = {**HEADERS, "MCP-Protocol-Version": PROTOCOL, "Mcp-Method": method}
    if isinstance(params.get("name"), str):
        headers["Mcp-Name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": id, "method": method, "params": params}
    return daemon.http.post(daemon.url + "/mcp", json=body, headers=headers)


def error_of(response: httpx2.Response) -> dict:
    """The JSON-RPC error in ``response``; fails the test if there is none."""
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert body.get("jsonrpc") == "2.0" and "result" not in body, body
    error = body["error"]
    assert isinstance(error["code"], int) and error["message"], error
    return error


def assert_still_serving(daemon: Daemon) -> None:
    assert daemon.proc.poll() is None, f"the daemon died:\n{daemon.log.read_text()}"
    health = daemon.http.get(daemon.url + "/healthz").json()
    assert health["ok"] and health["down"] == 0, health
    answer = modern(daemon, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 40}})
    assert answer.status_code == 200 and answer.json()["result"]["structuredContent"] == {"result": 42}, answer.text


def executions(daemon: Daemon) -> list[str]:
    return daemon.exec_log.read_text().splitlines() if daemon.exec_log.exists() else []


# -- malformed JSON-RPC --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
not_a_request = json_values.filter(
    lambda v: not (isinstance(v, dict) and isinstance(v.get("method"), str) and v.get("jsonrpc") == "2.0")
)


@FUZZ
@given(body=st.binary(max_size=300) | not_a_request.map(lambda v: json.dumps(v).encode()))
@example(body=b"")
@example(body=b"{")
@example(body=b"[]")
@example(body=b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}')
@example(body=b'{"jsonrpc": "2.0", "id": {"nested": 1}, "method": 5}')
@example(body=b"\xff\xfe\x00garbage")
def test_malformed_json_rpc_is_refused_with_a_json_rpc_error(daemon, body):
    response = daemon.http.post(daemon.url + "/mcp", content=body, headers=HEADERS)
    assert response.status_code == 400, (response.status_code, response.text)
    assert error_of(response)["code"] in (-32700, -32600, -32602)
    assert_still_serving(daemon)


@pytest.fixture(scope="module")
def legacy_session(daemon):
    """The headers of one 2025-11-25 session (initialized), the wire most clients speak."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bad-input", "version": "0"}}}
    answer = daemon.http.post(daemon.url + "/mcp", json=init, headers=HEADERS)
    assert answer.status_code == 200, answer.text
    headers = {**HEADERS, "Mcp-Session-Id": answer.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    initialized = daemon.http.post(daemon.url + "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                   headers=headers)
    assert initialized.status_code == 202, initialized.text
    return headers


@pytest.mark.parametrize("request_id", [1.5, None, True, {"n": 1}, [1], 1e3])
@pytest.mark.parametrize("wire", ["2025-11-25", PROTOCOL])
def test_a_request_whose_id_no_answer_can_carry_is_refused_not_accepted(daemon, legacy_session, request_id, wire):
    """The SDK's parser reads such a request as a notification: in a 2025-11-25 session the
    daemon answered 202 Accepted, ran nothing, and the client waited for an answer that
    never came (the stateless wire refused it, saying only that the body was no request).
    JSON-RPC 2.0 answers it with an error whose id is null; so do both wires, and the stdio
    front, saying why."""
    before = executions(daemon)
    params = {"name": "write_note", "arguments": {"text": "x"}}
    if wire == PROTOCOL:
        response = modern(daemon, "tools/call", params, id=request_id)
    else:
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        response = daemon.http.post(daemon.url + "/mcp", json=body, headers=legacy_session)
    assert response.status_code == 400, (response.status_code, response.text)
    error = error_of(response)
    assert response.json()["id"] is None and error["code"] == -32600, response.text
    assert f"the request's id {json.dumps(request_id)} is no string or integer" in error["message"], error
    assert executions(daemon) == before
    # An "id" deeper in the request is no reason to refuse it.
    answer = modern(daemon, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 40, "id": None}})
    assert answer.status_code == 200 and answer.json()["result"]["structuredContent"] == {"result": 42}, answer.text
    assert_still_serving(daemon)


# -- unknown methods -----------------------------------------------------------------------------


@FUZZ
@given(method=header_text.filter(lambda m: m not in KNOWN_METHODS and not m.startswith("notifications/")))
@example(method="tools/delete")
@example(method="../admin")
@example(method="rpc.discover")
def test_an_unknown_method_is_method_not_found(daemon, method):
    response = modern(daemon, method)
    error = error_of(response)
    assert error["code"] == -32601 and error["message"] == "Method not found", error
    assert error.get("data") == method
    assert_still_serving(daemon)


# -- tool names with path and shell characters ---------------------------------------------------


@FUZZ
@given(name=header_text.filter(lambda n: n not in TOOLS))
@example(name="../../../../bin/sh")
@example(name="echo/../write_note")
@example(name="write_note; touch CANARY")
@example(name="$(touch CANARY)")
@example(name="`touch CANARY`")
@example(name="write_note|touch CANARY")
@example(name="echo__echo")
def test_a_tool_name_with_path_or_shell_characters_is_unknown_and_runs_nothing(daemon, name):
    name = name.replace("CANARY", str(daemon.canary))
    before = executions(daemon)
    error = error_of(modern(daemon, "tools/call", {"name": name, "arguments": {"text": "x"}}))
    assert error["code"] == -32001 and error["data"]["kind"] == "UnknownTool", error
    assert error["data"]["tool"] == name and repr(name) in error["message"], error
    assert executions(daemon) == before
    assert not daemon.canary.exists()
    assert_still_serving(daemon)


def test_unknown_tool_suggests_the_near_miss(daemon):
    error = error_of(modern(daemon, "tools/call", {"name": "write_nots", "arguments": {}}))
    assert error["code"] == -32001 and "write_note" in error["data"]["suggestions"], error


# -- invalid arguments ---------------------------------------------------------------------------


@FUZZ
@given(arguments=st.dictionaries(st.sampled_from(["text", "extra", "a"]), json_values, max_size=3))
@example(arguments={})
@example(arguments={"text": 5})
@example(arguments={"text": None})
@example(arguments={"text": ["a"], "extra": 1})
def test_invalid_arguments_are_refused_before_anything_runs(daemon, arguments):
    """``write_note`` takes ``{"text": string}``: anything else is refused with the field
    named, and the destructive tool does not run; a valid call runs once. The refusal is a
    tool execution error the model can read and correct its call by (spec 2025-11-25,
    SEP-1303; the SDK's own servers answer so), not a JSON-RPC error."""
    before = executions(daemon)
    response = modern(daemon, "tools/call", {"name": "write_note", "arguments": arguments})
    if isinstance(arguments.get("text"), str):
        assert response.status_code == 200 and not response.json()["result"]["isError"], response.text
        assert len(executions(daemon)) > len(before), "the valid call ran"
        return
    result = response.json()["result"]
    assert response.status_code == 200 and result["isError"], response.text
    error = result["structuredContent"]["error"]
    assert error["code"] == -32002 and error["kind"] == "InvalidArguments", error
    assert result["content"][0]["text"].startswith("InvalidArguments: invalid arguments for tool 'write_note'")
    assert error["data"]["tool"] == "write_note"
    assert any(item["path"].startswith("$") for item in error["data"]["errors"]), error
    assert executions(daemon) == before
    assert_still_serving(daemon)


def test_arguments_that_are_not_an_object_are_invalid_params(daemon):
    for arguments in ([1], "text", 3):
        error = error_of(modern(daemon, "tools/call", {"name": "echo", "arguments": arguments}))
        assert error["code"] == -32602, error
    assert_still_serving(daemon)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "write_note", "arguments": {"text": "@"}}),
        ("tools/call", {"name": "write_note", "arguments": {"text": "fine"}, "_meta": {"trace": "@"}}),
        ("prompts/get", {"name": "greet", "arguments": {"who": "@"}}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "who", "value": "@"}}),
    ],
    ids=["tool-arguments", "tool-meta", "prompt-arguments", "completion"],
)
def test_a_lone_surrogate_is_refused_and_the_upstream_lives_on(daemon, method, params):
    """``"\\ud800"`` is valid JSON that no UTF-8 encoder can write (half of a surrogate
    pair, as a streaming model cutting an emoji in two may send). Passed on to the upstream,
    it failed in the SDK's stdio writer, which took the whole connection down: the server
    was restarted, and every other call in flight on it failed. Now it is refused first."""
    pid = int(json.loads(modern(daemon, "tools/call", {"name": "pid", "arguments": {}}).text)["result"]["structuredContent"]["result"])
    params = {**params, "_meta": {**ENVELOPE, **params.get("_meta", {})}}
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).replace("@", "\\ud800")
    headers = {**HEADERS, "MCP-Protocol-Version": PROTOCOL, "Mcp-Method": method}
    if method in ("tools/call", "prompts/get"):
        headers["Mcp-Name"] = params["name"]
    before = executions(daemon)
    response = daemon.http.post(daemon.url + "/mcp", content=body.encode(), headers=headers)
    if method == "tools/call":  # a tool execution error, as for any arguments it cannot take
        result = response.json()["result"]
        assert result["isError"] and result["structuredContent"]["error"]["kind"] == "InvalidArguments", result
        assert "cannot be sent as JSON" in result["content"][0]["text"], result
    else:
        assert error_of(response)["code"] == -32602, response.text
    assert executions(daemon) == before
    assert_still_serving(daemon)
    after = int(json.loads(modern(daemon, "tools/call", {"name": "pid", "arguments": {}}).text)["result"]["structuredContent"]["result"])
    assert after == pid, "the upstream server was restarted"


# -- oversized bodies ----------------------------------------------------------------------------


def test_oversized_bodies_are_refused_and_one_under_the_limit_works(daemon):
    def streamed():  # no Content-Length: the limit must hold while reading
        yield b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"'
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"a" * 1000
        yield b'"}}'

    declared = daemon.http.post(daemon.url + "/mcp", content=b" " * (MAX_BODY + 1), headers=HEADERS)
    chunked = daemon.http.post(daemon.url + "/mcp", content=streamed(), headers=HEADERS)
    for response in (declared, chunked):
        assert response.status_code == 413 and "too large" in response.text.lower(), response.text
    text = "é" * ((MAX_BODY - 2_000) // 2)  # two bytes each in UTF-8: just under the limit
    near = modern(daemon, "tools/call", {"name": "echo", "arguments": {"text": text}})
    assert near.status_code == 200 and near.json()["result"]["structuredContent"] == {"result": text}
    assert_still_serving(daemon)


# -- config mistakes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, key, reason",
    [
        (lambda c: c["mcpServers"]["echo"].update(timout=5), "mcpServers.echo.timout", "did you mean 'timeout'"),
        (lambda c: c["mcpServers"]["echo"].update(timeout="soon"), "mcpServers.echo.timeout", "expected a number"),
        (lambda c: c["mcpServers"]["echo"].update(max_concurrency=0), "mcpServers.echo.max_concurrency", ">= 1"),
        (lambda c: c["mcpServers"]["echo"].update(args="x"), "mcpServers.echo.args", "expected a list"),
        (lambda c: c["mcpServers"]["echo"].update(command="${NO_SUCH_VARIABLE_HERE}"), "mcpServers.echo.command", "NO_SUCH_VARIABLE_HERE"),
        (lambda c: c["mcpServers"].update(web={"url": "ftp://x"}), "mcpServers.web.url", "http"),
        (lambda c: c["supervisor"].update(toolsets={"main": ["nope"]}), "toolsets", "unknown category 'nope'"),
        (lambda c: c.update(mcpServers=[]), "mcpServers", "object"),
    ],
)
def test_a_bad_config_is_refused_by_reload_and_the_old_one_keeps_serving(daemon, mutate, key, reason):
    good = daemon.config.read_text()
    bad = json.loads(good)
    mutate(bad)
    try:
        daemon.config.write_text(json.dumps(bad))
        response = daemon.http.post(daemon.url + "/reload", timeout=10.0)
    finally:
        daemon.config.write_text(good)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith(f"{daemon.config}: ") and key in message and reason in message, message
    assert_still_serving(daemon)


def test_a_config_that_is_not_json_is_refused_by_reload_with_line_and_column(daemon):
    good = daemon.config.read_text()
    try:
        daemon.config.write_text(good[: len(good) // 2])
        response = daemon.http.post(daemon.url + "/reload", timeout=10.0)
    finally:
        daemon.config.write_text(good)
    assert response.status_code == 400 and str(daemon.config) in response.json()["error"]
    assert "line 1" in response.json()["error"], response.text
    assert_still_serving(daemon)


SERVER_KEYS = ["command", "args", "env", "cwd", "url", "headers", "type", "timeout", "connect_timeout",
               "max_concurrency", "namespace", "categories", "retry", "breaker", "enabled", "trust_annotations"]


@FUZZ
@given(
    where=st.sampled_from(["server", "supervisor", "top"]),
    key=st.sampled_from(SERVER_KEYS) | st.text(min_size=1, max_size=12),
    value=json_values,
)
def test_a_fuzzed_config_loads_or_is_refused_naming_the_file(tmp_path, where, key, value):
    data: dict = {"mcpServers": {"s": {"command": "python", "args": ["server.py"]}}, "supervisor": {}}
    target = {"server": data["mcpServers"]["s"], "supervisor": data["supervisor"], "top": data}[where]
    target[key] = value
    path = tmp_path / "fuzzed.json"
    path.write_text(json.dumps(data))
    try:
        load_config(path, environ={})
    except ConfigError as error:
        assert str(error).startswith(f"{path}: ") and error.reason, str(error)


def test_the_daemon_is_still_whole_after_all_of_it(daemon):
    assert_still_serving(daemon)
    tools = modern(daemon, "tools/list").json()["result"]["tools"]
    assert {tool["name"] for tool in tools} == TOOLS
