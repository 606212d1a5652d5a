"""The connection actor: one MCP server, spoken to through the mcp SDK's ``Client``.

One incarnation is one connection. ``run_connection`` connects and initializes within
``connect_timeout``, learns the server's tools (and prompts and resources when advertised),
reports ready, then serves calls until the connection dies or it is asked to stop. Its
supervisor restarts it; the ``ServerLink`` it publishes into outlives every incarnation.

Guarantees:

- Calls run concurrently up to ``max_concurrency``; up to ``max_queue`` more wait; beyond
  that a call fails at once with ``Overloaded``.
- Every call ends by its deadline: the caller's cancel scope carries it into the SDK call,
  and the SDK then sends ``notifications/cancelled`` to the server. A timed-out call gets
  ``DeadlineExceeded``; a caller that gave up is simply no longer answered.
- The actor dies (and so is restarted) when the process exits, the transport closes or
  errors, the server writes more than ``garbage_threshold`` lines that are not JSON-RPC, or
  ``hang_threshold`` consecutive calls time out.
- When it dies, every call in flight fails at once with ``ServerCrashed`` (it may or may not
  have run); calls still waiting for a slot fail with ``ActorDown``, which tells the caller
  they never reached the server and may be sent again on the next connection.
- A stdio server's whole process group is gone when the incarnation ends.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types
import msgspec
import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import get_default_environment

from protocol import (
    ActorDown,
    DeadlineExceeded,
    Overloaded,
    ServerCrashed,
    ServerSpec,
    ServerUnavailable,
    ToolSpec,
)

from ._events import publish
from ._process import ServerProcess, kill_group, open_stdio
from ._runtime import Mailbox, Ref, Reply

__all__ = ["Call", "ConnectionDied", "ServerLink", "run_connection"]

log = logging.getLogger("supervisor.connection")

CONNECTION_CLOSED = -32000  # the SDK's code for a transport that went away


class ConnectionDied(Exception):
    """Why an incarnation ended: the process exited, the transport failed, a hang, garbage."""


class Call(msgspec.Struct):
    """One tool call for the connection actor.

    Lives in ``actors`` rather than ``protocol`` because it carries live trio objects: the
    caller's cancel scope (its deadline, and its cancellation when the caller gives up) and
    an optional progress callback.
    """

    tool: str
    arguments: dict[str, Any]
    scope: Any  # trio.CancelScope with the call's deadline
    progress: Callable[[float, float | None, str | None], Awaitable[None]] | None = None
    meta: dict[str, Any] | None = None


class ListTools(msgspec.Struct):
    pass


class Refresh(msgspec.Struct):
    """Re-read the tool (prompt, resource) lists: a list_changed arrived or the TTL ran out."""

    what: str = "tools"


class Session(msgspec.Struct):
    """Ask for the live ``mcp.Client`` (prompts, resources, completions pass through it)."""


class ServerLink:
    """The stable face of one server across incarnations.

    The connection actor writes it; callers read it without an actor hop. ``connected`` is
    set while an incarnation is ready; ``ref`` reaches that incarnation.
    """

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.ref: Ref[Any] | None = None
        self.connected = trio.Event()
        self.tools: list[ToolSpec] = []
        self.tools_version = 0
        self.prompts: list[Any] = []
        self.resources: list[Any] = []
        self.resource_templates: list[Any] = []
        self.capabilities: Any = None
        self.protocol_version: str | None = None
        self.process: ServerProcess | None = None
        self.inflight = 0
        self.queued = 0
        self.last_error: str | None = None
        self.listeners: list[Callable[[ServerLink], None]] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def _up(self, ref: Ref[Any]) -> None:
        self.ref = ref
        self.connected.set()

    def _down(self, reason: str) -> None:
        self.ref = None
        self.last_error = reason
        if self.connected.is_set():
            self.connected = trio.Event()
        self.inflight = self.queued = 0

    def _publish_tools(self, tools: list[ToolSpec]) -> None:
        self.tools = tools
        self.tools_version += 1
        for listener in list(self.listeners):
            listener(self)

    async def wait_connected(self, deadline: float) -> Ref[Any]:
        """The ready incarnation's ref, waiting up to ``deadline`` (trio time) for one."""
        while self.ref is None or not self.ref.alive:
            with trio.move_on_at(deadline):
                await self.connected.wait()
                continue
            raise ServerUnavailable(
                f"server {self.name!r} is not connected"
                + (f" (last error: {self.last_error})" if self.last_error else ""),
                server=self.name,
            )
        return self.ref

    def detail(self) -> dict[str, Any]:
        proc = self.process
        return {
            "transport": self.spec.kind,
            "protocol_version": self.protocol_version,
            "tools": len(self.tools),
            "inflight": self.inflight,
            "queued": self.queued,
            "pid": proc.pid if proc else None,
            "last_error": self.last_error,
            "stderr_tail": proc.stderr_tail(20) if proc else [],
        }


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _tool_spec(tool: mcp_types.Tool, server: str) -> ToolSpec:
    return ToolSpec.from_dict(tool.model_dump(by_alias=True, mode="json", exclude_none=True), server=server)


