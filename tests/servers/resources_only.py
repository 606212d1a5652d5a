"""A server of resources only: no tools capability, so ``tools/list`` is "Method not found".

Built on the low-level ``mcp.server.lowlevel.Server`` (``MCPServer`` always serves tools):
``resources/list`` and ``resources/read`` only, no templates (``resources/templates/list``
is "Method not found" too), as a documentation or file server may be.

    python tests/servers/resources_only.py [--name NAME]
"""

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from _common import base_parser

URI = "doc://readme"


async def list_resources(ctx, params) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=[types.Resource(uri=URI, name="readme", mime_type="text/plain")])


async def read_resource(ctx, params) -> types.ReadResourceResult:
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=params.uri, text=f"read {params.uri}")])


def main() -> None:
    args = base_parser(__doc__).parse_args()
    server = Server(args.name or "resources_only", on_list_resources=list_resources, on_read_resource=read_resource)

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


if __name__ == "__main__":
    main()
