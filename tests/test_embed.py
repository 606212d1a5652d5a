"""Embedding: the tree as a trio guest run on asyncio, the openai-agents adapter, trio-asyncio.

The asyncio tests are plain (sync) test functions that run a plain asyncio loop themselves
(``run_asyncio``): with ``trio_mode`` every ``async def`` test would be a trio test. Each is
bounded by ``asyncio.timeout`` (the trio one by ``trio.fail_after``) and every poll has its
own deadline. Servers are real subprocesses from ``tests/servers`` (the reload test adds two
in-process ones, quicker to start).

An openai-agents ``Agent`` needs a model, and a real one needs the network. A scripted local
model (``ScriptedModel``, the SDK's ``Model`` interface) is the only way to run one here: it
asks for the tool calls it is given, then answers with the tool outputs it read back.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types
import msgspec
import pytest
import trio
from agents import Agent, RunConfig, Runner
from agents.items import ModelResponse
from agents.mcp import MCPUtil
from agents.models.interface import Model
from agents.run_context import RunContextWrapper
from agents.usage import Usage
from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from protocol import BackoffPolicy, CircuitOpen, DeadlineExceeded, ServerSpec, ToolResult, UnknownTool
from supervisor import EmbeddedSupervisor, SupervisedMCPServer, Supervisor, SupervisorClosed, embed
from supervisor._agents import _model_names, model_safe_name
from supervisor._embed import _IDLE_WORKERS
from supervisor._guest_driver import _BATCHES_PER_TURN, Driver

from conftest import SERVERS, marker_of, procs_with_marker, server_spec

# -- helpers ----------------------------------------------------------------------------------


def run_asyncio(
    main: Callable[[], Awaitable[Any]],
    timeout: float = 20.0,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.SelectorEventLoop,
) -> Any:
    """``asyncio.run(main())`` on a plain asyncio loop, failing the test after ``timeout`` s.

    The loop is made explicitly: once ``trio_asyncio`` is imported (the trio test below
    does), ``asyncio.run``'s default loop is trio-asyncio's, which runs trio itself.
    """

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await main()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


async def eventually(check: Callable[[], Any], *, timeout: float = 8.0, what: str) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail at ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def node(tree: Any, node_id: str) -> Any:
    """The status node called ``node_id`` anywhere in ``tree``."""
    stack = [tree]
    while stack:
        current = stack.pop()
        if current.id == node_id:
            return current
        stack.extend(current.children)
    raise KeyError(node_id)


def server_pid(tree: Any, name: str) -> int | None:
    return node(tree, f"connection:{name}").detail["pid"]


def seed_failure(result: mcp_types.CallToolResult) -> ToolResult:
    """The seed's tool result inside a failure ``CallToolResult`` (and check its shape)."""
    assert result.is_error is True
    payload = json.loads(text_of(result))
    assert set(payload) == {"tool_name", "success", "result", "error", "ext"}
    parsed = ToolResult.from_json(text_of(result))
    assert parsed.success is False and parsed.ext == [] and parsed.error
    return parsed


class ScriptedModel(Model):
    """A local stand-in for an LLM (no network): first asks for ``calls`` (all at once), then
    answers with the outputs of those calls, in order, as a JSON list of strings.

    ``tools_seen`` keeps the names of the tools the agent offered it.
    """

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls
        self.turn = 0
        self.tools_seen: list[str] = []

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **_: Any):  # type: ignore[no-untyped-def, override]
        self.turn += 1
        self.tools_seen = [tool.name for tool in tools]
        if self.turn == 1:
            output: list[Any] = [
                ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{i}",
                    call_id=f"call_{i}",
                    name=name,
                    arguments=json.dumps(arguments),
                    status="completed",
                )
                for i, (name, arguments) in enumerate(self.calls)
            ]
        else:
            outputs = {item["call_id"]: item["output"] for item in input if isinstance(item, dict) and item.get("type") == "function_call_output"}
            lines = [_output_text(outputs.get(f"call_{i}")) for i in range(len(self.calls))]
            output = [
                ResponseOutputMessage(
                    type="message",
                    id="msg_final",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", text=json.dumps(lines), annotations=[])],
                )
            ]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError("these tests use Runner.run")


def _output_text(output: Any) -> str:
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return "" if output is None else str(output)


async def run_agent(adapters: list[Any], calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], ScriptedModel]:
    """Run an Agent over ``adapters`` with a scripted model: each call's output, and the model."""
    model = ScriptedModel(calls)
    agent = Agent(name="copilot", instructions="Use the tools.", mcp_servers=adapters, model=model)
    result = await Runner.run(agent, "go", max_turns=4, run_config=RunConfig(tracing_disabled=True))
    return json.loads(str(result.final_output)), model


def test_tool_names_model_apis_refuse_reach_the_model_as_stand_ins_that_call_them():
    """MCP allows tool names of 128 characters with ``.`` and ``/``; OpenAI's and Anthropic's
    APIs take ``^[a-zA-Z0-9_-]{1,64}$`` and refuse the whole request otherwise, so one such
    tool would fail every turn of the copilot. The agent offers the model only names that
    fit; the model calls the stand-ins, and the right tools run."""
    sys.path.insert(0, str(SERVERS))
    from echo import LONG_NAME, ODD_NAME

    spec = server_spec("odd", "echo.py", "--odd-names", namespace="prefix")

    async def main() -> None:
        async with embed([spec]) as sup:
            adapter = SupervisedMCPServer(sup, server="odd")
            stand_ins = [model_safe_name(f"odd__{name}") for name in (ODD_NAME, LONG_NAME)]
            calls = [(name, {}) for name in stand_ins] + [("odd__echo", {"text": "plain"})]
            outputs, model = await run_agent([adapter], calls)
            assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in model.tools_seen), model.tools_seen
            assert {*stand_ins, "odd__echo"} <= set(model.tools_seen)  # a name that fits is unchanged
            assert outputs == [ODD_NAME, LONG_NAME, "plain"]
            # a fresh adapter (say, another session's) takes a stand-in before it has listed
            assert text_of(await adapter.with_session("other").call_tool(stand_ins[0], {})) == ODD_NAME

    run_asyncio(main, timeout=60)


def test_a_tool_filter_narrows_what_the_model_sees_as_on_the_sdks_own_servers(caplog):
    """``MCPServerStdio(..., tool_filter=...)`` is how an openai-agents app hides tools from
    a model; moving to the supervised adapter raised ``TypeError`` for it, as for the SDK
    servers' other options (``cache_tools_list``, ...), which said nothing of what does
    their job here. Now a static or dynamic filter works as there, and the others say."""
    from agents.exceptions import UserError
    from agents.mcp import create_static_tool_filter

    spec = server_spec("echo", "echo.py")
    seen: list[str] = []

    def not_destructive(context: Any, tool: mcp_types.Tool) -> bool:
        seen.append(context.server_name)
        tool.name = "renamed"  # a filter that mutates its copy changes no list
        return not (tool.annotations and tool.annotations.destructive_hint)

    async def raising(context: Any, tool: mcp_types.Tool) -> bool:
        if tool.name == "add":
            raise RuntimeError("filter bug")
        return True

    async def main() -> None:
        async with embed([spec]) as sup:
            allowed = SupervisedMCPServer(sup, server="echo", tool_filter=create_static_tool_filter(["echo", "add"]))
            async with allowed:
                assert "write_note" in [t.name for t in allowed.cached_tools or []]  # cached: all, as the SDK's
            assert sorted(t.name for t in await allowed.list_tools()) == ["add", "echo"]
            blocked = SupervisedMCPServer(sup, server="echo", tool_filter={"blocked_tool_names": ["echo"]})
            assert "echo" not in {t.name for t in await blocked.list_tools()}

            dynamic = SupervisedMCPServer(sup, server="echo", name="tools", tool_filter=not_destructive)
            await dynamic.connect()  # needs no run context
            with pytest.raises(UserError, match="run_context and agent are required"):
                await dynamic.list_tools()
            outputs, model = await run_agent([dynamic], [("echo", {"text": "kept"})])
            assert outputs == ["kept"] and "echo" in model.tools_seen and "write_note" not in model.tools_seen
            assert seen and set(seen) == {"tools"} and "renamed" not in model.tools_seen
            assert "write_note" in [t.name for t in dynamic.cached_tools or []]

            careless = SupervisedMCPServer(sup, server="echo", tool_filter=raising)
            agent = Agent(name="a", mcp_servers=[careless])
            names = [t.name for t in await careless.list_tools(RunContextWrapper(None), agent)]
            assert "add" not in names and "echo" in names
            assert "tool_filter of 'supervised:echo' raised for tool 'add'" in caplog.text

    run_asyncio(main, timeout=60)
    for option, says in [("cache_tools_list", "registry keeps every tool list"), ("max_retry_attempts", "retry policy"),
                         ("client_session_timeout_seconds", "timeout=")]:
        with pytest.raises(TypeError, match=f"SupervisedMCPServer takes no {option}=: .*{re.escape(says)}"):
            SupervisedMCPServer(Supervisor([]), **{option: 1})


