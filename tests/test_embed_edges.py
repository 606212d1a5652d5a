"""Edges of the embedding API and its openai-agents adapter: reloads that change an adapter's
scope or keep the host's toolsets, and a start the host cancels.

As in ``test_embed.py``: plain test functions that run a plain asyncio loop themselves
(``run_asyncio``), real stdio servers from ``tests/servers``, every wait with a deadline.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from mcp import MCPError

from protocol import ServerSpec, UnknownTool
from supervisor import SupervisedMCPServer, embed

from conftest import SERVERS, marker_of, procs_with_marker, server_spec
from test_embed import _line_within, eventually, run_agent, run_asyncio, seed_failure, text_of


def config_file(path: Any, *specs: Any, **settings: Any) -> Any:
    """A config file running ``specs`` (with their categories), and ``supervisor`` settings."""
    servers = {
        s.name: {
            "command": s.command, "args": s.args, "env": s.env, "namespace": s.namespace,
            "categories": dict(s.categories or {}),
        }
        for s in specs
    }
    path.write_text(json.dumps({"mcpServers": servers, **({"supervisor": settings} if settings else {})}))
    return path


def in_a_thread_of_its_own(fn: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``fn()`` in a new thread, its value or exception here. For a test of what a loop's end
    leaves in its thread: a trio run abandoned there would hold this one (pytest's) for good."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="test host thread")
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the host thread still runs after {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def cancel_a_start_twice(spec: Any) -> None:
    """``embed([spec])`` from a task, cancelled while ``spec`` starts (a slow server), then
    cancelled again while the start stops the tree (a timeout, then the app's shutdown):
    the task ends with ``CancelledError`` at once, with no handle."""
    start = asyncio.create_task(embed([spec])._open())
    await eventually(lambda: procs_with_marker(marker_of(spec)), timeout=30, what="the slow server to start")
    start.cancel()
    for _ in range(3):  # the start takes the first cancel and waits for the stop
        await asyncio.sleep(0)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start


# -- reload and the toolsets given at embed ---------------------------------------------------


def test_a_reload_from_a_config_naming_no_toolsets_keeps_those_given_at_embed(tmp_path):
    """``embed(..., toolsets=)`` then ``reload(config)``: a config naming no toolsets kept
    nothing (the host's toolset was gone, and its adapters raised at every agent run); the
    host's own toolsets stay now, beside those a config names, which go when the config
    stops naming them.""" 
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

            await sup.reload(named)  # names toolsets: they join the host's own
            assert [t.name for t in await sup.list_tools(toolset="theirs")] == ["echo"]
            assert [t.name for t in await sup.list_tools(toolset="mine")] == ["echo"]
            await sup.reload(plain)  # names none again: the file's go, the host's stay
            assert [t.name for t in await sup.list_tools(toolset="mine")] == ["echo"]
            with pytest.raises(ValueError, match="unknown toolset 'theirs'"):
                await sup.list_tools(toolset="theirs")
        assert procs_with_marker(marker_of(echo)) == []

    run_asyncio(main, timeout=60)


def test_reloading_an_unchanged_config_keeps_the_hosts_toolsets_that_won_at_embed(tmp_path):
    """``embed(path, toolsets=H)`` where the file names another toolset: the host's won at
    start (the file's were not used), and ``reload(path)`` with the file unchanged swapped
    them for the file's, so the host's adapters lost their tools. Both are used now, at
    start and at every reload, the host's winning by name."""
    echo = server_spec("echo", "echo.py", categories={"echo": "analysis"})
    path = config_file(tmp_path / "c.json", echo, toolsets={"theirs": ["analysis"], "mine": ["search"]})

    async def main() -> None:
        async with embed(path, toolsets={"mine": ["analysis"]}) as sup:
            for _ in range(2):  # at start, then after reloading the same file
                assert [t.name for t in await sup.list_tools(toolset="mine")] == ["echo"]  # the host's 'mine'
                assert [t.name for t in await sup.list_tools(toolset="theirs")] == ["echo"]
                await sup.reload(path)
        assert procs_with_marker(marker_of(echo)) == []

    run_asyncio(main, timeout=60)


def test_toolsets_deleted_from_the_config_file_go_at_its_next_reload(tmp_path):
    """``embed(path)`` whose config names a toolset, then the toolset deleted from the file
    and ``reload(path)``: the toolset stayed (a config naming none kept those in use, and
    those had come from the file), where the daemon's reload drops it. The config is the
    toolsets' truth now, as for the daemon; the host's own ``embed(toolsets=)`` stay."""
    echo = server_spec("echo", "echo.py", categories={"echo": "analysis"})
    path = config_file(tmp_path / "c.json", echo, toolsets={"readonly": ["analysis"]})

    async def main() -> None:
        async with embed(path) as sup:
            assert [t.name for t in await sup.list_tools(toolset="readonly")] == ["echo"]
            config_file(path, echo)  # the toolset deleted from the file
            await sup.reload(path)
            with pytest.raises(ValueError, match="unknown toolset 'readonly'"):
                await sup.list_tools(toolset="readonly")
        assert procs_with_marker(marker_of(echo)) == []

    run_asyncio(main, timeout=60)


# -- an adapter whose scope a reload took away --------------------------------------------------


def test_an_adapter_whose_server_or_toolset_a_reload_removed_leaves_the_agent_run_going(tmp_path, caplog):
    """An agent holds per-server adapters and a toolset adapter; a reload removes one server
    and the toolset. The SDK lists every adapter's tools before the model's first turn, and
    the removed scopes' ``list_tools`` raised (``UnknownTool``, ``ValueError``): every later
    run of the agent failed, the remaining server's tools lost too. Now those adapters list
    no tools (a warning once per scope, not per listing), their calls are readable
    failures, ``connect`` still refuses them, and a reload that brings them back lists
    their tools again."""
    a = server_spec("a", "echo.py", namespace="prefix")
    b = server_spec("b", "echo.py", namespace="prefix")
    c = server_spec("c", "echo.py", namespace="prefix", categories={"echo": "analysis"})
    without_a = config_file(tmp_path / "without_a.json", b, c, toolsets={"theirs": ["analysis"]})
    with_a = config_file(tmp_path / "with_a.json", a, b, c, toolsets={"mine": ["analysis"]})

    async def main() -> None:
        async with embed(with_a) as sup:  # 'mine' is the file's: a reload may take it away
            adapters = [
                SupervisedMCPServer(sup, server="a"),
                SupervisedMCPServer(sup, server="b"),
                SupervisedMCPServer(sup, toolset="mine"),
            ]
            outputs, model = await run_agent(adapters, [("b__echo", {"text": "before"}), ("c__echo", {"text": "c"})])
            assert outputs == ["before", "c"] and "a__echo" in model.tools_seen

            diff = await sup.reload(without_a)
            assert diff["removed"] == ["a"]
            with caplog.at_level("WARNING", logger="supervisor.agents"):
                for turn in ("after", "again"):  # a later run still works, and warns no more
                    outputs, model = await run_agent(adapters, [("b__echo", {"text": turn})])
                    assert outputs == [turn]
                    assert "b__echo" in model.tools_seen and not any(n.startswith(("a__", "c__")) for n in model.tools_seen)
            warnings = [r.getMessage() for r in caplog.records if r.name == "supervisor.agents"]
            assert len(warnings) == 2, warnings
            assert any("server='a'" in w for w in warnings) and any("toolset='mine'" in w for w in warnings)

            # a fresh adapter (one per request) on a scope that went: failures, never raised
            on_a, on_mine = SupervisedMCPServer(sup, server="a"), SupervisedMCPServer(sup, toolset="mine")
            assert await on_a.list_tools() == [] and await on_mine.list_tools() == []
            assert "no server named 'a'" in seed_failure(await on_a.call_tool("a__echo", {"text": "x"})).error
            unknown_toolset = seed_failure(await on_mine.call_tool("c__echo", {"text": "x"})).error
            assert unknown_toolset.startswith("UnknownTool:") and "unknown toolset 'mine'" in unknown_toolset
            with pytest.raises(UnknownTool, match="no server named 'a'"):
                await on_a.connect()  # strict: a misspelt scope is caught there
            with pytest.raises(ValueError, match="unknown toolset 'mine'"):
                await on_mine.connect()

            await sup.reload(with_a)  # back: listed again, and the next loss is warned again
            outputs, model = await run_agent(adapters, [("a__echo", {"text": "back"}), ("c__echo", {"text": "c"})])
            assert outputs == ["back", "c"]
        for spec in (a, b, c):
            assert procs_with_marker(marker_of(spec)) == []

    run_asyncio(main, timeout=120)



# -- a start the host cancels ---------------------------------------------------------------------


def test_a_start_cancelled_twice_is_finished_by_the_loops_end_and_frees_the_thread(caplog):
    """Cancelled twice while starting, ``embed`` re-raised at once and nothing waited for the
    stopping run: ``asyncio.Runner``'s end closed the loop under it (abandoned half-way, a
    warning), and the thread could never run trio again. Now a task made as the run starts
    waits for its end, and the loop's end waits for that task."""
    slow = server_spec("slow", "slow_start.py", "--delay", "60")

    def host() -> tuple[list[int], str]:
        """What the thread is left with once the runner has ended (plain values: an error
        raised there would carry frames of an abandoned run out of it)."""
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(asyncio.wait_for(cancel_a_start_twice(slow), 60))
        try:
            trio.run(trio.sleep, 0)
        except RuntimeError as exc:
            return procs_with_marker(marker_of(slow)), f"trio.run refused: {exc}"
        return procs_with_marker(marker_of(slow)), "trio.run ran"

    with caplog.at_level("WARNING", logger="supervisor.embed"):
        left, trio_here = in_a_thread_of_its_own(host)
    gc.collect()  # an abandoned run's coroutines are finalized now, not amid pytest's report
    # the runner's end waited for the stop: nothing left behind, the thread free for trio
    assert [r.getMessage() for r in caplog.records if r.name == "supervisor.embed"] == []
    assert trio_here == "trio.run ran"
    assert left == []


def test_an_embed_right_after_a_start_cancelled_twice_waits_for_its_stop_then_starts():
    """Right after a start cancelled twice, its run still stopping, ``embed`` was refused,
    told to share a handle its caller never got. Now it waits for that run's end, then
    starts; the earlier tree is gone by then."""
    slow = server_spec("slow", "slow_start.py", "--delay", "60")
    echo = server_spec("echo", "echo.py")

    async def main() -> None:
        await cancel_a_start_twice(slow)
        async with embed([echo]) as sup:
            assert procs_with_marker(marker_of(slow)) == []
            assert text_of(await sup.call_tool("echo", {"text": "after"}, timeout=30)) == "after"
        assert procs_with_marker(marker_of(echo)) == []

    in_a_thread_of_its_own(lambda: run_asyncio(main, timeout=90))


def test_a_toolset_adapter_calls_only_the_tools_of_its_toolset_as_it_is_now(tmp_path):
    """A toolset adapter sent any tool name on: one outside its toolset (a name the model
    made up, or was led to, past a read-only toolset), and one it had listed before a
    reload took it out of the toolset. Both are ``UnknownTool`` failure results now, and
    never reach the server; a tool of the toolset still runs."""
    echo = server_spec("echo", "echo.py", categories={"echo": "analysis"})
    with_echo = config_file(tmp_path / "with.json", echo, toolsets={"mine": ["analysis"]})
    without = config_file(tmp_path / "without.json", echo, toolsets={"mine": ["search"]})

    async def main() -> None:
        async with embed(with_echo) as sup:
            adapter = SupervisedMCPServer(sup, toolset="mine")
            assert [t.name for t in await adapter.list_tools()] == ["echo"]
            assert text_of(await adapter.call_tool("echo", {"text": "in scope"})) == "in scope"
            outside = await adapter.call_tool("add", {"a": 1, "b": 2})  # echo.py has it, not in 'mine'
            assert outside.is_error and "UnknownTool" in text_of(outside), text_of(outside)
            await sup.reload(without)  # 'mine' keeps its name, but echo's category is out of it
            listed_before = await adapter.call_tool("echo", {"text": "ran anyway"})
            assert listed_before.is_error and "UnknownTool" in text_of(listed_before), text_of(listed_before)
        assert procs_with_marker(marker_of(echo)) == []

    run_asyncio(main, timeout=60)


def test_aclose_cuts_a_reload_that_waits_for_a_slow_replacement_short(tmp_path):
    """``aclose`` while a reload replaced a server whose new incarnation takes 60 s to
    connect: the request was cancelled, but a replacement runs shielded to its end, and it
    waited for that first attempt, so ``aclose`` took up to the new server's
    ``connect_timeout``. The stop now begins (`Supervisor.begin_stop`) before the requests
    are cancelled: the reload ends with the new server starting, and the tree's stop
    stops it. (The 40 s bound is the test's; the old code needs 60.)"""
    old = server_spec("echo", "echo.py")
    new = server_spec("echo", "slow_start.py", "--delay", "60", connect_timeout=100)
    outcome: dict[str, Any] = {}

    async def main() -> None:
        sup = await embed([old])
        try:
            await eventually(lambda: procs_with_marker(marker_of(old)), timeout=20, what="the server")
            reload = asyncio.ensure_future(sup.reload([new]))
            await eventually(lambda: procs_with_marker(marker_of(new)), timeout=20, what="the new incarnation")
            await asyncio.sleep(0.2)  # the replacement is waiting for its first attempt
            assert not reload.done()
        finally:
            await sup.aclose()
        outcome["reload"] = await asyncio.gather(reload, return_exceptions=True)

    run_asyncio(main, timeout=40)
    assert procs_with_marker(marker_of(old)) == [] and procs_with_marker(marker_of(new)) == []
    (answer,) = outcome["reload"]
    assert isinstance(answer, Exception), answer  # the handle closed under it


# -- one run per handle -------------------------------------------------------------------------


def test_an_embedding_awaited_again_is_refused_and_starts_nothing():
    """The same ``embed(...)`` object awaited (or entered) again after its handle closed
    started the tree again on that handle, its state still "closed": an ``aclose`` or a
    cancel meanwhile asked nothing to stop, waited for an end nobody asked for, and the
    tree came up anyway. A handle runs once now: a second start, after the first or
    during it, raises ``RuntimeError`` and starts no server."""
    echo = server_spec("echo", "echo.py")

    async def main() -> None:
        embedding = embed([echo])
        async with embedding as sup:
            pass
        assert procs_with_marker(marker_of(echo)) == []
        with pytest.raises(RuntimeError, match="runs once; call embed\\(\\) again"):
            await embedding
        with pytest.raises(RuntimeError, match="runs once"):
            async with embedding:
                pass
        assert not sup.running and procs_with_marker(marker_of(echo)) == []
        await asyncio.wait_for(sup.aclose(), 10)  # still idempotent: nothing to wait for

        embedding = embed([echo])
        async with embedding as sup:
            with pytest.raises(RuntimeError, match="runs once"):  # during the run
                await embedding
            assert text_of(await sup.call_tool("echo", {"text": "still up"}, timeout=30)) == "still up"

        embedding = embed([echo])  # two starts at once: the second is refused
        first, second = asyncio.ensure_future(embedding._open()), asyncio.ensure_future(embedding._open())
        with pytest.raises(RuntimeError, match="runs once"):
            await second
        sup = await first
        assert text_of(await sup.call_tool("echo", {"text": "once"}, timeout=30)) == "once"
        await sup.aclose()
        assert procs_with_marker(marker_of(echo)) == []

    run_asyncio(main, timeout=60)


# -- a host loop closed without aclose ----------------------------------------------------------


_HOST_WITH_ANOTHER_SUPERVISOR = """
import asyncio, logging, sys, threading
import msgspec, trio
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from protocol import ServerSpec
from supervisor import Supervisor, embed

ours, gone, theirs = msgspec.json.decode(sys.argv[2].encode(), type=list[ServerSpec])
go_on = threading.Event()

def find(node, id):
    if node.id == id:
        return node
    return next((found for child in node.children if (found := find(child, id))), None)

def other_thread():  # a plain trio Supervisor of the same process
    async def main():
        async with Supervisor([theirs]) as sup:
            print("theirs", sup.link("theirs").process.pid, flush=True)
            await trio.to_thread.run_sync(go_on.wait)
            result = await sup.call_tool("echo", {"text": "still here"}, timeout=10)
            restarts = find(sup.status(), "connection:theirs").restarts
            print("theirs:", result.content[0].text, "restarts", restarts, flush=True)
    trio.run(main)

thread = threading.Thread(target=other_thread)
thread.start()
assert sys.stdin.readline() == "embed\\n"

async def start():
    sup = await embed([ours, gone])
    tasks = [asyncio.ensure_future(sup.call_tool("gone__sleep", {"seconds": 60}, timeout=120))]
    for _ in range(1000):  # the call in flight (10 s at most): the removal below drains it
        if await sup.run_in_trio(lambda s: s.link("gone").inflight) == 1:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the call never reached the server")
    tasks.append(asyncio.ensure_future(sup.reload([ours])))
    while any(tool.name.startswith("gone__") for tool in await sup.list_tools()):
        await asyncio.sleep(0.02)  # withdrawn: the removal drains the call now
    return sup, tasks

loop = asyncio.new_event_loop()
sup, tasks = loop.run_until_complete(start())
loop.close()
print("closed", flush=True)
assert sys.stdin.readline() == "go on\\n"
go_on.set()
thread.join(30)
"""


def test_a_host_loop_closed_without_aclose_kills_its_own_servers_only():
    """A host loop closed without ``aclose`` killed every stdio server of the process when
    no other embedded run was live: a trio ``Supervisor`` running in another thread lost
    its server (SIGKILL, a restart, its calls in flight failed). Only this tree's servers
    go now, one a reload removed while it drains a call included; the other supervisor's
    server runs on, the same process, and answers."""
    ours = server_spec("ours", "echo.py", namespace="prefix")
    gone = server_spec("gone", "echo.py", namespace="prefix", shutdown_timeout=60)
    theirs = server_spec("theirs", "echo.py")
    host = subprocess.Popen(
        [sys.executable, "-c", _HOST_WITH_ANOTHER_SUPERVISOR, str(Path(__file__).resolve().parent.parent),
         msgspec.json.encode([ours, gone, theirs]).decode()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        label, pid = _line_within(host.stdout, 30).split()
        assert label == "theirs" and procs_with_marker(marker_of(theirs)) == [int(pid)]
        host.stdin.write("embed\n")
        host.stdin.flush()
        assert _line_within(host.stdout, 30) == "closed"
        deadline = time.monotonic() + 5  # a SIGKILL takes effect soon after, not in the kill call
        while procs_with_marker(marker_of(ours)) + procs_with_marker(marker_of(gone)):
            assert time.monotonic() < deadline, "this tree's servers outlived the host's loop"
            time.sleep(0.02)
        assert procs_with_marker(marker_of(theirs)) == [int(pid)]
        host.stdin.write("go on\n")
        host.stdin.flush()
        assert _line_within(host.stdout, 30) == "theirs: still here restarts 0"
        _, err = host.communicate(timeout=30)
        assert "its stdio servers were killed (2)" in err, err
        assert "ConnectionDied" not in err, err
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)
        for spec in (ours, gone, theirs):
            for leftover in procs_with_marker(marker_of(spec)):
                os.kill(leftover, signal.SIGKILL)


# -- the session header and the adapter's _meta key ---------------------------------------------


def test_the_session_header_follows_the_adapters_session_meta_key():
    """``SupervisedMCPServer(session_meta_key="conversation")`` sent the session in ``_meta``
    under that key, but the ``X-Session-Id`` header of a remote server's POST was lifted
    from ``session_id`` only: every session's request went out with the static header.
    The header follows the adapter's key now; ``session_id`` still comes first when a body
    holds both, and a key that is no string is refused at construction."""
    server = subprocess.Popen(
        [sys.executable, str(SERVERS / "http_headers.py"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = _line_within(server.stdout, 30)
        assert line.startswith("LISTENING"), line
        spec = ServerSpec(
            name="remote", url=f"http://127.0.0.1:{line.split()[1]}/mcp", transport="streamable-http",
            headers={"X-Session-Id": "static"}, connect_timeout=10,
        )

        async def header(adapter: SupervisedMCPServer, meta: dict[str, Any] | None = None) -> str | None:
            result = await adapter.call_tool("headers", {}, meta)
            assert not result.is_error, text_of(result)
            return result.structured_content["headers"].get("x-session-id")

        async def main() -> None:
            async with embed([spec]) as sup:
                adapter = SupervisedMCPServer(sup, server="remote", session_id="sess-a", session_meta_key="conversation")
                assert await header(adapter) == "sess-a"
                assert await header(adapter.with_session("sess-b")) == "sess-b"
                assert await header(adapter.with_session(None)) == "static"  # no session: the static one
                assert await header(adapter, {"session_id": "first"}) == "first"  # the default key wins
                plain = SupervisedMCPServer(sup, server="remote", session_id="sess-c")
                assert await header(plain) == "sess-c"
                with pytest.raises(TypeError, match="non-empty string"):
                    SupervisedMCPServer(sup, server="remote", session_meta_key=7)
                with pytest.raises(TypeError, match="non-empty string"):
                    SupervisedMCPServer(sup, server="remote", session_meta_key="")

        run_asyncio(main, timeout=60)
    finally:
        server.kill()
        server.wait(10)


def test_an_adapter_refuses_a_timeout_no_call_could_use_when_it_is_made():
    """``SupervisedMCPServer(timeout=float("inf"))`` (nan, True, "5" too) was accepted; every
    call then raised ``ValueError``, which an agent run turned into "An error occurred while
    running the tool. Please try again." It is refused when the adapter is made now, by the
    check each call makes; a finite timeout still works."""
    echo = server_spec("echo", "echo.py")

    async def main() -> None:
        async with embed([echo]) as sup:
            for bad in (float("inf"), float("nan"), True, "5"):
                with pytest.raises(ValueError, match="timeout must be a finite number of seconds"):
                    SupervisedMCPServer(sup, server="echo", timeout=bad)
            adapter = SupervisedMCPServer(sup, server="echo", timeout=30)
            assert text_of(await adapter.call_tool("echo", {"text": "finite"})) == "finite"

    run_asyncio(main, timeout=60)


# -- the host's end -----------------------------------------------------------------------------


def test_a_task_leaving_its_async_with_as_the_host_ends_gets_no_warning(caplog):
    """``asyncio.run``'s end cancels every task left at once, in no set order: when it
    cancelled the keeper task (which closes a tree the host never closed) before a task
    inside ``async with embed(...)``, the keeper warned "the embedded supervisor was not
    closed", though that task's ``async with`` was closing it. The order is made here (the
    keeper first, in the same turn). The keeper lets the tasks cancelled with it run
    first now; a tree nobody closes is still closed, and warned about."""
    echo = server_spec("echo", "echo.py")

    async def main() -> None:
        entered = asyncio.Event()

        async def user() -> None:
            async with embed([echo]) as sup:
                handle.append(sup)
                entered.set()
                await asyncio.sleep(3600)

        handle: list[Any] = []
        task = asyncio.create_task(user())
        await asyncio.wait_for(entered.wait(), 30)
        (sup,) = handle
        sup._keeper.cancel()  # what asyncio.run's end does, in this order
        task.cancel()
        await asyncio.wait_for(asyncio.gather(sup._keeper, task, return_exceptions=True), 30)
        assert not sup.running and procs_with_marker(marker_of(echo)) == []

        sup = await embed([echo])  # never closed: the keeper closes it, and says so
        sup._keeper.cancel()
        await asyncio.wait_for(asyncio.gather(sup._keeper, return_exceptions=True), 30)
        assert not sup.running and procs_with_marker(marker_of(echo)) == []

    with caplog.at_level("WARNING", logger="supervisor.embed"):
        run_asyncio(main, timeout=60)
    warnings = [r.getMessage() for r in caplog.records if r.name == "supervisor.embed"]
    assert warnings == ["the host is shutting down and the embedded supervisor was not closed: closing it now"]


def test_an_adapter_whose_scope_a_reload_removed_lists_no_prompts_or_resources(tmp_path, caplog):
    """After a reload removed an adapter's server or toolset, ``list_tools`` gave no tools
    (with a warning), but ``list_prompts``, ``list_resources`` and
    ``list_resource_templates`` raised (``UnknownTool``, or a plain ``ValueError`` for a
    toolset), and ``get_prompt``/``read_resource`` raised those too. The listings are empty
    now, under the same once-per-scope warning; ``get_prompt`` and ``read_resource`` raise
    the ``MCPError`` of an unknown prompt or resource, naming the scope that went."""
    echo = server_spec("echo", "echo.py", categories={"echo": "search"})
    gone = server_spec("gone", "echo.py", namespace="prefix")
    before = config_file(tmp_path / "before.json", echo, gone, toolsets={"mine": ["search"]})
    after = config_file(tmp_path / "after.json", echo)

    async def main() -> None:
        async with embed(before) as sup:
            adapters = [SupervisedMCPServer(sup, toolset="mine"), SupervisedMCPServer(sup, server="gone")]
            for adapter in adapters:
                assert [p.name for p in (await adapter.list_prompts()).prompts]
                assert (await adapter.list_resources()).resources
            assert (await sup.reload(after))["removed"] == ["gone"]
            with caplog.at_level("WARNING", logger="supervisor.agents"):
                for adapter in adapters:
                    assert (await adapter.list_prompts()).prompts == []
                    assert (await adapter.list_resources()).resources == []
                    assert (await adapter.list_resource_templates()).resource_templates == []
                    with pytest.raises(MCPError, match="Unknown prompt: 'greet' \\(adapter scope .* is gone"):
                        await adapter.get_prompt("greet")
                    with pytest.raises(MCPError, match="Unknown resource: 'info://server' \\(adapter scope .* is gone"):
                        await adapter.read_resource("info://server")
                    assert await adapter.list_tools() == []
            warnings = [r.getMessage() for r in caplog.records if r.name == "supervisor.agents"]
            assert len(warnings) == 2, warnings  # once per scope
            assert any("toolset='mine'" in w for w in warnings) and any("server='gone'" in w for w in warnings)
        for spec in (echo, gone):
            assert procs_with_marker(marker_of(spec)) == []

    run_asyncio(main, timeout=60)
