"""The command line's own promises: ``check`` shows no secret; ``reload``, ``restart`` and
``breaker`` give no false verdict (a refusal, a reachability error) for what they cannot
know, and wait on a daemon as long as it is alive. Real subprocesses, real daemons
(`test_daemon.Daemon`), real strangers on real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import trio

from conftest import wait_until
from supervisor._config import ConfigError, Substitutions, load_config
import test_daemon
from test_daemon import Daemon, free_port, server_entry, stranger_http_server, write_config

start_daemon = test_daemon.start_daemon  # the fixture

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# -- check --------------------------------------------------------------------------------------


def test_check_shows_nothing_a_variable_took_from_the_environment(tmp_path):
    """`check` ("secrets redacted") printed a ``${VAR}``'s value wherever no pattern caught
    it: a positional argument, after ``--key`` or ``-t``, after ``Bearer `` in an
    argument, in a command line put in ``command`` (its warning on stderr too). Now every
    value taken from the environment is ``***`` wherever it stands, and what the daemon
    runs is unchanged."""
    secret = "sk-SECRET123"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"mcpServers": {
        "x": {"command": "/bin/echo", "args": [
            "serve", "${MY_API_KEY}", "--key", "${MY_API_KEY}", "-t", "${MY_API_KEY}", "--apikey=${MY_API_KEY}",
            "postgres://u:${MY_API_KEY}@h/db", "Bearer ${MY_API_KEY}", "--port", "${ONE}", "--level=${LEVEL:-info}",
        ], "env": {"K": "${MY_API_KEY}"}},
        "r": {"url": "http://127.0.0.1:18199/mcp/${MY_API_KEY}/x", "headers": {"X": "${MY_API_KEY}"}},
        "line": {"command": "no-such-tool-xyz --opaque ${MY_API_KEY}"},
    }}))
    env = {"MY_API_KEY": secret, "ONE": "1"}
    run = cli("check", "--config", str(config), env=env)
    assert run.returncode == 0, run.stderr
    assert secret not in run.stdout + run.stderr, run.stdout + run.stderr
    shown = json.loads(run.stdout)
    servers = {server["name"]: server for server in shown["servers"]}
    assert servers["x"]["args"] == [
        "serve", "***", "--key", "***", "-t", "***", "--apikey=***", "postgres://***@h/db", "Bearer ***",
        "--port", "***", "--level=info",  # a default written in the file is no secret
    ]
    assert servers["r"]["url"] == "http://127.0.0.1:18199/mcp/***/x"
    assert servers["line"]["command"] == "no-such-tool-xyz --opaque ***"
    # A short value is hidden where it was put, not in every string that holds a "1".
    assert shown["settings"]["http"] == "127.0.0.1:8765" and servers["x"]["command"] == "/bin/echo"
    assert "no-such-tool-xyz --opaque ***" in run.stderr, run.stderr  # the warning about it

    config_run = load_config(config, environ={**os.environ, **env})  # what the daemon uses
    assert config_run.server("x").args[1] == secret and config_run.server("r").headers == {"X": secret}


def test_substitutions_change_nothing_the_config_says(tmp_path):
    """Collecting the substitutions is seen only by `redacted`: the loaded config is the
    same with and without them."""
    environ = {"TOKEN": "t0k3n-value"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"mcpServers": {"a": {"url": "http://h/mcp", "headers": {"A": "Bearer ${TOKEN}"}}}}))
    seen = Substitutions()
    assert load_config(path, environ=environ, substitutions=seen) == load_config(path, environ=environ)
    assert seen.values == {"t0k3n-value"} and seen.shown == {"Bearer t0k3n-value": "Bearer ***"}


def test_a_vs_code_variable_is_named_as_one(tmp_path):
    """A VS Code ``mcp.json`` with ``${workspaceFolder}`` was refused with "environment
    variable 'workspaceFolder' is not set", as if a variable were missing from the shell;
    ``${workspaceFolder:name}`` and ``${config:x}`` as a malformed reference. Each is now
    named as the VS Code variable it is, which the supervisor cannot know (set in the
    environment, it is taken from there as any ``${VAR}``)."""
    cases = [("${workspaceFolder}/bin/srv", "or set workspaceFolder in the environment"),
             ("${workspaceFolder:proj}/bin/srv", "write the value itself, or use ${VAR}"),
             ("${config:python.defaultInterpreterPath}", "write the value itself, or use ${VAR}")]
    for command, hint in cases:
        config = tmp_path / "mcp.json"
        config.write_text(json.dumps({"servers": {"x": {"type": "stdio", "command": command}}}))
        run = subprocess.run([sys.executable, "-m", "supervisor", "check", "--config", str(config)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "workspaceFolder"})
        assert run.returncode == 2, run
        reference = command.partition("}")[0] + "}"
        said = f"servers.x.command: '{reference}' is a VS Code variable, which VS Code fills in and the supervisor cannot know"
        assert said in run.stderr and hint in run.stderr, run.stderr
    config.write_text(json.dumps({"servers": {"x": {"type": "stdio", "command": "${workspaceFolder}/bin/srv"}}}))
    assert load_config(config, environ={"workspaceFolder": "/w"}).server("x").command == "/w/bin/srv"


def test_a_vs_code_env_file_is_read_into_env(tmp_path):
    """VS Code's ``envFile`` (a stdio server's file of ``KEY=VALUE`` lines) was refused as
    an unknown key. Now its lines join ``env`` (which wins over them), relative to the
    config file's directory; a file that is missing or not ``KEY=VALUE`` is refused naming
    the line, never its text (it may hold a secret)."""
    (tmp_path / ".env").write_text(
        "# a comment\nexport A=1\nB=\"two words\"\nC='x #y'\nD=v # comment\n\nE=\nTOKEN=s3cr3t-from-file\n"
    )
    config = tmp_path / "mcp.json"
    entry = {"type": "stdio", "command": "/bin/true", "envFile": ".env", "env": {"B": "mine"}}
    config.write_text(json.dumps({"servers": {"m": entry}}))
    env = load_config(config, environ={}).server("m").env
    assert env == {"A": "1", "B": "mine", "C": "x #y", "D": "v", "E": "", "TOKEN": "s3cr3t-from-file"}
    run = cli("check", "--config", str(config))
    assert run.returncode == 0 and "s3cr3t" not in run.stdout + run.stderr, run

    def refusal(servers: dict) -> str:
        config.write_text(json.dumps({"servers": servers}))
        with pytest.raises(ConfigError) as refused:
            load_config(config, environ={})
        return str(refused.value)

    assert refusal({"m": {**entry, "envFile": "nope.env"}}).endswith(
        f"servers.m.envFile: no such file: {str(tmp_path / 'nope.env')!r}")
    (tmp_path / "bad.env").write_text("A=1\nthis-is-s3cr3t\n")
    said = refusal({"m": {**entry, "envFile": "bad.env"}})
    assert said.endswith(f"servers.m.envFile: {str(tmp_path / 'bad.env')!r} line 2: expected KEY=VALUE"), said
    assert refusal({"r": {"url": "http://h/mcp", "envFile": ".env"}}).endswith(
        "servers.r.envFile: only for stdio servers (with 'command'); this server has a 'url'")
    # A disabled server's file may be meant for another machine: not read.
    config.write_text(json.dumps({"servers": {"m": {**entry, "envFile": "nope.env", "enabled": False}}}))
    assert load_config(config, environ={}).server("m").env == {"B": "mine"}


# -- reload, restart, breaker ---------------------------------------------------------------------

POSTS = (["reload"], ["restart", "a"], ["breaker", "a", "open"])


async def cli_async(*args: str) -> subprocess.CompletedProcess:
    return await trio.run_process([sys.executable, "-m", "supervisor", *args], cwd=ROOT, capture_stdout=True,
                                  capture_stderr=True, check=False)


async def each_post(url: str) -> dict[str, subprocess.CompletedProcess]:
    """`reload`, `restart a` and `breaker a open` at ``url``, side by side."""
    runs: dict[str, subprocess.CompletedProcess] = {}

    async def one(args: list[str]) -> None:
        runs[args[0]] = await cli_async(*args, "--url", url)

    async with trio.open_nursery() as nursery:
        for args in POSTS:
            nursery.start_soon(one, args)
    return runs


_ANSWERS_200 = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    do_GET = do_POST = answer
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


async def test_a_stranger_answering_200_to_everything_is_told_no_daemon():
    """``reload`` against something that answers ``200 {}`` (no daemon) exited 0 printing
    nothing, as if it had reloaded a config that changed nothing; ``restart`` and
    ``breaker`` said it did not answer as a daemon does. Now ``reload`` does too (exit 1)."""
    port = free_port()
    stranger = subprocess.Popen([sys.executable, "-c", _ANSWERS_200, str(port)])
    try:
        with trio.fail_after(30):
            while True:
                try:
                    if httpx2.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                        break
                except httpx2.HTTPError:
                    await trio.sleep(0.05)
            runs = await each_post(f"http://127.0.0.1:{port}")
    finally:
        stranger.kill()
        stranger.wait()
    for command, run in runs.items():
        assert run.returncode == 1 and run.stdout == b"", (command, run)
        assert b"did not answer as an mcp-supervisor daemon does" in run.stderr, (command, run.stderr)


async def test_a_web_server_refusing_the_post_is_no_refused_config(tmp_path):
    """``reload`` against Python's web server printed "reload refused, the old config keeps
    running: 501 ...": a daemon and its config that are not there. Now it says the answer
    is not a daemon's (exit 1, nothing was done)."""
    with stranger_http_server(tmp_path) as port:
        with trio.fail_after(30):
            runs = await each_post(f"http://127.0.0.1:{port}")
    for command, run in runs.items():
        assert run.returncode == 1, (command, run)
        assert b"answered 501: Error response" in run.stderr, (command, run.stderr)
        assert b"(not as an mcp-supervisor daemon does)" in run.stderr and b"refused" not in run.stderr, run.stderr


