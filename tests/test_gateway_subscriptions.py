"""A client's resource subscription through the daemon outlives its server's removal and return.

A client subscribed to a resource through the daemon; a reload removed the server that
owned it and a later reload added it back. The gateway still counted the URI as held by the
client (its per-client set, its subscribers), but the new server's link started with no
subscriptions and was never asked: the client, told it was subscribed, never heard of an
update again, and subscribing again was needed (a restart, or a reload that replaces the
server in place, keeps its link and so its subscriptions). Now, whenever the servers'
resources change (a server comes or goes), the gateway subscribes on its owner to every
URI a client holds that no server is subscribed to.

One daemon over streamable HTTP, two real clients at once: a handshake-era one
(``resources/subscribe``, the updates on its standalone stream) and a 2026-07-28 one (a
``subscriptions/listen`` stream naming the URI); the upstream in both eras too. Every wait
has a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from mcp import Client

from conftest import procs_with_marker, server_spec, wait_until
from supervisor import Supervisor
from supervisor._gateway import Gateway
from test_daemon import Daemon, server_entry, write_config
from test_list_changed import Heard

# resources/subscribe is the handshake era's API, deprecated at 2026-07-28.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

COUNTER = "state://counter"  # ev's, changed by ev__touch
UPDATE_WAIT = 30.0
"""How long a step waits (s) for both clients to hear of an update, touching again each 2 s."""


@pytest.mark.parametrize("upstream", [(), ("--handshake-only",)], ids=["modern-upstream", "handshake-upstream"])
async def test_a_subscription_is_made_again_on_a_server_a_reload_removed_and_added_back(
    tmp_path: Path, upstream: tuple[str, ...]
) -> None:
    a, a_marker = server_entry("echo.py", namespace="prefix")  # stays: the config is never empty
    ev, ev_marker = server_entry("everything.py", "--name", "ev", *upstream, namespace="prefix")
    config = tmp_path / "c.json"
    write_config(config, {"a": a, "ev": ev})
    daemon = Daemon(config, tmp_path)
    heard = {"handshake": Heard(), "modern": Heard()}

    async def on_message(message: Any) -> None:
        heard["handshake"].add(getattr(getattr(message, "root", message), "method", None) or "")

    async def listen(modern: Client, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with modern.listen(resource_subscriptions=[COUNTER]) as subscription:
            task_status.started()
            async for event in subscription:
                heard["modern"].add(type(event).__name__)

    try:
        await daemon.wait_healthy(timeout=60)
        with trio.fail_after(300):
            async with Client(daemon.url + "/mcp") as modern, Client(
                daemon.url + "/mcp", mode="legacy", message_handler=on_message
            ) as legacy, httpx2.AsyncClient(timeout=60) as http, trio.open_nursery() as nursery:
                await legacy.subscribe_resource(COUNTER)
                await nursery.start(listen, modern)

                async def both_hear_an_update(step: str) -> None:
                    """Touch the counter until both clients hear of it (the subscription
                    upstream may be made just after the step returned), within UPDATE_WAIT."""
                    with trio.move_on_after(UPDATE_WAIT):
                        while True:
                            for h in heard.values():
                                h.kinds.clear()
                            await legacy.call_tool("ev__touch", {"uri": COUNTER})
                            for h in heard.values():
                                await h.wait_for(lambda kinds: "updated" in kinds, timeout=2)
                            if all("updated" in h.kinds for h in heard.values()):
                                return
                    deaf = [era for era, h in heard.items() if "updated" not in h.kinds]
                    pytest.fail(f"{step}: the {' and '.join(deaf)} client heard of no update within {UPDATE_WAIT:g} s")

                async def reload(servers: dict[str, Any], what: str) -> None:
                    write_config(config, servers)
                    response = await http.post(daemon.url + "/reload")
                    assert response.status_code == 200 and response.json()[what] == ["ev"], response.text

                await both_hear_an_update("subscribed")
                await reload({"a": a}, "removed")
                await reload({"a": a, "ev": ev}, "added")
                await both_hear_an_update("ev removed and added back")
                # Held all along: subscribing again is no new subscription, and still heard.
                await legacy.subscribe_resource(COUNTER)
                await both_hear_an_update("subscribed again")
                nursery.cancel_scope.cancel()
    finally:
        daemon.stop()
        deadline = time.monotonic() + 10
        markers = (a_marker, ev_marker)
        while any(procs_with_marker(m) for m in markers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(procs_with_marker(m) for m in markers), "server processes left running"


@pytest.mark.parametrize("kept", ["echo", "templates"])
async def test_a_subscription_made_again_is_released_as_any_other(kept) -> None:
    """In process, the gateway's bookkeeping: once the re-added server's link holds the URI
    again, the client's unsubscribe releases it there (nothing left upstream, nothing left
    counted), and a 2026-07-28 listen stream's URI is made again the same way.

    ``templates``: the server kept has a resource template (and takes any subscription).
    While the owner was away, the next list change made the URI there (the gateway's last
    guess of an owner), so it looked made, and the owner, added back, was never subscribed
    (a review). Now it is made on a server that lists or matches it only, and released
    where a guess had put it."""
    script = ("echo.py",) if kept == "echo" else ("templates_only.py", "--handshake-only")
    keep, ev = server_spec("a", *script), server_spec("ev", "everything.py")
    async with Supervisor([keep, ev]) as sup:
        await sup.wait_connected("ev", timeout=30)
        await sup.wait_connected("a", timeout=30)
        gateway = Gateway(sup)
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                await nursery.start(gateway.forward_list_changed)
                async with Client(gateway.server, mode="legacy") as client:
                    await client.subscribe_resource(COUNTER)
                    assert sup.link("ev").subscriptions == {COUNTER}
                    await sup.reconcile([keep])
                    await sup.reconcile([keep, ev])
                    await wait_until(lambda: COUNTER in sup.link("ev").subscriptions, 30, what="the subscription made again")
                    await wait_until(lambda: sup.link("a").subscriptions == set(), 30, what="none left on a guess")
                    await client.unsubscribe_resource(COUNTER)
                    assert sup.link("ev").subscriptions == set() and gateway._subscribers == {}
                async with Client(gateway.server) as modern:
                    async with modern.listen(resource_subscriptions=["notes://a"]):
                        assert sup.link("ev").subscriptions == {"notes://a"}
                        await sup.reconcile([keep])
                        await sup.reconcile([keep, ev])
                        await wait_until(lambda: "notes://a" in sup.link("ev").subscriptions, 30, what="the listen stream's URI made again")
                        await wait_until(lambda: sup.link("a").subscriptions == set(), 30, what="none left on a guess")
                    # (released once the gateway's end of the stream has ended)
                    await wait_until(lambda: sup.link("ev").subscriptions == set(), 30, what="the listen stream's URI released")
                nursery.cancel_scope.cancel()
