"""Raw JSON-RPC on stdio, for the handshake-era (2025-11-25) test servers that misbehave
below what the SDK's server lets one do."""

import json
import sys
from collections.abc import Iterator


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def requests(name: str, capabilities: dict) -> Iterator[tuple[str, object, dict]]:
    """Each request read from stdin as (method, id, message), until stdin ends;
    ``initialize`` is answered here (with ``capabilities``), notifications are skipped."""
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None or method is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities,
                "serverInfo": {"name": name, "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": rid, "result": result})
            continue
        yield method, rid, message
