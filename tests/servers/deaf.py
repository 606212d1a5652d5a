"""A handshake-era server (2025-11-25), raw JSON-RPC on stdio, that never answers a request
it does not know (``server/discover`` included): no error, nothing, as some servers do.
It knows ``initialize``, ``tools/list`` (one tool, ``echo``) and ``tools/call`` of ``echo``.
No echo tool set.

    python tests/servers/deaf.py
"""

import json
import sys


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None or method is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "deaf", "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "tools/list":
            tool = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [tool]}})
        elif method == "tools/call" and message["params"]["name"] == "echo":
            text = (message["params"].get("arguments") or {}).get("text", "")
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})


if __name__ == "__main__":
    main()
