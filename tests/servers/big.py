"""A server whose lines on the wire are large, or not what they should be.

- ``blob(kib)``: answers with a text of ``kib`` KiB (one line, through the SDK's transport).
- ``shout(kib, what)``: writes one line of about ``kib`` KiB straight onto the wire, then
  answers ``done``. ``what``: ``garbage`` (no JSON), ``notification`` (a
  ``notifications/message`` carrying that much data), ``blank`` (``kib`` times
  three lines of nothing but whitespace), ``invalid-utf8`` (a short line that
  is not UTF-8; ``kib`` is ignored).

Lines that are not the SDK's are written through a duplicate of fd 1 taken before serving
(see garbage.py): while one is written, the SDK must have nothing else to write, or the two
interleave (a test waits until the connection is quiet, its listen stream acknowledged).

    python tests/servers/big.py [--name NAME]
"""

import json
import os

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

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
