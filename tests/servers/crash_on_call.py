"""The echo server plus a tool that kills the server process in the middle of the call.

The crashing tool (``crash`` by default, ``--crash-tool NAME`` to rename it) receives the
request and then calls ``os._exit(3)`` before answering, so the client sees the process
die with the call in flight. Set $EXEC_LOG to get a ``crash`` line per crashing call.

``--annotate readonly|destructive`` gives the crashing tool those annotations (default:
none). With ``--crash-once-file PATH`` it crashes only while PATH does not exist, creating
it as it crashes, so the same call answers on the next process. With ``--no-start-after
PATH`` it exits with code 1 at start once PATH exists (with the same PATH: every restart
after the crash fails).

    python tests/servers/crash_on_call.py [--name NAME] [--crash-tool NAME] [--exit-code N]
        [--annotate readonly|destructive] [--crash-once-file PATH] [--no-start-after PATH]
"""

import os

from _common import DESTRUCTIVE, READ_ONLY, base_parser, exec_log, make_server, serve_stdio


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--crash-tool", default="crash", help="name of the tool that crashes the server")
    parser.add_argument("--exit-code", type=int, default=3)
    parser.add_argument("--annotate", choices=["readonly", "destructive"], default=None)
    parser.add_argument("--crash-once-file", default=None)
    parser.add_argument("--no-start-after", default=None)
    args = parser.parse_args()
    if args.no_start_after and os.path.exists(args.no_start_after):
        raise SystemExit(1)
    mcp = make_server(args.name or "crash_on_call")

    def crash() -> str:
        """Kill the server process mid-call (never answers)."""
        exec_log(args.crash_tool)
        if args.crash_once_file:
            if os.path.exists(args.crash_once_file):
                return "survived"
            open(args.crash_once_file, "w").close()
        os._exit(args.exit_code)

    annotations = {"readonly": READ_ONLY, "destructive": DESTRUCTIVE}.get(args.annotate)
    mcp.add_tool(crash, name=args.crash_tool, annotations=annotations)
    serve_stdio(mcp)


if __name__ == "__main__":
    main()
