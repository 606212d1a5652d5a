"""Behaviour: the actor runtime and the actors (connection, breaker, metrics, registry)."""

from ._connection import Call, ConnectionDied, ServerLink, run_connection
from ._events import EventBus, publish
from ._process import kill_every_server_now, kill_servers_now
from ._runtime import Mailbox, Ref, Reply, serve, spawn

__all__ = [
    "Call",
    "ConnectionDied",
    "EventBus",
    "Mailbox",
    "Ref",
    "Reply",
    "ServerLink",
    "kill_every_server_now",
    "kill_servers_now",
    "publish",
    "run_connection",
    "serve",
    "spawn",
]
