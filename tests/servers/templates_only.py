"""A server with one resource template, ``other://{x}``, and no resources listed; in the
handshake era it takes any ``resources/subscribe`` (as everything.py does). A server the
gateway could guess owns a URI no server lists or matches.

    python tests/servers/templates_only.py [--handshake-only]
"""

import sys

import anyio

from everything import MCPServer, _State, add_legacy_methods, serve

mcp = MCPServer("templates_only", version="1.0.0")


@mcp.resource("other://{x}", name="other")
def other(x: str) -> str:
    return x


add_legacy_methods(mcp, _State())
anyio.run(serve, mcp, "--handshake-only" in sys.argv)
