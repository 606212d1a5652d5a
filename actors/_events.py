"""The event bus: every transition in the tree is logged and fanned out to subscribers.

Publishing never blocks and never fails: a subscriber whose buffer is full misses events
(counted in ``dropped``) rather than slowing the tree down. The bus and the current node's
path travel in context variables, so a supervisor or actor started inside a supervised task
publishes under its own path without being handed anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import trio

from protocol import Event

__all__ = ["EventBus", "current_bus", "current_path", "publish"]

log = logging.getLogger("supervisor.events")


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Any] = []  # each has send_nowait(event) and close()
        self.dropped = 0

    def subscribe(self, size: int = 1000) -> trio.MemoryReceiveChannel[Event]:
        """A channel that receives every later event; close it to unsubscribe."""
        send, receive = trio.open_memory_channel[Event](size)
        self._subscribers.append(send)
        return receive

    def attach(self, deliver: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``deliver(event)`` for every later event, as it is published (so it comes
        before anything the publisher does next: an actor's mailbox gets it ahead of a later
        ask). ``deliver`` must not block; it raises ``trio.WouldBlock`` to drop the event
        (counted) or ``trio.ClosedResourceError`` to be detached. Returns the detach."""
        sink = _Sink(deliver)
        self._subscribers.append(sink)

        def detach() -> None:
            if sink in self._subscribers:
                self._subscribers.remove(sink)

        return detach

    def close(self) -> None:
        """End every subscription: subscribers' ``async for`` loops finish."""
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()

    def publish(self, event: Event) -> None:
        level = logging.WARNING if event.kind in _WARNINGS and event.reason else logging.INFO
        if log.isEnabledFor(level):
            extra = f" in {event.delay:.3g}s" if event.delay is not None else ""
            log.log(level, "%s %s%s%s", event.path, event.kind, extra, f": {event.reason}" if event.reason else "")
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)


_WARNINGS = frozenset({"exited", "gave_up", "failed", "tool_collision"})
"""Kinds of event logged as warnings (when they carry a reason): what an operator acts on."""


class _Sink:
    __slots__ = ("send_nowait",)

    def __init__(self, deliver: Callable[[Event], None]) -> None:
        self.send_nowait = deliver

    def close(self) -> None:
        pass


_BUS: ContextVar[EventBus | None] = ContextVar("supervisor_event_bus", default=None)
_PATH: ContextVar[str] = ContextVar("supervisor_path", default="")


def current_bus() -> EventBus | None:
    return _BUS.get()


def current_path() -> str:
    return _PATH.get()


def publish(kind: str, *, path: str | None = None, **fields: Any) -> None:
    """Publish an event under ``path`` (default: the current node) on the current bus."""
    bus = _BUS.get()
    if bus is None:
        return
    bus.publish(Event(path=path if path is not None else _PATH.get(), kind=kind, at=trio.current_time(), **fields))
