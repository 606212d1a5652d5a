"""The copilot's own backend, as a stdio MCP server: the bundled demo catalogue, plus two tools
that show what supervision does for the copilot.

- ``session_info()`` answers the session id the request carried in ``_meta`` (the copilot's
  ``X-Session-Id``): one shared connection, every request tagged with its own session.
- ``render_preview(seconds)`` takes a while; it appends ``render_preview start <session>`` and
  then ``render_preview done`` or ``render_preview cancelled`` to ``$COPILOT_EVENT_LOG`` (if
  set), so one can see a cancelled chat turn cancel the work on the server.

    python examples/copilot/backend.py
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from mcp.server.mcpserver import Context

from supervisor._demo_server import READ_ONLY, server


def _session_of(ctx: Context) -> str | None:
    meta = ctx.request_context.meta
    if meta is None:
        return None
    values = meta.model_dump(by_alias=True, mode="json") if hasattr(meta, "model_dump") else dict(meta)
    session = values.get("session_id")
    return session if isinstance(session, str) else None


def _record(line: str) -> None:
    path = os.environ.get("COPILOT_EVENT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


@server.tool(annotations=READ_ONLY, meta={"category": "analysis"})
def session_info(ctx: Context) -> dict[str, Any]:
    """The chat session this request belongs to, and the backend's process id."""
    return {"session_id": _session_of(ctx), "pid": os.getpid()}


@server.tool(annotations=READ_ONLY, meta={"category": "analysis"})
async def render_preview(seconds: float, ctx: Context) -> str:
    """Render a low-resolution preview of the current workflow (takes ``seconds``)."""
    _record(f"render_preview start {_session_of(ctx)}")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _record("render_preview cancelled")
        raise
    _record("render_preview done")
    return f"preview rendered in {seconds:g} s"


if __name__ == "__main__":
    server.run("stdio")
