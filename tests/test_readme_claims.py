"""What README.md and the CLI's help and errors tell a user, checked against what happens.

Real processes only: servers from ``tests/servers/``, the daemon as a subprocess on a free
127.0.0.1 port. Every wait has a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys

import trio

from conftest import server_spec
from protocol import ServerSpec
from supervisor import Supervisor
from supervisor.__main__ import render_tree
from test_connection import HttpEcho
from test_daemon import ROOT, Daemon, server_entry, write_config


async def test_status_names_a_remote_servers_transport_not_in_process():
    """``status`` said "in-process" of every server without a pid: a remote one too."""
    async with HttpEcho() as remote:
        specs = [
            ServerSpec(name="remote", url=remote.url("/mcp"), connect_timeout=10),
            server_spec("local", "echo.py"),
        ]
        async with Supervisor(specs) as sup:
            await sup.wait_connected("remote", timeout=20)
            await sup.wait_connected("local", timeout=20)
            lines = render_tree(sup.status()).splitlines()
    (remote_line,) = [line for line in lines if "connection:remote:" in line]
    (local_line,) = [line for line in lines if "connection:local:" in line]
    assert "in-process" not in remote_line, remote_line
    assert "streamable-http" in remote_line, remote_line
    assert ", pid " in local_line, local_line


async def test_cli_commands_against_a_daemon_with_a_token_say_how_to_send_it(tmp_path):
    """With ``supervisor.auth_token`` set, every client command without the token failed
    with words that do not say how to send it: ``tools``/``call`` with the SDK's "Server
    returned an error response", ``reload`` with "reload refused, the old config keeps
    running". Each now names ``$MCP_SUPERVISOR_TOKEN``."""
    token = "s3cret-token-value"
    echo, _ = server_entry("echo.py")
    daemon = Daemon(write_config(tmp_path / "c.json", {"echo": echo}, auth_token=token), tmp_path)
    try:
        await daemon.wait_healthy()

        async def cli(env_token: str | None, *args: str) -> subprocess.CompletedProcess:
            env = {k: v for k, v in os.environ.items() if k != "MCP_SUPERVISOR_TOKEN"}
            if env_token is not None:
                env["MCP_SUPERVISOR_TOKEN"] = env_token
            return await trio.run_process(
                [sys.executable, "-m", "supervisor", *args, "--url", daemon.url], cwd=ROOT, env=env,
                capture_stdout=True, capture_stderr=True, check=False,
            )

        commands = [("status",), ("tools",), ("call", "echo", "text=hi"), ("reload",), ("restart", "echo"),
                    ("breaker", "echo", "reset")]
        with trio.fail_after(300):  # catches a hang: twelve CLI runs, each seconds long when loaded
            for command in commands:
                unset = await cli(None, *command)
                assert unset.returncode == 1, (command, unset)
                assert b"set $MCP_SUPERVISOR_TOKEN" in unset.stderr, (command, unset.stderr)
                assert b"refused, the old config" not in unset.stderr
                wrong = await cli("not-the-token", *command)
                assert wrong.returncode == 1, (command, wrong)
                assert b"refused $MCP_SUPERVISOR_TOKEN" in wrong.stderr, (command, wrong.stderr)
                assert b"not-the-token" not in wrong.stderr
            right = await cli(token, "call", "echo", "text=hi")
        assert right.returncode == 0 and right.stdout.strip() == b"hi", right.stderr
    finally:
        daemon.stop()


async def test_cli_reload_says_which_changed_settings_wait_for_the_next_start(tmp_path):
    """``reload`` printed "settings changed: max_body_bytes" as if applied, while the HTTP
    front keeps the limit it was built with until the next start."""
    echo, _ = server_entry("echo.py")
    config = tmp_path / "c.json"
    daemon = Daemon(write_config(config, {"echo": echo}, max_body_bytes=65536), tmp_path)
    try:
        await daemon.wait_healthy()
        write_config(config, {"echo": echo}, max_body_bytes=2048, toolsets={"mine": ["search"]})
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "supervisor", "reload", "--url", daemon.url], cwd=ROOT,
                capture_stdout=True, capture_stderr=True, check=False,
            )
        assert done.returncode == 0, done.stderr
        (line,) = [line for line in done.stdout.decode().splitlines() if line.startswith("settings changed: ")]
        shown = line.removeprefix("settings changed: ").split(", ")
        assert "toolsets" in shown, line
        assert "max_body_bytes (takes effect at the next start only)" in shown, line
    finally:
        daemon.stop()


def test_the_help_names_every_route_of_the_http_front():
    """``--help`` listed the control routes without ``POST /breaker/<server>/<action>``."""
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "--help"], cwd=ROOT, capture_output=True, timeout=60, check=True
    )
    text = " ".join(done.stdout.decode().split())
    for route in ("/mcp", "/status", "/metrics", "/healthz", "POST /reload", "POST /restart/<server>",
                  "POST /breaker/<server>/<action>"):
        assert route in text, route
