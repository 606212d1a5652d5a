"""What the status, the events and the breaker say is true: times a host can read, no
promise of a trial "in 0 s" while a connection attempt is under way, no "running" for a
connection already declared dead.

Real actors and real server processes under trio, no mocks; timing on the autojump
MockClock where it matters.
"""

from __future__ import annotations

import time

import msgspec
import trio
import trio.testing

from actors._breaker import ConnectionDown, ConnectionUp, spawn_breaker
from actors._events import _BUS, EventBus
from protocol import BreakerPolicy, Event
from supervisor import ChildSpec, TreeSupervisor


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

    async def forever(*, task_status) -> None:
        task_status.started()
        await trio.sleep_forever()

    tree = TreeSupervisor("root", [ChildSpec(id="c", start=forever)])
    await nursery.start(tree.run)
    await trio.testing.wait_all_tasks_blocked()
    tree.stop()
    await trio.testing.wait_all_tasks_blocked()
    after = time.time()
    seen: list[Event] = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except trio.WouldBlock:
            break
    kinds = [(e.path, e.kind) for e in seen]
    assert ("", "breaker_state") in kinds and ("root/c", "started") in kinds and ("root/c", "ready") in kinds, kinds
    for event in seen:
        assert before <= event.time <= after, event
        assert "time" in msgspec.to_builtins(event)  # on the wire too
    down, up = [e for e in seen if e.kind == "breaker_state"]
    assert down.data["to"] == "open" and down.data["retry_in"] == 7.5
    assert up.data["to"] == "closed" and up.data["retry_in"] is None
