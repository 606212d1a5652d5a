"""The daemon's bounded event store (resumable SSE): replay order, streams apart, the bound."""

import mcp_types as types
import pytest

from supervisor._event_store import BoundedEventStore


def message(n: int) -> types.JSONRPCMessage:
    return types.JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progressToken": "t", "progress": n})


async def replay(store: BoundedEventStore, after: str) -> tuple[str | None, list[tuple[str, int]]]:
    sent = []

    async def send(event):
        sent.append((event.event_id, event.message.params["progress"]))

    return await store.replay_events_after(after, send), sent


async def test_replays_the_later_events_of_that_stream_only_in_order():
    store = BoundedEventStore()
    priming = await store.store_event("a", None)
    a1 = await store.store_event("a", message(1))
    await store.store_event("b", message(100))
    a2 = await store.store_event("a", message(2))
    a3 = await store.store_event("a", message(3))
    assert await replay(store, priming) == ("a", [(a1, 1), (a2, 2), (a3, 3)])
    assert await replay(store, a2) == ("a", [(a3, 3)])
    assert await replay(store, a3) == ("a", [])


async def test_unknown_or_evicted_ids_replay_nothing():
    store = BoundedEventStore(max_events=3)
    first = await store.store_event("a", message(1))
    for n in range(2, 6):
        last = await store.store_event("a", message(n))
    assert await replay(store, first) == (None, [])  # dropped past the bound
    assert await replay(store, "nonsense") == (None, [])
    assert await replay(store, "999") == (None, [])
    assert (await replay(store, str(int(last) - 2)))[1] == [(str(int(last) - 1), 4), (last, 5)]


def test_the_bound_must_be_positive():
    with pytest.raises(ValueError):
        BoundedEventStore(max_events=0)
