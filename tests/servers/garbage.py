"""A server that writes non-JSON lines onto its stdout (the JSON-RPC wire).

``--when start``: print ``--lines`` garbage lines to stdout before serving, then serve;
with ``--glued`` the last has no newline, so the server's first JSON-RPC message is glued
to it (a banner printed with ``end=""``): that message is lost, and with it the handshake.
``--when call``: no garbage until asked.
Either way it serves the echo tools plus ``spew(lines: int)``, which writes that many
garbage lines straight onto the wire, bypassing the transport, then answers normally.

Note: while it serves, the mcp 2.3 stdio transport points fd 1 at stderr (and fd 0 at
/dev/null) and writes the wire through a private duplicate, so a plain ``print()`` or
``os.write(1, ...)`` inside a tool never reaches the client. ``spew`` therefore writes
through a duplicate of fd 1 taken before serving starts: that is what a server whose
stdout is not guarded (an older SDK, another language, a child process) does to the wire.
``spew(lines, via="fd1")`` writes to fd 1 instead, to show that this lands on stderr.

Two tools answer with JSON-RPC that is well formed but no valid result:

- ``misshapen()`` writes, onto the wire, an answer to its own request whose result is no
  ``CallToolResult`` (``content`` is not a list); the SDK's own answer follows it, for a
  request the client no longer waits on. It is read-only, so retrying it would be safe.
- ``malformed(shape)`` writes, onto the wire, an answer to its own request that is no
  valid JSON-RPC at all: ``null-result`` (``"result": null``), ``no-jsonrpc`` (a result
  with no ``"jsonrpc"`` member), ``error-without-message``; then it sleeps for good, so no
  valid answer follows.
- ``miscount()`` returns structured content that its own output schema rejects
  (``{"count": "3"}`` where the schema says integer): the server's lax pydantic check lets
  it through, a client's JSON Schema check does not.

    python tests/servers/garbage.py [--when start|call] [--lines N] [--name NAME]
"""

import json
import os
import sys
from typing import Annotated

import anyio
import pydantic
from mcp import types
from mcp.server.mcpserver import Context

from _common import READ_ONLY, base_parser, make_server, serve_stdio

GARBAGE = "this is not JSON-RPC {garbage line %d"


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--when", choices=("start", "call"), default="start")
    parser.add_argument("--lines", type=int, default=3, help="garbage lines printed at start (--when start)")
    parser.add_argument("--glued", action="store_true", help="no newline after the last one (--when start)")
    args = parser.parse_args()

    if args.when == "start":
        for i in range(args.lines):
            print(GARBAGE % i, end="" if args.glued and i == args.lines - 1 else "\n")
        sys.stdout.flush()

    mcp = make_server(args.name or "garbage")
    wire_fd = os.dup(sys.stdout.fileno())  # the real stdout pipe, kept before the transport diverts fd 1

    @mcp.tool()
    def spew(lines: int, via: str = "wire") -> str:
        """Write `lines` non-JSON lines onto the wire (via="wire") or onto fd 1 (via="fd1")."""
        fd = wire_fd if via == "wire" else sys.stdout.fileno()
        for i in range(lines):
            # One write per line: a pipe write below PIPE_BUF is atomic, so a garbage line
            # never splits a JSON-RPC frame the transport writes from its own thread.
            os.write(fd, (GARBAGE % i + "\n").encode())
        return f"spewed {lines} via {via}"

    @mcp.tool(annotations=READ_ONLY)
    def misshapen(ctx: Context) -> str:
        """Answer this very request on the wire with a result that is no CallToolResult."""
        frame = {"jsonrpc": "2.0", "id": ctx.request_context.request_id, "result": {"content": "not a list"}}
        os.write(wire_fd, (json.dumps(frame) + "\n").encode())
        return "the real answer, too late"

    malformed_answers = {
        "null-result": lambda rid: {"jsonrpc": "2.0", "id": rid, "result": None},
        "no-jsonrpc": lambda rid: {"id": rid, "result": {"content": [{"type": "text", "text": "no jsonrpc"}]}},
        "error-without-message": lambda rid: {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000}},
    }

    @mcp.tool(annotations=READ_ONLY)
    async def malformed(shape: str, ctx: Context) -> str:
        """Answer this very request on the wire with no valid JSON-RPC (see the module),
        and never with anything else: a client that drops that line waits for good."""
        frame = malformed_answers[shape](ctx.request_context.request_id)
        os.write(wire_fd, (json.dumps(frame) + "\n").encode())
        await anyio.sleep_forever()

    class Count(pydantic.BaseModel):
        count: int

    @mcp.tool(annotations=READ_ONLY, structured_output=True)
    def miscount() -> Annotated[types.CallToolResult, Count]:
        """Structured content its own output schema rejects ("3" is no integer)."""
        return types.CallToolResult(content=[types.TextContent(type="text", text="3")], structured_content={"count": "3"})

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
