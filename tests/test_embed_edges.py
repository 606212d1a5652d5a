"""Edges of the embedding API and its openai-agents adapter: reloads that change an adapter's
scope or keep the host's toolsets, and a start the host cancels.

As in ``test_embed.py``: plain test functions that run a plain asyncio loop themselves
(``run_asyncio``), real stdio servers from ``tests/servers``, every wait with a deadline.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from supervisor import SupervisedMCPServer, embed

from conftest import marker_of, procs_with_marker, server_spec
from test_embed import run_asyncio, text_of


def config_file(path: Any, *specs: Any, **settings: Any) -> Any:
    """A config file running ``specs`` (with their categories), and ``supervisor`` settings."""
    servers = {
        s.name: {"command": s.command, "args": s.args, "env": s.env, "categories": dict(s.categories or {})}
        for s in specs
    }
    path.write_text(json.dumps({"mcpServers": servers, **({"supervisor": settings} if settings else {})}))
    return path


# -- reload and the toolsets given at embed ---------------------------------------------------


def test_a_reload_from_a_config_naming_no_toolsets_keeps_those_given_at_embed(tmp_path):
    """``embed(..., toolsets=)`` then ``reload(config)``: a config naming no toolsets kept
    nothing (the host's toolset was gone, and its adapters raised at every agent run); it
    keeps those in use now, as ``embed`` itself does. A config that names toolsets still
    replaces them."""
    echo = server_spec("echo", "echo.py", categories={"echo": "analysis"})
    plain = config_file(tmp_path / "plain.json", echo)
    named = config_file(tmp_path / "named.json", echo, toolsets={"theirs": ["analysis"]})

    async def main() -> None:
        async with embed([echo], toolsets={"mine": ["analysis"]}) as sup:
            adapter = SupervisedMCPServer(sup, toolset="mine")
            assert [t.name for t in await adapter.list_tools()] == ["echo"]
            await sup.reload(plain)
            assert [t.name for t in await sup.list_tools(toolset="mine")] == ["echo"]
            assert [t.name for t in await adapter.list_tools()] == ["echo"]
            assert text_of(await adapter.call_tool("echo", {"text": "kept"})) == "kept"

            await sup.reload(named)  # names toolsets: they replace those in use
            assert [t.name for t in await sup.list_tools(toolset="theirs")] == ["echo"]
            with pytest.raises(ValueError, match="unknown toolset 'mine'"):
                await sup.list_tools(toolset="mine")
        assert procs_with_marker(marker_of(echo)) == []

    run_asyncio(main, timeout=60)
