"""The public façade: ``async with Supervisor(servers) as sup`` and one call path.

The tree it runs::

    root                      one_for_one
    ├── metrics               permanent: outcomes, latency sketches, restarts, breaker states
    ├── registry              permanent: every server's tools, namespaced, validated
    └── servers               one_for_one, children added and removed at run time
        └── server:<name>     rest_for_one
            ├── breaker:<name>
            └── connection:<name>

One call: resolve the tool through the registry's view -> validate the arguments (JSON
Schema 2020-12) -> the breaker's view admits it (or a trial permit is asked for) -> the live
connection runs it in the caller's task -> the outcome goes to the breaker with ``tell``.
Retries wrap the breaker, so every attempt is counted.

Guarantees of ``call_tool``:

- It returns the tool's result (``mcp_types.CallToolResult``, ``isError`` included) or
  raises exactly one typed ``Failure`` (or the server's own ``MCPError``), by the call's
  deadline: ``timeout`` or the server's default.
- A call that never reached a server is retried (backoff with full jitter, within the
  deadline and the server's retry budget). One that may have run is retried only when the
  tool is retry-safe (``readOnlyHint``/``idempotentHint`` on a server whose annotations
  are trusted, or listed in ``retry_safe_tools``).
- While a server is down its breaker is open: calls fail fast with ``CircuitOpen`` saying
  when the next attempt is.
- Cancelling the caller cancels the call on the server.
- A tool is callable as soon as its server is connected: the registry's view takes the
  tools a message later, so a name not found in it is looked up again once the registry
  has handled what it was told (`_caught_up`), and ``wait_connected`` returns only then.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import trio
from mcp import MCPError

from actors import Call, EventBus
from actors._breaker import Disable, ForceOpen, Permit, PermitGranted, Reset, admit_call
from actors._connection import announce_lists
from actors._events import _BUS
from actors._front import DECLINE, HostFront, host_front
from actors._metrics import MetricsRef
from actors._registry import NAMESPACE_SEPARATOR, Registry
from actors._retry import call_with_retry, retry_safe_after_send
from actors._wire import unsendable
from protocol import (
    CallOutcome,
    ChildStatus,
    CircuitOpen,
    Event,
    Failure,
    InvalidArguments,
    MetricsSnapshot,
    ServerSpec,
    ServerUnavailable,
    ToolSpec,
    UnknownTool,
)
from protocol._metrics import OTHER_TOOL

from ._config import check_spec
from ._prometheus import render_metrics
from ._redact import RedactingBus, Redactor
from ._servers import ServerHandle, changes_live, server_child_spec
from ._tree import ChildSpec, TreeSupervisor

__all__ = ["Supervisor"]

_SYNC_TIMEOUT = 1.0  # s for the registry to catch up before a tool is called unknown
_OPERATOR_ASK_TIMEOUT = 10.0  # s for the breaker actor to take an operator's message


class Supervisor:
    """Supervises MCP servers and routes tool calls to them.

    ``inproc`` maps a server name to an in-process server object (``MCPServer``) used
    instead of a transport, for tests and benchmarks. ``toolsets`` adds per-agent toolsets
    to the seed's defaults.

    ``on_input_request``, an async ``handler(server, request)``, answers what a server asks
    while serving a call that has no client of its own to ask (``sampling/createMessage``,
    ``elicitation/create``, ``roots/list``; ``request`` is the ``mcp_types`` request): it
    returns the ``mcp_types`` result, or ``mcp_types.ErrorData`` to refuse. It is bounded by
    the server's ``timeout``. Without one, every such request is declined with a message
    that says what was asked.
    """

    def __init__(
        self,
        servers: list[ServerSpec],
        *,
        inproc: dict[str, Any] | None = None,
        toolsets: dict[str, list[str]] | None = None,
        on_input_request: Any = None,
    ) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names: {sorted({n for n in names if names.count(n) > 1})}")
        self._inproc = dict(inproc or {})
        for spec in servers:
            self._check(spec)
        self._specs = {s.name: s for s in servers}
        #: Hides the configured secrets in what leaves: failures, status, events (`_redact`).
        self.redactor = Redactor(servers)
        self._handles: dict[str, ServerHandle] = {}
        #: Servers being replaced, updated or removed: one such change per server at a time.
        self._changing: dict[str, trio.Event] = {}  # each set once its change is over
        #: The waits for a new incarnation's first attempt under way (`_first_attempt`),
        #: which `begin_stop` ends; and whether it was called.
        self._first_attempts: set[trio.CancelScope] = set()
        self._stopping = False
        self._bus: EventBus = RedactingBus(self.redactor)
        # Unbounded: its senders are the servers' subtrees (one message per change, never
        # blocking), and a dropped PublishTools would lose that server's tools for good.
        self.registry = Registry(toolsets=toolsets, mailbox_size=math.inf)
        self.metrics = MetricsRef()
        self._servers = TreeSupervisor("servers", intensity=None, concurrent_starts=True)
        self._root = TreeSupervisor(
            "root",
            [
                ChildSpec(id="metrics", start=self.metrics.run, shutdown=1.0),
                ChildSpec(id="registry", start=self.registry.run, shutdown=1.0),
                ChildSpec(id="servers", start=self._servers.run, supervisor=True),
            ],
        )
        self._nursery_cm: Any = None
        self._host_front = HostFront(on_input_request) if on_input_request is not None else DECLINE

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        token = _BUS.set(self._bus)
        front_token = host_front.set(self._host_front)  # every actor of the tree inherits it
        try:
            await nursery.start(self._root.run)
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
            host_front.reset(front_token)
        return self

    def begin_stop(self) -> None:
        """The supervisor is about to stop: no addition or replacement (a reload's, an
        operator's ``restart_server``) waits any more for its new incarnation's first
        attempt, neither one under way nor one begun later. Each returns once the new
        ``server:<name>`` subtree is in the tree, with its status as it is then
        (``starting``); the tree's stop stops it. Nothing else changes: calls go on, and
        what a replacement must not leave half-done (the old incarnation's stop, the swap
        of the spec, the hand-over of the new subtree) still runs to its end. A host calls
        it as its drain begins (a daemon's first SIGTERM); the ``async with``'s exit calls
        it too."""
        self._stopping = True
        for scope in self._first_attempts:
            scope.cancel()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self.begin_stop()
        # No incarnation comes once the stop begins: a call (of a task outside) waiting for
        # one ends now, not after the slowest server's stop. Calls in flight drain as before.
        for handle in self._handles.values():
            handle.link.retire("is not supervised any more: the supervisor is stopping")
        self._root.stop()
        try:
            return await self._nursery_cm.__aexit__(*exc_info)
        finally:
            self._bus.close()  # subscribers' loops end with the supervisor

    async def add_server(self, spec: ServerSpec) -> ChildStatus:
        """Start supervising ``spec``; returns once it is connected (and its tools are in the
        registry) or its first attempt failed, or the supervisor began to stop (`begin_stop`).
        Raises ``ValueError`` for a name supervised already (the running server is not
        touched), ``RuntimeError`` while that name is being replaced or removed. (While it
        connects, it may be updated, replaced or removed.)"""
        self._check(spec)
        with self._one_change(spec.name):  # checked, not held
            if spec.name in self._handles:
                raise ValueError(f"server {spec.name!r} is supervised already (replace_server changes its spec)")
        self._specs[spec.name] = spec
        self.redactor.server(spec)
        handle = self._handles[spec.name] = ServerHandle(spec, self.registry, self.metrics)
        with self._redacted():
            status = await self._first_attempt(handle)
        if not self._stopping:
            await self.registry.sync()  # the tools it published are in the view
        return self.redactor.status(status)

    async def _first_attempt(self, handle: ServerHandle) -> ChildStatus:
        """Hand ``handle``'s new ``server:<name>`` subtree to ``servers`` and wait until it
        is connected or its first attempt ended; or, once the stop began (`begin_stop`),
        only until it is handed: its status then. The hand-over is the ask's delivery,
        made before its first checkpoint (the mailbox of ``servers`` is unbounded), so a
        stop never leaves the server listed with no subtree behind it."""
        child = server_child_spec(handle, inproc=self._inproc.get(handle.name))
        with trio.CancelScope() as waiting:
            self._first_attempts.add(waiting)
            if self._stopping:
                waiting.cancel()
            try:
                return await self._servers.add_child(child)
            finally:
                self._first_attempts.discard(waiting)
        # Cut short by the stop: in the tree, starting (or being stopped by now). Not listed
        # yet when the ask was delivered but ``servers`` has not run since: starting too.
        node = next((c for c in self._servers.status().children if c.id == child.id), None)
        return node if node is not None else ChildStatus(id=child.id, state="starting", restart="permanent")

    async def remove_server(self, name: str) -> None:
        """Stop ``name`` (draining its calls within its shutdown timeout) and forget it.

        Once begun it runs to the end, even if the caller is cancelled meanwhile (the
        cancellation is raised after): half-done, the server would stay listed with no
        process behind it."""
        with self._one_change(name), trio.CancelScope(shield=True):
            await self._remove(name)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _remove(self, name: str) -> None:
        """`remove_server`'s work, for a caller holding ``name``'s change, shielded."""
        await self._servers.remove_child(f"server:{name}")
        await self.registry.withdraw(name)
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.link.retire()
            self._announce_lists(handle, "prompts", "resources")  # its prompts, resources left the lists
        self._specs.pop(name, None)
        self.redactor.forget(name)

    async def replace_server(self, spec: ServerSpec) -> ChildStatus:
        """Run ``spec.name`` with ``spec`` from now on, without a gap for its callers.

        Guarantees:

        - Its tools stay in the registry throughout (marked unavailable while no incarnation
          runs, then as the new incarnation lists them), so no call fails ``UnknownTool``
          because of the replacement, and ``tools/list`` does not lose them.
        - A call that starts while the server is being replaced waits, within its own
          deadline, for the new incarnation (``ServerUnavailable`` if that deadline passes
          first), instead of failing ``CircuitOpen``; so does one that was waiting for a
          slot on the old incarnation.
        - Calls in flight on the old incarnation finish (it is drained within its shutdown
          timeout, as `remove_server` does); one cut off at that timeout gets a typed failure.
        - Returns once the new incarnation is connected (its tools in the registry) or its
          first attempt failed; then waiting calls go on (against a breaker that says the
          server is down, in the second case). Once the supervisor began to stop
          (`begin_stop`) it does not wait for that first attempt: it returns (and waiting
          calls go on) as soon as the new subtree is in the tree, which stops it.
        - Once begun it runs to the end (within the old spec's ``shutdown_timeout`` and the
          new one's ``connect_timeout``), even if the caller is cancelled meanwhile (the
          cancellation is raised after): half-done, the server would stay listed with no
          process behind it.
        - Its last error (the status's ``last_error``) is the old definition's no more when
          ``spec`` differs from it: a reload that fixed a crash-looping server does not show
          the crash as the fixed one's. A restart with the spec unchanged keeps it.
        - Its metric counters (calls, failures, latency, restarts, ...) go on from where
          they were, in `metrics_snapshot` and in ``/metrics``: the name is one series for
          as long as it stays supervised (see `actors._metrics`).
        - A server not supervised yet is added (`add_server`). If the new incarnation cannot
          be started at all, the server is forgotten (as by `remove_server`) and the error
          raised. One change (replacement, update or removal) of a server at a time:
          another (or an addition) while one is under way raises ``RuntimeError``.
        """
        self._check(spec)
        handle = self._handles.get(spec.name)
        if handle is None:
            return await self.add_server(spec)
        with self._one_change(spec.name):
            done = handle.replacing = trio.Event()
            try:
                with trio.CancelScope(shield=True), self._redacted():
                    status = await self._replace(handle, spec)
            finally:
                handle.replacing = None
                done.set()
        await trio.lowlevel.checkpoint_if_cancelled()
        return self.redactor.status(status)

    async def _replace(self, handle: ServerHandle, spec: ServerSpec) -> ChildStatus:
        # The name stays in the config: its metric counters go on across the new subtree.
        await self.metrics.retain(spec.name)
        old = handle.spec
        old_namespace = old.namespace
        try:
            await self._servers.remove_child(f"server:{spec.name}")
            handle.replace_spec(spec)
            if spec != old:  # another definition: the old one's failure says nothing of it
                handle.link.last_error = None
            handle.link.restart_abandoned(None)  # the new subtree brings incarnations again
            handle.override = None  # a fresh breaker
            self._specs[spec.name] = spec
            self.redactor.server(spec)
            try:
                status = await self._first_attempt(handle)
            except Exception:
                await self.registry.withdraw(spec.name)
                self._handles.pop(spec.name, None)
                self._specs.pop(spec.name, None)
                self.redactor.forget(spec.name)
                handle.link.retire()
                self._announce_lists(handle, "prompts", "resources")
                raise
            if spec.namespace != old_namespace:  # the same prompts, listed under other names
                self._announce_lists(handle, "prompts")
        finally:
            await self.metrics.retain(spec.name, keep=False)  # forgets it if it was not added back
        if not self._stopping:
            await self.registry.sync()  # the tools it published are in the view
        return status

    async def restart_server(self, name: str) -> ChildStatus:
        """Restart ``name`` now, as an operator does (supervisorctl's ``restart``, OTP's
        ``restart_child``): `replace_server` with its spec unchanged, so with the same
        guarantees (its tools stay listed, new calls wait for the new incarnation within
        their deadlines, calls in flight on the old one finish).

        The new incarnation starts at once, with a closed breaker and a clean restart
        history: this also brings back a server marked ``failed`` after
        ``backoff.max_consecutive`` failures in a row. Raises ``KeyError`` for a server not
        supervised, ``RuntimeError`` while it is being replaced or removed.
        """
        handle = self._supervised(name)
        return await self.replace_server(handle.spec)

    async def set_breaker(self, name: str, action: str, reason: str = "operator") -> ChildStatus:
        """The operator's hand on ``name``'s circuit breaker; the server's status after it.

        - ``"open"``: fence the server off. Every call fails fast with `CircuitOpen` naming
          ``reason``, whatever the server's health, until ``"reset"``; the server process
          keeps running and is not touched.
        - ``"disable"``: let every call through and count nothing, until ``"reset"``.
        - ``"reset"``: back to ``closed`` with fresh counts (``open`` while the connection is
          down).

        The override outlives the connection's restarts and the server subtree's (a new
        breaker is told it at once); replacing the server (`restart_server`, a reload that
        changes what it is) starts it with a fresh breaker.
        Raises ``KeyError`` for a server not supervised, ``ValueError`` for another action,
        ``RuntimeError`` while its breaker is not running (being started or replaced).
        """
        messages = {"open": lambda: ForceOpen(reason), "disable": lambda: Disable(reason), "reset": Reset}
        if action not in messages:
            raise ValueError(f"no breaker action {action!r} (one of: {', '.join(messages)})")
        handle = self._supervised(name)
        if handle.breaker_ref is None or handle.replacing is not None:
            raise RuntimeError(f"server {name!r} has no running breaker now (being started or replaced); try again")
        message = messages[action]()
        await handle.breaker_ref.ask(message, _OPERATOR_ASK_TIMEOUT)
        handle.override = None if action == "reset" else message
        (servers,) = [child for child in self.status().children if child.id == "servers"]
        (server,) = [child for child in servers.children if child.id == f"server:{name}"]
        return server

    def _check(self, spec: ServerSpec) -> None:
        """`check_spec`, and a spec with no server behind it refused (``ValueError``): made
        in code with neither ``command`` nor ``url`` and no in-process server given for its
        name, it would restart for ever, failing each connect with a bare assertion."""
        check_spec(spec)
        if spec.command is not None and spec.url is not None:
            raise ValueError(f"server {spec.name!r}: both command and url are set: a server is either one")
        if spec.kind == "inproc" and spec.name not in self._inproc:
            raise ValueError(
                f"server {spec.name!r}: neither command (stdio) nor url (remote) is set, and no "
                "in-process server was given for it (inproc=)"
            )

    def _supervised(self, name: str) -> ServerHandle:
        """The handle of server ``name``; ``KeyError`` naming the supervised ones otherwise."""
        handle = self._handles.get(name)
        if handle is None:
            raise KeyError(f"no server {name!r} (supervised: {', '.join(sorted(self._handles)) or 'none'})")
        return handle

    def _announce_lists(self, handle: ServerHandle, *whats: str) -> None:
        """Tell subscribers (the gateway, which tells its clients) that the prompts or
        resources lists changed because of what was done to ``handle``'s server here: it
        left the supervised set, or its prompts were renamed. Its connection, which
        announces what each of its incarnations reads (`telling_list_changes`), is not
        running or does not know. Only the lists it showed any of are announced."""
        token = _BUS.set(self._bus)  # the caller's task may not be the tree's
        try:
            announce_lists(handle.link, *whats, path=f"root/servers/server:{handle.name}")
        finally:
            _BUS.reset(token)

    @contextlib.contextmanager
    def _one_change(self, name: str) -> Iterator[None]:
        if name in self._changing:
            raise RuntimeError(f"server {name!r} is being replaced or removed; wait for that to finish")
        self._changing[name] = trio.Event()
        try:
            yield
        finally:
            self._changing.pop(name).set()


    async def reconcile(
        self,
        wanted: list[ServerSpec],
        *,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> dict[str, list[str]]:
        """Supervise exactly the enabled specs of ``wanted``, diffed by name against the
        servers supervised now; returns the names under ``added``, ``removed``, ``updated``
        (changed in place), ``replaced`` (changed, and so replaced) and ``unchanged``.

        Removed servers' tools are withdrawn first, so their names are free for the others
        at once. Then, all at the same time: removed servers stop (draining, as
        `remove_server`), a changed server whose spec differs only in `LIVE_KEYS` is updated
        in place (`ServerHandle.update`: same process, same session, nothing in flight
        disturbed), other changed ones are replaced (`replace_server`: no gap for callers)
        and added ones start; a removed server's drain holds up no other server. Only an
        added server that runs the very same command as a removed one (``command``,
        ``args``, ``cwd`` and ``env``: a renamed server) starts once that one has stopped,
        so the two never run side by side. A server to remove that is being changed meanwhile
        (an operator's `restart_server` or `remove_server`, another reload) is removed once
        that change is over, its tools withdrawn only then (an added server exposing the same
        names meanwhile has them refused as a collision until then). Unchanged ones are not touched. A spec with a
        number out of its range raises ``ValueError`` before anything changes. With
        ``on_error``, a server whose step raised is reported to it (and left out of the
        names returned) and the others go on; without, the errors propagate (as an
        exception group) once every step has ended.
        """
        specs = {s.name: s for s in wanted if s.enabled}
        for spec in specs.values():  # all checked before anything changes
            self._check(spec)
        current = {name: handle.spec for name, handle in self._handles.items()}
        added = [n for n in specs if n not in current]
        removed = [n for n in current if n not in specs]
        changed = [n for n in specs if n in current and specs[n] != current[n]]
        unchanged = [n for n in specs if n in current and specs[n] == current[n]]
        updated = [n for n in changed if changes_live(current[n], specs[n])]

        failed: set[str] = set()

        async def step(name: str, action: Callable[[Any], Awaitable[Any]], arg: Any) -> None:
            if on_error is None:
                await action(arg)
                return
            try:
                await action(arg)
            except Exception as exc:  # one server's trouble must not abort the others
                failed.add(name)
                on_error(name, exc)

        stopped = {name: trio.Event() for name in removed}

        async def removal(name: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                if name in self._changing:  # an operator's change (or another reload's) under way
                    task_status.started()
                    task_status = trio.TASK_STATUS_IGNORED
                    while (other := self._changing.get(name)) is not None:
                        await other.wait()  # the config wins once that change is over
                    if name not in self._handles:  # that change removed it
                        return
                with self._one_change(name), trio.CancelScope(shield=True):  # begun, runs to the end
                    if (handle := self._handles.get(name)) is not None:
                        handle.withdrawn = True  # its drain publishes no tools again
                    with contextlib.suppress(Exception):  # (the registry down: `_remove` raises it)
                        await self.registry.withdraw(name)  # its tool names are free from now on
                    task_status.started()
                    await step(name, self._remove, name)
            finally:
                stopped[name].set()

        async def addition(spec: ServerSpec) -> None:
            for gone in removed:
                if _same_command(current[gone], spec):
                    await stopped[gone].wait()
            await self.add_server(spec)

        async with trio.open_nursery() as nursery:
            for name in removed:
                await nursery.start(removal, name)  # once its tools are withdrawn
            await trio.lowlevel.checkpoint_if_cancelled()  # (the removals begun run to their end)
            for name in changed:
                action = self._update_server if name in updated else self.replace_server
                nursery.start_soon(step, name, action, specs[name])
            for name in added:
                nursery.start_soon(step, name, addition, specs[name])
        replaced = [n for n in changed if n not in updated]
        done = {"added": added, "removed": removed, "updated": updated, "replaced": replaced}
        return {**{what: [n for n in names if n not in failed] for what, names in done.items()}, "unchanged": unchanged}

    async def _update_server(self, spec: ServerSpec) -> None:
        with self._one_change(spec.name):
            handle = self._handles[spec.name]
            old_backoff, old_namespace = handle.spec.backoff, handle.spec.namespace
            self.redactor.server(spec)
            await handle.update(spec)
            self._specs[spec.name] = spec
            if spec.namespace != old_namespace:  # its prompts are listed under other names
                self._announce_lists(handle, "prompts")
            if spec.backoff != old_backoff:  # the subtree's own restarts, by ``servers``
                await self._servers.update_child(f"server:{spec.name}", backoff=spec.backoff)
            await self.registry.sync()  # its tools under the new names are in the view

    async def set_toolsets(self, toolsets: dict[str, list[str]]) -> None:
        """Use ``toolsets`` (added to, or replacing by name, the seed's defaults) from now on,
        in place of those given at start; ``list_tools(toolset=...)`` sees them as soon as
        this returns. An invalid one raises ``ValueError`` and changes nothing."""
        await self.registry.set_toolsets(toolsets)

    # -- introspection ------------------------------------------------------------------

    def status(self) -> ChildStatus:
        """The supervision tree now, with every configured secret as ``***`` (`Redactor`:
        ``last_exit``, the breakers' reasons, stderr tails, last errors)."""
        return self.redactor.status(self._root.status())

    def redact(self, text: str) -> str:
        """``text`` with every configured secret as ``***`` (see `supervisor._redact`), for
        text of the supervisor's that leaves by another way (the daemon's log lines)."""
        return self.redactor(text)

    @contextlib.contextmanager
    def _redacted(self) -> Iterator[None]:
        """A `Failure` or ``MCPError`` raised inside leaves with its text redacted."""
        try:
            yield
        except (Failure, MCPError) as exc:
            self.redactor.exception(exc)
            raise

    async def metrics_snapshot(self) -> MetricsSnapshot:
        """Every counter, distribution and gauge, as of now (gauges, the breakers' states
        with them, are read at this moment)."""
        for handle in self._handles.values():
            link = handle.link
            self.metrics.gauge(
                handle.name, link.inflight, link.queued, link.garbage_lines, link.oversized, handle.breaker.state
            )
        return self.redactor.deep(await self.metrics.snapshot())  # a tool's last error

    async def metrics_text(self) -> bytes:
        """The Prometheus text exposition of ``metrics_snapshot()``."""
        return render_metrics(await self.metrics_snapshot())

    def subscribe(self, size: int = 1000) -> trio.MemoryReceiveChannel[Event]:
        return self._bus.subscribe(size)

    def handle(self, server: str) -> ServerHandle:
        try:
            return self._handles[server]
        except KeyError:
            raise UnknownTool(f"no server named {server!r}", server=server) from None

    def link(self, server: str) -> Any:
        return self.handle(server).link

    def prompt_name(self, server: str, name: str) -> str:
        """The name prompt ``name`` of ``server`` is offered under where several servers'
        prompts are listed together: namespaced as the server's tools are."""
        handle = self._handles.get(server)
        prefixed = handle is not None and handle.spec.namespace == "prefix"
        return f"{server}{NAMESPACE_SEPARATOR}{name}" if prefixed else name

    @property
    def servers(self) -> list[str]:
        return list(self._handles)

    def list_tools(self, *, toolset: str | None = None, category: str | None = None) -> list[ToolSpec]:
        """The exposed tools (namespaced per config), optionally of one toolset or category."""
        return self.registry.view.list_tools(toolset=toolset, category=category)

    async def wait_connected(self, server: str, timeout: float = math.inf) -> None:
        """Wait until ``server`` is connected and the tools it listed then are in the view
        (`list_tools`, `call_tool`); raise ``ServerUnavailable`` at the timeout."""
        with self._redacted():
            await self.link(server).wait_connected(trio.current_time() + timeout)
        await self._caught_up(timeout)

    async def _caught_up(self, timeout: float | None) -> None:
        """Wait (up to `_SYNC_TIMEOUT`, or ``timeout`` if shorter) for the registry to handle
        what it was told: the view lags a server that just connected, or changed its list,
        by that much. A registry down or slow leaves the view as it is."""
        limit = _SYNC_TIMEOUT if timeout is None else min(timeout, _SYNC_TIMEOUT)
        with contextlib.suppress(Failure):
            await self.registry.sync(timeout=limit)

    # -- the call path ------------------------------------------------------------------

    def _resolve(self, name: str, server: str | None) -> Any:
        view = self.registry.view
        try:
            return view.resolve(name) if server is None else view.resolve_on(server, name)
        except UnknownTool as unknown:
            # A server that never connected has tools nobody knows yet: say so, and whether
            # it is still trying or has given up (then only an operator brings it back).
            never = [h for h in self._handles.values() if h.link.tools_version == 0]
            if server is not None and server in self._handles and self._handles[server] in never:
                handle = self._handles[server]
                why = f" (last error: {handle.link.last_error})" if handle.link.last_error else ""
                if _gave_up(handle):
                    message = (f"server {server!r} gave up connecting (backoff.max_consecutive failed starts in a row), "
                               f"so its tools are unknown; restart_server brings it back (the CLI: `restart {server}`)")
                else:
                    message = f"server {server!r} has not connected yet, so its tools are unknown"
                raise ServerUnavailable(message + why, server=server) from None
            if server is None and never:
                names = ", ".join(repr(h.name) for h in never)
                unknown.message += f" (servers not connected yet, whose tools are unknown: {names}"
                gave_up = [h.name for h in never if _gave_up(h)]
                if gave_up:
                    unknown.message += f"; gave up, until restart_server: {', '.join(map(repr, gave_up))}"
                unknown.message += ")"
                unknown.args = (unknown.message,)
            raise

    def _report_unresolved(self, server: str | None, failure: Failure) -> None:
        """Count a call to ``server`` that named no tool it is known to have (it never
        connected, or has no such tool) in its metrics, under the tool ``_OTHER``: the name
        asked for is the caller's word, and as a label each new one would be a series. Not
        told to the breaker: it says nothing of the server's health. A call naming no
        server, with a name no server has, has no server to be counted under."""
        handle = self._handles.get(server) if server is not None else None
        if handle is None or handle.metrics is None:
            return
        now = trio.current_time()
        handle.metrics.report(CallOutcome(
            server=server, tool=OTHER_TOOL, outcome=failure.kind, duration=0.0, at=now,  # type: ignore[arg-type]
            error=self.redactor(failure.message), attempt=1, sent=False,
        ))

    @staticmethod
    def _outcome(
        entry: Any, kind: str, started: float, end: float, error: str | None, attempt: int, trial: bool = False,
        sent: bool = True,
    ) -> CallOutcome:
        return CallOutcome(
            server=entry.server,
            tool=entry.tool_name,
            outcome=kind,  # type: ignore[arg-type]
            duration=end - started,
            at=end,
            error=error,
            attempt=attempt,
            trial=trial,
            sent=sent,
        )

    @staticmethod
    async def _admit(handle: ServerHandle) -> bool:
        """Pass the breaker; True when the call holds a half-open trial permit."""
        if handle.breaker_ref is None:
            return False
        try:
            return await admit_call(handle.breaker, handle.breaker_ref)
        except CircuitOpen:
            if handle.link.conn is None:
                raise
            # Connected, but the view may not show the ConnectionUp told to the actor yet:
            # a Permit asked now is answered after it (one mailbox, in order).
            granted: PermitGranted = await handle.breaker_ref.ask(Permit(), 5.0)
            return granted.trial

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        server: str | None = None,
        timeout: float | None = None,
        progress: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call the tool exposed as ``name`` (or the tool ``name`` of ``server``).

        See the module docstring for the guarantees. Raises ``TypeError`` for a ``name`` that
        is no string, ``ValueError`` for a ``timeout`` that is no finite number of seconds,
        and `InvalidArguments` for ``arguments`` or ``meta`` that are no dict. A failure's
        message and data carry no configured secret (`supervisor._redact`): an upstream's
        words (a refusal body, a server's stderr) are copied into them with those as ``***``.
        """
        try:  # (no context manager: this is every call's path)
            return await self._call_tool(name, arguments, server=server, timeout=timeout, progress=progress, meta=meta)
        except (Failure, MCPError) as exc:
            self.redactor.exception(exc)
            raise

    async def _call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        server: str | None,
        timeout: float | None,
        progress: Any,
        meta: dict[str, Any] | None,
    ) -> Any:
        _check_call(name, arguments, timeout, meta)
        try:
            try:
                entry = self._resolve(name, server)
            except UnknownTool:
                await self._caught_up(timeout)  # a tool its server listed a moment ago is known then
                entry = self._resolve(name, server)
        except (UnknownTool, ServerUnavailable) as unresolved:
            self._report_unresolved(server, unresolved)
            raise
        arguments = arguments or {}
        handle = self._handles[entry.server]
        spec = handle.spec
        now = trio.current_time()
        try:
            _sendable(entry, arguments, meta)
            entry.validate(arguments)
        except Failure as invalid:
            handle.report(self._outcome(entry, invalid.kind, now, now, self.redactor(invalid.message), 1))
            raise
        deadline = now + (spec.timeout if timeout is None else timeout)
        call = Call(entry.tool_name, arguments, deadline, progress, meta)

        async def attempt(number: int) -> Any:
            started = now if number == 1 else trio.current_time()
            call.sent_at = None
            kind, error, trial, sent = "cancelled", None, False, True
            try:
                if handle.replacing is not None:
                    # The server is being replaced (config reload): wait for the new one.
                    await handle.wait_replaced(deadline)
                    started = trio.current_time()
                elif number > 1 and handle.link.conn is None:
                    # A retry keeps its place: it waits for the server's next incarnation
                    # instead of failing fast like a new call, but not past it: should that
                    # one fail too (or none be coming) the attempt fails, never sent.
                    link = handle.link
                    await link.wait_connected(deadline, until_failures=link.failures)
                    started = trio.current_time()
                if not handle.breaker.passthrough:  # not closed, or failures not counted yet
                    trial = await self._admit(handle)
                    started = trio.current_time()
                result = await handle.link.call(call)
                # An InputRequiredResult (handed back to a 2026-07-28 front) is no error.
                kind = "tool_error" if getattr(result, "is_error", False) else "success"
                return result
            except Failure as failure:
                kind, error = failure.kind, failure.message
                # Unsent, or sent too late to say anything of the server: no verdict on it.
                sent = failure.data.get("sent") is not False and not failure.data.get("no_verdict")
                raise
            except MCPError as exc:
                kind, error = "tool_error", exc.error.message
                raise
            finally:
                # Every attempt is reported: metrics count it, the breaker counts what says
                # something about the server (and hands back a trial permit otherwise).
                # Timed from the send: the wait for a free slot says nothing of the server.
                begun = started if call.sent_at is None else call.sent_at
                error = None if error is None else self.redactor(error)  # the breaker's reason, metrics' last error
                handle.report(self._outcome(entry, kind, begun, trio.current_time(), error, number, trial, sent))

        return await call_with_retry(
            attempt,
            policy=spec.retry,
            budget=handle.budget,
            deadline=deadline,
            safe_after_send=lambda: retry_safe_after_send(spec, entry.tool_name, entry.spec),
            now=now,
        )


def _same_command(old: ServerSpec, new: ServerSpec) -> bool:
    """Whether ``new`` runs the very command ``old`` ran, in the same place and
    environment (a renamed server): two such processes side by side may contend for what
    one holds (a port, a lock file)."""
    keys = ("command", "args", "cwd", "env")
    return old.command is not None and all(getattr(old, key) == getattr(new, key) for key in keys)


def _gave_up(handle: ServerHandle) -> bool:
    """Whether the server's connection is marked failed (no restart is coming)."""
    subtree = handle.subtree
    return subtree is not None and any(
        child.id.startswith("connection:") and child.state == "failed" for child in subtree.status().children
    )


def _check_call(name: Any, arguments: Any, timeout: Any, meta: Any) -> None:
    """Refuse what ``call_tool`` was given by mistake, saying what it was (else it failed
    deep inside, as if the server had answered wrongly)."""
    if not isinstance(name, str):
        raise TypeError(f"the tool name must be a str, not {type(name).__name__}")
    check_timeout(timeout)
    for what, value in (("arguments", arguments), ("_meta", meta)):
        if value is not None and not isinstance(value, dict):
            raise InvalidArguments(f"the {what} of tool {name!r} must be a dict (a JSON object), not {type(value).__name__}")
        odd = next((key for key in value or () if not isinstance(key, str)), _NO_KEY)
        if odd is not _NO_KEY:
            have = "have" if what == "arguments" else "has"
            raise InvalidArguments(f"the {what} of tool {name!r} {have} a key that is no string: {odd!r} (JSON's are strings)")


_NO_KEY: Final = object()


def check_timeout(timeout: Any) -> None:
    """Raise ``ValueError`` unless ``timeout`` is a call's timeout: a finite number of
    seconds, or None for the server's (one <= 0 is a deadline already spent:
    ``DeadlineExceeded``, not sent)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not -math.inf < timeout < math.inf
    ):
        raise ValueError(f"timeout must be a finite number of seconds (or None for the server's), not {timeout!r}")


def _sendable(entry: Any, arguments: dict[str, Any], meta: dict[str, Any] | None) -> None:
    """Raise `InvalidArguments` unless ``arguments`` and ``meta`` can be sent (`unsendable`)."""
    for what, value in (("arguments", arguments), ("_meta", meta)):
        why = None if value is None else unsendable(value)
        if why is not None:
            raise InvalidArguments(
                f"invalid {what} for tool {entry.name!r}: cannot be sent as JSON: {why}",
                tool=entry.name,
                server=entry.server,
            )
