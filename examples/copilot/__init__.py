"""The copilot example: an asyncio app that embeds the supervisor once and runs openai-agents
agents over it, turn after turn. Run it with ``python -m examples.copilot`` (see README.md).

- ``app``: the ``Copilot`` (start once, ``chat`` per turn, stop once), its two servers, the
  agents (a handoff to a workflow-rewrite agent, a local function tool);
- ``model``: the scripted ``agents`` Model standing in for the LLM (no network);
- ``backend.py``: the copilot's backend, a stdio MCP server.
"""

from .app import Copilot, Turn, default_servers, main, remember_preference
from .model import ScriptedModel, copilot_script, rewriter_script

__all__ = ["Copilot", "ScriptedModel", "Turn", "copilot_script", "default_servers", "main", "remember_preference", "rewriter_script"]
