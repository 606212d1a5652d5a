"""Clients hear when the daemon's prompts or resources lists change, whatever changed them.

The daemon advertises ``listChanged`` for prompts and resources, and its README says list
changes pass through for tools, prompts and resources. Yet a client was told
``notifications/prompts/list_changed`` / ``resources/list_changed`` only when an upstream
announced a change of its own: a reload that added or removed a server with prompts or
resources, and a server restarted whose new incarnation listed other ones, changed what the
daemon lists and told clients only that the *tools* had changed. So a client kept showing
prompts that were gone and never saw the new ones.

Now the connection compares what each incarnation first reads with what its link showed
before (a new server's link showed nothing), and the supervisor announces the lists of a
server it stops supervising, or whose prompts a reload renames (``namespace``). A restart
whose new incarnation lists the same prompts and resources tells nothing.

One daemon over streamable HTTP, two real clients at once: a handshake-era one (the
notifications on its standalone stream) and a 2026-07-28 one (a ``subscriptions/listen``
stream). After each step a sentinel, ``side__touch`` on ``state://counter`` (which both
clients are subscribed to, on server ``side``, never changed), is announced to both behind
anything the step published (the daemon forwards its events in order): what a client has
heard by the time the sentinel arrives is what the step told it. Every wait has a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
import trio
from mcp import Client

from conftest import procs_with_marker, server_spec
from supervisor import Supervisor
from test_daemon import Daemon, server_entry, write_config

# resources/subscribe is the handshake era's API, deprecated at 2026-07-28.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

COUNTER = "state://counter"  # side's (ev lists it too; side, connected and first, owns it)
EXPECTED_WAIT = 5.0
"""How long a step waits for a change it expects (s), once its sentinel has come."""

_KINDS = {
    "notifications/tools/list_changed": "tools", "ToolsListChanged": "tools",
    "notifications/prompts/list_changed": "prompts", "PromptsListChanged": "prompts",
    "notifications/resources/list_changed": "resources", "ResourcesListChanged": "resources",
    "notifications/resources/updated": "updated", "ResourceUpdated": "updated",
}


class Heard:
    """What one client has been told, as "tools", "prompts", "resources" or "updated"."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.changed = trio.Event()

    def add(self, name: str) -> None:
        if name in _KINDS:
            self.kinds.append(_KINDS[name])
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        with trio.move_on_after(timeout):
            while not predicate(self.kinds):
                await self.changed.wait()


