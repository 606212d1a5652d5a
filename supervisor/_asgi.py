"""Writing an ASGI response: what the daemon's HTTP routes and middleware answer with."""

from __future__ import annotations

import json
from typing import Any

from mcp_types import INVALID_REQUEST

__all__ = ["refuse_unread", "respond", "respond_json"]


async def respond(send: Any, status: int, body: bytes, content_type: str = "application/json", headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Any, status: int, obj: Any, headers: list | None = None) -> None:
    await respond(send, status, json.dumps(obj).encode() + b"\n", headers=headers)


async def refuse_unread(
    send: Any, status: int, message: str, headers: list | None = None, code: int = INVALID_REQUEST
) -> None:
    """``status`` with a JSON-RPC error (Invalid Request unless ``code`` says otherwise)
    whose id is null: the request's id was never read (or no answer can carry it)."""
    error = {"code": code, "message": message}
    await respond_json(send, status, {"jsonrpc": "2.0", "id": None, "error": error}, headers=headers)
