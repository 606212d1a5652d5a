"""The copilot, shaped as it runs inside ComfyUI: one asyncio process, one supervisor for its life.

Before, every chat turn built two ``MCPServerSse`` objects, opened both with ``async with``
(either failing aborted the turn) and lost the tool cache with the request. Here:

- the supervisor starts ONCE, when the app starts (``Copilot.start``), as a trio guest run on
  the app's own asyncio loop (``supervisor.embed``), and stops when the app stops
  (``Copilot.stop``). In an aiohttp app such as ComfyUI's server::

      app.on_startup.append(lambda app: copilot.start())
      app.on_shutdown.append(lambda app: copilot.stop())

- each chat turn builds its agents with ``SupervisedMCPServer`` adapters, one per toolset
  (the seed's ``main`` and ``rewrite``), carrying the request's ``X-Session-Id`` in every
  request's ``_meta``. Adapters hold no connection: building them per turn costs nothing.
- a server that is down gives its tools' calls a readable failure (the seed's
  ``{"success": false, "error": ...}``), so the model can carry on; the turn is not aborted.

Two supervised servers (the bundled demo catalogue, standing in for the copilot's backend,
and a second copy, prefixed ``search__``, standing in for the remote search server), a
handoff to a workflow-rewrite agent and a local function tool, run with
``Runner.run_streamed(..., max_turns=30)``. There is no network here, so the "LLM" is a
scripted ``agents`` Model that issues tool calls.

    .venv/bin/python examples/copilot_embed.py
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents import Agent, RunConfig, Runner, function_tool, handoff
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from protocol import ServerSpec
from supervisor import EmbeddedSupervisor, SupervisedMCPServer, embed
from supervisor.__main__ import render_tree

DEMO = [sys.executable, "-m", "supervisor._demo_server"]

SERVERS = [
    # the copilot's own backend (today: MCPServerSse at /mcp-server/mcp, 300 s timeouts)
    ServerSpec(name="backend", command=DEMO[0], args=DEMO[1:], timeout=300),
    # the remote search server; its tools are exposed as search__<tool>
    ServerSpec(
        name="search",
        command=DEMO[0],
        args=DEMO[1:],
        timeout=300,
        namespace="prefix",
        categories={"search_nodes": "search", "get_node_info": "search"},
    ),
]


class Copilot:
    """The long-lived part of the copilot: the supervisor, shared by every request."""

    def __init__(self) -> None:
        self.supervisor: EmbeddedSupervisor | None = None

    async def start(self) -> None:
        """At process start: supervise the MCP servers until ``stop``."""
        self.supervisor = await embed(SERVERS)

    async def stop(self) -> None:
        """At shutdown: stop every server (no orphans) and the guest run."""
        if self.supervisor is not None:
            await self.supervisor.aclose()

    def tools(self, toolset: str, session_id: str) -> SupervisedMCPServer:
        """One toolset's tools for one session. The model reads each result as JSON (the
        tools' structured content), as the SDK's ``use_structured_content`` says."""
        assert self.supervisor is not None
        return SupervisedMCPServer(self.supervisor, toolset=toolset, session_id=session_id, use_structured_content=True)

    def agent_for(self, session_id: str) -> Agent[Any]:
        """The agents of one chat turn: built per request, over the shared supervisor."""
        assert self.supervisor is not None
        rewriter = Agent(
            name="workflow_rewriter",
            instructions="Rewrite and validate ComfyUI workflows.",
            mcp_servers=[self.tools("rewrite", session_id)],
            model=ScriptedModel(rewriter_script),
        )
        return Agent(
            name="copilot",
            instructions="Help the user build ComfyUI workflows.",
            mcp_servers=[self.tools("main", session_id)],
            tools=[remember_preference],
            handoffs=[handoff(rewriter)],
            model=ScriptedModel(copilot_script),
        )

    async def chat(self, session_id: str, message: str) -> str:
        """One chat turn, streamed as the copilot streams it to the browser."""
        result = Runner.run_streamed(
            self.agent_for(session_id), message, max_turns=30, run_config=RunConfig(tracing_disabled=True)
        )
        async for event in result.stream_events():
            if event.type == "run_item_stream_event":
                item = event.item
                if item.type == "tool_call_item":
                    print(f"  [{item.agent.name}] calls {item.raw_item.name}({item.raw_item.arguments})")
                elif item.type == "tool_call_output_item":
                    print(f"  [{item.agent.name}] gets {str(item.output)[:100]}")
            elif event.type == "agent_updated_stream_event":
                print(f"  -> {event.new_agent.name}")
        return str(result.final_output)


@function_tool
def remember_preference(preference: str) -> str:
    """Remember a user preference for this session (a local tool, not an MCP one)."""
    return f"noted: {preference}"


# -- a scripted "LLM" (no network) ------------------------------------------------------------

Script = Callable[[str, dict[str, str], list[str]], "list[Any] | str"]


def copilot_script(message: str, outputs: dict[str, str], tools: list[str]) -> list[Any] | str:
    """First look things up on both servers and note a preference; then hand off."""
    if not outputs:
        return [
            call("recall_workflow", {"query": message}),
            call("search__search_nodes", {"query": "loader"}),
            call("remember_preference", {"preference": "square images"}),
        ]
    return [call(next(t for t in tools if t.startswith("transfer_to_")), {})]


def rewriter_script(message: str, outputs: dict[str, str], tools: list[str]) -> list[Any] | str:
    """Validate the recalled workflow, then answer."""
    recalled = next((o for name, o in outputs.items() if name == "recall_workflow"), "[]")
    workflows = _json_or(recalled, [])
    nodes = workflows[0]["nodes"] if isinstance(workflows, list) and workflows else []
    if "validate_workflow" not in outputs:
        return [call("validate_workflow", {"nodes": nodes})]
    verdict = _json_or(outputs["validate_workflow"], {})
    return f"Workflow {' -> '.join(nodes) or '(none found)'}; valid: {verdict.get('valid')}"


_call_ids = itertools.count(1)


def call(name: str, arguments: dict[str, Any]) -> ResponseFunctionToolCall:
    """A tool call, as the model would ask for it (each with its own call id)."""
    n = next(_call_ids)
    return ResponseFunctionToolCall(
        type="function_call", id=f"fc_{n}", call_id=f"call_{n}", name=name, arguments=json.dumps(arguments), status="completed"
    )


def _json_or(text: str, default: Any) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return default
    # a tool returning a list comes back wrapped as {"result": [...]} in structured content
    return value.get("result", value) if isinstance(value, dict) and set(value) == {"result"} else value


class ScriptedModel(Model):
    """An ``agents`` Model that plays a script instead of calling an LLM.

    The script sees the user's message, the outputs of the tool calls so far (by tool name)
    and the tool names on offer; it returns tool calls, or the final text.
    """

    def __init__(self, script: Script) -> None:
        self.script = script

    def _respond(self, input: str | list[Any], tools: list[Any], handoffs: list[Any]) -> list[Any]:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        message = next((str(i.get("content")) for i in items if isinstance(i, dict) and i.get("role") == "user"), "")
        names = {i["call_id"]: i["name"] for i in items if isinstance(i, dict) and i.get("type") == "function_call"}
        outputs = {
            names.get(i["call_id"], "?"): _text(i["output"])
            for i in items
            if isinstance(i, dict) and i.get("type") == "function_call_output"
        }
        offered = [t.name for t in tools] + [h.tool_name for h in handoffs]
        answer = self.script(message, outputs, offered)
        if isinstance(answer, str):
            text = ResponseOutputText(type="output_text", text=answer, annotations=[])
            return [ResponseOutputMessage(type="message", id="msg", role="assistant", status="completed", content=[text])]
        return answer

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **_: Any):  # type: ignore[no-untyped-def, override]
        return ModelResponse(output=self._respond(input, tools, handoffs), usage=Usage(), response_id=None)

    async def stream_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **_: Any) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def, override]
        response = Response(
            id="scripted",
            created_at=0,
            model="scripted",
            object="response",
            output=self._respond(input, tools, handoffs),
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
        )
        yield ResponseCompletedEvent(type="response.completed", sequence_number=0, response=response)


def _text(output: Any) -> str:
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return str(output)


# -- the app ----------------------------------------------------------------------------------


async def main() -> None:
    copilot = Copilot()
    await copilot.start()  # once, at process start
    try:
        for session_id, message in [("sess-1", "text to image"), ("sess-2", "lora text to image")]:
            print(f"{session_id}: {message!r}")
            print(f"  => {await copilot.chat(session_id, message)}")
        assert copilot.supervisor is not None
        print(render_tree(await copilot.supervisor.status()))
    finally:
        await copilot.stop()  # once, at shutdown


if __name__ == "__main__":
    asyncio.run(main())
