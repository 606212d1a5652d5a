"""Behaviour: the actor runtime and the actors (connection, breaker, metrics, registry)."""

from ._runtime import Mailbox, Ref, Reply, serve, spawn

__all__ = ["Mailbox", "Ref", "Reply", "serve", "spawn"]
