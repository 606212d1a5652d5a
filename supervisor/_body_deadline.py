"""A deadline on an HTTP request's body, so the daemon never waits for one for ever.

hypercorn closes a connection whose request line and headers do not come within its
``keep_alive_timeout`` (5 s), but once the headers are in it waits for the body without
bound: its ``read_timeout`` bounds every read of the socket, and would also cut a long SSE
answer, during which the client sends nothing. A client that stalled mid-body (a hung
process, a network path gone quiet) so held a connection, a socket and a task of the
daemon for good (measured: 10 such connections still open after 70 s), and enough of them
would use up the file descriptors every server's pipes need.

`BodyDeadline` gives each request's body ``timeout()`` s from the start of the request to
arrive whole (the config's ``supervisor.body_timeout``, read per request, so a reload
applies it to the next one). Past that the request is answered ``408`` with a JSON-RPC
error (id null: its id was never read) and ``Connection: close``, and none of it reaches
the app. Only the reads of the body are bounded: the app's later reads, which wait for
the client to go away while a long answer streams, are not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import mcp_types
import trio

__all__ = ["BodyDeadline"]


class _BodyTooSlow(Exception):
    pass


class BodyDeadline:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: Any, timeout: Callable[[], float]) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout = self.timeout()
        deadline = trio.current_time() + timeout
        whole = False

        async def bounded() -> dict[str, Any]:
            nonlocal whole
            if whole:
                return await receive()
            with trio.move_on_at(deadline):
                message = await receive()
                whole = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            raise _BodyTooSlow

        try:
            await self.app(scope, bounded, send)
        except _BodyTooSlow:
            await _answer_too_slow(send, timeout)


async def _answer_too_slow(send: Any, timeout: float) -> None:
    message = f"the request body did not arrive whole within {timeout:g} s (supervisor.body_timeout); it was not read"
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": mcp_types.INVALID_REQUEST, "message": message}}
    body = json.dumps(error).encode()
    await send({
        "type": "http.response.start",
        "status": 408,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body})
