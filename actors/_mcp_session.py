"""Noticing that a streamable-HTTP server no longer knows our MCP session.

A handshake-era server (any revision before 2026-07-28) keeps each client's session in
memory under its ``Mcp-Session-Id``. When it restarts, or expires the session, it answers
every request of that session with HTTP 404, and the spec says the client must then start
a new session. The mcp 2.3 client hands the 404 to the caller as an ordinary JSON-RPC error
and keeps the dead session, so without this a remote server that restarted while we stayed
connected would fail every call until something else made us reconnect: nothing does,
since the transport itself never breaks.

`SessionLostHook` is an httpx response hook that calls ``on_lost`` when a request that
carried a session id gets a 404, unless the body is a JSON-RPC "method not found" error
(which some servers send with a 404 too, for a session they do know). The connection actor
then ends the incarnation, and the next one starts a fresh session.

Guarantees: the hook never raises, never changes the response (a body it reads is cached
by httpx for the transport to read again), and looks only at 404s. 2026-07-28 connections
carry no session id, so they are never affected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from mcp_types import METHOD_NOT_FOUND

__all__ = ["SessionLostHook"]

SESSION_ID_HEADER = "mcp-session-id"


class _Error(msgspec.Struct):
    code: Any = None


class _Reply(msgspec.Struct):
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_Reply)


class SessionLostHook:
    """httpx response hook: ``on_lost()`` once the server says it has no such session."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.on_lost = on_lost

    async def __call__(self, response: Any) -> None:
        if response.status_code != 404 or SESSION_ID_HEADER not in response.request.headers:
            return
        try:
            reply = _decoder.decode(await response.aread())
            if reply.error is not None and reply.error.code == METHOD_NOT_FOUND:
                return  # a method this server lacks, not our session
        except Exception:  # no body, not JSON, a broken stream: the 404 alone decides
            pass
        self.on_lost()
