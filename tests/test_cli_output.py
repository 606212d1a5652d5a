"""What the command line prints, fact by fact: the status tree says each fact once (real
servers' real status), ``tools`` gives one line per tool, ``call`` loses no part of a result."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys

import pytest
import trio
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer

from conftest import server_spec, wait_until
from protocol import BackoffPolicy, ServerSpec
from supervisor import Supervisor
from supervisor.__main__ import _MAX_PAGES, _call, _tools, render_tree
from test_daemon import ROOT, Daemon, server_entry, start_daemon, write_config  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def everything_daemon(tmp_path_factory):
    """A daemon serving ``tests/servers/everything.py``'s tools under their own names."""
    tmp = tmp_path_factory.mktemp("cli_output")
    everything, _ = server_entry("everything.py")
    daemon = Daemon(write_config(tmp / "c.json", {"everything": everything}), tmp)
    try:
        daemon.wait_healthy_sync()
        yield daemon
    finally:
        daemon.stop()


async def cli(*args: str) -> subprocess.CompletedProcess:
    with trio.fail_after(60):
        return await trio.run_process([sys.executable, "-m", "supervisor", *args], cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)


def server_lines(shown: str, name: str) -> tuple[str, str]:
    """The breaker's and the connection's lines of server ``name``."""
    (breaker,) = [line for line in shown.splitlines() if line.strip().startswith(f"breaker:{name}:")]
    (connection,) = [line for line in shown.splitlines() if line.strip().startswith(f"connection:{name}:")]
    return breaker, connection


async def test_a_server_that_gave_up_says_its_error_once():
    """A server that crashes at start and gave up (``backoff.max_consecutive``): its error
    was printed three times, as the connection's "last exit", as its "last error" (the same
    text without the exception's type) and as the breaker's reason ("connection down: " and
    the same text, then "failed for good ..." and a second `restart` hint). Now the
    connection's line says it once, with the hint once; the breaker's says it is open because
    the connection is down."""
    spec = server_spec("s", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1))
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "failed for good" in (sup.handle("s").breaker.reason or ""), timeout=30, what="it to fail")
        shown = render_tree(sup.status(), stderr=False)
    breaker, connection = server_lines(shown, "s")
    assert shown.count("exiting before the handshake") == 1, shown
    assert "ConnectionDied: could not connect: " in connection and "the server process exited with code 1" in connection
    assert connection.count("restart s") == 1 and "restart s" not in breaker, shown
    assert breaker.endswith("breaker open (connection down)"), breaker
    assert connection.startswith("      connection:s: failed, restarts=1, last exit: ConnectionDied: "), connection
    assert "last error" not in connection, connection


async def test_a_restarting_server_says_its_error_once():
    """A server waiting for its next start: the error three times as above. Now once, on
    the connection's line; the breaker's says when calls may go through again."""
    spec = server_spec("s", "crash_at_start.py", backoff=BackoffPolicy(min=30, max=30, jitter=0.0))
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "exiting before" in (sup.handle("s").breaker.reason or ""), timeout=30, what="the crash")
        shown = render_tree(sup.status())
    breaker, connection = server_lines(shown, "s")
    assert shown.count("exiting before the handshake") == 1, shown
    assert "connection:s: restarting, restarts=1, next attempt in 30.0 s, last exit: ConnectionDied: " in connection
    assert breaker.endswith("breaker open (connection down), next trial in 30 s"), breaker



async def test_a_connection_that_is_down_says_it_has_no_process_not_0_tools():
    """A stdio server that never connected showed "0 tools, stdio" (its pid gone since it
    is not shown once the process exited): as if it ran, serving nothing. Now "no process";
    a remote one that never connected shows its transport, without "0 tools"."""
    gave_up = BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1)
    specs = [server_spec("s", "crash_at_start.py", backoff=gave_up),
             ServerSpec(name="r", url="http://127.0.0.1:1/mcp", connect_timeout=5, backoff=gave_up)]
    async with Supervisor(specs) as sup:
        await wait_until(lambda: all("failed for good" in (sup.handle(name).breaker.reason or "") for name in "sr"),
                         timeout=30, what="both to fail")
        shown = render_tree(sup.status())
    (_, stdio), (_, remote) = server_lines(shown, "s"), server_lines(shown, "r")
    assert stdio.endswith("`restart s` starts it again, no process"), stdio
    assert remote.endswith("`restart r` starts it again, streamable-http"), remote