def test_a_tool_filter_is_applied_to_the_list_it_judged_though_the_list_changes_meanwhile():
    """An async ``tool_filter`` runs while the adapter's list changes (another run of the
    same adapter lists tools after the server added one). The filter's verdicts were
    applied, position by position, to the adapter's newest list: ``list_tools`` raised
    ``ValueError`` (zip), or a tool the filter blocked reached the model. Each listing now
    keeps its own list."""
    spec = server_spec("dyn", "list_changed.py")

    async def main() -> None:
        async with embed([spec]) as sup:
            judging, release = asyncio.Event(), asyncio.Event()

            async def hold_the_first(context: Any, tool: mcp_types.Tool) -> bool:
                if not judging.is_set():
                    judging.set()
                    await release.wait()
                return tool.name != "blocked"

            adapter = SupervisedMCPServer(sup, server="dyn", tool_filter=hold_the_first)
            agent, context = Agent(name="a"), RunContextWrapper(None)
            first = asyncio.ensure_future(adapter.list_tools(context, agent))
            await judging.wait()
            await sup.call_tool("add_tool", {"name": "blocked"}, timeout=10)
            while "blocked" not in [tool.name for tool in await sup.list_tools()]:
                await asyncio.sleep(0.01)
            second = [tool.name for tool in await adapter.list_tools(context, agent)]
            release.set()
            first_names = [tool.name for tool in await first]
            assert "blocked" not in second and "blocked" not in first_names
            assert set(second) == set(first_names) and "add_tool" in first_names

    run_asyncio(main, timeout=60)


def test_an_approval_policy_holds_for_a_tool_the_model_sees_under_a_stand_in():
    """``require_approval`` written with the tools' MCP names (all a user knows of) was looked
    up under the stand-in the model sees: a renamed tool never asked for approval, with no
    word said. And an adapter for a server not supervised (a typo) listed no tools; now it
    is refused by name."""
    sys.path.insert(0, str(SERVERS))
    from echo import ODD_NAME

    spec = server_spec("odd", "echo.py", "--odd-names")

    async def main() -> None:
        async with embed([spec]) as sup:
            adapter = SupervisedMCPServer(sup, server="odd", require_approval={"always": {"tool_names": [ODD_NAME, "echo"]}})
            agent = Agent(name="a", mcp_servers=[adapter])
            tools = await MCPUtil.get_function_tools(adapter, False, RunContextWrapper(None), agent)
            approval = {tool.name: tool.needs_approval for tool in tools}
            assert approval[model_safe_name(ODD_NAME)] is True and approval["echo"] is True
            assert approval["add"] is False
            with pytest.raises(UnknownTool, match="no server named 'ecoh'"):
                await SupervisedMCPServer(sup, server="ecoh").connect()

    run_asyncio(main, timeout=60)


def test_stand_in_names_are_stable_distinct_and_never_take_a_real_name():
    long = "x" * 80
    assert model_safe_name("fine_name-1") == "fine_name-1"
    assert model_safe_name(long) == model_safe_name(long) != model_safe_name(long + "y")
    assert len(model_safe_name(long)) == 64 and model_safe_name("a.b").startswith("a_b_")
    taken = model_safe_name("a.b")  # a server's real tool that happens to be named like a stand-in
    exposed = _model_names(["a.b", taken])
    assert sorted(exposed.values()) == ["a.b", taken] and exposed[taken] == taken
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in exposed)


# -- the embedded supervisor ------------------------------------------------------------------


def in_process_server(name: str) -> MCPServer:
    app = MCPServer(name)

    @app.tool()
    def whoami() -> str:
        return name

    return app


def test_embed_calls_lists_reports_reloads_restarts_and_fences():
    echo = server_spec("echo", "echo.py", categories={"echo": "search", "add": "workflow"})
    change = server_spec("change", "echo.py", namespace="prefix")
    changed = server_spec("change", "echo.py", "--name", "changed", namespace="prefix")
    drop = ServerSpec(name="drop", namespace="prefix")  # in-process: quicker to start
    new = ServerSpec(name="new", namespace="prefix")
    inproc = {"drop": in_process_server("drop"), "new": in_process_server("new")}

    async def main() -> None:
        sup = await embed([echo, change, drop], inproc=inproc)
        try:
            assert isinstance(sup, EmbeddedSupervisor) and sup.running
            result = await sup.call_tool("echo", {"text": "hi"})
            assert text_of(result) == "hi" and not result.is_error
            assert text_of(await sup.call_tool("add", {"a": 2, "b": 3}, server="echo", timeout=5)) == "5"
            progress: list[float] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(value)  # runs on the host loop, as an asyncio task

            await sup.call_tool("sleep", {"seconds": 0.25}, progress=on_progress, timeout=5)
            await eventually(lambda: len(progress) >= 2, what="progress notifications")

            names = lambda tools: sorted(t.name for t in tools)  # noqa: E731
            assert names(await sup.list_tools(toolset="search")) == ["echo"]
            assert names(await sup.list_tools(toolset="rewrite")) == ["add"]
            assert names(await sup.list_tools(category="workflow")) == ["add"]
            assert "change__pid" in names(await sup.list_tools())
            with pytest.raises(ValueError, match="unknown toolset"):
                await sup.list_tools(toolset="nope")

            before = await sup.status()
            assert node(before, "server:echo").state == "running"
            assert server_pid(before, "echo") in procs_with_marker(marker_of(echo))
            metrics = await sup.metrics()
            assert metrics.tool("echo", "echo").calls >= 1
            assert metrics.server("echo") is not None
            assert b"echo" in await sup.metrics_text()

            # a trio function of one's own, inside the guest run
            async def tools_of(trio_sup: Supervisor, server: str) -> int:
                await trio.sleep(0)
                return len(trio_sup.link(server).tools)

            assert await sup.run_in_trio(tools_of, "echo") == 6

            # reload: diffed by name; the unchanged server is not touched
            diff = await sup.reload([echo, changed, new])
            assert diff == {
                "added": ["new"], "removed": ["drop"], "updated": [], "replaced": ["change"], "unchanged": ["echo"], "failed": [],
            }
            after = await sup.status()
            assert server_pid(after, "echo") == server_pid(before, "echo")
            assert server_pid(after, "change") != server_pid(before, "change")
            assert sorted(await sup.servers()) == ["change", "echo", "new"]
            assert procs_with_marker(marker_of(change)) == []  # the old incarnation's marker
            assert text_of(await sup.call_tool("new__whoami", {}, timeout=5)) == "new"
            with pytest.raises(UnknownTool):
                await sup.call_tool("drop__whoami", {})
            with pytest.raises(ValueError, match="duplicate"):
                await sup.reload([echo, echo])

            # an operator's restart of one server: a new process, the others untouched
            restarted = await sup.restart("echo")
            assert node(restarted, "connection:echo").state == "running"
            again = await sup.status()
            assert server_pid(again, "echo") != server_pid(after, "echo")
            assert procs_with_marker(marker_of(echo)) == [server_pid(again, "echo")]
            assert server_pid(again, "change") == server_pid(after, "change")
            with pytest.raises(KeyError, match="no server 'nope'"):
                await sup.restart("nope")

            # an operator fences one server off with its breaker, then lets it back
            fenced = await sup.set_breaker("echo", "open", "maintenance")
            assert node(fenced, "breaker:echo").detail["state"] == "forced_open"
            with pytest.raises(CircuitOpen, match="maintenance"):
                await sup.call_tool("echo", {"text": "x"}, timeout=5)
            await sup.set_breaker("echo", "reset")
            assert text_of(await sup.call_tool("echo", {"text": "y"}, timeout=5)) == "y"
        finally:
            await sup.aclose()
        assert not sup.running
        for spec in (echo, changed):
            assert procs_with_marker(marker_of(spec)) == []

    run_asyncio(main)


