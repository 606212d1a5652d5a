"""Snapshots and events of the supervision tree: plain data, encoded at the edges."""

from __future__ import annotations

import time as _time
from typing import Any, Literal

import msgspec

__all__ = ["ChildState", "ChildStatus", "Event"]

ChildState = Literal["starting", "running", "restarting", "failed", "stopped"]


class ChildStatus(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One node of the status tree. Times are seconds; ``uptime`` counts from *ready*."""

    id: str
    state: ChildState
    restart: str = "permanent"
    restarts: int = 0
    last_exit: str | None = None
    uptime: float | None = None
    next_attempt_in: float | None = None
    strategy: str | None = None
    detail: dict[str, Any] | None = None
    children: list[ChildStatus] = []


class Event(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One transition somewhere in the tree, as published to subscribers and logged.

    ``path`` names the node (``root/servers/server:echo/connection:echo``); ``kind`` is one
    of started, ready, exited, restarting, gave_up, failed, stopped, added, removed, down
    (a server's connection declared dead, its teardown under way: ``exited`` follows;
    ``data.state`` is what the status shows meanwhile), or an actor's own kind
    (breaker_state, tools_changed, ...).

    ``at`` is the supervisor's own clock (trio's: it starts at an arbitrary offset, so it
    only orders events and measures between them); ``time`` is the wall clock when the
    event was made (Unix seconds, ``time.time()``), for a host or a log reader to tell
    when it happened. Times inside ``data`` (a breaker's ``at``, ``retry_at``) are on the
    ``at`` clock; ``retry_in`` there counts from the event.
    """

    path: str
    kind: str
    at: float
    time: float = msgspec.field(default_factory=_time.time)
    reason: str | None = None
    delay: float | None = None
    restarts: int | None = None
    data: dict[str, Any] | None = None
