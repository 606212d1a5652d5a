"""A raw handshake-era server whose tool ``deep`` answers with JSON nested ``--depth``
levels deep (deeper than Python's json module can read without a RecursionError) where
``--where`` says: ``notify`` (a log notification, then a normal answer), ``result`` (the
answer's content) or ``id`` (the answer's id). Its tool ``ok`` answers "ok".

    python tests/servers/deep.py [--depth N] [--where notify|result|id]
"""

import argparse
import json
import sys

from _raw import requests, send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=100_000)
    parser.add_argument("--where", choices=["notify", "result", "id"], default="result")
    args = parser.parse_args()
    nest = "[" * args.depth + "]" * args.depth
    for method, rid, message in requests("deep", {"tools": {}}):
        if method == "tools/list":
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in ("deep", "ok")]
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
        elif method == "tools/call" and message["params"]["name"] == "deep":
            if args.where == "id":
                sys.stdout.write('{"jsonrpc":"2.0","id":' + nest + ',"result":{}}\n')
            elif args.where == "notify":
                sys.stdout.write('{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":'
                                 + nest + "}}\n")
                send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "after notify"}]}})
            else:
                sys.stdout.write('{"jsonrpc":"2.0","id":' + json.dumps(rid) + ',"result":{"content":' + nest + "}}\n")
            sys.stdout.flush()
        elif method == "tools/call":
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ok"}]}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
