"""The supervision tree: child specs, strategies, restart types, intensity and backoff.

A ``TreeSupervisor`` is an actor. Its loop owns every child record; each child runs as its own
task, in its own cancel scope, and its end is captured as a ``ChildExited`` message to the
loop, which alone decides what happens next. An exception escaping a child never decides
anything by itself.

Guarantees:

- A child is *ready* when its start function calls ``task_status.started(value)``. Children
  start in spec order, each one ready (or exited) before the next starts.
- Restart with backoff: ``delay = min(max, min * 2**n) * (1 + U[0,1) * jitter)``. The first
  restart is delayed too; ``n`` resets once the child stayed ready for ``reset_after``.
  With ``max_consecutive`` set, a child that fails that many times in a row without a reset
  is marked ``failed`` and stays down; its siblings are untouched.
- Intensity: more than ``max_restarts`` restarts within ``max_seconds`` make the supervisor
  stop all its children in reverse start order and raise ``SupervisorGaveUp`` to its parent.
  It never exits silently. With no intensity (``None``) it never gives up: the children's
  backoff alone paces their restarts, and ``max_consecutive`` bounds them.
- A stop the supervisor asked for is never a failure. Stopping a child asks it to stop
  (``value.stop()`` when the value it reported has one, else cancellation), waits up to its
  ``shutdown`` timeout, then cancels it and waits up to that timeout again plus 1 s
  before it abandons it, logged as an error. Stops run shielded, so cancelling the
  supervisor still gives every child its shutdown window, in reverse start order; with
  ``concurrent_starts``, children stop as they start, all at once, and ``remove_child``
  drains its child beside the loop, which goes on restarting and starting the others.
- A ``KeyboardInterrupt`` or ``SystemExit`` out of a child (alone or in a group of its
  own tasks' exceptions: Python lands a Ctrl-C in whichever task runs) is no crash: it
  propagates out of the tree, to the host, and the child is not restarted.
- Every transition is published as an ``Event`` and logged.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from actors import Mailbox
from protocol import ActorDown, BackoffPolicy, ChildStatus, Event, IntensityPolicy
from actors._events import _BUS, _PATH, EventBus

__all__ = [
    "Backoff",
    "ChildExited",
    "ChildSpec",
    "Intensity",
    "Restart",
    "Strategy",
    "TreeSupervisor",
    "SupervisorGaveUp",
]

log = logging.getLogger("supervisor.tree")

#: How much longer than its ``shutdown`` a cancelled child is waited for before it is
#: abandoned (`_stop_child`): its shielded cleanup may take that whole budget (a process
#: stop: stdin, SIGTERM, grace), and then a moment for the SIGKILL and the reaping.
_AFTER_CANCEL = 1.0


class Restart(enum.StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted; removed when it exits


class Strategy(enum.StrEnum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


Backoff = BackoffPolicy
Intensity = IntensityPolicy


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to start and supervise one child.

    ``start`` is ``async def start(*, task_status)``: it reports ready with
    ``task_status.started(value)`` and then runs for the child's life. ``value`` is what
    ``TreeSupervisor.which(id)`` returns; a value with a ``stop()`` method is asked to stop
    gracefully before it is cancelled, and one with ``status()`` is nested into the tree
    (``supervisor=True``) or shown as the child's ``detail``.
    """

    id: str
    start: Callable[..., Awaitable[Any]]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    supervisor: bool = False
    backoff: Backoff = Backoff()


class SupervisorGaveUp(Exception):
    """A supervisor exceeded its restart intensity and stopped; raised to its parent."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"supervisor {path!r} gave up: {reason}")
        self.path = path
        self.reason = reason


class ChildExited(msgspec.Struct, frozen=True):
    """A child's task ended. ``reason`` is None for a normal return, else the exception."""

    id: str
    incarnation: int
    reason: Any
    stopped: bool  # we asked it to stop


class _ChildReady(msgspec.Struct, frozen=True):
    id: str
    incarnation: int


class _StartChildren(msgspec.Struct, frozen=True):
    ids: list[str]
    timer: trio.CancelScope  # only the children still waiting on this backoff start


class _AddChild(msgspec.Struct, frozen=True):
    spec: ChildSpec


