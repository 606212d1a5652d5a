"""The echo server over HTTP (like ``http_echo.py``), plus a ``headers`` tool that reports the
HTTP headers of the very request that carried the call.

``headers()`` answers ``{"headers": {name: value}}`` (names lower-cased), taken from the
HTTP request the ``tools/call`` arrived on: the POST itself for streamable HTTP, the message
POST for SSE. It lets a test see what a client put in a request's headers (a per-request
``X-Session-Id``, say). Same flags and ``LISTENING <port>`` line as ``http_echo.py``.

    python tests/servers/http_headers.py [--port N] [--sse] [--json-response] [--stateless]
        [--exit-on-stdin-close] [--name NAME]
"""

from typing import Any

import trio
from mcp.server.mcpserver import Context

import http_echo
from _common import READ_ONLY, make_server


def make_headers_server(name: str | None = None):
    mcp = make_server(name or "http_headers")

    @mcp.tool(annotations=READ_ONLY)
    def headers(ctx: Context) -> dict[str, Any]:
        """The HTTP headers of the request this call came in."""
        request = ctx.request_context.request
        seen = {} if request is None else {k.lower(): v for k, v in request.headers.items()}
        return {"headers": seen}

    return mcp


def main() -> None:
    args = http_echo.build_parser(__doc__).parse_args()
    http_echo.make_server = lambda _default: make_headers_server(args.name)  # serve this one instead
    try:
        trio.run(http_echo.main_async, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
