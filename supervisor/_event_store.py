"""A bounded in-memory event store: resumable SSE streams on the daemon's ``/mcp``.

The SDK's streamable HTTP transport resumes a broken SSE stream (a client reconnecting with
``Last-Event-ID``) when it has an ``EventStore``; it ships only the interface, and hands the
one store it is given to every session, naming each stream after its request's JSON-RPC id
(``"2"``): the same names in every session. So each session stores and replays through its
own view (`BoundedEventStore.for_session`), kept apart by the session id.

Guarantees:

- A client that reconnects with the id of an event still held gets every later event of
  that stream of its own session, in order, then the live tail (the SDK's part); never an
  event of another session, whatever id it sends.
- Memory is bounded: each event is kept as its JSON (what the SDK sends), and past
  ``max_events`` events or ``max_bytes`` of them the oldest are dropped, whatever session
  they belong to; an event over ``max_bytes`` by itself is not held, nor the events of
  its stream before it, and the others stay. A client asking to resume after a dropped
  event gets the later events of its stream when none of them was dropped (the usual
  case: a client that lost its stream right after the priming event, while other
  sessions' traffic pushed that event out before its call's answer was stored); after
  a dropped event that a later dropped one follows, or an unknown one, it gets nothing
  replayed (never a stream with a gap), and the SDK answers its GET as a fresh stream.
  What a dropped event leaves is bounded too: its number and a 16-byte digest of its
  stream, for the last ``max_events`` dropped.
- The bytes counted (``bytes``, held to ``max_bytes``) are the events' JSON and the ids
  of the streams they belong to: the SDK names a stream ``str(id)`` of the request it
  answers, and the client chooses that id, as long as its request body allows (4 MiB by
  default), so a stream's id may outweigh its events (a priming event carries none). Each
  stream id held is stored and counted once (its UTF-8 length, which is no less than
  what the string takes in memory), whatever number of its events are held, and dropped
  with its last event. The session id is the SDK's (a uuid), counted with it. What else
  an event costs (its dict entry, about 150 bytes) is bounded by ``max_events``.
- Event ids are opaque, unique for the store's life, and never reused.
"""

from __future__ import annotations

import collections
import hashlib
import itertools

import pydantic
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

__all__ = ["BoundedEventStore"]

_MESSAGE: pydantic.TypeAdapter[JSONRPCMessage] = pydantic.TypeAdapter(JSONRPCMessage)

_Key = tuple[str | None, StreamId]
"""(session id, stream id): where an event belongs."""


class BoundedEventStore(EventStore):
    """The last events of every session's streams, within ``max_events`` and ``max_bytes``
    (see the module docstring). Used directly it is one session's store (session None)."""

    def __init__(self, max_events: int = 10_000, max_bytes: int = 64 << 20) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError(f"max_events and max_bytes must be >= 1, not {max_events} and {max_bytes}")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self._ids = itertools.count(1)
        #: Oldest first: event number -> (where it belongs, its JSON or None for a priming event).
        self._events: collections.OrderedDict[int, tuple[_Key, bytes | None]] = collections.OrderedDict()
        #: Every stream with an event held -> [its key, the one every such event holds; events held].
        self._streams: dict[_Key, list] = {}
        #: The last ``max_events`` events dropped (or never held): number -> its stream's digest.
        self._gone: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        #: Each stream's last event in ``_gone``: a resume after it misses nothing held.
        self._last_gone: dict[bytes, int] = {}

    def for_session(self, session_id: str) -> EventStore:
        """The view one session stores and replays through."""
        return _SessionEvents(self, session_id)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._store((None, stream_id), message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        return await self._replay(None, last_event_id, send_callback)

    def _store(self, key: _Key, message: JSONRPCMessage | None) -> EventId:
        number = next(self._ids)
        data = None if message is None else message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        size = len(data or b"")
        if size + _key_bytes(key) > self.max_bytes:
            # Too large to hold: dropping the oldest would drop every other stream's events
            # and then this one. Not held, nor the earlier events of its stream (a resume
            # from one of them would skip it).
            for earlier in [n for n, (where, _) in self._events.items() if where == key]:
                self._drop(earlier)
            self._note_gone(number, key)
            return str(number)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = [key, 0]
            self.bytes += _key_bytes(key)
        stream[1] += 1
        self._events[number] = (stream[0], data)
        self.bytes += size
        while len(self._events) > self.max_events or self.bytes > self.max_bytes:
            self._drop(next(iter(self._events)))
        return str(number)

    def _drop(self, number: int) -> None:
        key, data = self._events.pop(number)
        self.bytes -= len(data or b"")
        stream = self._streams[key]
        stream[1] -= 1
        if not stream[1]:
            del self._streams[key]
            self.bytes -= _key_bytes(key)
        self._note_gone(number, key)

    def _note_gone(self, number: int, key: _Key) -> None:
        digest = _digest(key)
        self._gone[number] = digest
        self._last_gone[digest] = number
        if len(self._gone) > self.max_events:
            oldest, of = self._gone.popitem(last=False)
            if self._last_gone.get(of) == oldest:
                del self._last_gone[of]

    async def _replay(self, session: str | None, last_event_id: EventId, send: EventCallback) -> StreamId | None:
        try:
            last = int(last_event_id)
        except ValueError:
            return None
        held = self._events.get(last)
        if held is not None:
            key = held[0]
        else:  # dropped: resumable if nothing of its stream after it was
            digest = self._gone.get(last)
            if digest is None or self._last_gone.get(digest) != last:
                return None
            key = next((k for k in self._streams if k[0] == session and _digest(k) == digest), (session, ""))
            if not key[1]:
                return None  # nothing of its stream held since: a fresh stream
        if key[0] != session:
            return None
        later = [(n, data) for n, (where, data) in self._events.items() if n > last and where == key]
        for number, data in later:
            if data is not None:  # priming events carry nothing to replay
                await send(EventMessage(_MESSAGE.validate_json(data), str(number)))
        return key[1]


def _digest(key: _Key) -> bytes:
    """What identifies a stream once its events are gone, in 16 bytes (a stream id may be
    as long as a request body allows)."""
    session, stream = key
    data = (session or "").encode("utf-8", "surrogatepass") + b"\0" + stream.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


def _key_bytes(key: _Key) -> int:
    session, stream = key
    return len((session or "").encode("utf-8", "surrogatepass")) + len(stream.encode("utf-8", "surrogatepass"))


class _SessionEvents(EventStore):
    """One session's view of a `BoundedEventStore`."""

    def __init__(self, store: BoundedEventStore, session_id: str) -> None:
        self._store = store
        self._session = session_id

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._store._store((self._session, stream_id), message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        return await self._store._replay(self._session, last_event_id, send_callback)
