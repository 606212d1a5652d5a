"""A server that crash-loops, however fast its backoff lets it, is paced by that backoff
and bounded by ``max_consecutive``: it never restarts its siblings, and its counts go on.

Each server runs under ``servers`` as a ``server:<name>`` subtree. Both had a restart
intensity (10 restarts in 60 s for a subtree, 100 for ``servers``): a server whose backoff
let it restart more often than that made its subtree give up, which reset its
``failures_in_row`` (so ``max_consecutive`` was never reached) and its status's restart
count; and enough such give-ups made ``servers`` give up too, and the root restarted every
server, the healthy ones included (a probe: six servers on ``/bin/false`` with a 0.2 s
backoff replaced a healthy server's process after 39 s).
"""

from __future__ import annotations

import trio

from conftest import collect, server_spec, wait_until
from protocol import BackoffPolicy, ServerSpec
from supervisor import Supervisor

EXITS_AT_ONCE = "/bin/false"  # no Python start: 1,500 of them cost little


def crash_looping(name: str, **backoff) -> ServerSpec:
    return ServerSpec(name=name, command=EXITS_AT_ONCE,
                      backoff=BackoffPolicy(min=0.01, max=0.01, jitter=0.0, **backoff))


def node(sup: Supervisor, path: str):
    found = sup.status()
    for part in path.split("/"):
        (found,) = [child for child in found.children if child.id == part]
    return found


async def test_crash_looping_servers_never_restart_a_healthy_sibling():
    echo = server_spec("echo", "echo.py")
    loopers = [crash_looping(f"loop{i}") for i in range(12)]
    events: list = []
    async with Supervisor([echo, *loopers]) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sup.subscribe(10000), events)
            await sup.wait_connected("echo", timeout=30)
            pid = sup.link("echo").detail()["pid"]
            restarts = lambda: sum(e.kind == "restarting" and "/connection:loop" in e.path for e in events)
            # Under the old limits ``servers`` gave up after 101 subtree give-ups, 1,111
            # restarts; 1,500 is past that.
            await wait_until(lambda: restarts() > 1500, timeout=120, what="1,500 restarts of the crash-looping servers")
            nursery.cancel_scope.cancel()
        gave_up = [f"{e.path}: {e.reason}" for e in events if e.kind == "gave_up"]
        assert sup.link("echo").detail()["pid"] == pid, f"the healthy server was restarted; {gave_up[-1:]}"
        assert not gave_up, gave_up[-1]
        assert node(sup, "servers/server:echo/connection:echo").restarts == 0


async def test_max_consecutive_is_reached_whatever_the_backoff():
    async with Supervisor([crash_looping("boom", max_consecutive=25)]) as sup:
        await wait_until(lambda: node(sup, "servers/server:boom/connection:boom").state == "failed", timeout=60,
                         what="the server to fail for good after 25 failures in a row")
        connection = node(sup, "servers/server:boom/connection:boom")
        assert connection.restarts == 25, connection
        (metrics,) = [m for m in (await sup.metrics_snapshot()).servers if m.server == "boom"]
        assert metrics.restarts == 25, metrics