def _transport(spec: ServerSpec, proc: ServerProcess, inproc: Any) -> Any:
    if inproc is not None:
        return inproc
    if spec.command is not None:
        params = StdioServerParameters(
            command=spec.command,
            args=list(spec.args),
            env={**get_default_environment(), **spec.env},
            cwd=spec.cwd,
        )
        return open_stdio(params, proc, grace=spec.shutdown_timeout)
    assert spec.url is not None
    if spec.transport == "sse":
        from mcp.client.sse import sse_client

        return sse_client(spec.url, headers=dict(spec.headers) or None, timeout=spec.connect_timeout)
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    return _http_transport(spec, streamable_http_client, create_mcp_http_client)


def _http_transport(spec: ServerSpec, client_factory: Any, http_factory: Any) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def transport() -> Any:
        async with http_factory(headers=dict(spec.headers) or None) as http:
            async with client_factory(spec.url, http_client=http) as streams:
                yield streams

    return transport()


class _Connection:
    """The state of one incarnation. Only its own tasks touch it."""

    def __init__(self, spec: ServerSpec, link: ServerLink, client: Client, mailbox: Mailbox[Any]) -> None:
        self.spec = spec
        self.link = link
        self.client = client
        self.mailbox = mailbox
        self.inflight: dict[Reply, Call] = {}
        self.waiting: collections.deque[tuple[Call, Reply]] = collections.deque()
        self.consecutive_timeouts = 0
        self.death: ConnectionDied | None = None
        self.died = trio.Event()
        self.garbage = 0
        self.nursery: trio.Nursery | None = None

    def die(self, reason: str) -> None:
        """Declare this incarnation dead: new calls go to the next one from now on."""
        if self.death is None:
            self.death = ConnectionDied(reason)
            self.link._down(reason)
            self.died.set()

    # -- the loop -----------------------------------------------------------------------

    async def serve(self, mailbox: Mailbox[Any]) -> None:
        """Read the mailbox until it is stopped, then let the calls in flight finish."""
        async with trio.open_nursery() as calls:
            self.nursery = calls
            async for msg, reply in mailbox:
                if isinstance(msg, Call):
                    self._admit(msg, reply)
                elif isinstance(msg, ListTools):
                    reply.send(self.link.tools)
                elif isinstance(msg, Refresh):
                    calls.start_soon(self._refresh, msg.what)
                    if reply is not None:
                        reply.send(None)
                elif isinstance(msg, Session):
                    reply.send(self.client)

    async def watch_death(self) -> None:
        """Raise ``ConnectionDied`` when the process exits or a call path declares death."""
        proc = self.link.process
        async with trio.open_nursery() as watchers:
            if proc is not None and proc.pid is not None:

                async def process_exit() -> None:
                    await proc.exited.wait()
                    self.die(f"server process {proc.exit_status}")

                watchers.start_soon(process_exit)
            await self.died.wait()
            watchers.cancel_scope.cancel()
        assert self.death is not None
        if proc is not None and proc.pid is not None and "server process" not in str(self.death):
            with trio.move_on_after(0.5):  # a closed pipe usually means the process is dying
                await proc.exited.wait()
            if proc.exited.is_set():
                raise ConnectionDied(f"{self.death}; server process {proc.exit_status}")
        raise self.death

    def _admit(self, call: Call, reply: Reply | None) -> None:
        if reply is None:
            return
        if self.death is not None:
            reply.fail(ActorDown(f"connection to {self.spec.name!r} is dying ({self.death})", server=self.spec.name))
            return
        if len(self.inflight) < self.spec.max_concurrency:
            self._start(call, reply)
        elif len(self.waiting) < self.spec.max_queue:
            self.waiting.append((call, reply))
            self.link.queued = len(self.waiting)
        else:
            reply.fail(
                Overloaded(
                    f"server {self.spec.name!r} has {len(self.inflight)} calls in flight and "
                    f"{len(self.waiting)} waiting (max_concurrency {self.spec.max_concurrency}, "
                    f"max_queue {self.spec.max_queue})",
                    server=self.spec.name,
                )
            )

    def _start(self, call: Call, reply: Reply) -> None:
        assert self.nursery is not None
        self.inflight[reply] = call
        self.link.inflight = len(self.inflight)
        self.nursery.start_soon(self._run_call, call, reply)

    def _finished(self, reply: Reply) -> None:
        self.inflight.pop(reply, None)
        while self.waiting and len(self.inflight) < self.spec.max_concurrency:
            call, waiting_reply = self.waiting.popleft()
            if waiting_reply.answered or call.scope.cancel_called:
                continue  # its caller already gave up
            self._start(call, waiting_reply)
        self.link.inflight = len(self.inflight)
        self.link.queued = len(self.waiting)

    async def _run_call(self, call: Call, reply: Reply) -> None:
        try:
            result = None
            with call.scope:
                result = await self.client.call_tool(
                    call.tool, call.arguments, progress_callback=call.progress, meta=call.meta
                )
            if result is not None:
                self.consecutive_timeouts = 0
                reply.send(result)
            elif trio.current_time() >= call.scope.deadline:
                self._timed_out(call, reply)
            # else: the caller cancelled; nobody is waiting for an answer
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                self._crashed(reply, f"connection closed: {exc.error.message}")
            else:
                self.consecutive_timeouts = 0
                reply.fail(exc)  # the server's own JSON-RPC error, passed through unchanged
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._crashed(reply, f"transport error: {type(exc).__name__}: {exc}")
        finally:
            self._finished(reply)

    def _timed_out(self, call: Call, reply: Reply) -> None:
        self.consecutive_timeouts += 1
        reply.fail(
            DeadlineExceeded(
                f"tool {call.tool!r} on server {self.spec.name!r} did not answer in time; "
                "the request was cancelled on the server, but it may have run",
                server=self.spec.name,
                tool=call.tool,
            )
        )
        if self.consecutive_timeouts >= self.spec.hang_threshold:
            self.die(f"{self.consecutive_timeouts} consecutive calls timed out (hang_threshold)")

    def _crashed(self, reply: Reply, why: str) -> None:
        reply.fail(self._crash_failure(why))
        self.die(why)

    def _crash_failure(self, why: str) -> ServerCrashed:
        return ServerCrashed(
            f"server {self.spec.name!r} died while the call was in flight ({why}); "
            "the call may or may not have run",
            server=self.spec.name,
        )

    def fail_all(self, why: str) -> None:
        """The incarnation is ending: answer every call it holds (see module guarantees)."""
        crash = self._crash_failure(why)
        for reply in list(self.inflight):
            reply.fail(crash)
        self.inflight.clear()
        never_sent = ActorDown(
            f"connection to {self.spec.name!r} ended before the call was sent ({why})", server=self.spec.name
        )
        for _, reply in self.waiting:
            reply.fail(never_sent)
        self.waiting.clear()

    # -- notifications ------------------------------------------------------------------

    async def on_message(self, message: Any) -> None:
        """The SDK's message handler: garbage counting and list_changed (legacy servers)."""
        if isinstance(message, Exception):
            self.garbage += 1
            log.warning("server %r wrote a line that is not JSON-RPC (%d so far)", self.spec.name, self.garbage)
            if self.garbage > self.spec.garbage_threshold:
                self.die(f"{self.garbage} lines on stdout were not JSON-RPC (garbage_threshold)")
            return
        root = getattr(message, "root", message)
        if isinstance(root, mcp_types.ToolListChangedNotification):
            self._refresh_soon("tools")
        elif isinstance(root, mcp_types.PromptListChangedNotification):
            self._refresh_soon("prompts")
        elif isinstance(root, mcp_types.ResourceListChangedNotification):
            self._refresh_soon("resources")

    def _refresh_soon(self, what: str) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(self._refresh, what)

    async def listen_modern(self) -> None:
        """2026-07-28 servers announce list changes only on a ``subscriptions/listen`` stream."""
        caps = self.client.server_capabilities
        wants = {
            "tools_list_changed": bool(caps.tools and caps.tools.list_changed),
            "prompts_list_changed": bool(caps.prompts and caps.prompts.list_changed),
            "resources_list_changed": bool(caps.resources and caps.resources.list_changed),
        }
        if not any(wants.values()):
            return
        try:
            async with self.client.listen(**wants) as subscription:
                async for event in subscription:
                    kind = type(event).__name__.lower()
                    what = "tools" if "tool" in kind else "prompts" if "prompt" in kind else "resources"
                    await self._refresh(what)
        except Exception as exc:  # the server refused or dropped the stream: the call path still works
            log.info("server %r: no list_changed stream (%s)", self.spec.name, _unwrap(exc))

    async def _refresh(self, what: str) -> None:
        try:
            with trio.fail_after(self.spec.timeout):
                await learn(self.client, self.link, what)
        except Exception as exc:
            log.warning("server %r: refreshing %s failed: %s", self.spec.name, what, _unwrap(exc))
            return
        publish("tools_changed" if what == "tools" else f"{what}_changed", data={"count": len(self.link.tools)})

    async def expire_tools(self, ttl: float) -> None:
        while True:
            await trio.sleep(ttl)
            await self._refresh("tools")