async def cancel_a_call_in_flight(sup: EmbeddedSupervisor, tool: str, read_log: Callable[[], list[str]]) -> None:
    """Call ``tool`` (``hang.py``'s ``hang``) from a host task, cancel that task once the server
    runs the call, and wait for the server to log that the call was cancelled there."""
    call = asyncio.create_task(sup.call_tool(tool, {}, timeout=30))
    await eventually(lambda: "hang start" in read_log(), what="the call to reach the server")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: "hang cancelled" in read_log(), what="the server to see the cancellation")


def test_cancelling_the_host_task_cancels_the_call_on_the_server(tmp_path):
    log = tmp_path / "exec.log"
    spec = server_spec("hang", "hang.py", env={"EXEC_LOG": str(log)})
    config = tmp_path / "mcp_servers.json"  # embed also takes a config file
    config.write_text(json.dumps({"mcpServers": {"hang": {"command": spec.command, "args": spec.args, "env": spec.env}}}))
    read_log = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731

    async def main() -> None:
        async with embed(config) as sup:
            await cancel_a_call_in_flight(sup, "hang", read_log)
            # the connection is fine and free for the next call
            assert text_of(await sup.call_tool("echo", {"text": "after"}, timeout=5)) == "after"
            assert node(await sup.status(), "connection:hang").restarts == 0

    run_asyncio(main)


def test_embed_on_uvloop_waits_in_its_selector_and_keeps_every_guarantee(tmp_path):
    """uvloop (uvicorn's loop when it is installed) as the host: the guest run still waits
    in the host loop (the driver watches trio's epoll fd with uvloop's ``add_reader``, no
    helper thread); calls through the adapter answer, a cancelled host task cancels its
    call on the server, and closing leaves no process behind."""
    import uvloop

    log = tmp_path / "exec.log"
    hang = server_spec("hang", "hang.py", env={"EXEC_LOG": str(log)}, namespace="prefix")
    echo = server_spec("echo", "echo.py")
    read_log = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731

    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with embed([echo, hang]) as sup:
            assert sup._driver is not None  # not trio's own guest mode and its helper thread
            adapter = SupervisedMCPServer(sup, server="echo")
            for i in range(50):
                assert text_of(await adapter.call_tool("echo", {"text": f"uv {i}"})) == f"uv {i}"
            await asyncio.sleep(0.05)  # trio idle: it waits in uvloop, on its epoll fd
            assert sup._driver._waiting and sup._driver._watching
            await cancel_a_call_in_flight(sup, "hang__hang", read_log)
            assert text_of(await sup.call_tool("echo", {"text": "after"}, timeout=5)) == "after"
        assert procs_with_marker(marker_of(echo)) == [] and procs_with_marker(marker_of(hang)) == []

    run_asyncio(main, loop_factory=uvloop.new_event_loop)


def test_aclose_cancels_calls_in_flight_and_leaves_no_orphans():
    parent = server_spec("parent", "spawns_grandchild.py", "--child-stdio", "devnull")
    echo = server_spec("echo", "echo.py", namespace="prefix")

    async def main() -> None:
        sup = await embed([parent, echo])
        assert len(procs_with_marker(marker_of(parent))) == 2  # the server and its child
        assert procs_with_marker(marker_of(echo))
        in_flight = asyncio.create_task(sup.call_tool("echo__sleep", {"seconds": 30}, timeout=60))
        await asyncio.sleep(0.3)
        await sup.aclose()
        with pytest.raises(SupervisorClosed):
            await in_flight
        assert procs_with_marker(marker_of(parent)) == []
        assert procs_with_marker(marker_of(echo)) == []
        with pytest.raises(SupervisorClosed):
            await sup.call_tool("echo__echo", {"text": "too late"})
        with pytest.raises(SupervisorClosed):
            await sup.status()
        # the adapter's answer is a result the model can read, even for a name it never listed
        closed = await SupervisedMCPServer(sup).call_tool("never_listed", {})
        assert closed.is_error and "closed" in text_of(closed), closed
        await sup.aclose()  # idempotent

    run_asyncio(main)


def test_a_handle_never_closed_is_closed_when_asyncio_run_ends():
    """A host that returns from ``asyncio.run`` without ``aclose``: its servers lived on as
    long as the host process (until the interpreter's exit reaped them). Now the tree is
    closed as ``asyncio.run`` cancels the tasks left, before it returns."""
    parent = server_spec("parent", "spawns_grandchild.py", "--child-stdio", "devnull")

    async def main() -> None:
        await embed([parent])  # and never closed
        assert len(procs_with_marker(marker_of(parent))) == 2  # the server and its child

    run_asyncio(main)
    assert procs_with_marker(marker_of(parent)) == []


# -- the openai-agents adapter ----------------------------------------------------------------