async def test_prompts_and_resources_list_changes_reach_clients(tmp_path: Path) -> None:
    a, a_marker = server_entry("echo.py", namespace="prefix")  # one prompt, one resource
    side, side_marker = server_entry("everything.py", "--name", "side", namespace="prefix")
    ev, ev_marker = server_entry("everything.py", "--name", "ev", namespace="prefix")
    config = tmp_path / "c.json"
    write_config(config, {"a": a, "side": side})
    daemon = Daemon(config, tmp_path)
    heard = {"handshake": Heard(), "modern": Heard()}
    told: dict[str, dict[str, list[str]]] = {}

    async def on_message(message: Any) -> None:
        heard["handshake"].add(getattr(getattr(message, "root", message), "method", None) or "")

    async def listen(modern: Client, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with modern.listen(
            tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True,
            resource_subscriptions=[COUNTER],
        ) as subscription:
            task_status.started()
            async for event in subscription:
                heard["modern"].add(type(event).__name__)

    try:
        await daemon.wait_healthy(timeout=60)
        with trio.fail_after(300):
            async with Client(daemon.url + "/mcp") as modern, Client(
                daemon.url + "/mcp", mode="legacy", message_handler=on_message
            ) as legacy, httpx2.AsyncClient(timeout=60) as http, trio.open_nursery() as nursery:
                await legacy.subscribe_resource(COUNTER)  # the daemon now knows this connection too
                await nursery.start(listen, modern)

                async def prompts() -> set[str]:
                    return {p.name for p in (await legacy.list_prompts()).prompts}

                async def step(name: str, expected: list[str], action: Any) -> None:
                    """Run ``action``, then the sentinel; record which of the prompts and
                    resources lists each client was told had changed."""
                    for h in heard.values():
                        h.kinds.clear()
                    await action()
                    await legacy.call_tool("side__touch", {"uri": COUNTER})
                    for h in heard.values():
                        await h.wait_for(lambda kinds: "updated" in kinds, timeout=10)
                        if expected:  # (a server's own announcement is read after its call returns)
                            await h.wait_for(lambda kinds: set(expected) <= set(kinds), timeout=EXPECTED_WAIT)
                    told[name] = {era: sorted({k for k in h.kinds if k in ("prompts", "resources")}) for era, h in heard.items()}

                async def reload(servers: dict[str, Any], what: str) -> None:
                    write_config(config, servers)
                    response = await http.post(daemon.url + "/reload")
                    assert response.status_code == 200 and response.json()[what] == ["ev"], response.text

                async def restart(server: str) -> None:
                    response = await http.post(daemon.url + f"/restart/{server}")
                    assert response.status_code == 200, response.text

                both = {era: ["prompts", "resources"] for era in heard}
                expected: dict[str, dict[str, list[str]]] = {}

                expected["a reload adds ev"] = both
                await step("a reload adds ev", ["prompts", "resources"], lambda: reload({"a": a, "side": side, "ev": ev}, "added"))
                assert "ev__recipe" in await prompts()

                expected["a reload removes ev"] = both
                await step("a reload removes ev", ["prompts", "resources"], lambda: reload({"a": a, "side": side}, "removed"))
                assert "ev__recipe" not in await prompts()

                expected["a reload adds ev again"] = both
                await step("a reload adds ev again", ["prompts", "resources"], lambda: reload({"a": a, "side": side, "ev": ev}, "added"))

                # ev announces a change of its own (this was told before the fix too).
                expected["ev adds prompt and resource 'extra'"] = both
                await step(
                    "ev adds prompt and resource 'extra'", ["prompts", "resources"],
                    lambda: legacy.call_tool("ev__mutate_lists", {"name": "extra"}),
                )
                assert "ev__extra" in await prompts()

                expected["ev restarts, listing no 'extra'"] = both
                await step("ev restarts, listing no 'extra'", ["prompts", "resources"], lambda: restart("ev"))
                assert "ev__extra" not in await prompts() and "ev__recipe" in await prompts()

                # The same lists again: nothing to tell.
                expected["a restarts, listing the same"] = {era: [] for era in heard}
                await step("a restarts, listing the same", [], lambda: restart("a"))
                expected["ev restarts, listing the same"] = {era: [] for era in heard}
                await step("ev restarts, listing the same", [], lambda: restart("ev"))

                # namespace is changed in place (same process): ev's prompts get other names.
                bare_ev = {**ev, "namespace": "none"}
                expected["a reload renames ev's prompts"] = {era: ["prompts"] for era in heard}
                await step("a reload renames ev's prompts", ["prompts"], lambda: reload({"a": a, "side": side, "ev": bare_ev}, "updated"))
                assert "recipe" in await prompts() and "ev__recipe" not in await prompts()

                nursery.cancel_scope.cancel()
        wrong = {step: told.get(step) for step in expected if told.get(step) != expected[step]}
        assert told == expected, f"steps whose clients were told other than expected: {wrong}"
    finally:
        daemon.stop()
        deadline = time.monotonic() + 10
        markers = (a_marker, side_marker, ev_marker)
        while any(procs_with_marker(m) for m in markers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(procs_with_marker(m) for m in markers), "server processes left running"


@pytest.mark.parametrize("also", [{}, {"env": {"CHANGED": "1"}}], ids=["updated-in-place", "replaced"])
async def test_a_reload_renaming_a_servers_prompts_tells_so_whether_it_updates_or_replaces_it(also):
    """A reload changing ``namespace`` lists the server's prompts under other names. With
    ``namespace`` alone the server is updated in place and clients were told; changed with
    a key that is not live (here ``env``) it is replaced, the new process lists the same
    prompts as the old one, nothing compared them under their new names, and clients kept
    the old ones."""
    spec = server_spec("a", "echo.py", namespace="none")
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("a", timeout=20)
        events = sup.subscribe()
        new = msgspec.structs.replace(spec, namespace="prefix", env={**spec.env, **also.get("env", {})})
        done = await sup.reconcile([new])
        assert done["replaced" if also else "updated"] == ["a"], done
        seen: list[str] = []
        with trio.move_on_after(10):
            while "prompts_changed" not in seen:
                seen.append((await events.receive()).kind)
        assert "prompts_changed" in seen, seen