async def test_a_servers_words_in_the_status_paint_nothing_and_stay_on_their_line():
    """A server's stderr (colours, a carriage return) reached the terminal as it was, in
    its last error and in ``status --stderr``'s tail: an ESC sequence could paint or clear
    the operator's terminal, a ``\\r`` overwrite the start of the line. Now colours are left
    out and any other control character is escaped; each node stays one line."""
    code = "import sys; sys.stderr.write('\\x1b[31mERROR\\x1b[0m config missing\\rX\\x1b]0;title\\x07\\n'); sys.exit(1)"
    gave_up = BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1)
    spec = ServerSpec(name="c", command=sys.executable, args=["-c", code], backoff=gave_up)
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "failed for good" in (sup.handle("c").breaker.reason or ""), timeout=30, what="it to fail")
        shown = render_tree(sup.status(), stderr=True)
    assert all(c.isprintable() for line in shown.splitlines() for c in line), repr(shown)
    assert "its last stderr lines: ERROR config missing\\rX\\x1b]0;title\\x07, given up" in shown, shown
    assert "\n        | ERROR config missing\\rX\\x1b]0;title\\x07" in shown, shown


async def test_a_breaker_opened_by_the_operator_keeps_its_reason():
    """Only a reason the connection's line already gives is shortened: an operator's is not."""
    spec = server_spec("s", "echo.py")
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("s", timeout=30)
        await sup.set_breaker("s", "open", reason="maintenance window")
        shown = render_tree(sup.status())
    breaker, connection = server_lines(shown, "s")
    assert breaker.endswith("breaker forced_open (maintenance window)"), breaker
    assert ", pid " in connection and "last error" not in connection, connection


async def test_tools_prints_one_line_per_tool_whatever_its_name_holds(everything_daemon):
    """A tool whose name held a line break printed as two lines of ``tools``, the second
    whatever the name said after it ("forged: ..."), and an ESC in a name or on the
    description's first line reached the terminal as a live escape sequence. Now one line
    per tool: such a name quoted and escaped, the description escaped."""
    url = everything_daemon.url
    name = "evil\x1b[2J\nforged: a tool that is not there"
    with trio.fail_after(30):
        async with Client(streamable_http_client(url + "/mcp")) as client:
            await client.call_tool("mutate_lists", {"name": name})
            while True:  # until the daemon lists it (the server announced it)
                listed = [tool.name for tool in (await client.list_tools()).tools]
                if name in listed:
                    break
                await trio.sleep(0.05)
    run = await cli("tools", "--url", url)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.decode().splitlines()
    assert len(lines) == len(listed), lines
    assert not [line for line in lines if line.startswith("forged")] and "\x1b" not in run.stdout.decode(), lines
    assert f"{name!r}: dynamically added tool evil\\x1b[2J" in lines, lines
    assert "place_order: Summarise an order (nested models: the input schema uses $defs and $ref)." in lines


async def test_call_prints_structured_content_unless_a_text_block_already_is_it(everything_daemon):
    """``call`` printed a result's ``structuredContent`` only when it had no ``content``: a
    tool answering a text and a structured value (``own_error``: "own error: boom" and
    ``{"error": "boom"}``; ``all_content``: six blocks and ``{"kinds": [...], "count": 6}``)
    lost the value. Now it is printed as JSON, after the blocks, unless a text block already
    is that JSON (``place_order``: the SDK's serialization, printed once) or says the value
    the SDK wrapped in ``{"result": ...}``."""
    url = everything_daemon.url
    run = await cli("call", "own_error", "message=boom", "--url", url)
    assert run.returncode == 1, run.stderr  # an isError result
    assert run.stdout.decode().splitlines() == ["own error: boom", '{"error": "boom"}'], run.stdout

    run = await cli("call", "all_content", "--url", url)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.decode().splitlines()
    assert len(lines) == 7 and lines[0] == "plain text", lines  # one line per block, then the value
    assert json.loads(lines[-1]) == {"kinds": ["text", "image", "audio", "resource", "resource", "resource_link"],
                                     "count": 6}, lines
    image = json.loads(lines[1])  # a block that is no text: its JSON, whole (its data is not lost)
    assert (image["type"], image["mimeType"]) == ("image", "image/png") and image["data"], image

    order = {"customer": {"name": "Ann", "address": {"street": "s", "city": "c"}}, "items": [{"sku": "ABC-1", "quantity": 2}]}
    run = await cli("call", "place_order", "--json", json.dumps({"order": order}), "--url", url)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"customer": "Ann", "lines": 1, "units": 2}, run.stdout  # once: one JSON document

    # An answer that is no object comes as text and, wrapped, as {"result": ...} (the SDK's
    # way): the text says it.
    run = await cli("call", "progress_steps", "steps=1", "--url", url)
    assert (run.returncode, run.stdout) == (0, b"done 1 steps\n"), run