def test_adapter_lists_calls_and_turns_typed_failures_into_readable_results():
    echo = server_spec("echo", "echo.py", categories={"echo": "search", "add": "workflow"})
    meta = server_spec("meta", "meta_echo.py", namespace="prefix")
    docs = server_spec("docs", "resources_only.py")  # no tools, resources without templates

    async def main() -> None:
        async with embed([echo, meta, docs]) as sup:
            search = SupervisedMCPServer(sup, toolset="search")
            async with search:  # connect/cleanup open and close nothing
                assert [t.name for t in search.cached_tools or []] == ["echo"]
            tools = await search.list_tools()
            assert all(isinstance(t, mcp_types.Tool) for t in tools) and tools[0].input_schema["type"] == "object"
            result = await search.call_tool("echo", {"text": "via adapter"})
            assert isinstance(result, mcp_types.CallToolResult) and text_of(result) == "via adapter"

            # the tool's own error is passed through as the server gave it
            whole = SupervisedMCPServer(sup, server="echo")  # 'search' has echo alone
            own_error = await whole.call_tool("fail", {"message": "boom"})
            assert own_error.is_error and "boom" in text_of(own_error)

            # typed failures: results the model can read, in the seed's shape
            unknown = seed_failure(await search.call_tool("no_such_tool", {}))
            assert unknown.tool_name == "no_such_tool" and unknown.error.startswith("UnknownTool:")
            invalid = seed_failure(await whole.call_tool("add", {"a": "x"}))
            assert invalid.error.startswith("InvalidArguments:")
            no_server = seed_failure(await SupervisedMCPServer(sup, server="nowhere").call_tool("echo", {}))
            assert "nowhere" in no_server.error

            # the session id reaches the server in _meta, on the one shared connection
            meta_pid = server_pid(await sup.status(), "meta")
            for session in ("sess-1", "sess-2"):
                adapter = SupervisedMCPServer(sup, server="meta", session_id=session)
                names = [t.name for t in await adapter.list_tools()]
                assert "meta__meta" in names and all(name.startswith("meta__") for name in names)
                seen = (await adapter.call_tool("meta__meta", {}, meta={"trace": "t1"})).structured_content["meta"]
                assert seen["session_id"] == session and seen["trace"] == "t1"
            assert server_pid(await sup.status(), "meta") == meta_pid
            other = SupervisedMCPServer(sup, server="meta", session_id="a").with_session("b")
            assert (await other.call_tool("meta__meta", {})).structured_content["meta"]["session_id"] == "b"

            # prompts and resources pass through to the live connection
            prompts = await adapter.list_prompts()
            assert [p.name for p in prompts.prompts] == ["greet"]
            greeting = await adapter.get_prompt("greet", {"who": "trio"})
            assert "trio" in greeting.messages[0].content.text
            with pytest.raises(MCPError, match="cannot be sent to server 'meta' as JSON"):
                await adapter.get_prompt("greet", {"who": "half an emoji: \ud83d"})  # would end the connection
            assert server_pid(await sup.status(), "meta") == meta_pid
            resources = await adapter.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["info://server"]
            assert (await adapter.list_resource_templates()).resource_templates == []
            info = await adapter.read_resource("info://server")
            assert f"pid={meta_pid}" in info.contents[0].text
            everything = SupervisedMCPServer(sup)  # over every server
            # Over several servers, as the daemon lists them: each prompt once, namespaced like
            # its server's tools, and each resource URI once (the server a read reaches).
            # Both servers' greet were listed as "greet", and only the first was reachable.
            assert sorted(p.name for p in (await everything.list_prompts()).prompts) == ["greet", "meta__greet"]
            meta_greeting = await everything.get_prompt("meta__greet", {"who": "meta"})
            assert "meta" in meta_greeting.messages[0].content.text
            assert "trio" in (await everything.get_prompt("greet", {"who": "trio"})).messages[0].content.text
            uris = sorted(str(r.uri) for r in (await everything.list_resources()).resources)
            assert uris == ["doc://readme", "info://server"]
            # docs has no templates ("Method not found"): it adds none, the listing still works
            assert (await everything.list_resource_templates()).resource_templates == []
            documents = SupervisedMCPServer(sup, server="docs")
            assert await documents.list_tools() == []
            assert (await documents.read_resource("doc://readme")).contents[0].text == "read doc://readme"

    run_asyncio(main)


async def _is_down(sup: EmbeddedSupervisor, name: str) -> bool:
    return await sup.run_in_trio(lambda trio_sup: trio_sup.link(name).conn is None)


def test_an_agent_run_survives_a_killed_server_and_the_host_loop_never_notices():
    echo = server_spec("echo", "echo.py", categories={"echo": "search"})
    meta = server_spec("meta", "meta_echo.py", namespace="prefix", backoff=BackoffPolicy(min=1.0, max=1.0, jitter=0.0))
    calls = [("echo", {"text": "hello"}), ("meta__meta", {})]

    async def main() -> None:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beating = asyncio.create_task(heartbeat())
        async with embed([echo, meta]) as sup:
            adapters = [
                SupervisedMCPServer(sup, toolset="search"),
                SupervisedMCPServer(sup, server="meta", session_id="sess-42", timeout=1.0),
            ]
            outputs, model = await run_agent(adapters, calls)
            assert "echo" in model.tools_seen and "meta__meta" in model.tools_seen
            assert outputs[0] == "hello"
            assert json.loads(outputs[1])["meta"]["session_id"] == "sess-42"

            # kill -9 one server: the run completes, its call comes back as a clear failure,
            # the other server's call works
            events = sup.events()
            first_pid = server_pid(await sup.status(), "meta")
            os.kill(first_pid, signal.SIGKILL)
            await eventually(lambda: _is_down(sup, "meta"), what="the supervisor to see the server down")
            outputs, _ = await run_agent(adapters, calls)
            assert outputs[0] == "hello"
            failure = ToolResult.from_json(outputs[1])
            assert failure.success is False and failure.tool_name == "meta__meta" and "'meta'" in failure.error

            # the supervisor restarts it; it shows in events and status; a later turn succeeds
            seen: list[str] = []

            async def restarted() -> bool:
                event = await anext(events)
                seen.append(f"{event.path.rsplit('/', 1)[-1]} {event.kind}")
                return "connection:meta ready" in seen

            await eventually(restarted, timeout=10, what="the server to come back")
            await events.aclose()
            assert any(kind.endswith(("exited", "restarting")) for kind in seen), seen
            connection = node(await sup.status(), "connection:meta")
            assert connection.state == "running" and connection.restarts >= 1
            assert "SIGKILL" in (connection.last_exit or connection.detail["last_error"] or "")
            assert connection.detail["pid"] != first_pid
            outputs, _ = await run_agent(adapters, calls)
            assert json.loads(outputs[1])["meta"]["session_id"] == "sess-42"
        assert not beating.done() and ticks > 10  # the host loop ran on throughout
        beating.cancel()

    run_asyncio(main, timeout=30)


# -- trio host: the Supervisor natively, openai-agents through trio-asyncio ---------------------


async def test_trio_host_runs_an_agent_through_trio_asyncio(tmp_path):
    # Imported here, not at the top: importing trio_asyncio makes asyncio.run's default loop
    # trio-asyncio's own for the rest of the process, which other tests need not inherit.
    import trio_asyncio

    log = tmp_path / "exec.log"
    echo = server_spec("echo", "echo.py", categories={"echo": "search"})
    hang = server_spec("hang", "hang.py", namespace="prefix", env={"EXEC_LOG": str(log)})
    with trio.fail_after(20):
        async with Supervisor([echo, hang]) as sup:
            async with trio_asyncio.open_loop():
                adapters = [SupervisedMCPServer(sup, toolset="search", session_id="s")]
                lines, model = await trio_asyncio.aio_as_trio(run_agent)(adapters, [("echo", {"text": "from trio"})])
                assert lines == ["from trio"] and model.tools_seen == ["echo"]

                # typed failures come back as results here too
                adapter = adapters[0]
                unknown = await trio_asyncio.aio_as_trio(adapter.call_tool)("nope", {})
                assert seed_failure(unknown).error.startswith("UnknownTool:")

                # cancelling the asyncio side cancels the trio call, and so the server's
                hanging = SupervisedMCPServer(sup, server="hang")

                async def call_then_give_up() -> None:
                    task = asyncio.ensure_future(hanging.call_tool("hang__hang", {}))
                    while not (log.exists() and "hang start" in log.read_text()):
                        await asyncio.sleep(0.02)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task

                await trio_asyncio.aio_as_trio(call_then_give_up)()
            while "hang cancelled" not in log.read_text():
                await trio.sleep(0.02)
        assert procs_with_marker(marker_of(echo)) == [] and procs_with_marker(marker_of(hang)) == []


def timing_server() -> MCPServer:
    app = MCPServer("timing")

    @app.tool()
    async def nap(seconds: float) -> str:
        await anyio.sleep(seconds)  # a trio deadline and nothing else for trio to wait on
        return f"slept {seconds}"

    @app.tool()
    async def never() -> str:
        await anyio.sleep_forever()
        return "unreachable"

    return app


