"""A trio guest run that waits for I/O in the asyncio loop's own selector: no helper thread.

``trio.lowlevel.start_guest_run`` ticks trio on the host loop, but whenever trio has nothing
to run it waits for I/O in a helper thread, and each wake-up comes back to the loop through
``call_soon_threadsafe``: a thread switch, a GIL hand-over and the loop's self-pipe, at
least once per request (the request entering an idle trio) and again for every answer a
server sends. Measured on a call to an in-process server (2026-12-03): 1.6-2.6 ms per
bridged call with the helper thread, 0.9-1.3 ms without it (the same call made inside trio:
0.6-0.8 ms).

On Linux trio waits with one epoll instance, and an epoll fd is itself pollable: it is
readable while any fd trio waits on is ready, trio's own wake-up socket included (which
``TrioToken.run_sync_soon`` and every wake-up from outside trio write to). So instead of
the thread, this driver registers that fd with ``loop.add_reader`` (and trio's next
deadline with ``loop.call_later``) and ticks trio from the loop's own select.

It runs trio's guest run with the same steps as trio's own ``GuestState.guest_tick``
(trio 0.35.0, pinned) and changes only where trio waits, that a few batches of a runnable
trio follow each other in one callback of the loop (``_BATCHES_PER_TURN``), that trio's
epoll is polled only when the loop's selector found it ready (or a busy run starts a new
turn), and that host code handing work to an idle run can have it tick at once (``hold`` /
``run_now``). It relies on three private details of that trio version:
the ``GuestState`` behind the first tick that ``start_guest_run`` schedules, its runner's
``io_manager._epoll``, and the runner's ``guest_tick_scheduled`` flag. ``start_guest_run``
checks them before taking over and otherwise leaves trio's own threaded guest mode in
place, so a trio that changed them is slower, never wrong. (After a ``KeyboardInterrupt``
in a tick it also reads whether trio took the outcome it was to be sent: the
``_unwrapped`` flag of ``outcome`` 1.3; without it, that outcome is replaced.)

Guarantees: those of ``trio.lowlevel.start_guest_run`` with the loop's ``call_soon`` /
``call_soon_threadsafe`` and ``host_uses_signal_set_wakeup_fd=True``; ``done_callback``
runs once, on the loop; no reader stays on trio's epoll fd once the run has ended. The
host's SIGINT handler stays: trio replaces Python's default one with its own, which would
take Ctrl-C from the host; it is put back.
"""

from __future__ import annotations

import asyncio
import select
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import outcome as outcome_lib
import trio
from sniffio import thread_local as sniffio_library

__all__ = ["Driver", "start_guest_run"]


def start_guest_run(
    loop: asyncio.AbstractEventLoop,
    async_fn: Callable[[], Awaitable[Any]],
    *,
    done_callback: Callable[[outcome_lib.Outcome[Any]], object],
) -> Driver | None:
    """Start ``async_fn`` as a trio guest run on ``loop``, the running loop of this thread.

    The driver when trio waits in the loop's selector, None when it kept its own helper
    thread (not epoll, or a loop that cannot watch an fd). Raises what
    ``trio.lowlevel.start_guest_run`` raises.
    """
    driver: list[Driver] = []

    def run_sync_soon_not_threadsafe(fn: Callable[[], object]) -> None:
        if not driver and _drivable(loop, fn):
            driver.append(Driver(loop, fn.__self__))  # type: ignore[attr-defined]
            loop.call_soon(driver[0].tick)
        else:
            loop.call_soon(fn)

    host_handler = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        trio.lowlevel.start_guest_run(
            async_fn,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=run_sync_soon_not_threadsafe,
            done_callback=done_callback,
            host_uses_signal_set_wakeup_fd=True,
        )
    finally:
        # trio leaves a handler that is no longer its own alone when the run ends
        if host_handler is not None and signal.getsignal(signal.SIGINT) is not host_handler:
            signal.signal(signal.SIGINT, host_handler)
    return driver[0] if driver else None


