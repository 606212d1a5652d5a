"""A handshake-era server (2025-11-25), raw JSON-RPC on stdio, that never answers a request
it does not know (``server/discover`` included): no error, nothing, as some servers do.
It knows ``initialize``, ``tools/list`` (one tool, ``echo``) and ``tools/call`` of ``echo``.
No echo tool set.

    python tests/servers/deaf.py
"""

from _raw import requests, send


def main() -> None:
    for method, rid, message in requests("deaf", {"tools": {}}):
        if method == "tools/list":
            tool = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [tool]}})
        elif method == "tools/call" and message["params"]["name"] == "echo":
            text = (message["params"].get("arguments") or {}).get("text", "")
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})


if __name__ == "__main__":
    main()