def epoll_fds_watched_by(loop: asyncio.AbstractEventLoop) -> list[int]:
    """The epoll fds the loop's selector watches (asyncio's own is not in its own map)."""

    def is_epoll(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
        except OSError:
            return False

    return [key.fd for key in loop._selector.get_map().values() if is_epoll(key.fd)]  # type: ignore[attr-defined]


class LoopWithoutFdWatching(asyncio.SelectorEventLoop):
    """A host loop that cannot watch an fd, as a proactor loop (Windows) cannot. This Linux
    machine has no such loop, so this one refuses ``add_reader``; asyncio's own machinery
    uses the private ``_add_reader`` and is unaffected."""

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        raise NotImplementedError("this loop cannot watch file descriptors")


@pytest.mark.parametrize("io_wait", ["host-selector", "trio-thread"])
def test_trio_waits_for_io_in_the_host_loop_or_falls_back_to_its_own_thread(io_wait):
    """On Linux the guest run waits in the host loop's selector (it watches trio's epoll fd),
    so no thread hands wake-ups over; on a loop that cannot watch an fd the driver stands
    aside and trio's own guest mode runs. Either way calls, trio deadlines with no I/O to
    wake on, and closing all work."""
    loop_factory = asyncio.SelectorEventLoop if io_wait == "host-selector" else LoopWithoutFdWatching

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with embed([ServerSpec(name="timing")], inproc={"timing": timing_server()}) as sup:
            assert (sup._driver is not None) is (io_wait == "host-selector")
            await asyncio.sleep(0.1)  # trio is idle now
            watched = epoll_fds_watched_by(loop)
            assert len(watched) == (1 if io_wait == "host-selector" else 0), watched
            assert text_of(await sup.call_tool("nap", {"seconds": 0.2}, timeout=5)) == "slept 0.2"
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("never", {}, timeout=0.3)
            results = await asyncio.gather(*(sup.call_tool("nap", {"seconds": 0.05 * i}, timeout=5) for i in range(5)))
            assert [text_of(r) for r in results] == [f"slept {0.05 * i}" for i in range(5)]
        assert epoll_fds_watched_by(loop) == []

    run_asyncio(main, loop_factory=loop_factory)


def test_a_busy_trio_still_gives_the_host_loop_its_turns():
    """The guest run's batches follow each other in one callback of the host loop while
    trio stays runnable (a stdio call takes several in a row), but at most
    ``_BATCHES_PER_TURN`` of them: a trio task that never waits leaves the host's own tasks
    a turn every few batches, never starved."""
    checkpoints = 300

    async def never_waits(_: Supervisor) -> None:
        for _ in range(checkpoints):
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        async with embed([]) as sup:
            assert sup._driver is not None
            busy = asyncio.ensure_future(sup.run_in_trio(never_waits))
            host_turns = 0
            while not busy.done():
                host_turns += 1
                await asyncio.sleep(0)
            await busy
            assert host_turns >= checkpoints // _BATCHES_PER_TURN - 5, host_turns

    run_asyncio(main)


def test_a_request_to_an_idle_trio_starts_before_its_caller_awaits():
    """A request to an idle guest run waited a turn of the host loop for trio's first tick
    (the tick was scheduled with ``call_soon``). Now trio ticks within the call that hands
    the request over: a request that needs nothing but trio is answered before the caller
    ever suspends (its coroutine finishes on its first step), and a stdio request is on
    the pipe by then."""

    async def main() -> None:
        async with embed([]) as sup:
            assert sup._driver is not None
            await asyncio.sleep(0.05)  # trio is idle now
            request = sup.run_in_trio(lambda _: "answered")
            with pytest.raises(StopIteration) as finished:
                request.send(None)
            assert finished.value.value == "answered"

    run_asyncio(main)


def test_a_stdio_call_polls_trios_epoll_only_when_trio_has_nothing_to_run(monkeypatch):
    """Trio's own guest mode polls its epoll after every batch of tasks, and so did this
    driver: six epoll calls (and trio's bookkeeping for each) per stdio call, then three.
    Now trio's epoll is polled only when the loop's selector says it is ready (the answer's
    wake-up): not between two batches of a runnable trio, not before the batch a request
    to an idle trio starts, and not as trio goes idle (the loop's next select sees what is
    ready). Counted over calls to a real stdio server: one each, and a spare two for a
    timer that fires meanwhile."""
    from trio._core._io_epoll import EpollIOManager

    # A counter around trio's own get_events (nothing stubbed: the server, trio's epoll and
    # the driver are real); the calls made on a C epoll object are not observable otherwise.
    polls = 0
    get_events = EpollIOManager.get_events

    def counted(self: Any, timeout: float) -> Any:
        nonlocal polls
        polls += 1
        return get_events(self, timeout)

    async def main() -> None:
        async with embed([server_spec("echo", "echo.py")]) as sup:
            assert sup._driver is not None
            for _ in range(5):  # warm: the tool list is cached, the workers are there
                await sup.call_tool("echo", {"text": "hi"})
            monkeypatch.setattr(EpollIOManager, "get_events", counted)
            calls = 20
            for i in range(calls):
                assert text_of(await sup.call_tool("echo", {"text": f"hi {i}"})) == f"hi {i}"
            monkeypatch.setattr(EpollIOManager, "get_events", get_events)
            assert 0 < polls <= calls + 2, polls

    run_asyncio(main)


def test_io_events_trio_took_are_never_dropped_by_the_next_poll():
    """Trio's waits for a fd are one-shot: an event taken from its epoll and then dropped
    leaves its task waiting for ever. With trio polled once it has nothing left to run,
    a turn of the loop can end holding such events (the last batch of the turn found I/O
    ready); a draft of the driver's next turn polled again over them, and servers hung in
    their handshake or calls waited out their deadlines (5 runs of 5). Two stdio servers
    starting together, then rounds of 50 concurrent calls over both: every call answered."""

    async def main() -> None:
        echo = server_spec("echo", "echo.py", connect_timeout=10)
        other = server_spec("other", "echo.py", namespace="prefix", connect_timeout=10)
        async with embed([echo, other]) as sup:
            assert sup._driver is not None
            for _ in range(10):
                names = ["echo" if i % 2 else "other__echo" for i in range(50)]
                results = await asyncio.gather(*(sup.call_tool(n, {"text": str(i)}, timeout=10) for i, n in enumerate(names)))
                assert [text_of(r) for r in results] == [str(i) for i in range(50)]

    run_asyncio(main, timeout=60)


class LoopInterruptedOnce(asyncio.SelectorEventLoop):
    """Under Python's default SIGINT handler (a host that runs its own loop), Ctrl-C raises
    ``KeyboardInterrupt`` wherever the loop's thread is: here in the guest driver, between
    two of trio's batches, as it schedules its next tick. A signal cannot be aimed at one
    line, so this loop raises it there, once, when ``interrupt`` is set."""

    interrupt = False

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        if self.interrupt and isinstance(getattr(callback, "__self__", None), Driver) and callback.__name__ == "_next_turn":
            self.interrupt = False
            raise KeyboardInterrupt
        return super().call_soon(callback, *args, context=context)


def test_a_ctrl_c_between_two_trio_batches_leaves_the_tree_running_and_closable():
    """Such an interrupt left the guest run stalled: no tick scheduled, and trio not
    waiting in the selector either, so no request ran again and ``aclose`` waited for
    ever. Now the host gets its ``KeyboardInterrupt`` and the run goes on ticking: a host
    that carries on finds the tree answering, and closes it."""

    async def busy(_: Supervisor) -> str:
        for _ in range(20):  # runnable for more batches than one loop callback runs
            await trio.lowlevel.checkpoint()
        return "done"

    async def start() -> EmbeddedSupervisor:
        return await embed([ServerSpec(name="timing")], inproc={"timing": timing_server()})

    async def carry_on(sup: EmbeddedSupervisor) -> None:
        async with asyncio.timeout(10):
            assert await sup.run_in_trio(busy) == "done"
            assert text_of(await sup.call_tool("nap", {"seconds": 0.01}, timeout=5)) == "slept 0.01"
            await sup.aclose()

    loop = LoopInterruptedOnce()
    try:
        sup = loop.run_until_complete(start())
        assert sup._driver is not None
        loop.interrupt = True
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(sup.run_in_trio(busy))
        assert not loop.interrupt  # it was raised where it was meant to be
        loop.run_until_complete(carry_on(sup))
    finally:
        loop.close()


def test_every_kind_of_answer_leaves_no_request_pending():
    """The handle keeps each request until trio resolves it (so that a run that ends fails
    whatever is left): an answer, a failure, a caller's cancellation and a refusal each
    take theirs out, or the set would grow with every call."""

    async def main() -> None:
        async with embed([ServerSpec(name="timing")], inproc={"timing": timing_server()}) as sup:
            assert text_of(await sup.call_tool("nap", {"seconds": 0.01}, timeout=5)) == "slept 0.01"
            with pytest.raises(DeadlineExceeded):
                await sup.call_tool("never", {}, timeout=0.05)
            with pytest.raises(UnknownTool):
                await sup.call_tool("nope", {}, timeout=5)
            left = asyncio.ensure_future(sup.call_tool("never", {}, timeout=5))
            await asyncio.sleep(0.05)
            left.cancel()
            with pytest.raises(asyncio.CancelledError):
                await left
            assert (await sup.status()).state == "running"
            for _ in range(100):
                if not sup._pending:
                    break
                await asyncio.sleep(0.01)  # the cancelled one's trio task ends soon after
            assert sup._pending == set()

    run_asyncio(main)


def test_requests_share_a_few_worker_tasks_each_request_in_a_fresh_context():
    """Each request from asyncio was a trio task and a cancel scope of its own: spawning,
    entering and leaving them was about a quarter of what the bridge costs. Requests now go
    to worker tasks that wait for the next one. Each request still starts from a fresh copy
    of the guest run's context (what one request set is never seen by the next on the same
    worker); after a burst only ``_IDLE_WORKERS`` stay; a cancelled request ends its worker
    (its scope is cancelled), and the requests after it are served by the others."""
    mark: contextvars.ContextVar[Any] = contextvars.ContextVar("mark", default=None)

    async def sets_mark(_: Supervisor, value: str) -> tuple[Any, Any]:
        seen = mark.get()
        mark.set(value)
        await trio.lowlevel.checkpoint()
        return seen, trio.lowlevel.current_task()

    async def main() -> None:
        async with embed([ServerSpec(name="timing")], inproc={"timing": timing_server()}) as sup:
            workers = lambda: sup.run_in_trio(lambda _: len(sup._requests.child_tasks))  # noqa: E731
            seen_first, first = await sup.run_in_trio(sets_mark, "first")
            seen_second, second = await sup.run_in_trio(sets_mark, "second")
            assert second is first  # the same worker served both
            assert (seen_first, seen_second) == (None, None)

            naps = await asyncio.gather(*(sup.call_tool("nap", {"seconds": 0.05}, timeout=5) for _ in range(40)))
            assert {text_of(r) for r in naps} == {"slept 0.05"}
            assert await workers() == _IDLE_WORKERS

            stuck = asyncio.ensure_future(sup.call_tool("never", {}, timeout=5))
            await asyncio.sleep(0.05)
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck

            async def workers_left(n: int) -> bool:
                return await workers() == n

            await eventually(lambda: workers_left(_IDLE_WORKERS - 1), what="the cancelled request's worker to end")
            assert text_of(await sup.call_tool("nap", {"seconds": 0.01}, timeout=5)) == "slept 0.01"

    run_asyncio(main)


def test_a_reload_lists_a_server_whose_change_failed_and_changes_the_others(caplog):
    """A reload whose change of one server raised (here: that server was being replaced
    through ``run_in_trio`` meanwhile, one change of a server at a time) raised an
    exception group out of ``reload``, after the other servers had changed, with no word of
    what had. Now, as the daemon's reload does, that server is listed under ``failed`` with
    its error logged, and the rest of the diff says what did change."""
    echo, slow = server_spec("echo", "echo.py"), server_spec("slow", "slow_start.py", "--delay", "1.5")
    echo_changed = server_spec("echo", "echo.py", "--name", "changed")
    slow_changed = server_spec("slow", "slow_start.py", "--delay", "0.1")

    async def main() -> None:
        async with embed([echo, slow]) as sup:
            replacing = asyncio.ensure_future(sup.run_in_trio(lambda s: s.replace_server(slow)))
            await asyncio.sleep(0.2)  # the replacement waits for the slow server's start
            diff = await sup.reload([echo_changed, slow_changed])
            assert diff["failed"] == ["slow"] and diff["replaced"] == ["echo"], diff
            await replacing
            assert text_of(await sup.call_tool("echo", {"text": "hi"}, timeout=10)) == "hi"
            assert (await sup.run_in_trio(lambda s: s.link("slow").spec)) == slow  # left as it was

    with caplog.at_level("ERROR", logger="supervisor.embed"):
        run_asyncio(main, timeout=40)
    assert "reload: server 'slow': RuntimeError: server 'slow' is being replaced or removed" in caplog.text


def test_embed_refuses_clearly_and_leaves_the_loop_usable():
    async def main() -> None:
        with pytest.raises(ValueError, match="duplicate server names"):
            await embed([ServerSpec(name="x", command="true"), ServerSpec(name="x", command="true")])
        async with embed([]) as sup:
            with pytest.raises(RuntimeError, match="already runs trio"):
                await embed([])
            assert (await sup.status()).state == "running"
        await asyncio.sleep(0)  # the host loop is still fine

    run_asyncio(main)


def test_a_trio_supervisor_outside_trio_asyncio_says_how_to_use_it():
    sup = Supervisor([])
    adapter = SupervisedMCPServer(sup)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="trio_asyncio.open_loop"):
            await adapter.list_tools()

    run_asyncio(main)


