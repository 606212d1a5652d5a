"""The echo server plus a tool that kills the server process in the middle of the call.

The crashing tool (``crash`` by default, ``--crash-tool NAME`` to rename it) receives the
request and then calls ``os._exit(3)`` before answering, so the client sees the process
die with the call in flight. Set $EXEC_LOG to get a ``crash`` line per crashing call.

    python tests/servers/crash_on_call.py [--name NAME] [--crash-tool NAME] [--exit-code N]
"""

import os

from _common import base_parser, exec_log, make_server, serve_stdio


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--crash-tool", default="crash", help="name of the tool that crashes the server")
    parser.add_argument("--exit-code", type=int, default=3)
    args = parser.parse_args()
    mcp = make_server(args.name or "crash_on_call")

    def crash() -> str:
        """Kill the server process mid-call (never answers)."""
        exec_log(args.crash_tool)
        os._exit(args.exit_code)

    mcp.add_tool(crash, name=args.crash_tool)
    serve_stdio(mcp)


if __name__ == "__main__":
    main()
