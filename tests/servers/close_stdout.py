"""A server that closes its end of the stdout pipe but keeps running.

``--when call`` (default): serves the echo tools plus ``close_stdout()``, which swaps the
wire for /dev/null in the middle of the call: the client reads EOF while the process stays
alive, reading stdin, until stdin closes. ``--when start``: close stdout at once, then
just read stdin until it closes (no MCP at all).
$EXEC_LOG gets a ``close_stdout`` line when the wire is closed.

The server owns the wire itself (a duplicate of fd 1 handed to the SDK's stdio transport,
with fd 1 pointed at stderr as the SDK does), so it can close the real pipe end.

    python tests/servers/close_stdout.py [--when start|call] [--name NAME]
"""

import argparse
import os
import sys


def close_wire(fd: int) -> None:
    """Drop our end of the stdout pipe; later writes to `fd` land in /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)  # atomically closes the pipe end that `fd` held
    os.close(devnull)
    path = os.environ.get("EXEC_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write("close_stdout\n")


def main() -> None:
    # Plain argparse, not _common: --when start never imports mcp (~0.7 s).
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default=None)
    parser.add_argument("--when", choices=("start", "call"), default="call")
    args = parser.parse_args()

    if args.when == "start":
        close_wire(1)
        sys.stdin.buffer.read()  # alive until the client closes stdin
        return

    from io import TextIOWrapper

    import anyio
    from mcp.server.stdio import stdio_server

    from _common import make_server

    wire_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, as under the SDK's own stdio claim
    mcp = make_server(args.name or "close_stdout")

    @mcp.tool()
    async def close_stdout() -> str:
        """Close the server's stdout pipe mid-call; the process keeps running."""
        close_wire(wire_fd)
        return "closed (nobody will read this)"

    async def serve() -> None:
        stdout = anyio.wrap_file(TextIOWrapper(os.fdopen(wire_fd, "wb", closefd=False), encoding="utf-8"))
        lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        async with stdio_server(stdout=stdout) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())

    anyio.run(serve)


if __name__ == "__main__":
    main()
