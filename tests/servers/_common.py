"""Shared pieces of the test MCP servers in this folder.

Every server here is a script (``python tests/servers/<name>.py``); Python puts the
script's own folder first on ``sys.path``, so ``import _common`` works from each of them.

`make_server` builds an `MCPServer` carrying the well-behaved echo tool set; the
misbehaving servers add their own tools on top and serve it with `serve_stdio`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
IDEMPOTENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", default=None, help="server name reported in serverInfo")
    return parser


def exec_log(line: str) -> None:
    """Append one line to the file named by $EXEC_LOG (if set): a record that a tool really ran."""
    path = os.environ.get("EXEC_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def add_echo_tools(mcp: MCPServer, *, only: set[str] | None = None) -> None:
    """Register the echo tool set (or the subset named in `only`)."""

    def want(name: str) -> bool:
        return only is None or name in only

    if want("echo"):

        @mcp.tool(annotations=READ_ONLY)
        def echo(text: str) -> str:
            """Return the text unchanged."""
            return text

    if want("add"):

        @mcp.tool(annotations=IDEMPOTENT)
        def add(a: int, b: int) -> int:
            """Return a + b."""
            return a + b

    if want("write_note"):

        @mcp.tool(annotations=DESTRUCTIVE)
        def write_note(text: str) -> str:
            """Record one execution in $EXEC_LOG (a destructive, non-idempotent action)."""
            exec_log(f"write_note {text}")
            return f"noted: {text}"

    if want("sleep"):

        @mcp.tool(annotations=READ_ONLY)
        async def sleep(seconds: float, ctx: Context) -> str:
            """Sleep, reporting progress every 0.1 s when the caller asked for progress."""
            step = 0.1
            done = 0.0
            while done < seconds:
                chunk = min(step, seconds - done)
                await anyio.sleep(chunk)
                done += chunk
                # A no-op when the request carried no progress token.
                await ctx.report_progress(done, seconds, f"slept {done:.1f}s")
            return f"slept {seconds}"

    if want("fail"):

        @mcp.tool(annotations=READ_ONLY)
        def fail(message: str) -> str:
            """Always fails: the result is a tool error (isError: true) carrying `message`."""
            raise ToolError(message)

    if want("pid"):

        @mcp.tool(annotations=READ_ONLY)
        def pid() -> int:
            """The server process id."""
            return os.getpid()


def add_prompt_and_resource(mcp: MCPServer) -> None:
    @mcp.prompt()
    def greet(who: str = "world") -> str:
        """A greeting prompt."""
        return f"Say hello to {who}."

    @mcp.resource("info://server", mime_type="text/plain")
    def info() -> str:
        """Server info."""
        return f"{mcp.name} pid={os.getpid()}"


def make_server(name: str, **kwargs: Any) -> MCPServer:
    """An MCPServer with the full echo tool set, one prompt and one resource."""
    mcp = MCPServer(name, log_level="WARNING", **kwargs)
    add_echo_tools(mcp)
    add_prompt_and_resource(mcp)
    return mcp


def serve_stdio(mcp: MCPServer) -> None:
    """Serve `mcp` over stdio until stdin closes (asyncio backend: the usual real-world server).

    With ``MCP_TEST_STUBBORN=1`` in the environment the server ignores SIGTERM (unless it
    handles it itself) and lingers for an hour after stdin closes: only SIGKILL stops it."""
    stubborn = os.environ.get("MCP_TEST_STUBBORN") == "1"
    if stubborn and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        mcp.run("stdio")
    except KeyboardInterrupt:  # pragma: no cover
        pass
    if stubborn:
        time.sleep(3600)
    sys.exit(0)
