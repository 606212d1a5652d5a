"""A handshake-era server (2025-11-25), raw JSON-RPC on stdio, whose ``tools/list`` carries
tools that are no valid MCP tools next to good ones, as a server with one buggy tool does.

Good tools: ``echo(text)`` (an output schema; answers ``{"text": text}`` as structured
content) and ``liar()`` (its output schema wants an integer ``n``; it answers a string).
Bad tools, each listed as: ``empty_schema`` (``inputSchema: {}``), ``string_schema``
(``{"type": "string"}``), ``no_schema`` (none), ``42`` (a name that is no string),
``bad_output`` (``outputSchema: {"type": "string"}``).

``--paged``: the list comes in two pages (``nextCursor``): the bad tools and ``echo``,
then ``liar``. ``--bad-later``: the first list holds only the good tools; a call to tool
``break`` (also listed) adds the bad ones and announces ``notifications/tools/list_changed``.

    python tests/servers/bad_tools.py [--paged] [--bad-later]
"""

import sys

from _raw import requests, send

ECHO = {
    "name": "echo",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    "outputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
LIAR = {
    "name": "liar",
    "inputSchema": {"type": "object"},
    "outputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
}
BREAK = {"name": "break", "inputSchema": {"type": "object"}}
BAD = [
    {"name": "empty_schema", "inputSchema": {}},
    {"name": "string_schema", "inputSchema": {"type": "string"}},
    {"name": "no_schema", "description": "no inputSchema"},
    {"name": 42, "inputSchema": {"type": "object"}},
    {"name": "bad_output", "inputSchema": {"type": "object"}, "outputSchema": {"type": "string"}},
]


def main() -> None:
    paged = "--paged" in sys.argv[1:]
    broken = "--bad-later" not in sys.argv[1:]
    for method, rid, message in requests("bad_tools", {"tools": {"listChanged": True}}):
        if method == "tools/list":
            bad = BAD if broken else []
            cursor = (message.get("params") or {}).get("cursor")
            if not paged:
                result = {"tools": [*bad, ECHO, LIAR, BREAK]}
            elif cursor is None:
                result = {"tools": [*bad, ECHO], "nextCursor": "2"}
            else:
                result = {"tools": [LIAR, BREAK]}
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "tools/call":
            name = message["params"]["name"]
            arguments = message["params"].get("arguments") or {}
            if name == "echo":
                text = arguments.get("text", "")
                result = {"content": [{"type": "text", "text": text}], "structuredContent": {"text": text}}
            elif name == "liar":
                result = {"content": [{"type": "text", "text": "x"}], "structuredContent": {"n": "not a number"}}
            elif name == "break":
                broken = True
                result = {"content": [{"type": "text", "text": "broken"}]}
            else:
                send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"no tool {name}"}})
                continue
            send({"jsonrpc": "2.0", "id": rid, "result": result})
            if name == "break":
                send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": rid, "result": {}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
