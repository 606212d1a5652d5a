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


def test_the_bounds_must_be_positive():
    with pytest.raises(ValueError):
        BoundedEventStore(max_events=0)
    with pytest.raises(ValueError):
        BoundedEventStore(max_bytes=0)


async def test_sessions_are_kept_apart_whatever_id_is_sent():
    """The SDK names streams after request ids, alike in every session: a session resuming
    its stream "2" got another session's stream "2" events too, and any guessed id replayed
    another session's traffic."""
    store = BoundedEventStore()
    a, b = store.for_session("A"), store.for_session("B")
    b_priming = await b.store_event("2", None)
    a_priming = await a.store_event("2", None)
    a1 = await a.store_event("2", message(1))
    b1 = await b.store_event("2", message(100))
    assert await replay(b, b_priming) == ("2", [(b1, 100)])
    assert await replay(a, a_priming) == ("2", [(a1, 1)])
    assert await replay(b, a_priming) == (None, [])  # A's id from B: nothing
    assert await replay(store, a_priming) == (None, [])


async def test_the_bytes_held_are_bounded_too():
    """Bounded by count alone, 10,000 results of a few MiB each (one upstream message may
    be up to 32 MiB) held gigabytes."""
    store = BoundedEventStore(max_events=1000, max_bytes=10_000)
    big = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"data": "x" * 3000})
    ids = [await store.store_event("a", big) for _ in range(10)]
    assert store.bytes <= 10_000 and len(store._events) == 3
    assert await replay(store, ids[0]) == (None, [])  # dropped
    sent = []

    async def send(event):
        sent.append(event.message)

    assert await store.replay_events_after(ids[-2], send) == "a" and sent == [big]  # as it was stored


async def test_an_event_over_max_bytes_costs_only_its_own_stream():
    """An event larger than ``max_bytes`` on its own (a server's max_message_bytes above
    the store's 64 MiB) cannot be held. The oldest events were dropped until the bytes fit,
    so it went last of all, after every event of every other session: one session's large
    answer cost each other client its resumable stream. Now it alone is not held, with the
    events of its own stream before it (a resume from one of them would skip it)."""
    store = BoundedEventStore(max_bytes=10_000)
    a, b = store.for_session("A"), store.for_session("B")
    a_priming = await a.store_event("1", None)
    a1 = await a.store_event("1", message(1))
    b_other = await b.store_event("7", message(70))
    b_priming = await b.store_event("2", None)
    huge = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"data": "x" * 20_000})
    await b.store_event("2", huge)
    b_after = await b.store_event("2", message(200))
    a2 = await a.store_event("1", message(2))
    assert await replay(a, a_priming) == ("1", [(a1, 1), (a2, 2)])  # another session's: untouched
    assert await replay(b, b_other) == ("7", [])  # another stream of its own session: untouched
    assert await replay(b, b_priming) == (None, [])  # would skip the huge event: not resumed
    assert await replay(b, b_after) == ("2", [])
    assert store.bytes <= 10_000
