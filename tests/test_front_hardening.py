"""The daemon's HTTP front against what a hostile client or web page sends: bodies nested
too deep to parse, admin routes posted by a page on another localhost port, a token sent
with a lower-case scheme, reload and restart refused while the daemon stops. A real daemon
each time (`test_daemon.Daemon`), every wait with a deadline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx2
import trio

from conftest import procs_with_marker, wait_until
from test_daemon import ROOT, echo_pid, roots_answered_with, server_entry, start_daemon, write_config  # noqa: F401 (a fixture)

DEEP = 1200  # over json.loads's (and msgspec's) recursion limit
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def open_session(http: httpx2.AsyncClient, url: str, capabilities: dict | None = None) -> dict:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities or {}, "clientInfo": {"name": "t", "version": "0"}}}
    response = await http.post(url, json=init, headers=MCP_HEADERS)
    assert response.status_code == 200, response.text
    session = {**MCP_HEADERS, "Mcp-Session-Id": response.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    return session


async def test_a_body_nested_too_deep_gets_a_json_rpc_parse_error_not_a_500(tmp_path, start_daemon):
    """A body nesting arrays 1200 deep in its id, or under an ``"id"`` key in a tool's
    arguments, got a 500 with an empty body and a traceback in the log: ``json.loads``
    raised ``RecursionError``, which nothing caught. Now it is a 400 with a JSON-RPC parse
    error saying why, and the session serves on."""
    echo, _ = server_entry("echo.py")
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}))
    url = daemon.url + "/mcp"
    with trio.fail_after(30):
        async with httpx2.AsyncClient(timeout=20) as http:
            session = await open_session(http, url)
            bodies = (
                '{"jsonrpc":"2.0","id":' + nested(DEEP) + ',"method":"tools/list"}',
                '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"id":'
                + nested(DEEP) + "}}}",
                '{"jsonrpc":"2.0","result":' + nested(DEEP) + ',"id":7}',  # an answer whose id comes last
            )
            for body in bodies:
                refused = await http.post(url, content=body.encode(), headers=session)
                assert refused.status_code == 400, (body[:60], refused.status_code, refused.text)
                error = refused.json()["error"]
                assert error["code"] == -32700 and "nests arrays and objects too deep" in error["message"], error
            call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "alive"}}}
            after = await http.post(url, json=call, headers=session)
            assert after.status_code == 200 and "alive" in after.text, after.text
    assert "Traceback" not in daemon.log.read_text()


async def test_a_client_answer_nested_too_deep_fails_the_question_at_once(tmp_path, start_daemon):
    """A client's answer to the server's ``roots/list`` nesting 1200 deep got a 500 and was
    lost: the question waited out the server's timeout (600 s here). Now it is taken as an
    error answer to the question, which fails at once, saying why."""
    everything, _ = server_entry("everything.py", timeout=600)
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"ev": everything}))
    with trio.fail_after(30):  # the server's timeout is 600 s
        answer = await roots_answered_with(
            daemon.url + "/mcp",
            lambda asked: ('{"jsonrpc":"2.0","id":' + json.dumps(asked) + ',"result":' + nested(DEEP) + "}").encode(),
        )
    assert "the client's answer nests arrays and objects too deep" in json.dumps(answer), answer
    assert "Traceback" not in daemon.log.read_text()


async def test_the_bearer_scheme_is_taken_in_any_case(tmp_path, start_daemon):
    """``Authorization: bearer <token>`` was refused 401: the header was compared whole with
    ``Bearer <token>``, though the scheme is case-insensitive (RFC 7235). Now any case of
    the scheme is taken; the token itself still has to match exactly."""
    echo, _ = server_entry("echo.py")
    token = "Tok-en-value"
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}, auth_token=token))
    async with httpx2.AsyncClient(timeout=20) as http:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            taken = await http.get(daemon.url + "/status", headers={"Authorization": f"{scheme} {token}"})
            assert taken.status_code == 200, (scheme, taken.text)
        for refused in (f"bearer {token.lower()}", f"Basic {token}", f"bearer{token}", "bearer", f"bearer  {token}"):
            answer = await http.get(daemon.url + "/status", headers={"Authorization": refused})
            assert answer.status_code == 401, (refused, answer.text)


async def test_a_page_on_another_localhost_port_cannot_drive_the_control_routes(tmp_path, start_daemon):
    """Any loopback ``Origin`` was taken as the daemon's own, so a page served on another
    localhost port (a dev server at :3000) could force a breaker open, restart a server or
    reload, with the text/plain POST a browser sends cross-origin without a preflight. Now
    the control routes take no ``Origin`` but the daemon's own; the CLI, which sends none,
    is served. ``/mcp`` refuses such a page's POST too (400: not JSON; a JSON one needs a
    preflight, which gets no CORS grant)."""
    echo, _ = server_entry("echo.py")
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}))
    simple = {"Content-Type": "text/plain"}
    async with httpx2.AsyncClient(timeout=20) as http:
        before = (await http.get(daemon.url + "/status")).json()
        for origin in ("http://localhost:3000", "http://127.0.0.1:8888", f"http://localhost:{daemon.port}", "null"):
            page = {**simple, "Origin": origin}
            for path in ("/breaker/echo/open?reason=csrf", "/restart/echo", "/reload"):
                refused = await http.post(daemon.url + path, content=b"x", headers=page)
                assert refused.status_code == 403, (origin, path, refused.status_code, refused.text)
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
            mcp = await http.post(daemon.url + "/mcp", content=json.dumps(call).encode(), headers=page)
            assert mcp.status_code in (400, 403, 415), (origin, mcp.status_code, mcp.text)  # not run
            preflight = await http.options(daemon.url + "/mcp", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
            assert "access-control-allow-origin" not in preflight.headers, preflight.headers
        after = (await http.get(daemon.url + "/status")).json()
        assert echo_pid(after) == echo_pid(before) is not None
        assert "forced" not in json.dumps(after), after
        own = await http.post(daemon.url + "/breaker/echo/reset", headers={"Origin": f"http://127.0.0.1:{daemon.port}"})
        assert own.status_code == 200, own.text
        cli = await http.post(daemon.url + "/restart/echo")  # as the CLI asks: no Origin
        assert cli.status_code == 200, cli.text
        assert echo_pid(cli.json()) != echo_pid(before)


async def cli(*args: str) -> trio.Process:
    return await trio.run_process(
        [sys.executable, "-m", "supervisor", *args], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
    )


async def test_a_reload_cut_short_by_the_stop_is_still_unknown_exit_4(tmp_path, start_daemon):
    """The other 503 of a stopping daemon: a reload under way (waiting for a server it adds
    to connect) cut short by SIGTERM. Part of it may have been applied: ``"begun": true``,
    and the CLI says it is unknown, exit 4 (it said the daemon answered "not as an
    mcp-supervisor daemon does", exit 1, when the daemon was gone by the time the CLI
    asked ``/healthz`` whether it lived)."""
    config = tmp_path / "c.json"
    echo, marker = server_entry("echo.py")
    write_config(config, {"echo": echo}, drain_timeout=1)
    daemon = await start_daemon(config)
    slow, slow_marker = server_entry("slow_start.py", "--delay", "120", connect_timeout=200)
    write_config(config, {"echo": echo, "slow": slow}, drain_timeout=1)
    runs: list[trio.Process] = []

    async def reload() -> None:
        runs.append(await cli("reload", "--url", daemon.url))

    with trio.fail_after(60):  # the slow server would connect after 120 s
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reload)
            await wait_until(lambda: procs_with_marker(slow_marker), timeout=20, what="the added server to start")
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit(timeout=40) == 0
    (run,) = runs
    said = run.stderr.decode()
    assert run.returncode == 4, (run.returncode, said)
    assert "cut short" in said and "whether `reload` took effect is unknown" in said, said
    assert not procs_with_marker(marker) and not procs_with_marker(slow_marker)


async def test_a_front_without_a_token_warns_that_any_local_account_may_drive_it(tmp_path, start_daemon):
    """Without ``auth_token`` the loopback front serves any account on the machine (another
    user's process can connect to 127.0.0.1 too), and nothing said so. Now the start logs
    a warning naming what is exposed; with a token, no such warning."""
    echo, _ = server_entry("echo.py")
    open_daemon = await start_daemon(write_config(tmp_path / "open.json", {"echo": echo}))
    guarded = await start_daemon(write_config(tmp_path / "guarded.json", {"echo": echo}, auth_token="t0ken-value"))
    said = open_daemon.log.read_text()
    assert "WARNING supervisor.http: no supervisor.auth_token: any account on this machine" in said, said
    assert f"127.0.0.1:{open_daemon.port}" in said and "call every tool of every server" in said, said
    assert "no supervisor.auth_token" not in guarded.log.read_text()
    write_config(tmp_path / "guarded.json", {"echo": echo})  # a reload that removes the token warns too
    async with httpx2.AsyncClient(timeout=20) as http:
        reloaded = await http.post(guarded.url + "/reload", headers={"Authorization": "Bearer t0ken-value"})
        assert reloaded.status_code == 200 and reloaded.json()["settings"] == ["auth_token"], reloaded.text
    assert "WARNING supervisor.http: reload: no supervisor.auth_token: any account" in guarded.log.read_text()


DEEP_ANSWERER = """
import http.server, sys
D = 100000
BODY = b'{"ok": true, "servers": 1, "error": "x", "x": ' + b"[" * D + b"]" * D + b"}"
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def do_GET(self):
        self.answer(200)
    def do_POST(self):
        self.answer(int(sys.argv[2]))
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


async def test_reload_restart_breaker_say_what_answered_json_nested_too_deep(tmp_path):
    """Something at ``--url`` answering JSON nested 100,000 deep (in a field the CLI does
    not read, even): ``reload``, ``restart`` and ``breaker`` died of msgspec's
    ``RecursionError`` with a traceback. Now they say it did not answer as a daemon does,
    exit 1."""
    from test_daemon import free_port

    script = tmp_path / "deep_answerer.py"
    script.write_text(DEEP_ANSWERER)
    for status in (200, 503):
        port = free_port()
        answerer = subprocess.Popen([sys.executable, str(script), str(port), str(status)])
        try:
            await wait_until(lambda: _listening(port), timeout=10, what="the answerer to listen")
            for command in (["reload"], ["restart", "x"], ["breaker", "x", "open"]):
                with trio.fail_after(30):
                    run = await cli(*command, "--url", f"http://127.0.0.1:{port}")
                said = run.stderr.decode()
                assert run.returncode == 1 and "Traceback" not in said, (status, command, run.returncode, said)
                assert "answer as an mcp-supervisor daemon does" in said or "not as an mcp-supervisor daemon does" in said, said
        finally:
            answerer.kill()
            answerer.wait()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_a_breakers_reason_forges_no_log_line(tmp_path, start_daemon):
    """``POST /breaker/<s>/open?reason=...`` took the reason as it came, and it went to the
    log as it came (the front's line and the event's): a line break in it wrote a line of
    the caller's choosing into the daemon's log (a forged ERROR). Now a reason holding a
    control character is refused (400) and the breaker left as it was; one on one line is
    taken, and logged quoted."""
    echo, _ = server_entry("echo.py")
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}))
    forged = "2026-12-05 03:00:00,000 ERROR supervisor: FORGED"
    async with httpx2.AsyncClient(timeout=20) as http:
        for reason in (f"maint\n{forged}", f"maint\r{forged}", "maint\x1b[2K"):
            refused = await http.post(daemon.url + "/breaker/echo/open", params={"reason": reason})
            assert refused.status_code == 400 and "control character" in refused.json()["error"], refused.text
        assert "forced" not in (await http.get(daemon.url + "/status")).text
        taken = await http.post(daemon.url + "/breaker/echo/open", params={"reason": "maint: 'disk full' \u00e9"})
        assert taken.status_code == 200, taken.text
    lines = daemon.log.read_text().splitlines()
    assert not [line for line in lines if "FORGED" in line], lines
    assert any("open on request (reason \"maint: 'disk full' \u00e9\")" in line for line in lines), lines


def test_the_listen_backlog_is_as_deep_as_the_kernel_allows():
    """hypercorn's listen backlog of 100 overflowed when a few hundred clients connected at
    once: the kernel reset connections before their first request (a probe saw 40 to 58 of
    300 reset, and the kernel's ListenOverflows counter rise). The socket the daemon listens
    on now asks for ``net.core.somaxconn``, which ``ss`` shows as its Send-Q."""
    import shutil
    import subprocess

    from supervisor._http import listen_http

    assert shutil.which("ss"), "this test reads the backlog with ss (iproute2)"
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    sockets = listen_http("127.0.0.1", 0)
    try:
        (sock,) = sockets.insecure_sockets
        port = sock.getsockname()[1]
        shown = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
        backlog = int(shown.split()[2])  # State Recv-Q Send-Q ...: Send-Q is the backlog
        assert backlog == somaxconn, shown
    finally:
        sock.close()
