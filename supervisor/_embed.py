"""Embedding in an asyncio host: the whole supervision tree as a trio guest run.

::

    sup = await embed(servers)                  # or: async with embed(servers) as sup:
    result = await sup.call_tool("echo", {"text": "hi"})
    ...
    await sup.aclose()

``embed`` starts the tree as a trio guest run on the running asyncio loop: trio's tasks
run as callbacks of that loop, on its thread. On Linux trio also waits for I/O in that
loop's own selector (``_guest_driver``: the loop watches trio's epoll fd), so there is no
thread at all; elsewhere trio's stock guest mode waits in its own helper thread and hands
each wake-up back with ``loop.call_soon_threadsafe``.

The bridge, one request at a time:

1. An asyncio coroutine (``call_tool``, ``status``, ...) makes an asyncio ``Future`` and hands
   the request to trio. With trio waiting in the loop's selector, it is handed over
   directly (both run on the loop's thread) and an idle trio ticks at once; otherwise
   through ``TrioToken.run_sync_soon`` (thread-safe, wakes trio up).
2. In trio, a worker task of the *requests* nursery serves it: an idle one, or a new one
   when all are busy (at most ``_IDLE_WORKERS`` stay idle after a burst). It runs the
   trio coroutine in a fresh copy of the guest run's context and resolves the future with
   the value or the exception. Resolving the future is a plain call (same thread).
3. If the awaiting asyncio task is cancelled, its ``await`` cancels the future and then,
   through ``run_sync_soon``, the worker's cancel scope, if the worker still serves that
   request: the trio call is cancelled, the connection sends ``notifications/cancelled``
   to the server, and that worker ends.

Guarantees:

- Every awaited request ends: with the trio coroutine's value or exception, with
  ``SupervisorClosed`` if the supervisor closes first, or with ``CancelledError`` when the
  caller cancelled it (the trio side is then cancelled too, and its late result dropped).
- No exception from the tree reaches the host loop (a Ctrl-C's ``KeyboardInterrupt`` is the
  host's: see below). A server that crashes is restarted and shows in ``status()`` and
  ``events()``; a request's exception (any but trio's ``Cancelled``: ``SystemExit`` too)
  goes to its own awaiter only; should the whole tree fail, the error is logged, kept in
  ``crash``, and every later request raises ``SupervisorClosed`` naming it.
- ``aclose()`` cancels the requests in flight (each raises ``SupervisorClosed``), stops the
  tree in order (every stdio server's process tree is gone when it returns) and waits for
  the guest run to end. It is idempotent, and cancelling it does not interrupt the shutdown.
- A cancelled ``embed`` stops the tree before it re-raises; cancelled again meanwhile, it
  re-raises at once, and the stop goes on: a task of ours waits for its end (so does the
  end of ``asyncio.run``, see below). A later ``embed`` on the same loop waits for the end
  of an earlier run that is stopping (closed, crashed, or its start cancelled), then starts.
- ``embed`` leaves the host's signal handling alone: trio is told the host owns
  ``signal.set_wakeup_fd`` (asyncio's ``add_signal_handler`` needs it), and the SIGINT
  handler trio installs in place of Python's default one is taken out again. So with
  ``asyncio.run`` Ctrl-C cancels the main task as usual; with Python's default handler
  (``loop.run_until_complete``, ``run_forever``) it raises ``KeyboardInterrupt`` wherever
  the loop's thread is. In host code, or in the guest driver between two of trio's
  batches, the tree runs on (``aclose`` still closes it); in a
  request, that request's awaiter gets it; elsewhere in a tick of the guest run it ends
  the run (the tree is stopped, or abandoned if trio's own code was interrupted), every
  waiting request and ``aclose`` end, and the ``KeyboardInterrupt`` is raised out of the
  loop to the host. The stdio servers of an abandoned tree, or of a host that exits
  without ``aclose``, are killed by the reaper process when the host process exits.

One trio run per thread (a trio limit): call ``embed`` once per process, at start-up, and
share the handle. Close it (``aclose`` or ``async with``) before the loop stops. One left
open when ``asyncio.run`` ends, or still stopping after a cancelled ``embed``, is closed by
it (a task of ours, made as the run starts, waits for the guest run's end; ``asyncio.run``
cancels the tasks left, and that one closes the tree before it ends). A
loop closed without that (``run_until_complete`` or ``stop``, then ``close``) abandons the
guest run half-way, for good: it holds the thread, so no later ``embed`` or ``trio.run``
there (``embed`` says why). The close is seen (the loop's ``close`` is shadowed while a run
is live): a warning is logged, and this tree's stdio servers' process trees are killed then
and there (another supervisor's in this process, embedded or a trio one in another thread,
are left alone; a server being forked in that moment, not exec'd yet, is missed: it runs
until the host process exits, when the reaper takes it). The host loop must be a plain
asyncio loop; note that merely importing ``trio_asyncio`` makes ``asyncio.run``'s default
loop trio-asyncio's own (which is trio), so a process that imports it makes its loop
explicitly (``asyncio.Runner(loop_factory=asyncio.SelectorEventLoop)``). This package
imports ``trio_asyncio`` only when a trio ``Supervisor`` is used from asyncio code.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from typing import Any

import outcome as outcome_lib
import trio
from mcp_types import INTERNAL_ERROR, ErrorData

from actors import kill_servers_now
from actors._registry import check_toolsets
from protocol import ChildStatus, Event, MetricsSnapshot, ServerSpec, ServerUnavailable, ToolSpec
from protocol._settings import Config

from ._facade import Supervisor
from ._guest_driver import Driver, start_guest_run

__all__ = ["EmbeddedSupervisor", "SupervisorClosed", "embed"]

log = logging.getLogger("supervisor.embed")

_STARTING, _RUNNING, _CLOSING, _CLOSED = "starting", "running", "closing", "closed"

#: Worker tasks kept waiting for requests once a burst is over (the rest end).
_IDLE_WORKERS = 16

#: This thread's guest run not ended yet (``_this_thread.run``: a run whose loop was closed
#: stays there, holding the thread, so a later ``embed`` can say why it cannot).
_this_thread = threading.local()


class SupervisorClosed(ServerUnavailable):
    """The embedded supervisor is closed (or closing, or crashed): nothing was sent.

    A ``ServerUnavailable`` (same ``kind`` and JSON-RPC code), so code that handles typed
    failures handles this one too.
    """


def _servers_of(servers_or_config: Any) -> tuple[list[ServerSpec], Config | None]:
    """The enabled server specs of a list of specs, a ``Config`` or a config file path."""
    if isinstance(servers_or_config, (str, os.PathLike)):
        from ._config import load_config

        servers_or_config = load_config(servers_or_config)
    if isinstance(servers_or_config, Config):
        return list(servers_or_config.servers), servers_or_config
    servers = list(servers_or_config)
    for spec in servers:
        if not isinstance(spec, ServerSpec):
            raise TypeError(f"expected ServerSpec items, a Config or a config path; got {type(spec).__name__}")
    return servers, None


class EmbeddedSupervisor:
    """The handle ``embed`` returns: the supervisor's methods, awaitable from asyncio.

    Every method must be awaited on the loop ``embed`` ran on. ``crash`` holds the error
    that ended the tree, if one did.
    """

    def __init__(
        self,
        servers: list[ServerSpec],
        *,
        inproc: dict[str, Any] | None = None,
        toolsets: dict[str, list[str]] | None = None,
        on_input_request: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self._servers = servers
        self._inproc = inproc
        self._toolsets = toolsets
        #: The host's own toolsets (``embed(toolsets=)``, not a config's): a reload from a
        #: config adds them over the config's (`reload`).
        self._host_toolsets = dict(toolsets or {})
        self._on_input_request = on_input_request
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._state = _STARTING
        self._start_begun = False  # a handle runs once (`_start`)
        self._stop_asked = False  # by aclose, a cancelled start or the host's shutdown
        self._sup: Supervisor | None = None
        self._tree: Supervisor | None = None  # from its making on, running or not
        self._requests: trio.Nursery | None = None
        self._lifetime: trio.CancelScope | None = None
        self._stop_requested: trio.Event | None = None
        self._reload_lock: trio.Lock | None = None
        self._started: asyncio.Future[None] | None = None
        self._finished: asyncio.Future[None] | None = None
        self._host_tasks: set[asyncio.Task[Any]] = set()
        self._pending: set[asyncio.Future[Any]] = set()  # requests not answered yet
        self._idle_workers: list[trio.lowlevel.Task] = []  # worker tasks waiting for a request
        self._serving: dict[asyncio.Future[Any], trio.CancelScope] = {}  # request -> its worker's scope
        self._host_context: contextvars.Context | None = None
        #: The guest run's own context, as its main task began: each request from the host
        #: starts from a fresh copy of it (not of the host task's context).
        self._trio_context: contextvars.Context | None = None
        self.crash: BaseException | None = None
        self._driver: Driver | None = None  # when trio waits in the loop's own selector
        self._keeper: asyncio.Task[None] | None = None
        self._close_hook: Callable[[], None] | None = None  # shadows the host loop's close

    # -- lifecycle ----------------------------------------------------------------------

    async def _start(self) -> None:
        """Start the guest run; return once the tree is up (every server connected or its
        first attempt failed). A cancelled start stops the run before re-raising; cancelled
        again meanwhile, it re-raises at once, and the keeper task (made before the start is
        awaited) still waits for the run's end, as the loop's end does for it. An earlier
        run of this loop that is stopping holds the thread until it ends: waited for first.
        A handle runs once: a second start (the same ``embed(...)`` awaited again, even
        after ``aclose``) is refused."""
        loop = asyncio.get_running_loop()
        if self._start_begun:
            raise RuntimeError("an embedded supervisor runs once; call embed() again for a new one")
        self._start_begun = True  # before any await: two starts at once are one too many
        try:
            await _wait_for_a_stopping_run(loop)
            if trio.lowlevel.in_trio_run():
                raise RuntimeError(_why_trio_runs_here(loop))
        except BaseException:
            self._start_begun = False  # nothing ran: the same handle may try again
            raise
        self._loop = loop
        self._started = loop.create_future()
        self._finished = loop.create_future()
        self._started.add_done_callback(_mark_retrieved)
        self._host_context = contextvars.copy_context()
        self._lifetime = trio.CancelScope()  # made here so a stop before main starts is kept
        self._stop_requested = trio.Event()
        self._driver = start_guest_run(loop, self._guest_main, done_callback=self._guest_done)
        self._token = trio.lowlevel.current_trio_token()  # allowed once start_guest_run returned
        _this_thread.run = self
        self._watch_host_close()
        # Before the start is awaited: a caller cancelled twice (its wait for the stop cut
        # short too) leaves the run stopping with nobody waiting for it but this task.
        self._keeper = loop.create_task(self._close_when_the_host_ends(), name="mcp-supervisor: close at host shutdown")
        try:
            await asyncio.shield(self._started)
        except BaseException:
            self._request_stop()
            await asyncio.shield(self._finished)
            raise

    async def _close_when_the_host_ends(self) -> None:
        """Wait for the guest run's end. ``asyncio.run`` (or a ``Runner``, or a framework's
        shutdown) cancels every task left when its main coroutine returns, then runs the
        loop until they finish: cancelled here, the tree is closed first, so a host that
        never called ``aclose`` (or whose ``embed`` was cancelled while the tree stopped)
        still leaves no server running, and the thread free, once ``asyncio.run`` returns."""
        assert self._finished is not None
        try:
            await asyncio.shield(self._finished)
        except asyncio.CancelledError:
            if not self._finished.done() and not self._stop_asked:
                # The tasks cancelled with this one (the host's end cancels them all at once,
                # in no set order) get a turn of the loop first: one leaving its
                # ``async with embed(...)`` asks for the stop then, and needs no warning.
                try:
                    await asyncio.sleep(0)
                finally:  # (cancelled again meanwhile: the stop is asked all the same)
                    if not self._finished.done() and not self._stop_asked:
                        log.warning(
                            "the host is shutting down and the embedded supervisor was not closed: closing it now"
                        )
                    self._request_stop()
            if not self._finished.done():
                await asyncio.shield(self._finished)
            raise

    async def _guest_main(self) -> None:
        """The guest run's main task: the tree, and a nursery of requests, until stopped."""
        assert self._lifetime is not None and self._stop_requested is not None
        self._trio_context = contextvars.copy_context()
        self._reload_lock = trio.Lock()
        with self._lifetime:  # cancelled only by a stop while starting
            on_input_request = self._input_bridge(self._on_input_request) if self._on_input_request else None
            sup = Supervisor(self._servers, inproc=self._inproc, toolsets=self._toolsets, on_input_request=on_input_request)
            self._tree = sup
            async with sup:
                try:
                    async with trio.open_nursery() as requests:
                        self._sup, self._requests = sup, requests
                        self._state = _RUNNING
                        _resolve(self._started, None)
                        await self._stop_requested.wait()
                        self._state = _CLOSING
                        # A reload's replacement runs shielded: without this it would wait
                        # for its new incarnation's first attempt, up to connect_timeout.
                        sup.begin_stop()
                        requests.cancel_scope.cancel()  # each request fails with SupervisorClosed
                except BaseException as exc:
                    if not isinstance(_single(exc), trio.Cancelled):
                        self.crash = _single(exc)  # named by the requests refused while the tree stops
                    raise
                finally:
                    # Also on a crash: the tree takes a while to stop its servers, and a
                    # request let in meanwhile would find the nursery closed.
                    self._state, self._requests = _CLOSING, None

    def _guest_done(self, run_outcome: outcome_lib.Outcome[None]) -> None:
        """The guest run ended (called by trio on the host loop). Raises only the
        ``KeyboardInterrupt`` that ended it (Ctrl-C in a trio tick: it is the host's)."""
        interrupt = _interrupt_in(run_outcome.error) if isinstance(run_outcome, outcome_lib.Error) else None
        try:
            self._state = _CLOSED
            self._unwatch_host_close()
            self._requests = None
            error = run_outcome.error if isinstance(run_outcome, outcome_lib.Error) else None
            assert self._started is not None and self._finished is not None
            if error is not None:
                error = _single(error)
                self.crash = error
                if self._started.done():
                    log.error("the embedded supervisor's tree crashed", exc_info=error)
                else:
                    self._started.set_exception(error)
            elif not self._started.done():
                self._started.set_exception(SupervisorClosed("the embedded supervisor was stopped while starting"))
            for future in list(self._pending):  # none should be left; if one is, it must not hang
                _fail(future, self._closed_error())
            _resolve(self._finished, None)
        except BaseException:  # pragma: no cover - a bug here must still not reach the loop
            log.exception("error while finishing the embedded supervisor's guest run")
        if interrupt is not None:
            raise interrupt

    def _watch_host_close(self) -> None:
        """Have the host loop's ``close`` call ``_host_loop_closed`` once this run is live:
        asyncio has no hook for it, so the loop's ``close`` is shadowed by an attribute of the
        loop (until the run ends). A loop that takes no attributes is left alone."""
        loop = self._loop
        assert loop is not None
        close = loop.close

        def close_then_check() -> None:
            close()  # raises (and changes nothing) while the loop runs
            self._host_loop_closed()

        try:
            loop.close = close_then_check  # type: ignore[method-assign]
        except AttributeError:
            return
        self._close_hook = close_then_check

    def _unwatch_host_close(self) -> None:
        """The run ended: the loop's own ``close`` again, and this thread free for another."""
        self._forget_close_hook()
        if getattr(_this_thread, "run", None) is self:
            _this_thread.run = None

    def _forget_close_hook(self) -> None:
        hook, self._close_hook = self._close_hook, None
        if hook is not None and vars(self._loop).get("close") is hook:
            del self._loop.close  # type: ignore[misc]

    def _host_loop_closed(self) -> None:
        """The host closed the loop while the run was live (no ``aclose``, and no
        ``asyncio.run`` to close it): trio can never tick again, the run is abandoned half-way
        and holds this thread. Its stdio servers would run on until this process exits (the
        reaper takes them then): their process trees are killed now. Only this tree's: the
        servers of another supervisor of this process (embedded, or a trio ``Supervisor``
        in another thread) are not touched."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._forget_close_hook()  # (the run stays this thread's: a later embed says why it cannot)
        killed = kill_servers_now(self._own_incarnations())
        log.warning(
            "the asyncio loop of an embedded supervisor was closed without aclose(): its trio guest run is "
            "abandoned half-way and holds this thread (no embed() or trio.run here any more); its stdio "
            "servers were killed (%d). Close it first: `await sup.aclose()` or `async with embed(...)` "
            "(asyncio.run does it for you)",
            killed,
        )

    def _own_incarnations(self) -> list[str]:
        """The incarnation ids of this tree's stdio servers (their latest ones, spawned or
        being spawned). A server's link has one process at a time (an incarnation starts
        once the previous one's is gone, a replacement once the old subtree stopped), and a
        server being removed stays supervised until its process is gone."""
        sup = self._tree
        if sup is None:
            return []
        processes = (sup.link(name).process for name in sup.servers)
        return [proc.incarnation for proc in processes if proc is not None]

    def _request_stop(self) -> None:
        """Ask the guest run to stop (from the host loop); harmless once it has ended."""

        def stop() -> None:
            if self._state == _STARTING and self._lifetime is not None:
                self._lifetime.cancel()
            elif self._stop_requested is not None:
                self._stop_requested.set()

        if self._state in (_STARTING, _RUNNING):
            self._state = _CLOSING if self._state == _RUNNING else self._state
            self._stop_asked = True
            self._soon(stop)

    def _stopping_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this run, of ``loop``, is on its way to its end (asked to stop, or its
        tree ended) and not there yet."""
        ending = self._stop_asked or self._state == _CLOSING
        return self._loop is loop and ending and self._finished is not None and not self._finished.done()

    async def aclose(self) -> None:
        """Stop the tree and wait for the guest run to end. See the module guarantees."""
        if self._finished is None:
            return
        self._check_loop()
        self._request_stop()
        await asyncio.shield(self._finished)

    async def __aenter__(self) -> EmbeddedSupervisor:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    @property
    def running(self) -> bool:
        """True until ``aclose`` is called or the tree ends."""
        return self._state == _RUNNING

    # -- the bridge ---------------------------------------------------------------------

    def _soon(self, fn: Callable[[], Any]) -> bool:
        """Run ``fn()`` in trio soon (any thread); False if the run has already ended."""
        if self._token is None:
            return False
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            return False
        return True

    def _closed_error(self) -> SupervisorClosed:
        if self.crash is not None:
            failure = SupervisorClosed(f"the embedded supervisor crashed: {type(self.crash).__name__}: {self.crash}")
            failure.__cause__ = self.crash
            return failure
        return SupervisorClosed("the embedded supervisor is closed")

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError("use an EmbeddedSupervisor from the asyncio loop embed() ran on, not another")
        return loop

    async def _ask(self, fn: Callable[..., Any], *args: Any, is_async: bool) -> Any:
        """Run ``fn(*args)`` in trio and return its outcome (see ``_submit``). A caller
        cancelled while it waits cancels the trio side too."""
        future = self._submit(fn, *args, is_async=is_async)
        try:
            return await future
        finally:
            # Here rather than in done callbacks of the future: each of those would be one
            # more callback scheduled on the loop per request.
            self._pending.discard(future)
            if future.cancelled() and is_async:
                self._soon(functools.partial(self._cancel_request, future))

    def _submit(self, fn: Callable[..., Any], *args: Any, is_async: bool) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` in trio; its outcome resolves the returned future, which stays in
        ``_pending`` until the caller takes it out.

        ``is_async``: ``fn`` returns an awaitable and is served by a worker task of the
        requests nursery; else it is called synchronously in trio and must not block.
        """
        loop = self._check_loop()
        if self._state != _RUNNING:
            raise self._closed_error()
        future: asyncio.Future[Any] = loop.create_future()
        assert self._trio_context is not None  # set before the state is _RUNNING
        if is_async and self._driver is not None:
            # We are on the loop's thread between two ticks of the guest run: the request
            # goes to its worker now, as trio lets host code of a guest run reschedule tasks,
            # and an idle trio runs it at once, before this returns. That saves the wake-up
            # socket's round trip, the batch trio's entry queue would take to hand the
            # request over and a turn of the loop: the request is on its way (written to a
            # stdio server's pipe, say) before the caller even awaits it.
            idle = self._driver.hold()
            self._trio_context.run(self._start_request, fn, args, future)
            self._pending.add(future)
            if idle:
                self._driver.run_now()
            return future
        if not self._soon(
            functools.partial(self._trio_context.run, self._start_request, fn, args, future)
            if is_async
            else functools.partial(self._run_sync_request, fn, args, future)
        ):
            raise self._closed_error()
        self._pending.add(future)
        return future

    def _run_sync_request(self, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        if future.done():
            return
        if self._state != _RUNNING:
            future.set_exception(self._closed_error())
            return
        try:
            value = fn(*args)
        except BaseException as exc:  # raised here, it would end the whole run
            future.set_exception(exc)
        else:
            future.set_result(value)

    def _start_request(self, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        """Hand a request to an idle worker, or to a new one. Runs in the guest run's own
        context (in trio, or on the loop's thread between two ticks)."""
        if future.done():  # cancelled before it reached trio: never started
            return
        requests = self._requests
        if requests is None or self._state != _RUNNING:
            future.set_exception(self._closed_error())
            return
        if self._idle_workers:
            worker = self._idle_workers.pop()
            worker.context = contextvars.copy_context()  # each request starts from a fresh copy
            worker.name = _task_name(fn)
            trio.lowlevel.reschedule(worker, outcome_lib.Value((fn, args, future)))
            return
        try:
            requests.start_soon(self._work, (fn, args, future), name=_task_name(fn))
        except RuntimeError:  # the nursery closed: raising here would end the whole run
            future.set_exception(self._closed_error())

    async def _work(self, request: tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], asyncio.Future[Any]]) -> None:
        """A worker of the requests nursery: serves ``request``, then waits idle for the next
        one (``_start_request`` hands it over), until it is cancelled or ``_IDLE_WORKERS``
        others are idle already.

        One cancel scope for the worker's whole life, cancelled only to cancel the request
        it serves then, and the worker ends with it. A task and a scope per request cost
        more than the rest of the bridge: spawning, entering and leaving them is about a
        quarter of what a call from asyncio adds to the same call made inside trio.
        """
        task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle_workers.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.CancelScope() as scope:
            while True:
                fn, args, future = request
                self._serving[future] = scope
                try:
                    await self._serve_request(fn, args, future, scope)
                finally:
                    del self._serving[future]
                if len(self._idle_workers) >= _IDLE_WORKERS:
                    return
                self._idle_workers.append(task)
                request = await trio.lowlevel.wait_task_rescheduled(abort)

    def _cancel_request(self, future: asyncio.Future[Any]) -> None:
        """The caller of ``future`` was cancelled: cancel the request in trio (if a worker
        still serves it)."""
        scope = self._serving.get(future)
        if scope is not None:
            scope.cancel()

    async def _serve_request(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        scope: trio.CancelScope,
    ) -> None:
        """One request, in its worker's ``scope`` (cancelled only for this request's caller).
        Resolves ``future`` exactly once, unless it was cancelled."""
        if future.done():
            return
        try:
            value = await fn(*args)
        except Exception as exc:
            _fail(future, exc)
            return
        except BaseException as exc:
            if not _only_cancelled(exc):  # SystemExit, KeyboardInterrupt, ...: the awaiter's
                _fail(future, exc)
                return
            # the caller left (scope) or we are closing
            if not scope.cancel_called:
                _fail(future, SupervisorClosed("the embedded supervisor closed while the call was in flight"))
            raise
        if not future.done():
            future.set_result(value)

    async def run_in_trio(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(supervisor, *args)`` inside the guest run and return its result.

        ``fn`` gets the trio ``Supervisor`` and may be a trio async function (run by a worker
        task of the guest run, cancelled when the awaiting asyncio task is) or a plain
        function (called in trio; it must not block). For what the methods below do not cover, such as the live
        ``mcp.Client`` of a server (``supervisor.link(name).conn.client``).
        """
        sup = self._require()
        return await self._ask(_call_maybe_async, fn, sup, *args, is_async=True)

    # -- the supervisor's methods, from asyncio -------------------------------------------

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        server: str | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        progress: Callable[[float, float | None, str | None], Any] | None = None,
    ) -> Any:
        """``Supervisor.call_tool`` from asyncio: the tool's ``CallToolResult`` (``is_error``
        included), or exactly one typed ``Failure`` (or the server's ``MCPError``) raised.

        Cancelling the awaiting task cancels the call on the server. ``progress`` may be a
        plain function or an async function; an async one runs as an asyncio task per
        notification (progress is advisory: the call does not wait for it).
        """
        sup = self._sup
        if sup is None:
            raise self._closed_error()
        call = functools.partial(
            sup.call_tool,
            name,
            arguments,
            server=server,
            timeout=timeout,
            meta=meta,
            progress=self._progress_bridge(progress) if progress is not None else None,
        )
        return await self._ask(call, is_async=True)

    def _progress_bridge(self, progress: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        """A trio progress callback that hands each notification to ``progress`` on the host
        loop, in a copy of the host's context of its own; it never waits for it."""

        async def in_trio(value: float, total: float | None, message: str | None) -> None:
            assert self._loop is not None
            args = (value, total, message)
            self._loop.call_soon(self._run_host_callback, progress, args, context=self._host_context.copy())

        return in_trio

    def _input_bridge(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """The trio ``on_input_request`` that runs the host's asyncio ``handler`` as a task on
        the host loop, in a copy of the host's context of its own, and waits for it.
        Cancelled in trio (the server's deadline, the call's end) cancels the host task; a
        host task cancelled from its side becomes a refusal."""

        async def in_trio(server: str, request: Any) -> Any:
            assert self._loop is not None
            token = trio.lowlevel.current_trio_token()
            done = trio.Event()

            def wake(_: Any) -> None:
                try:
                    token.run_sync_soon(done.set)
                except trio.RunFinishedError:  # the tree is gone: nobody waits any more
                    pass

            task = self._loop.create_task(_awaited(handler(server, request)), context=self._host_context.copy())
            task.add_done_callback(wake)
            try:
                await done.wait()
            finally:
                if not task.done():
                    task.cancel()
            if task.cancelled():
                return ErrorData(code=INTERNAL_ERROR, message=f"the host cancelled its answer to server {server!r}")
            return task.result()

        return in_trio

    def _run_host_callback(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = callback(*args)
        except Exception:
            log.exception("the progress callback raised; the call goes on")
            return
        if inspect.isawaitable(result):
            assert self._loop is not None
            task = self._loop.create_task(_awaited(result))
            self._host_tasks.add(task)
            task.add_done_callback(self._host_task_done)

    def _host_task_done(self, task: asyncio.Task[Any]) -> None:
        self._host_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("the progress callback raised; the call goes on", exc_info=task.exception())

    async def list_tools(self, *, toolset: str | None = None, category: str | None = None) -> list[ToolSpec]:
        """The exposed tools, optionally of one toolset (main, rewrite, debug, search, or the
        config's own) or category. Raises ``ValueError`` for an unknown toolset or category."""
        sup = self._require()
        return await self._ask(functools.partial(sup.list_tools, toolset=toolset, category=category), is_async=False)

    async def status(self) -> ChildStatus:
        """The supervision tree now: every node's state, restarts, last exit and detail."""
        sup = self._require()
        return await self._ask(sup.status, is_async=False)

    async def servers(self) -> list[str]:
        """The names of the servers supervised now."""
        sup = self._require()
        return await self._ask(lambda: sup.servers, is_async=False)

    async def metrics(self) -> MetricsSnapshot:
        """The metrics actor's snapshot (``Supervisor.metrics_snapshot()``): every tool's and
        server's counters, latency distribution and gauges, as of now."""
        sup = self._require()
        return await self._ask(sup.metrics_snapshot, is_async=True)

    async def metrics_text(self) -> bytes:
        """The Prometheus text exposition of ``metrics()`` (``Supervisor.metrics_text()``)."""
        sup = self._require()
        return await self._ask(sup.metrics_text, is_async=True)

    def events(self, size: int = 1000) -> AsyncIterator[Event]:
        """Every event of the tree from this call on (started, ready, exited, restarting,
        breaker_state, ...), until the supervisor closes. The subscription is made before
        the tree does anything more, not at the first iteration, so nothing that happens
        between the call and the first ``async for`` step is missed. A subscriber that falls
        ``size`` events behind misses events rather than slowing the tree. A step that is
        cancelled (a timeout around ``anext``) ends only itself. The iteration ends when the
        supervisor closes or the iterator is closed (``aclose``, which unsubscribes; so does
        dropping it once it has been iterated)."""
        sup = self._require()
        if self._driver is not None:
            # On the loop's thread, between two ticks: subscribed now, as a later request
            # handed to an idle trio directly would run before trio's entry queue did.
            subscribed: asyncio.Future[Any] = self._check_loop().create_future()
            subscribed.set_result(sup.subscribe(size))
        else:
            subscribed = self._submit(sup.subscribe, size, is_async=False)
            subscribed.add_done_callback(self._pending.discard)
        return _EventStream(self, subscribed)

    async def reload(self, servers_or_config: Any) -> dict[str, list[str]]:
        """Supervise ``servers_or_config`` (specs, a ``Config`` or a config path) instead.

        Diffed by server name: removed servers stop (draining their calls), changed ones
        are updated in place when only ``LIVE_KEYS`` changed (timeouts, limits, retry
        policy, categories, ...: same process, nothing disturbed) and replaced otherwise
        (``Supervisor.replace_server``: their tools stay listed and new calls wait for the
        new incarnation instead of failing), new ones start, and unchanged ones are not
        touched (their calls in flight go on). Given a ``Config`` (or path), the toolsets
        become what ``embed`` made of its own: the seed's defaults, the config's, and the
        host's own (``embed(toolsets=)``, which win by name), so toolsets deleted from the
        file go at its next reload, the host's stay, and reloading an unchanged file
        changes nothing. A list of specs changes no toolset. The new list is checked
        (duplicate names, toolsets) before anything changes. Reloads are serialized.
        Returns ``{"added", "removed", "updated", "replaced", "unchanged", "failed"}``
        (server names), as the daemon's reload does: a server whose change raised (another
        change of it under way, through ``run_in_trio``) is listed under ``failed`` and its
        error logged, and the other servers' changes go on.
        """
        wanted, config = _servers_of(servers_or_config)
        toolsets = None if config is None else {**config.settings.toolsets, **self._host_toolsets}
        if toolsets is not None:
            check_toolsets(toolsets)
        names = [s.name for s in wanted]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names: {sorted({n for n in names if names.count(n) > 1})}")
        self._require()
        return await self._ask(self._reload_in_trio, [s for s in wanted if s.enabled], toolsets, is_async=True)

    async def _reload_in_trio(
        self, wanted_list: list[ServerSpec], toolsets: dict[str, list[str]] | None
    ) -> dict[str, list[str]]:
        sup = self._sup
        assert sup is not None and self._reload_lock is not None
        async with self._reload_lock:
            if toolsets is not None:
                await sup.set_toolsets(toolsets)
            failed: list[str] = []

            def report(name: str, exc: Exception) -> None:
                log.error("reload: server %r: %s: %s", name, type(exc).__name__, exc)
                failed.append(name)

            return {**await sup.reconcile(wanted_list, on_error=report), "failed": failed}

    async def restart(self, server: str) -> ChildStatus:
        """Restart one server now (``Supervisor.restart_server``: no gap for its callers,
        calls in flight finish, a server marked ``failed`` comes back). Serialized with
        reloads; returns the server's subtree status once the new incarnation is connected
        or its first attempt failed. Raises ``KeyError`` for an unknown server."""
        self._require()
        return await self._ask(self._restart_in_trio, server, is_async=True)

    async def _restart_in_trio(self, server: str) -> ChildStatus:
        sup = self._sup
        assert sup is not None and self._reload_lock is not None
        async with self._reload_lock:
            return await sup.restart_server(server)

    async def set_breaker(self, server: str, action: str, reason: str = "operator") -> ChildStatus:
        """``Supervisor.set_breaker``: ``"open"`` fences ``server`` off (every call fails
        fast with ``CircuitOpen`` naming ``reason``) until ``"reset"``; ``"disable"`` lets
        every call through uncounted. Serialized with reloads; returns the server's subtree
        status."""
        self._require()
        return await self._ask(self._set_breaker_in_trio, server, action, reason, is_async=True)

    async def _set_breaker_in_trio(self, server: str, action: str, reason: str) -> ChildStatus:
        sup = self._sup
        assert sup is not None and self._reload_lock is not None
        async with self._reload_lock:
            return await sup.set_breaker(server, action, reason)

    def _require(self) -> Supervisor:
        if self._sup is None or self._state != _RUNNING:
            raise self._closed_error()
        return self._sup


class _EventStream:
    """``EmbeddedSupervisor.events()``: each step receives one event in trio, as a request
    of its own, so cancelling a step leaves the subscription as it was.

    A step cancelled once its event was taken from the channel (the cancellation reached
    trio after the receive, or the step's task after its future had the event) leaves
    that event in ``_kept``, for the next steps in order: steps take events one at a time
    (``_taking``), and a step whose caller is gone before its turn takes none.
    """

    def __init__(self, owner: EmbeddedSupervisor, subscribed: asyncio.Future[Any]) -> None:
        self._owner = owner
        self._subscribed = subscribed
        self._closed = False
        self._kept: collections.deque[Event] = collections.deque()  # taken, not yet delivered
        self._taking = trio.Lock()

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        if self._kept:  # older than any event still in the channel (see _take)
            return self._kept.popleft()
        owner = self._owner
        try:
            channel: trio.MemoryReceiveChannel[Event] = await asyncio.shield(self._subscribed)
            step: list[asyncio.Future[Any]] = []  # the step's future, once _submit returned it
            future = owner._submit(self._take, channel, step, is_async=True)
        except SupervisorClosed:
            await self.aclose()
            raise StopAsyncIteration from None
        step.append(future)
        try:
            return await future
        except (trio.EndOfChannel, SupervisorClosed):
            await self.aclose()
            raise StopAsyncIteration from None
        except asyncio.CancelledError:
            if not future.cancelled() and future.exception() is None:
                self._kept.appendleft(future.result())  # it came as the task was cancelled
            raise
        finally:
            owner._pending.discard(future)
            if future.cancelled():
                owner._soon(functools.partial(owner._cancel_request, future))

    async def _take(self, channel: trio.MemoryReceiveChannel[Event], step: list[asyncio.Future[Any]]) -> Event | None:
        """In trio: the next event for ``step``. Kept instead when the step's caller left
        meanwhile (its future is done); none is taken when it left before this step's turn."""
        async with self._taking:
            if step and step[0].done():
                return None
            event = self._kept.popleft() if self._kept else await channel.receive()
            if step and step[0].done():  # nothing can take it from the future any more
                self._kept.appendleft(event)
            return event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._subscribed.add_done_callback(self._unsubscribe)

    def _unsubscribe(self, subscribed: asyncio.Future[Any]) -> None:
        if not subscribed.cancelled() and subscribed.exception() is None:
            self._owner._soon(subscribed.result().close)

    def __del__(self) -> None:
        if not self._closed and self._subscribed.done():
            self._unsubscribe(self._subscribed)


class _Embedding:
    """What ``embed`` returns: await it for the handle, or use it as ``async with``."""

    def __init__(self, handle: EmbeddedSupervisor) -> None:
        self._handle = handle

    async def _open(self) -> EmbeddedSupervisor:
        await self._handle._start()
        return self._handle

    def __await__(self) -> Generator[Any, None, EmbeddedSupervisor]:
        return self._open().__await__()

    async def __aenter__(self) -> EmbeddedSupervisor:
        return await self._open()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._handle.aclose()


def embed(
    servers_or_config: Iterable[ServerSpec] | Config | str | os.PathLike[str],
    *,
    inproc: dict[str, Any] | None = None,
    toolsets: dict[str, list[str]] | None = None,
    on_input_request: Callable[..., Awaitable[Any]] | None = None,
) -> _Embedding:
    """Start supervising ``servers_or_config`` as a trio guest run on the running asyncio loop.

    ``servers_or_config``: a list of ``ServerSpec``, a loaded ``Config`` (its toolsets are
    used beside ``toolsets``, which win by name) or the path of a config file. ``inproc`` and
    ``toolsets`` are the ``Supervisor``'s. ``on_input_request`` is too, as an asyncio
    coroutine function: it runs as a task on the host loop, each in a copy of the host's
    context (as it was at ``embed``): what one sets, no other sees.

    ``await embed(...)`` returns the ``EmbeddedSupervisor`` once every server has connected
    or failed its first attempt (a failed server keeps being restarted in the background);
    ``async with embed(...) as sup:`` also closes it at the end. Raises what the
    ``Supervisor`` raises at start-up (``ValueError`` for duplicate names), and
    ``RuntimeError`` if this thread already runs trio (one guest run per loop); an earlier
    run of this loop that is stopping (closed, crashed, or its start cancelled) is waited
    for instead. Cancelled, it stops the tree before re-raising (see the module guarantees).
    What it returns starts one run: awaited (or entered) a second time, even once closed,
    it raises ``RuntimeError``; call ``embed`` again for a new run.
    """
    servers, config = _servers_of(servers_or_config)
    host_toolsets = dict(toolsets or {})
    if config is not None and config.settings.toolsets:
        toolsets = {**config.settings.toolsets, **host_toolsets}  # the host's win by name
    handle = EmbeddedSupervisor(servers, inproc=inproc, toolsets=toolsets, on_input_request=on_input_request)
    handle._host_toolsets = host_toolsets  # the config's are not the host's (`reload`)
    return _Embedding(handle)


# -- helpers ----------------------------------------------------------------------------


async def _call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    return value


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _task_name(fn: Any) -> str:
    """A cheap name for a request's trio task (never the repr of its arguments)."""
    inner = getattr(fn, "func", fn)  # functools.partial
    return f"embedded request: {getattr(inner, '__qualname__', type(inner).__name__)}"


def _resolve(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


async def _wait_for_a_stopping_run(loop: asyncio.AbstractEventLoop) -> None:
    """Wait while this thread's trio run is an earlier embedded run of ``loop`` that is
    stopping (closed, crashed, or its start cancelled): it holds the thread only until it
    ends. Cancelling the wait leaves that run as it was."""
    while trio.lowlevel.in_trio_run():
        earlier: EmbeddedSupervisor | None = getattr(_this_thread, "run", None)
        if earlier is None or not earlier._stopping_on(loop):
            return
        assert earlier._finished is not None
        await asyncio.shield(earlier._finished)


def _why_trio_runs_here(loop: asyncio.AbstractEventLoop) -> str:
    """Why ``embed`` cannot start on ``loop``: this thread runs trio already."""
    earlier: EmbeddedSupervisor | None = getattr(_this_thread, "run", None)
    if earlier is not None and earlier._loop is not loop:
        if earlier._loop is not None and earlier._loop.is_closed():
            return (
                "embed() cannot start: an earlier embed() in this thread ran on an asyncio loop that was "
                "closed without aclose(), and its trio guest run, abandoned half-way, still holds this "
                "thread (trio runs once per thread). Close the handle (`await sup.aclose()`, or "
                "`async with embed(...)`) before its loop closes; in this process, embed() again only "
                "in another thread"
            )
        return (
            "embed() cannot start: an earlier embed() in this thread, on another asyncio loop, is still "
            "open (trio runs once per thread): `await sup.aclose()` on its own loop first"
        )
    return (
        "embed() needs a plain asyncio loop, and this thread already runs trio (a trio "
        "program, trio-asyncio's loop, or an earlier embed() on this loop): in trio, use "
        "`async with Supervisor(...)`; share one EmbeddedSupervisor per loop"
    )


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Keep asyncio from logging a start-up error nobody awaited (embed's caller left)."""
    if not future.cancelled():
        future.exception()


def _interrupt_in(error: BaseException) -> KeyboardInterrupt | None:
    """The ``KeyboardInterrupt`` that ended a run with ``error``, if one did."""
    if isinstance(error, trio.TrioInternalError) and error.__cause__ is not None:
        error = error.__cause__  # raised in trio's own code
    if isinstance(error, BaseExceptionGroup):
        error = error.subgroup(KeyboardInterrupt)
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
    return error if isinstance(error, KeyboardInterrupt) else None


def _only_cancelled(error: BaseException) -> bool:
    """Whether ``error`` is trio's ``Cancelled``, or a group of nothing else."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


def _single(error: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio's strict groups)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