# A server's words with a colour, a carriage return, a line break forging the next line, a C1 CSI.
FORGING = "a\x1b[31mb\rc\n[error x] forged\x9b2J"
FORGING_SHOWN = "ab\\rc\\n[error x] forged\\x9b2J"


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # logging, on purpose
async def test_call_shows_what_the_server_says_meanwhile_on_one_line_painting_nothing(everything_daemon, capsys):
    """``call`` printed the server's log lines, its progress messages and its error's
    message to stderr as they came: an ESC sequence painted the terminal, a ``\\r`` overwrote
    the line, a line break forged the next one ("[error x] forged"), and a log line's data
    that is no text was a Python repr. Now each is shown as the status shows a server's
    words (colours left out, any other control character escaped) and such data is JSON."""
    run = await cli("call", "log_levels", "--json", json.dumps({"tag": FORGING}), "--url", everything_daemon.url)
    assert run.returncode == 0, run.stderr
    said = run.stderr.decode().splitlines()
    assert said == [
        f"[info everything/everything.logs] {FORGING_SHOWN}: info line",
        '[warning everything/everything.logs] {"tag": "a\\u001b[31mb\\rc\\n[error x] forged\\x9b2J", '
        '"detail": "warning data is an object", "n": [1, 2]}',
        f"[error everything/everything.logs] {FORGING_SHOWN}: error line",
    ], said

    run = await cli("call", "jsonrpc_error", "--json", json.dumps({"code": -32001, "message": FORGING}),
                    "--url", everything_daemon.url)
    assert (run.returncode, run.stderr.decode()) == (1, f"error -32001: {FORGING_SHOWN}\n"), run

    # The everything server's progress messages are its own ("step i/n"): one that says
    # whatever a server likes, from a server in this process.
    app = MCPServer("forger")

    @app.tool()
    async def forge(ctx: Context) -> str:
        await ctx.report_progress(1, 2, FORGING)
        await ctx.log("info", FORGING, logger_name="forger\x1b[2J\nlogs")
        return "ok"

    with trio.fail_after(30):
        code = await _call(lambda logging_callback: Client(app, logging_callback=logging_callback, log_level="info"),
                           "forge", {}, {})
    out, err = capsys.readouterr()
    assert (code, out) == (0, "ok\n"), (out, err)
    assert err.splitlines() == [f"[progress 1/2] {FORGING_SHOWN}", f"[info forger\\nlogs] {FORGING_SHOWN}"], err


