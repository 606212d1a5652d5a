"""A server whose lines on the wire are large, or not what they should be.

- ``blob(kib)``: answers with a text of ``kib`` KiB (one line, through the SDK's transport).
- ``shout(kib, what)``: writes one line of about ``kib`` KiB straight onto the wire, then
  answers ``done``. ``what``: ``garbage`` (no JSON), ``notification`` (a
  ``notifications/message`` carrying that much data), ``blank`` (``kib`` times
  three lines of nothing but whitespace), ``invalid-utf8`` (a short line that
  is not UTF-8; ``kib`` is ignored).
- ``half_emoji(ctx)``: answers, itself, with a text ending in a lone surrogate (``"\\ud83d"``:
  valid JSON, as a JavaScript server that cuts a string in the middle of an emoji writes
  it), then lets the SDK answer too (the client ignores the second answer to one id).

Lines that are not the SDK's are written through a duplicate of fd 1 taken before serving
(see garbage.py): while one is written, the SDK must have nothing else to write, or the two
interleave (a test waits until the connection is quiet, its listen stream acknowledged).

    python tests/servers/big.py [--name NAME]
"""

import json
import os

from mcp.server.mcpserver import Context

from _common import READ_ONLY, base_parser, make_server, serve_stdio


def main() -> None:
    args = base_parser(__doc__).parse_args()
    mcp = make_server(args.name or "big")
    wire_fd = os.dup(1)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(wire_fd, view) :]

    @mcp.tool(annotations=READ_ONLY)
    def blob(kib: int) -> str:
        """A text of `kib` KiB."""
        return "x" * (kib * 1024)

    @mcp.tool()
    def shout(kib: int, what: str) -> str:
        """Write one large line onto the wire (see the module docstring), then answer."""
        filler = "y" * (kib * 1024)
        if what == "garbage":
            write(filler.encode() + b"\n")
        elif what == "notification":
            frame = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": filler}}
            write(json.dumps(frame).encode() + b"\n")
        elif what == "blank":
            write(b"\n\r\n \t\n" * kib)
        elif what == "invalid-utf8":
            write(b"\xff\xfe this line is not UTF-8\n")
        else:
            raise ValueError(f"unknown what: {what!r}")
        return "done"

    @mcp.tool()
    def half_emoji(ctx: Context) -> str:
        """Answer with a text that ends in half an emoji (see the module docstring)."""
        content = [{"type": "text", "text": "cut at \ud83d"}]
        result = {"content": content, "structuredContent": {"result": content[0]["text"]}, "resultType": "complete"}
        answer = {"jsonrpc": "2.0", "id": ctx.request_id, "result": result}
        write(json.dumps(answer).encode() + b"\n")  # ensure_ascii: the surrogate as an escape
        return "the SDK's own answer (ignored)"

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