class _RemoveChild(msgspec.Struct, frozen=True):
    id: str


class _RestartChild(msgspec.Struct, frozen=True):
    id: str


class _UpdateChild(msgspec.Struct, frozen=True):
    id: str
    changes: dict[str, Any]


class _Stop(msgspec.Struct, frozen=True):
    pass


class _Child:
    """The supervisor's record of one child. Owned by the supervisor loop."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = "stopped"
        self.incarnation = 0
        self.value: Any = None
        self.shown: Any = None  # what the status shows while it starts (a child supervisor)
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.done.set()
        self.stopping = False
        self.restarts = 0
        self.failures_in_row = 0
        self.ready_at: float | None = None
        self.last_exit: str | None = None
        self.next_attempt_at: float | None = None
        self.timer: trio.CancelScope | None = None
        self.start_waiters: list[Any] = []
        self.removing = False  # a remove_child is under way: it is no child to restart

    @property
    def id(self) -> str:
        return self.spec.id


class _TaskStatus:
    """The ``task_status`` a child's start function receives; ``started`` marks it ready."""

    def __init__(self, sup: TreeSupervisor, child: _Child, incarnation: int) -> None:
        self._sup, self._child, self._incarnation, self._done = sup, child, incarnation, False

    def showing(self, value: Any) -> None:
        """Show ``value``'s ``status()`` under this child while it is still starting."""
        if not self._done:
            self._child.shown = value

    def started(self, value: Any = None) -> None:
        if self._done:
            raise RuntimeError("started() called twice")
        self._done = True
        self._child.value = value
        self._sup._tell(_ChildReady(self._child.id, self._incarnation))


def _cause_of(reason: Any) -> str | None:
    """The ``cause`` an exit reason may carry (a short word, such as a connection's
    ``ConnectionDied.cause``), for the ``exited`` event's ``data``."""
    if isinstance(reason, BaseExceptionGroup) and len(reason.exceptions) == 1:
        return _cause_of(reason.exceptions[0])
    cause = getattr(reason, "cause", None)
    return cause if isinstance(cause, str) else None


def _describe(reason: Any) -> str:
    if reason is None:
        return "normal"
    if isinstance(reason, BaseExceptionGroup) and len(reason.exceptions) == 1:
        return _describe(reason.exceptions[0])
    return f"{type(reason).__name__}: {reason}"


