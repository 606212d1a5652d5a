"""The ``server:<name>`` subtree: one rest_for_one supervisor per configured MCP server.

Restart intensity here is a safety net, not the pacing: the connection's backoff paces its
restarts (0.5 s doubling to 30 s by default, at most 7 restarts in any minute), so the
default intensity of 10 restarts per 60 s trips only when a misconfigured backoff lets a
server crash-loop. A subtree that gives up is restarted by ``servers`` with the same
backoff; one server never takes its siblings down.
"""

from __future__ import annotations

import functools
from typing import Any

from actors import ServerLink, run_connection
from protocol import IntensityPolicy, ServerSpec

from ._tree import ChildSpec, Restart, Strategy, TreeSupervisor

__all__ = ["SERVER_INTENSITY", "SERVERS_INTENSITY", "server_child_spec"]

SERVER_INTENSITY = IntensityPolicy(max_restarts=10, max_seconds=60.0)
SERVERS_INTENSITY = IntensityPolicy(max_restarts=100, max_seconds=60.0)


def server_child_spec(spec: ServerSpec, link: ServerLink, *, inproc: Any = None) -> ChildSpec:
    """The child spec of ``server:<name>`` for the ``servers`` supervisor."""
    connection = ChildSpec(
        id=f"connection:{spec.name}",
        start=functools.partial(run_connection, spec, link, inproc=inproc),
        restart=Restart(spec.restart),
        shutdown=spec.shutdown_timeout,
        backoff=spec.backoff,
    )

    async def start(*, task_status: Any) -> None:
        subtree = _ServerSubtree(f"server:{spec.name}", [connection], link)
        await subtree.run(task_status=task_status)

    return ChildSpec(id=f"server:{spec.name}", start=start, supervisor=True, backoff=spec.backoff)


class _ServerSubtree(TreeSupervisor):
    """A rest_for_one supervisor whose status carries the connection's detail."""

    def __init__(self, id: str, children: list[ChildSpec], link: ServerLink) -> None:
        super().__init__(id, children, strategy=Strategy.REST_FOR_ONE, intensity=SERVER_INTENSITY)
        self.link = link

    def status(self):  # type: ignore[no-untyped-def]
        node = super().status()
        for child in node.children:
            if child.id.startswith("connection:"):
                child.detail = self.link.detail()
        return node
