"""A server whose ``hang`` tool never answers; ``echo`` (and the rest of the echo set) still does.

``hang()`` sleeps forever; a client cancel (``notifications/cancelled``) interrupts it, and
$EXEC_LOG gets ``hang start`` / ``hang cancelled`` lines so a test can see both ends.

    python tests/servers/hang.py [--name NAME]
"""

import anyio

from _common import base_parser, exec_log, make_server, serve_stdio


def main() -> None:
    args = base_parser(__doc__).parse_args()
    mcp = make_server(args.name or "hang")

    @mcp.tool()
    async def hang() -> str:
        """Never answers."""
        exec_log("hang start")
        try:
            await anyio.sleep_forever()
        finally:
            exec_log("hang cancelled")
        return "unreachable"

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
