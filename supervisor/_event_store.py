"""A bounded in-memory event store: resumable SSE streams on the daemon's ``/mcp``.

The SDK's streamable HTTP transport resumes a broken SSE stream (a client reconnecting with
``Last-Event-ID``) when it has an ``EventStore``; it ships only the interface. This one keeps
the last ``max_events`` events of all streams together, in memory.

Guarantees:

- A client that reconnects with the id of an event still held gets every later event of
  that stream, in order, then the live tail (the SDK's part).
- Memory is bounded: past ``max_events`` the oldest events are dropped. A client asking to
  resume after a dropped (or unknown) event gets nothing replayed; the SDK then answers its
  GET as a fresh stream.
- Event ids are opaque, unique for the store's life, and never reused.
"""

from __future__ import annotations

import collections
import itertools

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

__all__ = ["BoundedEventStore"]


class BoundedEventStore(EventStore):
    """The last ``max_events`` events, across streams (see the module docstring)."""

    def __init__(self, max_events: int = 10_000) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, not {max_events}")
        self.max_events = max_events
        self._ids = itertools.count(1)
        #: Oldest first: (event number, stream, message or None for a priming event).
        self._events: collections.OrderedDict[int, tuple[StreamId, JSONRPCMessage | None]] = collections.OrderedDict()

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        number = next(self._ids)
        self._events[number] = (stream_id, message)
        while len(self._events) > self.max_events:
            self._events.popitem(last=False)
        return str(number)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        try:
            last = int(last_event_id)
        except ValueError:
            return None
        held = self._events.get(last)
        if held is None:
            return None
        stream_id = held[0]
        later = [(n, message) for n, (stream, message) in self._events.items() if n > last and stream == stream_id]
        for number, message in later:
            if message is not None:  # priming events carry nothing to replay
                await send_callback(EventMessage(message, str(number)))
        return stream_id