async def learn(client: Client, link: ServerLink, what: str = "all") -> None:
    """Read the server's tools (and prompts, resources when advertised) into ``link``."""
    caps = client.server_capabilities
    if what in ("all", "tools"):
        tools: list[ToolSpec] = []
        cursor = None
        for _ in range(100):  # a paginator that never ends cannot hang us
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            tools.extend(_tool_spec(t, link.name) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        link._publish_tools(tools)
    if what in ("all", "prompts") and caps.prompts is not None:
        link.prompts = list((await client.list_prompts()).prompts)
    if what in ("all", "resources") and caps.resources is not None:
        link.resources = list((await client.list_resources()).resources)
        link.resource_templates = list((await client.list_resource_templates()).resource_templates)


async def _live(
    spec: ServerSpec, proc: ServerProcess | None, state: _Connection, mailbox: Mailbox[Any], link: ServerLink
) -> str:
    """Serve until stopped (returns why) or dead (raises). Answers every call either way."""
    why = "stopped by the supervisor"
    died = False
    try:
        async with trio.open_nursery() as side:
            side.start_soon(state.watch_death)
            side.start_soon(state.listen_modern)
            if spec.tools_ttl:
                side.start_soon(state.expire_tools, spec.tools_ttl)
            await state.serve(mailbox)
            side.cancel_scope.cancel()
        return why
    except BaseException as exc:
        cause = _unwrap(exc)
        if not isinstance(cause, trio.Cancelled):
            died = True
            why = str(cause) if isinstance(cause, ConnectionDied) else f"{type(cause).__name__}: {cause}"
        raise
    finally:
        # In-flight calls first (ServerCrashed), then whatever is left in the mailbox
        # (ActorDown: never sent, safe to send again).
        state.fail_all(why)
        mailbox.close(why)
        link._down(why)
        if died and proc is not None and proc.pid is not None:
            await kill_group(proc.pid, 0)  # a dead or hung server gets no grace period


async def run_connection(
    spec: ServerSpec,
    link: ServerLink,
    *,
    inproc: Any = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """One incarnation of the connection to ``spec``: a supervised child's start function.

    Reports ready (``task_status.started(ref)``) once connected, initialized and with its
    tools learned, all within ``connect_timeout``. Returns normally only when asked to stop
    (its ref's ``stop()``) and drained; every other end raises ``ConnectionDied`` naming the
    cause (the SDK's exception groups are unwrapped so the supervisor reports the cause).
    """
    proc = ServerProcess() if spec.command is not None and inproc is None else None
    link.process = proc
    mailbox: Mailbox[Any] = Mailbox(f"connection:{spec.name}", size=max(16, spec.max_queue))
    early_garbage: list[Exception] = []
    state: _Connection | None = None

    async def on_message(message: Any) -> None:
        if state is not None:
            await state.on_message(message)
        elif isinstance(message, Exception):
            early_garbage.append(message)

    why = "stopped by the supervisor"
    try:
        # One scope spans the connection's whole life (a scope entered around the client's
        # entry must also enclose its exit); its deadline is lifted once we are ready.
        with trio.CancelScope(deadline=trio.current_time() + spec.connect_timeout) as connecting:
            try:
                transport = _transport(spec, proc or ServerProcess(), inproc)
                async with Client(transport, message_handler=on_message) as client:
                    await learn(client, link)
                    connecting.deadline = math.inf
                    state = _Connection(spec, link, client, mailbox)
                    state.garbage = len(early_garbage)
                    link.protocol_version = client.protocol_version
                    link.capabilities = client.server_capabilities
                    link._up(mailbox.ref)
                    task_status.started(mailbox.ref)
                    why = await _live(spec, proc, state, mailbox, link)
            except Exception as exc:
                cause = _unwrap(exc)
                if state is None and not isinstance(cause, ConnectionDied):
                    raise ConnectionDied(f"could not connect: {type(cause).__name__}: {cause}") from cause
                raise
        if connecting.cancelled_caught:
            raise ConnectionDied(f"could not connect and initialize within connect_timeout {spec.connect_timeout:g} s")
    except BaseException as exc:
        cause = _unwrap(exc)
        if isinstance(cause, trio.Cancelled):
            raise
        link._down(str(cause))
        if proc is not None and proc.stderr:
            log.warning(
                "server %r ended (%s); last stderr lines:\n  %s", spec.name, cause, "\n  ".join(proc.stderr_tail(20))
            )
        if cause is not exc and isinstance(cause, Exception):
            raise cause from None  # the cause, not the SDK's task-group wrapping
        raise
    finally:
        mailbox.close(why)