def paging_server(next_cursor) -> Server:
    """A server whose ``tools/list`` pages: the page asked with cursor ``c`` (None: the
    first, ``"0"``) lists tool ``t<c>`` and gives ``next_cursor(c)`` as its ``nextCursor``;
    its ``tools/call`` answers the arguments it got, as JSON."""

    async def list_tools(ctx, params) -> types.ListToolsResult:
        cursor = (params.cursor if params else None) or "0"
        tool = types.Tool(name=f"t{cursor}", description=f"page {cursor}",
                          input_schema={"type": "object", "properties": {"text": {"type": "string"}}})
        return types.ListToolsResult(tools=[tool], next_cursor=next_cursor(cursor))

    async def call_tool(ctx, params) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(text=json.dumps(params.arguments))])

    return Server("paging", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_tools_follows_the_cursor_to_the_last_page(capsys):
    """``tools`` printed the first page of the list and nothing else: a server that pages
    (``nextCursor``; any MCP endpoint ``--url`` names may) had its other tools left out,
    unsaid. Now every page is read."""
    server = paging_server(lambda cursor: str(int(cursor) + 1) if cursor != "2" else None)
    with trio.fail_after(30):
        code = await _tools(lambda: Client(server))
    out, err = capsys.readouterr()
    assert (code, out.splitlines(), err) == (0, ["t0: page 0", "t1: page 1", "t2: page 2"], ""), (out, err)


async def test_a_list_of_tools_that_pages_without_end_is_not_followed_forever(capsys):
    """A server that gives a cursor it gave before would be asked the same pages forever
    (``call`` with ``key=value`` arguments, which reads the list for the tool's schema, did
    so); one that gives a new cursor each time, too. Now ``tools`` prints the tools of the
    pages read, says on stderr why the list is incomplete and exits 1; ``call`` says so too,
    types its values without a schema, and calls the tool."""
    again = paging_server(lambda cursor: "1")  # page 1 gives cursor "1" again
    with trio.fail_after(30):
        code = await _tools(lambda: Client(again))
    out, err = capsys.readouterr()
    assert (code, out.splitlines()) == (1, ["t0: page 0", "t1: page 1"]), (out, err)
    assert err == ("error: the list of tools is incomplete: page 2 gave the cursor page 1 gave (the same pages "
                   "would come again, without end); 2 pages read\n"), err

    with trio.fail_after(30):
        code = await _call(lambda logging_callback: Client(again, logging_callback=logging_callback),
                           "t9", None, {"text": "42"})
    out, err = capsys.readouterr()
    assert (code, out) == (0, '{"text": 42}\n'), (out, err)  # no schema said text is a string
    assert err.startswith("warning: t9 is not in the list of tools, which is incomplete (page 2 gave"), err

    endless = paging_server(lambda cursor: str(int(cursor) + 1))  # the real cap: 1000 pages
    with trio.fail_after(60):
        code = await _tools(lambda: Client(endless))
    out, err = capsys.readouterr()
    assert (code, len(out.splitlines())) == (1, _MAX_PAGES), (out[-200:], err)
    assert err == f"error: the list of tools is incomplete: it had more pages after {_MAX_PAGES}; {_MAX_PAGES} pages read\n", err


async def test_reload_restart_and_breaker_show_a_configs_names_as_the_status_does(tmp_path, start_daemon):
    """``reload`` printed the names of the servers it added (or updated, removed...) as the
    config gives them, and ``restart``/``breaker`` printed the daemon's refusal as it came,
    which names the servers it supervises: a name holding a colour and a line break painted
    the terminal and forged a line ("forged: x"). Now they are shown as the status shows
    them: colours left out, any other control character escaped."""
    echo, _ = server_entry("echo.py")
    config = write_config(tmp_path / "c.json", {"echo": echo})
    daemon = await start_daemon(config)
    name = "ev\x1b[31mil\nforged: x"
    write_config(config, {"echo": echo, name: server_entry("echo.py")[0]})
    run = await cli("reload", "--url", daemon.url)
    assert (run.returncode, run.stdout.decode().splitlines()) == (0, ["added: evil\\nforged: x", "unchanged: echo"]), run

    for command in (["restart", "nosuch"], ["breaker", "nosuch", "open"]):
        run = await cli(*command, "--url", daemon.url)
        said = f"error: {' '.join(command)}: 404: no server 'nosuch' (supervised: echo, evil\\nforged: x)\n"
        assert (run.returncode, run.stderr.decode()) == (1, said), run


async def interrupted(proc: subprocess.Popen) -> None:
    """Ctrl-C ``proc`` and wait for it to end (30 s at most)."""
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(30):
        while proc.poll() is None:
            await trio.sleep(0.05)


def ended(proc: subprocess.Popen) -> None:
    """``proc`` ended, killed if it had not."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


async def test_an_interrupted_call_says_so_in_one_line(everything_daemon, tmp_path):
    """Ctrl-C while ``call`` waited for its answer printed a traceback of some hundred lines
    (the interrupt inside trio's and the SDK's task groups) and exited 1, as a failure of
    the command would. Now one line, saying the call may have taken effect, exit 130 (as
    ``reload``, ``restart`` and ``breaker`` do)."""
    import httpx2

    err = tmp_path / "stderr"
    command = [sys.executable, "-m", "supervisor", "call", "log_together", "tag=interrupted", "calls=1000000",
               "--url", everything_daemon.url]
    with open(err, "wb") as stderr:  # SIGINT as a terminal sends it, whatever this process's disposition
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        async with httpx2.AsyncClient() as http:

            async def in_flight() -> bool:  # the call waits in the server: the CLI is waiting for it
                metrics = (await http.get(everything_daemon.url + "/metrics")).text
                return 'mcp_supervisor_inflight_calls{server="everything"} 1.0' in metrics

            with trio.fail_after(30):
                while not await in_flight():
                    assert proc.poll() is None, err.read_text()
                    await trio.sleep(0.05)
        await interrupted(proc)
    finally:
        ended(proc)
        proc.stdout.close()
    assert (proc.returncode, err.read_text()) == (
        130, "interrupted before the daemon answered: the call of log_together may have taken effect, in part or whole\n"
    ), err.read_text()


async def answer_every_post(stream: trio.SocketStream, status: bytes, body: bytes) -> None:
    """One HTTP exchange: read a request (headers, then its Content-Length of body), answer
    ``status`` with the JSON ``body``, close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            return
        data += chunk
    head, _, body_read = data.partition(b"\r\n\r\n")
    lengths = [line.partition(b":")[2] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    while len(body_read) < int(lengths[0] if lengths else 0):
        body_read += await stream.receive_some()
    await stream.send_all(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          b"Connection: close\r\n\r\n%s" % (status, len(body), body))
    await stream.aclose()


async def test_tools_and_call_name_the_endpoint_that_refused_and_show_its_words(everything_daemon):
    """An endpoint that answers a request with an HTTP error and a JSON-RPC error: ``tools``
    and ``call`` printed ``MCPError:`` and its message as it came (a line break forged a
    line, an ESC painted the terminal), and named the URL given, not the one asked: a
    ``--url`` ending in ``/mcp`` said "MCPError: Not Found" of a daemon that is there. Now
    the endpoint asked and its HTTP status, its words as the status shows a server's."""
    refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "evil\x1b[2J\nforged: line"}}
    handler = functools.partial(answer_every_post, status=b"400 Bad Request", body=json.dumps(refusal).encode())
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        for command in (["tools"], ["call", "x", "a=1"]):
            run = await cli(*command, "--url", url)
            assert (run.returncode, run.stderr.decode()) == (1, f"error: {url}/mcp answered 400: evil\\nforged: line\n"), run
        nursery.cancel_scope.cancel()

    run = await cli("tools", "--url", everything_daemon.url + "/mcp")
    assert (run.returncode, run.stderr.decode()) == (1, f"error: {everything_daemon.url}/mcp/mcp answered 404: Not Found\n"), run


