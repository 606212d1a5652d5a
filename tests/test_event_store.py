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


async def test_the_stream_ids_held_are_counted_in_the_bytes():
    """The SDK names each stream after the JSON-RPC id of the request it answers, which the
    client chooses (up to the request body limit, 4 MiB by default), and a priming event
    carries no JSON: the store held 100 streams of 1,000-character ids (and could hold
    10,000 of 4 MiB each) while it counted 0 bytes. Now each stream id held counts, once
    however many of its events are held, within the same ``max_bytes``."""
    store = BoundedEventStore(max_events=1000, max_bytes=10_000)
    ids = [f"{n:04d}" + "x" * 996 for n in range(100)]
    primings = [await store.store_event(stream, None) for stream in ids]
    held = {where[1] for where, _ in store._events.values()}
    assert sum(len(stream) for stream in held) <= 10_000 and store.bytes <= 10_000
    assert ids[-1] in held and ids[0] not in held
    assert await replay(store, primings[0]) == (None, [])  # dropped past the bound
    assert await replay(store, primings[-1]) == (ids[-1], [])

    one = BoundedEventStore(max_events=10, max_bytes=10_000)
    size = len(message(9).model_dump_json(by_alias=True, exclude_unset=True))
    events = [await one.store_event(ids[0], message(9)) for _ in range(5)]
    assert one.bytes == 5 * size + 1000  # the id once, not once per event
    assert (await replay(one, events[2]))[1] == [(events[3], 9), (events[4], 9)]
    for _ in range(10):  # another stream pushes all of its events out: its id goes with them
        await one.store_event("other", message(9))
    assert {where[1] for where, _ in one._events.values()} == {"other"}
    assert one.bytes == 10 * size + len("other")


async def test_a_stream_id_over_max_bytes_is_not_held():
    """A stream whose id alone is over ``max_bytes`` cannot be held; the others stay."""
    store = BoundedEventStore(max_bytes=10_000)
    kept = await store.store_event("a", message(1))
    after = await store.store_event("a", message(2))
    huge = "9" * 20_000
    priming = await store.store_event(huge, None)
    await store.store_event(huge, message(3))
    assert await replay(store, priming) == (None, [])
    assert await replay(store, kept) == ("a", [(after, 2)])
    assert store.bytes <= 10_000


async def test_a_stream_whose_resume_point_was_pushed_out_resumes_when_nothing_after_it_was():
    """A client loses its stream right after the priming event; other streams' events push
    that event out of the store; then its call's answer is stored. Its resume after the
    priming event replayed nothing (the answer was lost though held); now it gets the
    answer. A stream that lost an event after the resume point still replays nothing:
    never a stream with a gap. Other sessions cannot resume it."""
    store = BoundedEventStore(max_events=3)
    priming = await store.store_event("a", None)
    for n in range(3):
        await store.store_event("b", message(100 + n))  # pushes a's priming event out
    answer = await store.store_event("a", message(1))
    assert await replay(store, priming) == ("a", [(answer, 1)])

    gapped = BoundedEventStore(max_events=3)
    start = await gapped.store_event("a", None)
    await gapped.store_event("a", message(1))  # dropped too: a resume after start would miss it
    for n in range(3):
        await gapped.store_event("b", message(100 + n))
    await gapped.store_event("a", message(2))
    assert await replay(gapped, start) == (None, [])

    shared = BoundedEventStore(max_events=3)
    mine, theirs = shared.for_session("mine"), shared.for_session("theirs")
    primed = await mine.store_event("1", None)
    for n in range(3):
        await theirs.store_event("1", message(100 + n))
    kept = await mine.store_event("1", message(1))
    sent = []

    async def send(event):
        sent.append(event.event_id)

    assert await theirs.replay_events_after(primed, send) is None and sent == []
    assert await mine.replay_events_after(primed, send) == "1" and sent == [kept]
