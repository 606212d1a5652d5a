"""What the status, the events and the breaker say is true: times a host can read, no
promise of a trial "in 0 s" while a connection attempt is under way, no "running" for a
connection already declared dead.

Real actors and real server processes under trio, no mocks; timing on the autojump
MockClock where it matters.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import time

import msgspec
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from actors._breaker import BreakerCore, ConnectionDown, ConnectionUp, spawn_breaker
from actors._events import _BUS, EventBus
from conftest import drain, marker_of, procs_with_marker, server_spec, wait_until
from protocol import BackoffPolicy, BreakerPolicy, CircuitOpen, DeadlineExceeded, Event, RetryPolicy
from supervisor import ChildSpec, Supervisor, TreeSupervisor
from supervisor.__main__ import render_tree


async def test_events_carry_the_wall_clock_and_breaker_events_the_wait_in_seconds(nursery, autojump_clock):
    # The trio clock (``at``) starts at an arbitrary offset: a host reading events must
    # also get the wall clock, and a breaker's promised wait in seconds from the event.
    bus = EventBus()
    events = bus.subscribe()
    _BUS.set(bus)
    before = time.time()
    ref, _ = spawn_breaker(nursery, BreakerPolicy(), "s")
    now = trio.current_time()
    await ref.ask(ConnectionDown(reason="connection down: boom", retry_at=now + 7.5))
    await ref.ask(ConnectionUp())
    await ref.ask(ConnectionDown(reason="connection down: failed for good", retry_at=math.inf))

    async def forever(*, task_status) -> None:
        task_status.started()
        await trio.sleep_forever()

    tree = TreeSupervisor("root", [ChildSpec(id="c", start=forever)])
    await nursery.start(tree.run)
    await trio.testing.wait_all_tasks_blocked()
    tree.stop()
    await trio.testing.wait_all_tasks_blocked()
    after = time.time()
    seen: list[Event] = drain(events)
    kinds = [(e.path, e.kind) for e in seen]
    assert ("", "breaker_state") in kinds and ("root/c", "started") in kinds and ("root/c", "ready") in kinds, kinds
    for event in seen:
        assert before <= event.time <= after, event
        assert "time" in msgspec.to_builtins(event)  # on the wire too
    down, up, for_good = [e for e in seen if e.kind == "breaker_state"]
    assert down.data["to"] == "open" and down.data["retry_in"] == 7.5 and "no_trial" not in down.data
    assert up.data["to"] == "closed" and up.data["retry_in"] is None and "no_trial" not in up.data
    # No trial is coming: inf in process, and on the wire (where inf is null) no_trial says so.
    assert for_good.data["retry_in"] == math.inf and for_good.data["no_trial"] is True
    assert msgspec.json.decode(msgspec.json.encode(for_good))["data"]["no_trial"] is True


# ---------------------------------------------------------------------------------------------
# A restart attempt under way is no trial "in 0 s"


def test_the_breaker_says_an_attempt_is_under_way_not_a_trial_in_0_s():
    core = BreakerCore(BreakerPolicy(), name="s")
    core.connection_down(10.0, "connection down: boom", retry_at=10.5)
    assert core.refusal(10.1).data["retry_in"] == pytest.approx(0.4)
    core.connecting_began(10.5, 30.0)  # the restart's time came: it is connecting
    assert core.connecting == (10.5, 30.0)
    refused = core.refusal(13.5)
    assert "connecting: attempt started 3 s ago, up to connect_timeout 30 s" in str(refused), refused
    assert "expected in" not in str(refused) and "retry_in" not in refused.data
    assert refused.data["retry_at"] == 10.5  # the retry layer still knows trials may come now
    assert (refused.data["connecting_for"], refused.data["connect_timeout"]) == (3.0, 30.0)
    assert core.snapshot(13.5).connecting_since == 10.5
    # The attempt failed: a new down, a new hint; then it is back.
    core.connection_down(40.5, "connection down: again", retry_at=41.5)
    assert core.connecting is None and "expected in 1 s" in str(core.refusal(40.5))
    core.connecting_began(41.5, 30.0)
    core.connection_up(42.0)
    assert core.connecting is None and core.state == "closed"
    # Not down (a first start): nothing to say.
    core.connecting_began(50.0, 30.0)
    assert core.connecting is None


async def test_a_restart_that_is_connecting_shows_so_in_the_status_and_to_callers(tmp_path):
    # The server's second start hangs (sleeps) before it serves: the restart attempt stays
    # under way. Before, the status said "next trial in 0 s" and callers "expected in 0 s"
    # for as long as it lasted (up to connect_timeout).
    marker = tmp_path / "started-once"
    base = server_spec("s", "echo.py")
    script = f'if [ -e "{marker}" ]; then sleep 60; fi; touch "{marker}"; exec "{base.command}" "{base.args[0]}"'
    spec = msgspec.structs.replace(
        base,
        command="/bin/sh",
        args=["-c", script],
        retry=RetryPolicy(max_retries=0),
        connect_timeout=120.0,
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0),
    )
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("s", timeout=30)
        os.kill(sup.link("s").process.pid, signal.SIGKILL)

        def breaker_detail():
            (server,) = [c for c in sup.status().children if c.id == "servers"][0].children
            return {c.id: c for c in server.children}["breaker:s"].detail

        detail = await wait_until(lambda: "connecting_for" in breaker_detail() and breaker_detail(), what="connecting")
        assert detail["state"] == "open" and detail["retry_in"] is None, detail
        assert detail["connect_timeout"] == 120.0
        (line,) = [line for line in render_tree(sup.status()).splitlines() if "breaker:s" in line]
        assert re.search(r"breaker open \(connection down\), connecting for [\d.]+ s \(up to connect_timeout 120 s\)",
                         line), line
        with pytest.raises(CircuitOpen) as refused:
            await sup.call_tool("echo", {"text": "x"}, server="s", timeout=5)
        assert "connecting: attempt started" in str(refused.value) and "up to connect_timeout 120 s" in str(refused.value)
        assert "expected in" not in str(refused.value)
    assert not procs_with_marker(marker_of(spec))


# ---------------------------------------------------------------------------------------------
# A connection declared dead is not "running" while its task is torn down


def _connection(sup, name: str):
    (server,) = [s for s in [c for c in sup.status().children if c.id == "servers"][0].children if s.id == f"server:{name}"]
    return {c.id: c for c in server.children}[f"connection:{name}"]


def _server_state(text: str, name: str) -> tuple[float, list[str]]:
    up, states = None, []
    if isinstance(text, bytes):
        text = text.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("server") != name:
                continue
            if sample.name == "mcp_supervisor_server_up":
                up = sample.value
            elif sample.name == "mcp_supervisor_server_state" and sample.value:
                states.append(sample.labels["state"])
    return up, states


async def test_a_connection_declared_dead_shows_so_while_it_is_torn_down():
    # A frozen server (SIGSTOP) is declared hung after hang_threshold timeouts; its process
    # is then given shutdown_timeout to exit before it is killed, and the tree learns of the
    # exit only after that. Before, the status and /metrics said "running" (server_up 1)
    # all that time, while every call got CircuitOpen.
    spec = server_spec(
        "e",
        "echo.py",
        timeout=0.3,
        hang_threshold=3,
        shutdown_timeout=60.0,
        retry=RetryPolicy(max_retries=0),
        breaker=BreakerPolicy(failure_threshold=100, min_calls=100, window=100),
        backoff=BackoffPolicy(min=0.05, max=0.1, jitter=0.0),
    )
    async with Supervisor([spec]) as sup:
        events = sup.subscribe()
        await sup.wait_connected("e", timeout=30)
        pid = sup.link("e").process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                with pytest.raises(DeadlineExceeded):
                    await sup.call_tool("echo", {"text": "x"}, server="e")
            await wait_until(lambda: sup.link("e").conn is None, what="the connection declared dead")
            conn = _connection(sup, "e")
            assert conn.state == "restarting" and conn.uptime is None, conn
            assert conn.last_exit == sup.link("e").down_reason and conn.last_exit, conn
            # At once, no polling: the metrics actor takes the ``down`` event (published as
            # the connection was declared dead) before this snapshot, and both before the
            # ``exited`` that the teardown (a process to kill and reap) publishes later.
            assert _server_state(await sup.metrics_text(), "e") == (0.0, ["restarting"])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await sup.wait_connected("e", timeout=30)
        assert _connection(sup, "e").state == "running"
        assert _server_state(await sup.metrics_text(), "e")[1] == ["running"]
        seen = drain(events)
        mine = [e.kind for e in seen if e.path.endswith("/connection:e")]
        assert mine[mine.index("down") :][:3] == ["down", "exited", "restarting"], mine
        (down,) = [e for e in seen if e.kind == "down"]
        assert "hang_threshold" in down.reason and down.data == {"state": "restarting"}, down
    assert not procs_with_marker(marker_of(spec))