async def test_an_interrupted_status_says_so_in_one_line(tmp_path):
    """Ctrl-C while ``status`` waited for a daemon that does not answer (for up to 10 s)
    printed a traceback of some sixty lines, exit -2 (killed by the signal). Now one line,
    exit 130, as the other client commands."""
    err = tmp_path / "stderr"
    asked = trio.Event()

    async def take_the_request(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        asked.set()
        await trio.sleep_forever()  # and never answer

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(functools.partial(trio.serve_tcp, take_the_request, 0, host="127.0.0.1"))
        command = [sys.executable, "-m", "supervisor", "status", "--url", f"http://127.0.0.1:{listener.socket.getsockname()[1]}"]
        with open(err, "wb") as stderr:  # SIGINT as a terminal sends it, whatever this process's disposition
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            with trio.fail_after(30):
                await asked.wait()
            await interrupted(proc)
        finally:
            ended(proc)
        nursery.cancel_scope.cancel()
    assert (proc.returncode, err.read_text()) == (130, "interrupted before the daemon answered\n"), err.read_text()


async def test_the_daemon_log_shows_a_servers_words_on_one_line_painting_nothing(tmp_path):
    """The daemon's log took a server's stderr as it was (in the exit it logs, with the last
    stderr lines): a line break in it forged a line of the log ("... ERROR supervisor: all
    fine"), and an ESC sequence painted the operator's terminal. Now every record's message
    is one line, colours left out and any other control character escaped (tracebacks are
    the log's own and stay as they are)."""
    code = ("import sys; sys.stderr.write('\\x1b[31mboom\\x1b[0m\\n2026-01-01 00:00:00,000 ERROR supervisor: forged"
            "\\x1b]0;title\\x07\\n'); sys.exit(1)")
    entry = {"command": sys.executable, "args": ["-c", code], "backoff": {"max_consecutive": 1, "min": 0.05}}
    daemon = Daemon(write_config(tmp_path / "c.json", {"noisy": entry}), tmp_path)
    try:
        await wait_until(lambda: "failed for good" in daemon.log.read_text(), timeout=60, what="the server to give up")
    finally:
        daemon.stop()
    logged = daemon.log.read_text()
    assert "\x1b" not in logged and "\x07" not in logged, repr(logged[-2000:])
    assert not any(line.lstrip().startswith("2026-01-01") for line in logged.splitlines()), logged[-2000:]
    assert "boom | 2026-01-01 00:00:00,000 ERROR supervisor: forged\\x1b]0;title\\x07" in logged, logged[-2000:]
