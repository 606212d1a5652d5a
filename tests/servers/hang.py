"""A server whose ``hang`` tool never answers; ``echo`` (and the rest of the echo set) still does.

``hang()`` sleeps forever; a client cancel (``notifications/cancelled``) interrupts it, and
$EXEC_LOG gets ``hang start`` / ``hang cancelled`` lines so a test can see both ends. The
``stuck`` prompt and the ``hang://forever`` resource never answer either (logged likewise,
as ``prompt ...`` and ``resource ...``).

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

    @mcp.prompt()
    async def stuck() -> str:
        """Never answers."""
        return await _forever("prompt")

    @mcp.resource("hang://forever")
    async def forever() -> str:
        """Never answers."""
        return await _forever("resource")

    serve_stdio(mcp)


async def _forever(what: str) -> str:
    exec_log(f"{what} start")
    try:
        await anyio.sleep_forever()
    finally:
        exec_log(f"{what} cancelled")
    return "unreachable"


if __name__ == "__main__":
    main()