class TreeSupervisor:
    """A supervisor actor over an ordered list of children.

    ``await nursery.start(sup.run)`` starts it and returns once every initial child is ready
    or restarting. ``run`` raises ``SupervisorGaveUp`` when the restart intensity is exceeded.

    Children start one at a time, in order, each once the one before it is ready or has
    failed its attempt (as in OTP), so a child may rely on its elder siblings. With
    ``concurrent_starts`` (one_for_one only) every child due to start, first start or
    restart, starts at once: for independent children whose start is slow, such as MCP
    servers that connect in their start, one slow or hung start must not hold the others'
    (re)starts back.
    """

    def __init__(
        self,
        id: str,
        children: list[ChildSpec] | tuple[ChildSpec, ...] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: Intensity | None = Intensity(),
        rng: random.Random | None = None,
        concurrent_starts: bool = False,
    ) -> None:
        self.id = id
        self.strategy = Strategy(strategy)
        if concurrent_starts and self.strategy is not Strategy.ONE_FOR_ONE:
            raise ValueError(f"supervisor {id!r}: concurrent_starts needs the one_for_one strategy")
        self.concurrent_starts = concurrent_starts
        self.intensity = intensity
        self._rng = rng or random.Random()
        self._children: dict[str, _Child] = {}
        for spec in children:
            if spec.id in self._children:
                raise ValueError(f"duplicate child id {spec.id!r} in supervisor {id!r}")
            self._children[spec.id] = _Child(spec)
        self._mailbox: Mailbox[Any] = Mailbox(f"supervisor:{id}", math.inf)
        # Adopted from the parent in run(): events of the whole tree reach the root's bus.
        self._bus = _BUS.get() or EventBus()
        self.path = _PATH.get() or id
        self._restart_times: deque[float] = deque()
        self._start_queue: deque[_Child] = deque()
        self._starting: set[_Child] = set()
        self._nursery: trio.Nursery | None = None
        self._gave_up: str | None = None
        self._started_at: float | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def events(self) -> EventBus:
        return self._bus

    def subscribe(self, size: int = 1000) -> trio.MemoryReceiveChannel[Event]:
        return self._bus.subscribe(size)

    def which(self, child_id: str) -> Any:
        """The value the child reported when it became ready, or None while it is not running."""
        child = self._children.get(child_id)
        return child.value if child is not None and child.state == "running" else None

    def child_ids(self) -> list[str]:
        return list(self._children)

    async def add_child(self, spec: ChildSpec) -> ChildStatus:
        """Add and start a child; returns once it is ready or its first attempt ended."""
        return await self._mailbox.ref.ask(_AddChild(spec))

    async def remove_child(self, child_id: str) -> None:
        """Stop a child (within its shutdown timeout) and forget it."""
        await self._mailbox.ref.ask(_RemoveChild(child_id))

    async def restart_child(self, child_id: str) -> ChildStatus:
        """Stop a child and start it again now; returns once it is ready or ended."""
        return await self._mailbox.ref.ask(_RestartChild(child_id))

    async def update_child(self, child_id: str, **changes: Any) -> None:
        """Change fields of a child's spec (``restart``, ``shutdown``, ``backoff``) without
        touching the running child: they apply from its next exit, stop or restart on.
        Raises ``KeyError`` for an unknown child."""
        await self._mailbox.ref.ask(_UpdateChild(child_id, changes))

    def stop(self) -> None:
        """Ask the supervisor to stop its children in reverse order and return."""
        try:
            self._mailbox.ref.tell_nowait(_Stop())
        except Exception:  # already down: nothing to stop
            pass

    def status(self) -> ChildStatus:
        """This supervisor and its children: ``stopped`` outside ``run``, ``starting`` until
        its first children are up, then ``running``."""
        return ChildStatus(
            id=self.id,
            state=(
                "stopped" if self._nursery is None or self._gave_up is not None
                else "starting" if self._started_at is None
                else "running"
            ),
            restart="permanent",
            strategy=str(self.strategy),
            uptime=None if self._started_at is None else trio.current_time() - self._started_at,
            children=[self._child_status(c) for c in self._children.values()],
        )

    # -- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children and supervise them until stopped or until it gives up.

        Each run starts afresh, so a parent restarts this supervisor by running it again:
        a new mailbox if the last run closed it (asks go to the current one), an empty
        restart history, and children that start from their first attempt."""
        if self._mailbox.closed:
            self._mailbox = Mailbox(f"supervisor:{self.id}", math.inf)
        self._gave_up = None
        self._started_at = None
        self._restart_times.clear()
        for child in self._children.values():
            child.failures_in_row = 0
        parent_bus = _BUS.get()
        self._bus = parent_bus or self._bus
        self.path = _PATH.get() or self.id
        _BUS.set(self._bus)
        _PATH.set(self.path)
        ready_reported = False
        showing = getattr(task_status, "showing", None)
        if showing is not None:  # our parent shows our children while we start them
            showing(self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    self._start_queue.extend(self._children.values())
                    self._pump_starts()
                    while True:
                        if not ready_reported and not self._starting and not self._start_queue:
                            ready_reported = True
                            self._started_at = trio.current_time()
                            task_status.started(self)
                        msg, reply = await self._mailbox.receive()
                        if isinstance(msg, _Stop):
                            break
                        await self._handle(msg, reply)
                        if self._gave_up is not None:
                            break
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            reason = self._gave_up or "stopped"
            self._mailbox.close(reason)
            if self._gave_up is not None:
                self._publish("gave_up", path=self.path, reason=self._gave_up)
            elif parent_bus is None:
                self._publish("stopped", path=self.path)  # a parent reports its children's stops
            if parent_bus is None:
                self._bus.close()  # the root's subscriptions end with the tree
        if self._gave_up is not None:
            raise SupervisorGaveUp(self.path, self._gave_up)

    async def _handle(self, msg: Any, reply: Any) -> None:
        if isinstance(msg, ChildExited):
            await self._on_exit(msg)
        elif isinstance(msg, _ChildReady):
            self._on_ready(msg)
        elif isinstance(msg, _StartChildren):
            for child_id in msg.ids:
                child = self._children.get(child_id)
                if child is not None and child.state == "restarting" and child.timer is msg.timer:
                    child.timer = None
                    child.state = "stopped"
                    self._start_queue.append(child)
            self._pump_starts()
        elif isinstance(msg, _AddChild):
            if msg.spec.id in self._children:
                reply.fail(ValueError(f"supervisor {self.path!r} already has a child {msg.spec.id!r}"))
                return
            child = self._children[msg.spec.id] = _Child(msg.spec)
            self._publish("added", child)
            child.start_waiters.append(reply)
            self._start_queue.append(child)
            self._pump_starts()
        elif isinstance(msg, _RemoveChild):
            child = self._children.get(msg.id)
            if child is None:
                reply.fail(KeyError(f"supervisor {self.path!r} has no child {msg.id!r}"))
                return
            if child in self._start_queue:
                self._start_queue.remove(child)
            child.removing = True
            if self.concurrent_starts:
                # Independent children: one draining (within its shutdown) must not hold up
                # the others' restarts, starts and removals.
                assert self._nursery is not None
                self._nursery.start_soon(self._remove, child, reply, name=f"{self.path}/remove {child.id}")
            else:
                await self._remove(child, reply)
        elif isinstance(msg, _UpdateChild):
            child = self._children.get(msg.id)
            if child is None:
                reply.fail(KeyError(f"supervisor {self.path!r} has no child {msg.id!r}"))
                return
            child.spec = msgspec.structs.replace(child.spec, **msg.changes)
            reply.send(None)
        elif isinstance(msg, _RestartChild):
            child = self._children.get(msg.id)
            if child is None or child.removing:
                reply.fail(KeyError(f"supervisor {self.path!r} has no child {msg.id!r}"
                                    + (" (it is being removed)" if child is not None else "")))
                return
            await self._stop_child(child)
            child.failures_in_row = 0
            child.start_waiters.append(reply)
            self._start_queue.append(child)
            self._pump_starts()

    # -- starting -----------------------------------------------------------------------

    def _pump_starts(self) -> None:
        while self._start_queue and (self.concurrent_starts or not self._starting):
            child = self._start_queue.popleft()
            if child.id not in self._children or child.state != "stopped":
                continue  # removed, already started, or waiting out its backoff
            self._launch(child)

    def _launch(self, child: _Child) -> None:
        assert self._nursery is not None
        child.incarnation += 1
        child.state = "starting"
        child.stopping = False
        child.value = child.shown = None
        child.ready_at = None
        child.next_attempt_at = None
        # Shielded: a cancel from above must not skip the child's shutdown window; only
        # _stop_child cancels this scope, and the supervisor always stops every child.
        child.scope = trio.CancelScope(shield=True)
        child.done = trio.Event()
        self._starting.add(child)
        self._publish("started", child)
        self._nursery.start_soon(self._run_child, child, child.incarnation, name=f"{self.path}/{child.id}")

    async def _run_child(self, child: _Child, incarnation: int) -> None:
        _PATH.set(f"{self.path}/{child.id}")
        reason: BaseException | None = None
        try:
            with child.scope:
                await child.spec.start(task_status=_TaskStatus(self, child, incarnation))
        except BaseExceptionGroup as exc:
            if exc.subgroup((KeyboardInterrupt, SystemExit)) is not None:
                raise  # a Ctrl-C that landed in a child's own task: the host's, not a crash
            reason = exc
        except Exception as exc:
            reason = exc
        finally:
            stopped = child.stopping
            child.done.set()
            self._tell(ChildExited(child.id, incarnation, reason, stopped))

    def _tell(self, msg: Any) -> None:
        try:
            self._mailbox.ref.tell_nowait(msg)
        except ActorDown:
            pass  # the supervisor is gone; so is any decision about this message

    def _on_ready(self, msg: _ChildReady) -> None:
        child = self._children.get(msg.id)
        if child is None or child.incarnation != msg.incarnation or child.state != "starting":
            return
        child.state = "running"
        child.ready_at = trio.current_time()
        self._publish("ready", child)
        self._left_starting(child)

    def _left_starting(self, child: _Child) -> None:
        for waiter in child.start_waiters:
            waiter.send(self._child_status(child))
        child.start_waiters.clear()
        self._starting.discard(child)
        self._pump_starts()

    # -- exits and restarts ---------------------------------------------------------------

    async def _on_exit(self, msg: ChildExited) -> None:
        child = self._children.get(msg.id)
        if child is None or child.incarnation != msg.incarnation:
            return
        if msg.stopped or child.stopping:
            return  # _stop_child asked for this and has done the bookkeeping
        now = trio.current_time()
        was_ready_for = None if child.ready_at is None else now - child.ready_at
        child.value = None
        child.ready_at = None
        # A reason that says it is normal (a server process that exited by itself with code
        # 0) is OTP's ``normal`` exit: a transient child is not restarted after it.
        abnormal = msg.reason is not None and not getattr(msg.reason, "normal", False)
        child.last_exit = _describe(msg.reason)
        cause = _cause_of(msg.reason)
        self._publish("exited", child, reason=child.last_exit, data={"cause": cause} if cause else None)
        spec = child.spec
        if spec.restart is Restart.TEMPORARY or (spec.restart is Restart.TRANSIENT and not abnormal):
            child.state = "stopped"
            self._left_starting(child)
            if spec.restart is Restart.TEMPORARY:
                del self._children[child.id]
                self._publish("removed", child)
            return

        if was_ready_for is not None and was_ready_for >= spec.backoff.reset_seconds:
            child.failures_in_row = 0
        child.failures_in_row += 1
        limit = spec.backoff.max_consecutive
        if limit is not None and child.failures_in_row > limit:
            child.state = "failed"
            self._publish("failed", child, reason=f"{limit} consecutive failures, last: {child.last_exit}")
            self._left_starting(child)
            return

        if self._exceeds_intensity(now):
            self._gave_up = (
                f"more than {self.intensity.max_restarts} restarts within {self.intensity.max_seconds:g} s; "
                f"last: child {child.id!r} exited with {child.last_exit}"
            )
            child.state = "stopped"
            self._left_starting(child)
            return

        group = self._restart_group(child)
        # Stopping a sibling that is starting pumps the start queue: no member may start
        # before the whole group is restarted.
        for member in group:
            if member in self._start_queue:
                self._start_queue.remove(member)
        for other in reversed(group[1:]):
            await self._stop_child(other)
        delay = spec.backoff.delay(child.failures_in_row - 1, self._rng.random())
        for member in group:
            member.state = "restarting"
            member.next_attempt_at = now + delay
        child.restarts += 1
        for other in group[1:]:
            other.restarts += 1
        self._publish("restarting", child, delay=delay, reason=child.last_exit)
        self._left_starting(child)
        self._schedule(group, delay)

    def _exceeds_intensity(self, now: float) -> bool:
        if self.intensity is None:
            return False
        window = self._restart_times
        window.append(now)
        while window and window[0] <= now - self.intensity.max_seconds:
            window.popleft()
        return len(window) > self.intensity.max_restarts

    def _restart_group(self, child: _Child) -> list[_Child]:
        """The failed child first, then the siblings its strategy restarts with it."""
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        order = list(self._children.values())
        others = order[order.index(child) + 1 :] if self.strategy is Strategy.REST_FOR_ONE else order
        return [child, *(c for c in others if c is not child and c.state not in ("failed",))]

    def _schedule(self, group: list[_Child], delay: float) -> None:
        assert self._nursery is not None
        timer = trio.CancelScope()
        for member in group:
            member.timer = timer
        ids = [m.id for m in sorted(group, key=list(self._children.values()).index)]

        async def fire() -> None:
            with timer:
                await trio.sleep(delay)
                self._mailbox.ref.tell_nowait(_StartChildren(ids, timer))

        self._nursery.start_soon(fire)

    # -- stopping -----------------------------------------------------------------------

    async def _remove(self, child: _Child, reply: Any) -> None:
        with trio.CancelScope(shield=True):  # the supervisor's own stop waits for it
            await self._stop_child(child)
        if self._children.get(child.id) is child:
            del self._children[child.id]
            self._publish("removed", child)
        reply.send(None)

    async def _stop_child(self, child: _Child) -> None:
        timer, child.timer = child.timer, None
        # A group shares its backoff: it ends for the members still waiting on it.
        if timer is not None and not any(c.timer is timer for c in self._children.values()):
            timer.cancel()
        if child.state in ("restarting", "failed"):
            child.state = "stopped"
            return
        if child.done.is_set() and child.state == "stopped":
            return
        # A task already ended whose exit is still queued is stopped all the same: its exit
        # is then ignored, as for any child we stop.
        child.stopping = True
        with trio.CancelScope(shield=True):
            stop = getattr(child.value, "stop", None) if not child.done.is_set() else None
            if callable(stop):
                stop()
                # A child supervisor's own children bound its stop, as in OTP (infinity).
                with trio.move_on_after(math.inf if child.spec.supervisor else child.spec.shutdown):
                    await child.done.wait()
            # A child supervisor stops its own children first, each within its own
            # shutdown: it is waited for as long as that takes (OTP's infinity). Any other
            # child gets its shutdown again, and a moment more: its shielded cleanup (a
            # process stop, whose budget is that shutdown, then SIGKILL and reaping) is no
            # ignored cancellation.
            after_cancel = child.spec.shutdown + _AFTER_CANCEL
            if not child.done.is_set():
                child.scope.cancel()
                with trio.move_on_after(math.inf if child.spec.supervisor else after_cancel):
                    await child.done.wait()
            if not child.done.is_set():
                log.error(
                    "%s/%s was still running %g s after it was cancelled; abandoning it", self.path, child.id, after_cancel
                )
        child.state = "stopped"
        child.last_exit = "shutdown"
        child.value = None
        child.ready_at = None
        self._publish("stopped", child)
        if child in self._starting:
            self._left_starting(child)

    async def _stop_all(self) -> None:
        """Stop every child: in reverse start order, or, with ``concurrent_starts``, all at
        once (children started together stop together: the whole stop takes the longest
        child's, not the sum of theirs)."""
        self._start_queue.clear()

        async def stop(child: _Child) -> None:
            await self._stop_child(child)
            for waiter in child.start_waiters:
                waiter.send(self._child_status(child))
            child.start_waiters.clear()

        children = list(reversed(self._children.values()))
        if not self.concurrent_starts:
            for child in children:
                await stop(child)
            return
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(stop, child)

    # -- introspection ------------------------------------------------------------------

    def _child_status(self, child: _Child) -> ChildStatus:
        now = trio.current_time()
        # A child supervisor not running shows its children as its last run left them: a
        # monitor finds every leaf by its path while the subtree waits out its backoff.
        shown = child.value if child.state == "running" else child.shown
        nested = getattr(shown, "status", None)
        node = nested() if callable(nested) else None
        # A running nested supervisor may say it has stopped serving (a server whose
        # connection ended for good by its restart type): shown as it says.
        ended = isinstance(node, ChildStatus) and child.state == "running" and node.state == "stopped"
        return ChildStatus(
            id=child.id,
            state="stopped" if ended else child.state,  # type: ignore[arg-type]
            restart=str(child.spec.restart),
            restarts=child.restarts,
            last_exit=node.last_exit or child.last_exit if ended else child.last_exit,
            uptime=None if child.ready_at is None else now - child.ready_at,
            next_attempt_in=None if child.next_attempt_at is None else max(0.0, child.next_attempt_at - now),
            strategy=node.strategy if isinstance(node, ChildStatus) else None,
            detail=node if isinstance(node, dict) else None,
            children=node.children if isinstance(node, ChildStatus) else [],
        )

    def _publish(self, kind: str, child: _Child | None = None, *, path: str | None = None, **fields: Any) -> None:
        if path is None:
            path = f"{self.path}/{child.id}" if child is not None else self.path
        if child is not None and kind in ("restarting", "exited", "failed"):
            fields.setdefault("restarts", child.restarts)
        self._bus.publish(Event(path=path, kind=kind, at=trio.current_time(), **fields))
