"""A handshake-era server (2025-11-25), raw JSON-RPC on stdio (`_raw.py`), that misbehaves
at the level of its pipes. Tools: ``echo(text)``, ``pid()``, and ``close_stdin()``, which
closes the server's stdin (fd 0) and answers ``closed stdin``: the process keeps running
(until killed), so the client's next write fails at once with EPIPE. No echo tool set.

``--exit-after-handshake CODE``: exit with that code (after a line on stderr) as soon as
``notifications/initialized`` arrives, in the middle of the client's handshake.
``--stdout-child PATH``: first start a long-lived child (``time.sleep(3600)``) that inherits
the server's stdin, stdout and stderr, and append its pid to PATH: once the server is gone,
the client sees no EOF, and its writes to stdin still succeed.

    python tests/servers/stdio_edges.py [--exit-after-handshake CODE] [--stdout-child PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import time

from _raw import send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exit-after-handshake", type=int, default=None)
    parser.add_argument("--stdout-child", default=None)
    args = parser.parse_args()
    if args.stdout_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        with open(args.stdout_child, "a", encoding="utf-8") as f:
            f.write(f"{child.pid}\n")
    tools = [
        {"name": name, "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
        for name in ("echo", "pid", "close_stdin")
    ]
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if method == "notifications/initialized" and args.exit_after_handshake is not None:
            print("stdio_edges: exiting after the handshake", file=sys.stderr, flush=True)
            os._exit(args.exit_after_handshake)
        if rid is None or method is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "stdio_edges", "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
        elif method == "tools/call":
            name = message["params"]["name"]
            if name == "echo":
                said = (message["params"].get("arguments") or {}).get("text", "")
            elif name == "pid":
                said = str(os.getpid())
            elif name == "close_stdin":
                os.close(0)  # no reader of the pipe is left: the client's next write gets EPIPE
                send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "closed stdin"}]}})
                while True:
                    time.sleep(1)
            else:
                send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"unknown tool {name}"}})
                continue
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": said}]}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"unknown method {method}"}})


if __name__ == "__main__":
    main()
