"""A server whose ``meta`` tool returns the ``_meta`` its request carried, as a JSON object.

``meta()`` answers ``{"meta": {...}}`` (structured content and JSON text): the request's
``_meta`` exactly as the server received it (protocol-reserved keys included), or ``{}``
when the request had none. It lets a test see what a client put in ``_meta`` (a session
id, say) really reach the server. ``in_region(region)`` answers ``region``; its schema
declares ``x-mcp-header: Region``, so a 2026-07-28 client mirrors the argument into an
``Mcp-Param-Region`` header that HTTP servers check against the body. The rest of the echo
tool set is there too.

    python tests/servers/meta_echo.py [--name NAME]
"""

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from _common import READ_ONLY, base_parser, make_server, serve_stdio


def main() -> None:
    args = base_parser(__doc__).parse_args()
    mcp = make_server(args.name or "meta_echo")

    @mcp.tool(annotations=READ_ONLY)
    def meta(ctx: Context) -> dict[str, Any]:
        """The ``_meta`` of this very request."""
        received = ctx.request_context.meta
        if received is None:
            return {"meta": {}}
        if hasattr(received, "model_dump"):
            received = received.model_dump(by_alias=True, mode="json", exclude_none=True)
        return {"meta": dict(received)}

    @mcp.tool(annotations=READ_ONLY)
    def in_region(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        """The region, mirrored by 2026-07-28 clients into an Mcp-Param-Region header."""
        return region

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
