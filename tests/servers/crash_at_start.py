"""A server that dies (exit code 1) before or during the MCP handshake.

``--when before``: exit at once, writing a line to stderr, before reading anything.
``--when during``: read the client's first message (the ``initialize`` request, or the
``server/discover`` probe of ``mode="auto"``) from stdin, then exit without answering.
``--until-file PATH``: crash only while PATH does not exist; once it exists, serve the echo
tools normally (a test makes the server "recover" by creating the file).
``--count-file PATH``: append one line per start, so a test can count start attempts.

    python tests/servers/crash_at_start.py [--when before|during] [--until-file PATH] [--count-file PATH]
"""

import argparse
import os
import sys


def main() -> None:
    # Plain argparse, not _common: importing mcp costs ~0.7 s and the crash paths should be quick.
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default=None)
    parser.add_argument("--when", choices=("before", "during"), default="before")
    parser.add_argument("--until-file", default=None)
    parser.add_argument("--count-file", default=None)
    parser.add_argument("--exit-code", type=int, default=1)
    args = parser.parse_args()

    if args.count_file:
        with open(args.count_file, "a", encoding="utf-8") as f:
            f.write(f"start {os.getpid()}\n")

    if args.until_file is None or not os.path.exists(args.until_file):
        if args.when == "before":
            sys.stderr.write(f"crash_at_start: exiting before the handshake (pid {os.getpid()})\n")
            sys.stderr.flush()
            os._exit(args.exit_code)
        line = sys.stdin.buffer.readline()
        sys.stderr.write(f"crash_at_start: got {len(line)} bytes of handshake, exiting\n")
        sys.stderr.flush()
        os._exit(args.exit_code)

    # Recovered: behave like the echo server. Imported late so the crash paths stay fast.
    from _common import make_server, serve_stdio

    serve_stdio(make_server(args.name or "crash_at_start"))


if __name__ == "__main__":
    main()