async def test_a_port_that_takes_the_connection_and_never_answers_is_given_up_on():
    """``reload``, ``restart`` and ``breaker`` against a port that accepts and says nothing
    hung 120 s, then said "cannot reach the daemon" (exit 1: nothing changed). Now they
    give up once it has not answered ``GET /healthz`` either for 10 s, as ``status`` gives
    up, and exit 4: the request went out, what became of it is unknown."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with trio.fail_after(60):
            runs = await each_post(url)
    for command, run in runs.items():
        assert run.returncode == 4, (command, run)
        assert f"nothing at {url} answered within 10 s, not even GET /healthz".encode() in run.stderr, run.stderr
        assert b"took effect is unknown; `status` shows what runs" in run.stderr, run.stderr


def server_states(daemon: Daemon) -> dict[str, str]:
    """``connection:<name>`` -> its state, from the daemon's ``/status``."""
    tree = httpx2.get(daemon.url + "/status", timeout=5).json()
    (servers,) = [c for c in tree["children"] if c["id"] == "servers"]
    return {
        conn["id"]: conn["state"]
        for server in servers["children"] for conn in server["children"] if conn["id"].startswith("connection:")
    }


async def test_reload_waits_for_a_live_daemon_and_tells_when_it_stops_answering(tmp_path, start_daemon):
    """``reload`` waited 120 s at most, then said "cannot reach the daemon" and exited 1
    ("a refused config changes nothing") while the daemon was still applying the reload (a
    new server with a long ``connect_timeout``), which then succeeded. Now it waits as long
    as the daemon answers ``GET /healthz``, past 10 s of silence on its own request; and
    when the daemon stops answering (SIGSTOP here) it says the outcome is unknown (exit 4),
    which it is: the daemon, resumed, finishes the reload."""
    echo, _ = server_entry("echo.py")
    config = write_config(tmp_path / "c.json", {"echo": echo})
    daemon = await start_daemon(config)
    slow, _ = server_entry("slow_start.py", "--delay", "14", namespace="prefix", connect_timeout=60)
    write_config(config, {"echo": echo, "slow": slow})
    with trio.fail_after(60):
        run = await cli_async("reload", "--url", daemon.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().splitlines() == ["added: slow", "unchanged: echo"], run.stdout
    assert server_states(daemon)["connection:slow"] == "running"

    later, _ = server_entry("slow_start.py", "--delay", "5", namespace="prefix", connect_timeout=60)
    write_config(config, {"echo": echo, "slow": slow, "later": later})
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                runs = []
                nursery.start_soon(lambda: run_into(runs, "reload", "--url", daemon.url))
                await wait_until(lambda: "connection:later" in server_states(daemon), timeout=20, what="the reload")
                daemon.proc.send_signal(signal.SIGSTOP)
        (run,) = runs
        assert run.returncode == 4, run
        assert f"the daemon at {daemon.url} stopped answering (nothing on GET /healthz for 10 s)".encode() in run.stderr
        assert b"whether `reload` took effect is unknown" in run.stderr, run.stderr
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    await wait_until(lambda: server_states(daemon).get("connection:later") == "running", timeout=30,
                     what="the reload to finish")


async def run_into(runs: list, *args: str) -> None:
    runs.append(await cli_async(*args))


def test_an_interrupted_post_says_it_may_still_take_effect():
    """Ctrl-C while ``reload`` waited printed trio's whole traceback (the interrupt inside
    an exception group), where a daemon that got the request goes on with it. Now one line
    says so; exit 130."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        silent.settimeout(30)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # As a shell starts it: SIGINT not ignored. A signal ignored here is ignored in the
        # child too, across exec, and Python then installs no handler of its own. In two
        # clean-clone runs of the whole suite the CLI never saw the Ctrl-C (exit 4 after
        # its 10 s watch, not 130); alone, or with -n 2 on this file, it always did: the
        # likeliest cause, an ignored SIGINT in that worker, was not proven.
        ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            command = subprocess.Popen([sys.executable, "-m", "supervisor", "reload", "--url", url], cwd=ROOT,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            signal.signal(signal.SIGINT, ignored)
        held = []  # every connection kept open, unanswered
        try:
            while True:  # until its POST came: it is waiting on its request now (not starting up)
                connection, _ = silent.accept()
                held.append(connection)
                connection.settimeout(30)
                if connection.recv(4096).startswith(b"POST /reload"):
                    break
            command.send_signal(signal.SIGINT)
            out, err = command.communicate(timeout=30)
        finally:
            for connection in held:
                connection.close()
            command.kill()
            command.wait()
    assert command.returncode == 130, err
    assert err == "interrupted before the daemon answered: `reload` may still take effect; `status` shows what runs\n"