# -- the bridge's guarantees when things go wrong -------------------------------------------------


def test_a_call_made_while_a_crashed_tree_stops_is_answered():
    """A task of the tree that fails crashes it. While the crashed tree stopped its servers
    (about 1.5 s for a stdio one) the handle went on saying ``running``, and a call made
    then was never answered, even one with a timeout: its request met the closed requests
    nursery inside a trio callback, and trio made that a ``TrioInternalError``, which also
    hid the real cause from ``crash``. Now every call made from the crash on ends with
    ``SupervisorClosed``, ``running`` turns False as soon as the tree starts stopping, and
    ``crash`` is the task's own error."""
    spec = server_spec("echo", "echo.py")

    async def boom() -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        sup = await embed([spec])
        try:
            await sup.run_in_trio(lambda _: sup._requests.start_soon(boom))  # a task of the tree fails
            calls = []
            for _ in range(300):  # a call at every turn of the loop until the handle says closed
                calls.append(asyncio.ensure_future(sup.call_tool("echo", {"text": "x"}, timeout=2)))
                if not sup.running:
                    break
                await asyncio.sleep(0.01)
            outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
            assert all(isinstance(outcome, SupervisorClosed) for outcome in outcomes), outcomes
            with pytest.raises(SupervisorClosed):
                sup.events()
            await asyncio.wait_for(asyncio.shield(sup._finished), 10)
            assert isinstance(sup.crash, RuntimeError) and str(sup.crash) == "boom", repr(sup.crash)
            with pytest.raises(SupervisorClosed, match="RuntimeError: boom"):
                await sup.call_tool("echo", {"text": "too late"})
        finally:
            await sup.aclose()
        assert procs_with_marker(marker_of(spec)) == []

    run_asyncio(main)


