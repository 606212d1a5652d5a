"""The public façade: ``async with Supervisor(servers) as sup`` and one call path.

The tree it runs::

    root                      one_for_one
    └── servers               one_for_one, children added and removed at run time
        └── server:<name>     rest_for_one
            └── connection:<name>

Guarantees of ``call_tool``:

- It returns the tool's result (``mcp_types.CallToolResult``, ``isError`` included) or
  raises exactly one typed ``Failure`` (or the server's own ``MCPError``), by the call's
  deadline: ``timeout`` or the server's default.
- A call that never reached a server (the connection was down or died before sending it)
  waits for the next connection up to its deadline, then fails with ``ServerUnavailable``.
- Cancelling the caller cancels the call on the server.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from actors import Call, EventBus, ServerLink
from actors._events import _BUS
from protocol import ChildStatus, Event, ServerSpec, UnknownTool

from ._servers import SERVERS_INTENSITY, server_child_spec
from ._tree import ChildSpec, TreeSupervisor

__all__ = ["Supervisor"]

class Supervisor:
    """Supervises MCP servers and routes tool calls to them.

    ``inproc`` maps a server name to an in-process server object (``MCPServer``) used
    instead of a transport, for tests and benchmarks.
    """

    def __init__(self, servers: list[ServerSpec], *, inproc: dict[str, Any] | None = None) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names: {sorted({n for n in names if names.count(n) > 1})}")
        self._specs = {s.name: s for s in servers}
        self._inproc = dict(inproc or {})
        self._links: dict[str, ServerLink] = {}
        self._bus = EventBus()
        self._servers = TreeSupervisor("servers", intensity=SERVERS_INTENSITY)
        self._root = TreeSupervisor("root", [ChildSpec(id="servers", start=self._start_servers, supervisor=True)])
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None

    # -- lifecycle ----------------------------------------------------------------------

    async def _start_servers(self, *, task_status: Any) -> None:
        await self._servers.run(task_status=task_status)

    async def __aenter__(self) -> Supervisor:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        token = _BUS.set(self._bus)
        try:
            await self._nursery.start(self._root.run)
            async with trio.open_nursery() as starting:
                for spec in self._specs.values():
                    if spec.enabled:
                        starting.start_soon(self.add_server, spec)
        except BaseException:
            self._root.stop()
            await self._nursery_cm.__aexit__(None, None, None)
            raise
        finally:
            _BUS.reset(token)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._root.stop()
        try:
            return await self._nursery_cm.__aexit__(*exc_info)
        finally:
            self._bus.close()  # subscribers' loops end with the supervisor

    async def add_server(self, spec: ServerSpec) -> ChildStatus:
        """Start supervising ``spec``; returns once it is connected or its first try failed."""
        self._specs[spec.name] = spec
        link = self._links[spec.name] = ServerLink(spec)
        return await self._servers.add_child(server_child_spec(spec, link, inproc=self._inproc.get(spec.name)))

    async def remove_server(self, name: str) -> None:
        """Stop ``name`` (draining its calls within its shutdown timeout) and forget it."""
        await self._servers.remove_child(f"server:{name}")
        self._links.pop(name, None)
        self._specs.pop(name, None)

    # -- introspection ------------------------------------------------------------------

    def status(self) -> ChildStatus:
        return self._root.status()

    def subscribe(self, size: int = 1000) -> trio.MemoryReceiveChannel[Event]:
        return self._bus.subscribe(size)

    def link(self, server: str) -> ServerLink:
        try:
            return self._links[server]
        except KeyError:
            raise UnknownTool(f"no server named {server!r}", server=server) from None

    @property
    def servers(self) -> list[str]:
        return list(self._links)

    # -- the call path ------------------------------------------------------------------

    async def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        progress: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``tool`` on ``server``; see the module docstring for the guarantees."""
        link = self.link(server)
        deadline = trio.current_time() + (link.spec.timeout if timeout is None else timeout)
        return await link.call(Call(tool, arguments or {}, deadline, progress, meta))

    async def wait_connected(self, server: str, timeout: float = math.inf) -> None:
        """Wait until ``server`` is connected (or raise ``ServerUnavailable`` at the timeout)."""
        await self.link(server).wait_connected(trio.current_time() + timeout)
