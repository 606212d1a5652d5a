"""The ``server:<name>`` subtree: breaker and connection under one rest_for_one supervisor.

::

    server:<name>         rest_for_one
    ├── breaker:<name>    the circuit breaker actor; its view outlives it
    └── connection:<name> the connection actor; its ServerLink outlives it

The subtree wires the two together and to the registry: the connection going down opens
the breaker (``ConnectionDown``, with the time of the next restart attempt as soon as the
supervisor has chosen it), coming back closes it (``ConnectionUp``), and every tool list the
connection learns is published to the registry.

Neither this subtree nor ``servers`` has a restart intensity: the connection's backoff
paces its restarts (0.5 s doubling to 30 s by default) and ``backoff.max_consecutive``
bounds them (the server is then ``failed``). An intensity gave nothing but harm here: a
server whose backoff let it restart more than 10 times a minute made its subtree give up,
and the subtree's restart by ``servers`` began its counts again (``max_consecutive`` was
never reached, the status's restarts went back to 0); enough such give-ups made
``servers`` give up too, and the root restarted every server, the healthy ones included.
One server never takes its siblings down.

A `ServerHandle` outlives its subtree: a replacement (a reload that changes the server's
spec) stops the subtree, hands the handle the new spec (`ServerHandle.replace_spec`) and
starts a new subtree on the same handle, so the link, the breaker's view and the
registry's entries carry over and callers wait (`ServerHandle.wait_replaced`) instead of
failing. A reload that changes only `LIVE_KEYS` needs none of that: `ServerHandle.update`
hands the running server its new spec, and it goes on with the same process and session
(a stateful server keeps its state).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Final

import msgspec
import trio

from actors import Mailbox, ServerLink, run_connection
from actors._breaker import (
    BreakerView,
    ConnectionDown,
    ConnectionUp,
    Connecting,
    SetPolicy,
    breaker_actor,
    check_policy,
    report_outcome,
)
from actors._metrics import MetricsRef
from actors._registry import PublishTools, Registry, ServerAvailability
from actors._retry import RetryBudget
from protocol import ActorDown, CallOutcome, Overloaded, ServerSpec, ServerUnavailable

from ._tree import ChildExited, ChildSpec, Restart, Strategy, TreeSupervisor, _Child

__all__ = [
    "LIVE_KEYS",
    "ServerHandle",
    "changes_live",
    "connection_policy",
    "server_child_spec",
]

log = logging.getLogger("supervisor.servers")

#: The `ServerSpec` keys a running server takes in place (`ServerHandle.update`). Each is
#: read where it is used: per call (``timeout``, ``retry``, ``retry_safe_tools``,
#: ``trust_annotations``, ``max_concurrency``, ``max_queue``, ``hang_threshold``), per line
#: (``garbage_threshold``), per connection attempt (``connect_timeout``), by the registry
#: (``namespace``, ``categories``: the tools are published again), by the breaker actor
#: (``breaker``: `SetPolicy`), by the periodic checks, which start over
#: (``health_check_interval``, ``health_check_timeout``, ``tools_ttl``), or by the
#: supervisors (``restart``, ``shutdown_timeout``, ``backoff``: `TreeSupervisor.update_child`).
#: The other keys say what the server is (``command``, ``args``, ``env``, ``cwd``, ``url``,
#: ``transport``, ``headers``) or are read when its wire is opened (``max_message_bytes``),
#: so changing one replaces it. A key added to `ServerSpec` is not live until it is named
#: here.
LIVE_KEYS: Final = frozenset({
    "timeout", "retry", "retry_safe_tools", "trust_annotations", "max_concurrency", "max_queue",
    "hang_threshold", "garbage_threshold", "connect_timeout", "namespace", "categories", "breaker",
    "health_check_interval", "health_check_timeout", "tools_ttl", "restart", "shutdown_timeout", "backoff",
    # Which variables the values came from: new values change what they went into anyway.
    "from_environ",
})


def changes_live(old: ServerSpec, new: ServerSpec) -> bool:
    """Whether ``new`` differs from ``old`` (same name) only in `LIVE_KEYS`."""
    return all(getattr(old, key) == getattr(new, key) for key in ServerSpec.__struct_fields__ if key not in LIVE_KEYS)


class ServerHandle:
    """Everything the call path needs of one server, stable across every restart and
    every replacement (a config reload that changes the server's spec).

    ``replacing`` is an event while the server is being replaced (see `replace_spec`), None
    otherwise: a call that finds it set waits on `wait_replaced` instead of reaching the old
    incarnation or its breaker.
    """

    def __init__(self, spec: ServerSpec, registry: Registry, metrics: MetricsRef | None = None) -> None:
        self.spec = spec
        self.link = ServerLink(spec)
        self.breaker = BreakerView(spec.name)
        self.breaker_ref: Any = None
        self.budget = RetryBudget.from_policy(spec.retry)
        self.registry = registry
        self.metrics = metrics
        self.replacing: trio.Event | None = None
        self.subtree: TreeSupervisor | None = None  # the running (or last) ``server:<name>``
        #: The operator's ``ForceOpen`` or ``Disable`` in force (`Supervisor.set_breaker`):
        #: told to every breaker this handle starts, until a reset or a replacement.
        self.override: Any = None
        #: Its tools left the registry for good: a removal is under way, draining it. The
        #: link, still up for the drain, re-reads its tools (``tools_ttl``, ``list_changed``)
        #: and would publish them again; they are not published any more.
        self.withdrawn = False
        self.link.listeners.append(self._on_link)

    @property
    def name(self) -> str:
        return self.spec.name

    def replace_spec(self, spec: ServerSpec) -> None:
        """Adopt ``spec`` (same name) for the next incarnation.

        Call it only while no ``server:<name>`` subtree runs (between stopping the old one
        and starting the new one), or through `update` for a change in `LIVE_KEYS`: the
        link, the breaker's view and the retry budget are kept (the budget is rebuilt only
        when the retry policy changed), so callers holding this handle, and calls waiting
        on the link for the next incarnation, reach the new one.
        """
        if spec.name != self.spec.name:
            raise ValueError(f"server {self.name!r} cannot become {spec.name!r}")
        if spec.retry != self.spec.retry:
            self.budget = RetryBudget.from_policy(spec.retry)
        self.spec = spec
        self.link.spec = spec

    async def update(self, spec: ServerSpec) -> None:
        """Adopt ``spec``, which differs from the current spec only in `LIVE_KEYS`, while the
        server runs: the connection (if any) reads it from now on, and so does every later
        incarnation; calls in flight are not disturbed (a call keeps the deadline it started
        with); calls waiting for a slot look again at the new ``max_concurrency``; the tools
        are published again under the new ``namespace`` and ``categories``; the breaker goes
        on under its new policy (`BreakerCore.set_policy`); the subtree supervises the
        connection by the new ``restart``, ``shutdown_timeout`` and ``backoff`` from its next
        exit on (the ``servers`` supervisor's own backoff for the subtree is the caller's).
        Raises ``ValueError`` (and changes nothing) for a change outside `LIVE_KEYS` or a
        breaker policy no breaker can run."""
        if not changes_live(self.spec, spec):
            raise ValueError(f"server {self.name!r}: only {sorted(LIVE_KEYS)} change in place")
        check_policy(spec.breaker)
        old = self.spec
        if spec.breaker != old.breaker:
            self._tell(self.breaker_ref, SetPolicy(spec.breaker))
        self.replace_spec(spec)
        conn = self.link.conn
        if conn is not None:
            conn.reconfigure(spec)
        if self.link.tools_version:
            self._on_link("tools", self.link)
        if connection_policy(spec) != connection_policy(old) and self.subtree is not None:
            try:
                await self.subtree.update_child(f"connection:{self.name}", **connection_policy(spec))
            except (ActorDown, KeyError):
                pass  # the subtree is not running: its next start reads ``self.spec``

    async def wait_replaced(self, deadline: float) -> None:
        """Wait (up to ``deadline``, trio time) until the replacement under way is over.

        Returns at once when none is. Raises ``ServerUnavailable`` at the deadline. Once it
        returns, the new incarnation is connected or its first attempt has failed (then the
        breaker answers as for any server that is down).
        """
        while (replacing := self.replacing) is not None:
            with trio.move_on_at(deadline):
                await replacing.wait()
                continue
            raise ServerUnavailable(
                f"server {self.name!r} is being replaced (its config changed, or an operator restarted it) "
                "and its new incarnation was not ready by the call's deadline",
                server=self.name,
            )

    def _tell(self, ref: Any, msg: Any) -> None:
        if ref is None:
            return
        try:
            ref.tell_nowait(msg)
        except (Overloaded, ActorDown) as exc:
            log.warning("server %r: could not tell %s (%s)", self.name, type(msg).__name__, exc)

    def _on_link(self, kind: str, link: ServerLink) -> None:
        if kind == "up":
            self._tell(self.breaker_ref, ConnectionUp())
            if not self.withdrawn:
                self._tell(self.registry.ref, ServerAvailability(self.name, True))
        elif kind == "down":
            self._tell(self.breaker_ref, ConnectionDown(reason=f"connection down: {link.down_reason}"))
            self._tell(self.registry.ref, ServerAvailability(self.name, False))
            if self.subtree is not None:
                self.subtree.link_down(link.down_reason)
        elif kind == "tools" and not self.withdrawn:
            self._tell(self.registry.ref, PublishTools.for_server(self.spec, link.tools_version, link.tools))

    def restarting(self, reason: str | None, retry_at: float | None) -> None:
        self._tell(self.breaker_ref, ConnectionDown(reason=f"connection down: {reason}", retry_at=retry_at))
        if retry_at == math.inf:  # no restart is coming: calls waiting for one need not
            self.link.restart_abandoned(reason or "not restarted")

    def report(self, outcome: CallOutcome) -> None:
        """Tell the outcome to the breaker and metrics; never blocks, drops are counted."""
        if self.metrics is not None:
            self.metrics.report(outcome)
        if self.breaker_ref is not None:
            if not outcome.sent:  # it never reached the server: nothing for the breaker to judge
                outcome = msgspec.structs.replace(outcome, outcome="cancelled")
            report_outcome(self.breaker, self.breaker_ref, outcome)

    async def run_breaker(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        mailbox: Mailbox[Any] = Mailbox(f"breaker:{self.name}", 256)
        if self.override is not None:  # a breaker restarted with its subtree keeps the fence
            mailbox.ref.tell_nowait(self.override)
        self.breaker_ref = mailbox.ref
        task_status.started(mailbox.ref)
        try:
            await breaker_actor(mailbox, self.spec.breaker, self.breaker, self.name)
        finally:
            mailbox.close("stopped")


def server_child_spec(handle: ServerHandle, *, inproc: Any = None) -> ChildSpec:
    """The child spec of ``server:<name>`` for the ``servers`` supervisor. Each start of the
    subtree reads ``handle.spec`` then, so an update in place reaches it."""
    name = handle.name

    async def start(*, task_status: Any) -> None:
        breaker = ChildSpec(id=f"breaker:{name}", start=handle.run_breaker, shutdown=1.0)
        connection = ChildSpec(
            id=f"connection:{name}",
            start=functools.partial(run_connection, handle.link, inproc=inproc),
            **connection_policy(handle.spec),
        )
        handle.subtree = _ServerSubtree(f"server:{name}", [breaker, connection], handle)
        await handle.subtree.run(task_status=task_status)

    return ChildSpec(id=f"server:{name}", start=start, supervisor=True, backoff=handle.spec.backoff)


def connection_policy(spec: ServerSpec) -> dict[str, Any]:
    """How the connection child of ``spec`` is supervised (`ChildSpec` fields)."""
    return {"restart": Restart(spec.restart), "shutdown": spec.shutdown_timeout, "backoff": spec.backoff}


class _ServerSubtree(TreeSupervisor):
    """rest_for_one over breaker and connection; shows the link's detail in the status."""

    def __init__(self, id: str, children: list[ChildSpec], handle: ServerHandle) -> None:
        super().__init__(id, children, strategy=Strategy.REST_FOR_ONE, intensity=None)
        self.handle = handle
        #: Why the connection ended for good by its restart type, once it has: the server
        #: then shows ``stopped``, though its subtree (the breaker) runs on.
        self.ended: str | None = None
        #: The connection incarnation whose link went down (`link_down`) before its task
        #: ended, with the state it shows meanwhile (``restarting``; ``stopped`` for a
        #: temporary one), or None.
        self._down: tuple[int, str] | None = None

    def link_down(self, reason: str | None) -> None:
        """The running connection's link went down (a crash, a hang, a dead wire): its task is
        still being torn down (for a hung process, up to a second or more) and the tree learns
        of its exit only after that. Meanwhile the status shows the connection going down
        (``restarting``, or ``stopped`` for a temporary one, with the reason) and a ``down``
        event tells the metrics the same, at once: no ``running`` for a connection already
        declared dead. Not for a stop the supervisor asked for."""
        child = self._children.get(f"connection:{self.handle.name}")
        if child is None or child.state != "running" or child.stopping:
            return
        state = "stopped" if child.spec.restart is Restart.TEMPORARY else "restarting"
        self._down = (child.incarnation, state)
        self._publish("down", child, reason=reason, data={"state": state})

    def _launch(self, child: _Child) -> None:
        super()._launch(child)
        if child.id.startswith("connection:") and (ref := self.handle.breaker_ref) is not None:
            # The restart's time has come: the breaker tells callers an attempt is under
            # way (up to connect_timeout), no longer a trial expected "in 0 s". A breaker
            # whose connection is not down (a first start) ignores it.
            try:
                ref.tell_nowait(Connecting(trio.current_time(), self.handle.spec.connect_timeout))
            except (Overloaded, ActorDown):
                pass  # a breaker restarting with it starts fresh anyway

    async def _on_exit(self, msg: ChildExited) -> None:
        before = self._children.get(msg.id)
        deliberate = msg.stopped or (before is not None and before.stopping)
        await super()._on_exit(msg)
        if before is None or deliberate or not msg.id.startswith("connection:"):
            return
        child = self._children.get(msg.id)
        if child is None or (child.state == "stopped" and self._gave_up is None):
            # Ended for good by its restart type (temporary: removed; transient: a normal exit).
            self.ended = (
                f"{before.last_exit}; not restarted (restart: {before.spec.restart.value}): "
                f"restart_server starts it again (the CLI: `restart {self.handle.name}`)"
            )
            self.handle.restarting(self.ended, math.inf)
        elif child.state == "restarting":
            self.handle.restarting(child.last_exit, child.next_attempt_at)
        elif child.state == "failed":  # no restart is coming: no time to promise
            self.handle.restarting(
                f"{child.last_exit}; failed for good after backoff.max_consecutive failures in a row "
                f"(restart_server brings it back; the CLI: `restart {self.handle.name}`)",
                math.inf,
            )

    def status(self):  # type: ignore[no-untyped-def]
        node = super().status()
        if self.ended is not None:
            node.state, node.last_exit = "stopped", self.ended
        for child in node.children:
            if child.id.startswith("connection:"):
                child.detail = self.handle.link.detail()
                record = self._children.get(child.id)
                down = self._down
                if (
                    down is not None and record is not None and record.incarnation == down[0]
                    and record.state == "running" and not record.stopping
                ):  # its link is down, its exit not yet seen (`link_down`)
                    child.state, child.uptime = down[1], None  # type: ignore[assignment]
                    child.last_exit = self.handle.link.down_reason
            elif child.id.startswith("breaker:"):
                view = self.handle.breaker
                # In seconds from now: the trio clock's own reading means nothing outside
                # this process (it starts at a random offset).
                now = trio.current_time()
                connecting = view.connecting
                # While an attempt is under way its start is no promise of a trial "in 0 s".
                retry_in = (
                    None if connecting is not None or view.retry_at in (None, math.inf)
                    else max(0.0, view.retry_at - now)
                )
                child.detail = {"state": view.state, "reason": view.reason, "retry_in": retry_in}
                if connecting is not None:  # an attempt is under way
                    child.detail["connecting_for"] = max(0.0, now - connecting[0])
                    child.detail["connect_timeout"] = connecting[1]
        return node
