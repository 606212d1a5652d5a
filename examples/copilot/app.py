"""The copilot: one asyncio process, one supervisor for its whole life, agents per chat turn."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig, Runner, function_tool, handoff

from protocol import ServerSpec
from supervisor import EmbeddedSupervisor, SupervisedMCPServer, Supervisor, embed
from supervisor.__main__ import render_tree

from .model import ScriptedModel, TurnHook, copilot_script, output_text, rewriter_script

BACKEND = Path(__file__).with_name("backend.py")


def default_servers(event_log: str | None = None) -> list[ServerSpec]:
    """The copilot's two MCP servers: its own backend, and the search server (both stdio
    here; in production they are remote, and the specs take a ``url`` instead)."""
    return [
        # the copilot's backend (today: MCPServerSse at /mcp-server/mcp, 300 s timeouts)
        ServerSpec(
            name="backend",
            command=sys.executable,
            args=[str(BACKEND)],
            env={"COPILOT_EVENT_LOG": event_log} if event_log else {},
            timeout=300,
        ),
        # the search server; its tools are exposed as search__<tool>
        ServerSpec(
            name="search",
            command=sys.executable,
            args=["-m", "supervisor._demo_server"],
            timeout=300,
            namespace="prefix",
            categories={"search_nodes": "search", "get_node_info": "search"},
        ),
    ]


@function_tool
def remember_preference(preference: str) -> str:
    """Remember a user preference for this session (a local tool, not an MCP one)."""
    return f"noted: {preference}"


@dataclass
class Turn:
    """What one chat turn did: the final answer, and every tool call with its output."""

    final_output: str
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (agent, tool, output)
    agents: list[str] = field(default_factory=list)  # as the run moved between them

    def output_of(self, tool: str) -> str:
        """The last output of ``tool`` in this turn (KeyError if it was not called)."""
        for _, name, output in reversed(self.tool_calls):
            if name == tool:
                return output
        raise KeyError(tool)


class Copilot:
    """The long-lived part of the copilot: the supervisor and the adapters over it.

    ``start`` (once, at process start) embeds the supervisor in the running asyncio loop;
    ``stop`` (once, at shutdown) stops every server. In an aiohttp app such as ComfyUI's::

        app.on_startup.append(lambda app: copilot.start())
        app.on_shutdown.append(lambda app: copilot.stop())

    ``attach`` uses a supervisor that is already running instead (a trio ``Supervisor``
    when the agents run under trio-asyncio). ``before_model_turn`` is handed to the scripted
    models (see ``ScriptedModel``).
    """

    def __init__(self, servers: list[ServerSpec] | None = None, *, before_model_turn: TurnHook | None = None) -> None:
        self.servers = servers if servers is not None else default_servers()
        self.before_model_turn = before_model_turn
        self.supervisor: EmbeddedSupervisor | Supervisor | None = None
        self._embedded: EmbeddedSupervisor | None = None

    async def start(self) -> None:
        """At process start: supervise the MCP servers until ``stop``."""
        self._embedded = await embed(self.servers)
        self.attach(self._embedded)

    def attach(self, supervisor: EmbeddedSupervisor | Supervisor) -> None:
        """Use a running supervisor (not closed by ``stop``). The adapters are made here,
        once: a chat turn only derives per-session copies of them."""
        self.supervisor = supervisor
        options: dict[str, Any] = {"use_structured_content": True}  # the model reads JSON results
        self._backend = SupervisedMCPServer(supervisor, server="backend", **options)
        self._search = SupervisedMCPServer(supervisor, server="search", **options)
        self._rewrite = SupervisedMCPServer(supervisor, toolset="rewrite", **options)

    async def stop(self) -> None:
        """At shutdown: stop every server (no orphans) and the guest run."""
        if self._embedded is not None:
            await self._embedded.aclose()

    def agent_for(self, session_id: str) -> Agent[Any]:
        """The agents of one chat turn, built per request over the shared supervisor. Each
        adapter carries the turn's ``X-Session-Id`` to the servers, on their one connection."""
        if self.supervisor is None:
            raise RuntimeError("start() (or attach()) the copilot first")
        rewriter = Agent(
            name="workflow_rewriter",
            instructions="Rewrite and validate ComfyUI workflows.",
            mcp_servers=[self._rewrite.with_session(session_id)],
            model=ScriptedModel(rewriter_script, name="workflow_rewriter", before_turn=self.before_model_turn),
        )
        return Agent(
            name="copilot",
            instructions="Help the user build ComfyUI workflows.",
            mcp_servers=[self._backend.with_session(session_id), self._search.with_session(session_id)],
            tools=[remember_preference],
            handoffs=[handoff(rewriter)],
            model=ScriptedModel(copilot_script, name="copilot", before_turn=self.before_model_turn),
        )

    async def chat(self, session_id: str, message: str, *, echo: bool = False) -> Turn:
        """One chat turn, streamed as the copilot streams it to the browser. Cancelling the
        task that awaits it cancels the run, and with it any tool call in flight."""
        result = Runner.run_streamed(
            self.agent_for(session_id), message, max_turns=30, run_config=RunConfig(tracing_disabled=True)
        )
        turn = Turn(final_output="")
        names: dict[str, str] = {}
        async for event in result.stream_events():
            if event.type == "agent_updated_stream_event":
                turn.agents.append(event.new_agent.name)
                if echo:
                    print(f"  -> {event.new_agent.name}")
            elif event.type == "run_item_stream_event":
                item = event.item
                if item.type == "tool_call_item":
                    names[item.raw_item.call_id] = item.raw_item.name
                    if echo:
                        print(f"  [{item.agent.name}] calls {item.raw_item.name}({item.raw_item.arguments})")
                elif item.type == "tool_call_output_item":
                    raw = item.raw_item
                    call_id = raw["call_id"] if isinstance(raw, dict) else raw.call_id
                    text = output_text(item.output)
                    turn.tool_calls.append((item.agent.name, names.get(call_id, "?"), text))
                    if echo:
                        print(f"  [{item.agent.name}] gets {text[:100]}")
        turn.final_output = str(result.final_output)
        return turn


async def main() -> None:
    copilot = Copilot()
    await copilot.start()  # once, at process start
    try:
        for session_id, message in [("sess-1", "text to image"), ("sess-2", "lora text to image")]:
            print(f"{session_id}: {message!r}")
            turn = await copilot.chat(session_id, message, echo=True)
            print(f"  => {turn.final_output}")
        assert isinstance(copilot.supervisor, EmbeddedSupervisor)
        print(render_tree(await copilot.supervisor.status()))
    finally:
        await copilot.stop()  # once, at shutdown


def run() -> None:
    """Run ``main`` on a plain asyncio loop (as ComfyUI's own loop is)."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(main())