# A host that drives its loop itself, with Python's default SIGINT handler (as a script's
# ``loop.run_until_complete`` does): the SIGINT comes either while the loop runs host code
# or while it runs a trio tick.
_CTRL_C_HOST = """
import asyncio, signal, sys, msgspec, trio
from protocol import ServerSpec
from supervisor import embed

spec = msgspec.json.decode(sys.argv[1], type=ServerSpec)
sup = in_flight = None
# A process started in the background (`cmd &`, as a CI runner may) inherits SIGINT ignored,
# and then Python installs no handler: start from what a host run from a terminal has.
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    global sup, in_flight
    sup = await embed([spec])
    print("handler kept:", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
    in_flight = asyncio.ensure_future(sup.call_tool("sleep", {"seconds": 30}))
    await asyncio.sleep(0.2)
    if sys.argv[2] == "host":
        asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
    else:
        token = await sup.run_in_trio(lambda _: trio.lowlevel.current_trio_token())
        token.run_sync_soon(signal.raise_signal, signal.SIGINT)
    await asyncio.sleep(10)
    print("no KeyboardInterrupt", flush=True)

loop = asyncio.new_event_loop()
try:
    loop.run_until_complete(main())
except KeyboardInterrupt:
    print("KeyboardInterrupt reached the host", flush=True)
if sys.argv[2] == "host":  # the tree runs on: closing it ends the call
    loop.run_until_complete(asyncio.wait_for(sup.aclose(), 10))
outcome = loop.run_until_complete(asyncio.wait_for(asyncio.gather(in_flight, return_exceptions=True), 10))
print("in flight:", type(outcome[0]).__name__, flush=True)
loop.run_until_complete(asyncio.wait_for(sup.aclose(), 10))
print("closed", flush=True)
"""


@pytest.mark.parametrize("where", ["host", "trio-tick"])
def test_ctrl_c_reaches_a_host_that_runs_its_own_loop(where):
    """With Python's default SIGINT handler (``loop.run_until_complete``, ``run_forever``),
    trio's guest run installed its own: Ctrl-C went to trio's main task, the tree crashed
    with ``KeyboardInterrupt`` and the host never saw it. Now the host's handler stays, so
    the ``KeyboardInterrupt`` reaches the host; when it is raised inside a trio tick (which
    ends the guest run), the run is reported as ended, so the call in flight ends and
    ``aclose`` returns; raised in host code, the tree runs on and ``aclose`` closes it. No
    server outlives the host process."""
    spec = server_spec("echo", "echo.py")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CTRL_C_HOST, msgspec.json.encode(spec).decode(), where],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        deadline = time.monotonic() + 10  # the reaper needs up to 1 s to kill what is left
        while procs_with_marker(marker_of(spec)) and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = done.stdout.splitlines()
    assert lines[:2] == ["handler kept: True", "KeyboardInterrupt reached the host"], done.stdout + done.stderr
    assert lines[2:] == ["in flight: SupervisorClosed", "closed"], done.stdout + done.stderr
    assert procs_with_marker(marker_of(spec)) == []


def test_a_request_that_raises_a_base_exception_fails_only_its_awaiter():
    """A request whose function raised a ``BaseException`` other than trio's ``Cancelled``
    (``SystemExit`` here) re-raised it into the requests nursery: the whole tree crashed,
    the call in flight beside it failed, and its own awaiter was told the supervisor
    closed. A plain function called in trio let it out of trio's callback. Now it goes to
    its own awaiter only, from either kind of request, and the tree runs on."""
    spec = server_spec("echo", "echo.py")

    def exits(_: Supervisor) -> None:
        raise SystemExit(3)

    async def main() -> None:
        async with embed([spec]) as sup:
            beside = asyncio.create_task(sup.call_tool("sleep", {"seconds": 0.5}, timeout=5))
            await asyncio.sleep(0.1)  # the call is in flight
            with pytest.raises(SystemExit):
                await sup.run_in_trio(exits)
            with pytest.raises(SystemExit):
                await sup._submit(exits, None, is_async=False)  # called in trio, as status() is
            assert sup.running and sup.crash is None
            assert text_of(await beside) == "slept 0.5"
            assert text_of(await sup.call_tool("echo", {"text": "after"}, timeout=5)) == "after"

    run_asyncio(main)


def test_a_timed_out_wait_for_an_event_leaves_the_subscription_on():
    """``events()`` was an async generator: a wait for the next event that timed out
    (``asyncio.wait_for(anext(events), ...)``) threw ``CancelledError`` into it, which closed
    it, and its next step raised ``StopAsyncIteration`` while the supervisor ran on. Now a
    cancelled step ends only itself: the events that follow still come; the iteration ends
    at ``aclose`` or when the supervisor closes."""
    spec = server_spec("echo", "echo.py")

    async def main() -> None:
        async with embed([spec]) as sup:
            events, until_closed = sup.events(), sup.events()
            for _ in range(2):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(events), 0.1)  # nothing happens meanwhile
            await sup.restart("echo")
            seen: list[str] = []
            while "connection:echo ready" not in seen:
                event = await asyncio.wait_for(anext(events), 5)
                seen.append(f"{event.path.rsplit('/', 1)[-1]} {event.kind}")
            await events.aclose()
            with pytest.raises(StopAsyncIteration):
                await anext(events)
        async with asyncio.timeout(10):
            async for _ in until_closed:  # ends
                pass

    run_asyncio(main)


def test_each_host_callback_and_handler_runs_in_a_context_of_its_own():
    """Every ``on_input_request`` task and every progress callback ran in one shared
    ``Context`` (the host's, taken at ``embed``): a context variable one of them set (a
    tracing span, a request id) was seen by every later and concurrent one. Now each runs
    in a copy of the host's context: it sees what the host had set, never another's."""
    request_id: contextvars.ContextVar[Any] = contextvars.ContextVar("request_id", default=None)
    handlers_saw: list[Any] = []
    callbacks_saw: list[Any] = []

    async def on_input_request(server: str, request: Any) -> Any:
        handlers_saw.append(request_id.get())
        request_id.set(f"handler {len(handlers_saw)}")
        await asyncio.sleep(0.05)  # the concurrent ones overlap
        return mcp_types.ElicitResult(action="accept", content={"colour": "amber"})

    def on_progress(value: float, total: float | None, message: str | None) -> None:
        callbacks_saw.append(request_id.get())
        request_id.set(f"progress {value}")

    async def main() -> None:
        request_id.set("host")
        async with embed([server_spec("everything", "everything.py")], on_input_request=on_input_request) as sup:
            ask = lambda: sup.call_tool("ask_elicitation", {"question": "Colour?"}, timeout=10)  # noqa: E731
            for _ in range(2):
                await ask()
            await asyncio.gather(ask(), ask())
            await sup.call_tool("progress_steps", {"steps": 3}, progress=on_progress, timeout=10)
            await eventually(lambda: len(callbacks_saw) == 3, what="the progress callbacks")
        assert handlers_saw == ["host"] * 4
        assert callbacks_saw == ["host"] * 3
        assert request_id.get() == "host"

    run_asyncio(main)