def _drivable(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> bool:
    """Whether ``fn`` is the first tick of a guest run this driver knows how to run."""
    state = getattr(fn, "__self__", None)
    if type(state).__name__ != "GuestState" or getattr(fn, "__name__", "") != "guest_tick":
        return False
    runner = getattr(state, "runner", None)
    epoll = getattr(getattr(runner, "io_manager", None), "_epoll", None)
    if not isinstance(epoll, select.epoll) or not hasattr(runner, "guest_tick_scheduled"):
        return False
    if not all(hasattr(state, name) for name in ("unrolled_run_gen", "unrolled_run_next_send", "done_callback")):
        return False
    try:  # a loop without a selector (a proactor) cannot watch an fd
        loop.add_reader(epoll.fileno(), lambda: None)
    except (NotImplementedError, AttributeError):
        return False
    loop.remove_reader(epoll.fileno())
    return True


#: Trio batches run in one callback of the loop while trio stays runnable. A stdio call
#: takes several batches in a row with nothing for the host in between (the SDK's
#: checkpoints, a task woken by another); each batch given a loop turn of its own costs
#: that turn (a select, a handle). Bounded, so a busy trio still lets the host run.
_BATCHES_PER_TURN = 3


class Driver:
    """Ticks one guest run: trio's ``GuestState.guest_tick``, with the selector for the thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: Any) -> None:
        self._loop = loop
        self._state = state
        self._runner = state.runner
        self._epoll_fd: int = state.runner.io_manager._epoll.fileno()
        #: The timer that wakes trio at its deadline, and when it fires (uvloop hands back a
        #: plain ``Handle``, without ``when()``, for a ``call_at`` under a millisecond away).
        self._deadline: asyncio.Handle | None = None
        self._deadline_at = 0.0
        self._waiting = False  # idle: waiting in the loop's selector (or for the deadline)
        self._watching = False  # the loop watches trio's epoll fd

    def hold(self) -> bool:
        """Host code (on the loop's thread, between two ticks) is about to schedule work in
        trio, and will call ``run_now`` once it has when this returns True (trio was idle).

        Trio's own way to wake an idle run is to write its wake-up socket and wait for the
        loop's selector to see it; marking the tick scheduled keeps trio from writing, and
        ``run_now`` ticks at once, within the host code's own callback: the work starts
        without a turn of the loop."""
        if self._waiting:
            self._runner.guest_tick_scheduled = True
            return True
        return False

    def run_now(self) -> None:
        """Tick now, after ``hold`` returned True: see there. Trio's I/O is not polled first
        (it is once trio has run what it can)."""
        if self._waiting:
            self.tick()

    def tick(self, *, poll: bool = False) -> None:
        """Run trio's next batches: while trio stays runnable, up to ``_BATCHES_PER_TURN`` of
        them before the loop's other callbacks get their turn. ``poll``: fetch trio's I/O
        events first (it was woken by them, or by its deadline, or this is a new turn of a
        busy run).

        Trio's I/O is polled only then, not after every batch as trio's own ``guest_tick``
        does: between two batches of a runnable trio nothing is missed for long (the next
        turn polls), and a trio with nothing left to run waits for the loop's selector,
        which watches its epoll fd and so sees at its next select what is ready already
        (a poll here found nothing nearly always: a stdio call waits for its server). Each
        poll is an epoll call and trio's bookkeeping; a stdio call made six, then three,
        now one (its answer's wake-up).

        Interrupted between two of trio's batches (a ``KeyboardInterrupt`` from the host's
        signal handler lands anywhere), the run is left ticking, not stalled: trio itself
        is intact, and a stalled run could never be closed (``aclose`` would wait for
        ever)."""
        state, runner = self._state, self._runner
        settled = False  # the run ended, or its next tick is scheduled, or it waits
        try:
            self._waiting = False
            runner.guest_tick_scheduled = True
            if poll and _spare(state.unrolled_run_next_send):
                state.unrolled_run_next_send = outcome_lib.capture(runner.io_manager.get_events, 0)
            for _ in range(_BATCHES_PER_TURN):
                previous_library, sniffio_library.name = sniffio_library.name, "trio"
                try:
                    timeout = state.unrolled_run_next_send.send(state.unrolled_run_gen)
                except StopIteration:
                    settled = True
                    self._unwatch()
                    state.done_callback(runner.main_task_outcome)
                    return
                except trio.TrioInternalError as exc:
                    settled = True
                    self._unwatch()
                    state.done_callback(outcome_lib.Error(exc))
                    return
                except BaseException as exc:  # a KeyboardInterrupt as the run closes: it has ended too
                    settled = True
                    self._unwatch()
                    state.done_callback(outcome_lib.Error(exc))
                    raise
                finally:
                    sniffio_library.name = previous_library
                state.unrolled_run_next_send = outcome_lib.Value([])
                if timeout > 0:
                    break
            else:
                self._loop.call_soon(self._next_turn)
                settled = True
                return
            # Idle: wake on any fd trio waits for (its wake-up socket too) or at its deadline.
            # The fd stays watched and a timer that fires no later than the deadline is
            # kept (one that fires early only wakes trio for nothing): each wait would
            # otherwise cost two changes to the loop's selector and a timer.
            runner.guest_tick_scheduled = False
            self._waiting = True
            settled = True
            if not self._watching:
                self._loop.add_reader(self._epoll_fd, self._wake)
                self._watching = True
            when = self._loop.time() + timeout
            if self._deadline is None or self._deadline_at > when:
                if self._deadline is not None:
                    self._deadline.cancel()
                self._deadline = self._loop.call_at(when, self._deadline_passed)
                self._deadline_at = when
        finally:
            if not settled:
                if _taken(state.unrolled_run_next_send):  # else it holds events not run yet
                    state.unrolled_run_next_send = outcome_lib.Value([])
                self._waiting = False
                runner.guest_tick_scheduled = True
                self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self.tick(poll=True)

    def _deadline_passed(self) -> None:
        self._deadline = None
        self._wake()

    def _unwatch(self) -> None:
        """The run has ended: nothing of it stays in the loop."""
        if self._watching:
            self._loop.remove_reader(self._epoll_fd)
            self._watching = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _wake(self) -> None:
        if not self._waiting:
            return  # busy, or woken already (by the selector, the deadline or `run_now`)
        self.tick(poll=True)


def _taken(sent: outcome_lib.Outcome[Any]) -> bool:
    """Whether trio's run loop has taken ``sent`` (an outcome is sent once)."""
    return getattr(sent, "_unwrapped", True)


def _spare(sent: outcome_lib.Outcome[Any]) -> bool:
    """Whether a poll may replace ``sent``: taken already, or holding no events. Events
    taken from trio's epoll and not yet run must reach trio (its waits are one-shot: a
    task whose event was dropped would wait for ever)."""
    return _taken(sent) or (isinstance(sent, outcome_lib.Value) and not sent.value)
