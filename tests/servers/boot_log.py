"""A handshake-era server, raw JSON-RPC on stdio, that writes a log line
(``notifications/message``, level warning, logger ``boot``) while it answers ``tools/list``,
as a server that reports a startup problem does. One tool, ``echo``.

``--ask-roots``: it also asks the client for its roots (``roots/list``) then, without
waiting for the answer, and appends the answer it gets (a JSON line) to ``$EXEC_LOG``.

    python tests/servers/boot_log.py [--ask-roots]
"""

import json
import os
import sys


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    ask_roots = "--ask-roots" in sys.argv[1:]
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if method is None and rid == "roots":  # the client's answer to our roots/list
            with open(os.environ["EXEC_LOG"], "a") as log:
                log.write(json.dumps(message) + "\n")
            continue
        if rid is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": {"name": "boot_log", "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "tools/list":
            log = {"level": "warning", "logger": "boot", "data": "config file missing, using defaults"}
            send({"jsonrpc": "2.0", "method": "notifications/message", "params": log})
            if ask_roots:
                send({"jsonrpc": "2.0", "id": "roots", "method": "roots/list"})
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