def test_aclose_from_another_loop_is_refused_and_changes_nothing():
    """``aclose`` awaited on another thread's loop stopped the tree, then raised "Future
    attached to a different loop". Now it is refused before it does anything, as every
    other method is from another loop: the tree runs on and closes from its own loop."""
    spec = server_spec("echo", "echo.py")

    async def main() -> None:
        async with embed([spec]) as sup:
            errors: list[BaseException] = []

            def close_from_another_loop() -> None:
                try:
                    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
                        runner.run(asyncio.wait_for(sup.aclose(), 10))
                except BaseException as exc:
                    errors.append(exc)

            await asyncio.wait_for(asyncio.to_thread(close_from_another_loop), 20)
            assert len(errors) == 1 and "the asyncio loop embed() ran on" in str(errors[0]), errors
            assert sup.running
            assert text_of(await sup.call_tool("echo", {"text": "still here"}, timeout=5)) == "still here"
        assert procs_with_marker(marker_of(spec)) == []

    run_asyncio(main)


def _publish_probe(sup: Supervisor, label: str) -> None:
    """Publish an event on the tree's own bus, as a node of the tree does (synchronously,
    in trio): the step of ``events()`` waiting for it is woken, not yet run."""
    from protocol import Event

    sup._bus.publish(Event(path=f"root/test:{label}", kind="probe", at=trio.current_time()))


@pytest.mark.parametrize("cancel", ["as_the_event_is_sent", "once_the_event_reached_the_step"])
def test_a_step_of_events_cancelled_after_its_event_came_leaves_it_to_the_next_step(cancel):
    """A step of ``events()`` whose cancellation (a timeout around ``anext``) landed after
    trio had received its event dropped that event: the worker found the step's future
    cancelled and threw the value away, or the future had the event and the cancelled task
    never took it. Measured by a probe: a consumer polling with a 0.5 ms ``wait_for`` saw
    190 of 204 events. Now the event is kept for the next step: none lost, none twice, in
    order. The cancellation lands in trio right after the event is sent (the step's worker
    has not run yet), or from the loop once a batch of trio could have run it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with embed([]) as sup:
            events = sup.events()
            await sup.status()  # a request of the same kind as the subscription, made after it
            await sup.run_in_trio(_publish_probe, "first")
            assert (await asyncio.wait_for(anext(events), 5)).path == "root/test:first"  # subscribed
            for round_ in range(3):
                step = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0)  # the step is in trio, waiting for the channel

                async def send_then_cancel(trio_sup: Supervisor) -> None:
                    await trio.testing.wait_all_tasks_blocked()  # the step's worker waits
                    _publish_probe(trio_sup, f"{round_}-cancelled")
                    if cancel == "as_the_event_is_sent":
                        step.cancel()
                    else:
                        loop.call_soon(step.cancel)

                await sup.run_in_trio(send_then_cancel)
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(step, 5)
                await sup.run_in_trio(_publish_probe, f"{round_}-next")
                assert (await asyncio.wait_for(anext(events), 5)).path == f"root/test:{round_}-cancelled"
                assert (await asyncio.wait_for(anext(events), 5)).path == f"root/test:{round_}-next"
            await events.aclose()

    run_asyncio(main)


def test_on_uvloop_a_deadline_of_trio_under_a_millisecond_away_is_kept():
    """uvloop hands back a plain ``Handle`` (no ``when()``), not a ``TimerHandle``, for a
    ``call_at`` less than half a millisecond away (it runs it as a ``call_soon``): the next
    idle tick of the guest run before that handle ran raised ``AttributeError`` (out of a
    request's ``_submit``, or into the loop), leaving trio's deadline unwatched. Found by
    a probe whose ``events()`` consumer polled with 0.5 ms timeouts. Now every request
    made while trio sleeps for a fraction of a millisecond at a time is answered."""
    import uvloop

    async def main() -> None:
        async with embed([]) as sup:
            assert sup._driver is not None

            async def short_sleeps(_: Supervisor) -> None:
                for _ in range(2000):
                    await trio.sleep(0.0001)

            async def noop(_: Supervisor) -> None:
                pass

            sleeper = asyncio.ensure_future(sup.run_in_trio(short_sleeps))
            while not sleeper.done():
                await asyncio.wait_for(sup.run_in_trio(noop), 5)
                await asyncio.sleep(0)
            await asyncio.wait_for(sleeper, 5)

    run_asyncio(main, loop_factory=uvloop.new_event_loop)


def _line_within(stream: Any, timeout: float) -> str:
    """The next line of a subprocess's text ``stream``; fails the test after ``timeout`` s."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        pytest.fail(f"no line within {timeout} s")
    return stream.readline().rstrip("\n")


_HOST_THAT_CLOSES_ITS_LOOP = """
import asyncio, logging, sys
import msgspec
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from protocol import ServerSpec
from supervisor import embed

specs = msgspec.json.decode(sys.argv[3].encode(), type=list[ServerSpec])

async def start():
    sup = await embed(specs)
    assert not (await sup.call_tool("echo__echo", {"text": "hi"}, timeout=10)).is_error
    return sup

loop = asyncio.new_event_loop()
sup = loop.run_until_complete(start())
if sys.argv[2] == "stopped":  # stopped from a callback while a host task still waits
    async def host_task():
        loop.call_soon(loop.stop)
        await asyncio.sleep(3600)
    loop.create_task(host_task())
    loop.run_forever()
loop.close()
print("closed", sup.running, flush=True)
sys.stdin.readline()  # the host goes on meanwhile

async def again():
    await embed([])
try:
    asyncio.run(again())
except RuntimeError as exc:
    print("again:", exc, flush=True)
"""


@pytest.mark.parametrize("how", ["run_until_complete", "stopped"])
def test_a_host_loop_closed_without_aclose_takes_the_servers_and_says_so(how):
    """A host that closed its asyncio loop without ``aclose`` (``run_until_complete`` then
    ``close``, or ``stop`` then ``close``) left every stdio server running, without a word,
    while the host went on (until its exit, when the reaper kills them); a later
    ``asyncio.run(embed(...))`` in that thread then failed blaming "an earlier embed() on
    this loop", a loop it never used. Now closing the loop kills the servers' process trees
    at once and logs a warning that names ``aclose``, and the later ``embed`` says that an
    earlier one's loop was closed without ``aclose`` and its guest run still holds the thread."""
    parent = server_spec("parent", "spawns_grandchild.py", "--child-stdio", "devnull")
    echo = server_spec("echo", "echo.py", namespace="prefix")
    host = subprocess.Popen(
        [sys.executable, "-c", _HOST_THAT_CLOSES_ITS_LOOP, os.path.dirname(os.path.dirname(os.path.abspath(__file__))), how,
         msgspec.json.encode([parent, echo]).decode()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _line_within(host.stdout, 30) == "closed False"
        assert host.poll() is None  # the host goes on
        deadline = time.monotonic() + 5  # a SIGKILL takes effect soon after, not in the kill call
        while procs_with_marker(marker_of(parent)) + procs_with_marker(marker_of(echo)):
            assert time.monotonic() < deadline, "the servers outlived the host's loop"
            time.sleep(0.02)
        assert host.poll() is None
        host.stdin.write("\n")
        host.stdin.flush()
        again = _line_within(host.stdout, 30)
        assert again.startswith("again:") and "closed without aclose()" in again, again
        assert "on this loop" not in again, again
        _, err = host.communicate(timeout=30)
        assert "closed without aclose()" in err and "aclose" in err, err
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)


def test_events_subscribes_before_any_later_request_runs_in_trio():
    """``events()`` promises the subscription is made before the tree does anything more,
    but it went to trio through ``run_sync_soon`` while a later request, handed to an idle
    trio directly (the guest driver), ran first: what that request published was missed.
    Now, with the driver, the subscription is made in the call itself."""

    async def main() -> None:
        async with embed([]) as sup:
            assert sup._driver is not None
            events = sup.events()
            await sup.run_in_trio(_publish_probe, "right after")
            assert (await asyncio.wait_for(anext(events), 5)).path == "root/test:right after"
            await events.aclose()

    run_asyncio(main)
