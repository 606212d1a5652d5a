"""What README.md and the CLI's help and errors tell a user, checked against what happens.

Real processes only: servers from ``tests/servers/``, the daemon as a subprocess on a free
127.0.0.1 port. Every wait has a deadline.
"""

from __future__ import annotations

from conftest import server_spec
from protocol import ServerSpec
from supervisor import Supervisor
from supervisor.__main__ import render_tree
from test_connection import HttpEcho


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
