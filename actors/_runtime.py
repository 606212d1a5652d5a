"""The actor runtime: a bounded mailbox, a ``Ref`` to reach it, ``tell`` and ``ask``.

An actor is a trio task that owns its state and reads one ``Mailbox``. Nothing reaches the
actor except through its ``Ref``:

- ``await ref.tell(msg)`` delivers without an answer and waits while the mailbox is full;
  ``ref.tell_nowait(msg)`` raises ``Overloaded`` instead of waiting.
- ``ref.post(msg)`` delivers lazily: the actor is not woken for it. Posted messages reach the
  actor, in order, before the next message sent with ``tell``/``ask`` (or once
  ``POST_BATCH`` of them are waiting, or when the mailbox is stopped). For reports nobody
  waits on (a call's outcome), it saves a task switch per message.
- ``await ref.ask(msg, timeout)`` delivers and waits for exactly one answer: the value the
  actor sends, the ``Failure`` it fails the reply with, ``DeadlineExceeded`` when ``timeout``
  passes first (the wait for mailbox space counts against it), or ``ActorDown`` when the actor
  is not running or dies before answering. It never hangs.

Guarantees:

- Messages are handled in the order they were sent, posted ones included. (One exception:
  while an ``await ref.tell`` waits for room, the posted messages it carries can be
  overtaken by a ``tell_nowait`` or ``ask`` from another task.)
- A reply that comes after its asker gave up (timeout or cancellation) is dropped; answering
  never raises in the actor, and returns whether the asker got the answer.
- When the actor's behaviour returns or raises, ``serve`` closes the mailbox: every pending
  ``ask`` (queued or already taken) fails at once with ``ActorDown`` naming the reason, and
  every later ``tell``/``ask`` fails the same way, each with an ``ActorDown`` of its own.
  The exception itself propagates out of ``serve`` unchanged, traceback included, to
  whoever supervises the task.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

from protocol import ActorDown, DeadlineExceeded, Overloaded

__all__ = ["Mailbox", "Ref", "Reply", "serve", "spawn"]

M = TypeVar("M")

_UNANSWERED = object()
_ABANDONED = object()  # the asker left unanswered: later answers are dropped

POST_BATCH = 64
"""Posted messages waiting before the actor is woken for them (at most the mailbox size)."""


class _Posted:
    """A batch of posted messages, travelling in the channel as one item."""

    __slots__ = ("messages",)

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages


class Reply:
    """The one-shot answer slot of one ``ask``. Only the first answer counts."""

    __slots__ = ("_mailbox", "_result", "_task")

    def __init__(self, mailbox: Mailbox[Any]) -> None:
        self._mailbox = mailbox
        self._task: trio.lowlevel.Task | None = None
        self._result: Any = _UNANSWERED

    @property
    def answered(self) -> bool:
        """Answered already, or its asker left: any further answer is dropped."""
        return self._result is not _UNANSWERED

    def send(self, value: Any) -> bool:
        """Answer with ``value``. A second answer, or one after the asker left (cancelled,
        or its deadline passed), is dropped. Returns True when the asker gets this answer."""
        return self._settle(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        """Answer with an error the asker will raise. Dropped (False) like ``send``."""
        return self._settle(outcome.Error(error))

    def _settle(self, result: outcome.Outcome[Any]) -> bool:
        if self._result is not _UNANSWERED:
            return False
        self._result = result
        self._mailbox._pending.discard(self)
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task, result)
        return True

    async def _wait(self) -> Any:
        if self._result is not _UNANSWERED:
            return self._result.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            # Marked now: the actor may run before the asker resumes to leave.
            self._task, self._result = None, _ABANDONED
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class Mailbox(Generic[M]):
    """The bounded inbox of one actor, iterated by the actor as ``(msg, reply)`` pairs.

    ``reply`` is ``None`` for a ``tell`` and a ``Reply`` for an ``ask``. The actor may answer
    later, from another task (for example, one that serves calls concurrently).
    """

    def __init__(self, name: str, size: int | float = 64) -> None:
        self.name = name
        self._send, self._receive = trio.open_memory_channel[tuple[M, Reply | None]](size)
        self._pending: set[Reply] = set()
        self._down: str | None = None  # why it is down; each raise builds its own ActorDown
        self._stopped = False
        self._posted: list[M] = []  # not yet in the channel
        self._taken: deque[M] = deque()  # out of the channel, not yet handed to the actor
        self._post_batch = max(1, int(min(size, POST_BATCH)))
        self.ref: Ref[M] = Ref(self)

    @property
    def closed(self) -> bool:
        return self._down is not None

    def qsize(self) -> int:
        return self._send.statistics().current_buffer_used + len(self._posted) + len(self._taken)

    def __aiter__(self) -> Mailbox[M]:
        return self

    async def __anext__(self) -> tuple[M, Reply | None]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> tuple[M, Reply | None]:
        if self._taken:
            return self._taken.popleft(), None
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            return self._last_posted()
        return self._unpack(item)

    def receive_nowait(self) -> tuple[M, Reply | None]:
        if self._taken:
            return self._taken.popleft(), None
        try:
            item = self._receive.receive_nowait()
        except trio.EndOfChannel:
            return self._last_posted()
        return self._unpack(item)

    def _last_posted(self) -> tuple[M, Reply | None]:
        """Stopped and drained: what was posted is still handled, then the end."""
        if not self._take(self._posted):
            raise trio.EndOfChannel
        self._posted = []
        return self._taken.popleft(), None

    def _unpack(self, item: Any) -> tuple[M, Reply | None]:
        if type(item) is _Posted:
            self._take(item.messages)
            return self._taken.popleft(), None
        return item

    def _take(self, messages: list[M]) -> bool:
        self._taken.extend(messages)
        return bool(messages)

    def _free_slots(self) -> float:
        stats = self._send.statistics()
        return stats.max_buffer_size - stats.current_buffer_used

    def _flush_nowait(self) -> None:
        """Put the posted messages in the channel (raises ``WouldBlock`` when it is full)."""
        if self._posted:
            self._send.send_nowait(_Posted(self._posted))  # type: ignore[arg-type]
            self._posted = []

    async def _flush(self) -> None:
        if self._posted:
            batch, self._posted = self._posted, []
            try:
                await self._send.send(_Posted(batch))  # type: ignore[arg-type]
            except BaseException:
                self._posted[:0] = batch
                raise

    def stop(self) -> None:
        """Refuse new messages; the actor drains what is queued (posted included), then its
        loop ends."""
        self._stopped = True
        self._send.close()

    def close(self, reason: BaseException | str) -> None:
        """Mark the actor down: fail every pending and every later ``ask`` with ``ActorDown``."""
        if self._down is not None:
            return
        why = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        self._down = f"actor {self.name!r} is down ({why})"
        self._stopped = True
        self._send.close()
        self._receive.close()
        self._posted, self._taken = [], deque()
        for reply in list(self._pending):
            reply.fail(self._actor_down())

    def _actor_down(self) -> ActorDown:
        # Never one shared instance: every raise would grow its traceback, pinning callers'
        # frames, and whoever amends it (retry) would change it for everyone.
        return ActorDown(self._down or f"actor {self.name!r} is stopping", actor=self.name)


class Ref(Generic[M]):
    """The only way to reach an actor. Cheap to copy; valid for one incarnation."""

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox[M]) -> None:
        self._mailbox = mailbox

    @property
    def name(self) -> str:
        return self._mailbox.name

    @property
    def alive(self) -> bool:
        return self._mailbox._down is None

    def __repr__(self) -> str:
        return f"<Ref {self.name}{'' if self.alive else ' (down)'}>"

    def stop(self) -> None:
        """Ask the actor to stop: new messages are refused, queued ones are still handled."""
        self._mailbox.stop()

    def _down(self) -> ActorDown:
        return self._mailbox._actor_down()

    async def tell(self, msg: M) -> None:
        """Deliver ``msg``; wait while the mailbox is full. Raises ``ActorDown``."""
        mailbox = self._mailbox
        try:
            await mailbox._flush()
            await mailbox._send.send((msg, None))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._down() from None

    def tell_nowait(self, msg: M, *, keep_free: int = 0) -> None:
        """Deliver ``msg`` or raise ``Overloaded`` (mailbox full) or ``ActorDown``.

        ``keep_free``: also ``Overloaded`` when no more than that many slots are free, so
        that reports cannot crowd out messages that must get through.
        """
        mailbox = self._mailbox
        if keep_free and mailbox._free_slots() <= keep_free and mailbox._down is None:
            raise Overloaded(f"mailbox of {self.name!r} is nearly full", actor=self.name)
        try:
            mailbox._flush_nowait()
            mailbox._send.send_nowait((msg, None))
        except trio.WouldBlock:
            raise Overloaded(f"mailbox of {self.name!r} is full", actor=self.name) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._down() from None

    def post(self, msg: M, *, keep_free: int = 0) -> None:
        """Deliver ``msg`` without waking the actor for it (see the module docstring).

        Raises ``Overloaded`` (``keep_free`` as for ``tell_nowait``) or ``ActorDown``.
        """
        mailbox = self._mailbox
        if mailbox._stopped:
            raise self._down()
        posted = mailbox._posted
        if len(posted) < mailbox._post_batch:
            posted.append(msg)
            return
        if keep_free and mailbox._free_slots() <= keep_free:
            raise Overloaded(f"mailbox of {self.name!r} is nearly full", actor=self.name)
        try:
            mailbox._flush_nowait()
        except trio.WouldBlock:
            raise Overloaded(f"mailbox of {self.name!r} is full", actor=self.name) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._down() from None
        mailbox._posted.append(msg)

    async def ask(self, msg: M, timeout: float = math.inf) -> Any:
        """Deliver ``msg`` and return the one answer, or raise a typed ``Failure``.

        Raises ``DeadlineExceeded`` after ``timeout`` seconds (mailbox wait included),
        ``ActorDown`` when the actor is not running or dies first, or whatever ``Failure``
        the actor answered with. Cancelling the caller abandons the reply; the actor's later
        answer is then dropped.
        """
        mailbox = self._mailbox
        reply = Reply(mailbox)
        mailbox._pending.add(reply)
        deadline = trio.current_time() + timeout
        try:
            try:
                mailbox._flush_nowait()
                mailbox._send.send_nowait((msg, reply))
            except trio.WouldBlock:
                with trio.move_on_at(deadline) as waited_too_long:
                    await mailbox._flush()
                    await mailbox._send.send((msg, reply))
                if waited_too_long.cancelled_caught:
                    raise self._deadline_exceeded(timeout) from None
            if deadline != math.inf and not reply.answered:
                # One shared timer task per run instead of a cancel scope per ask.
                _Deadlines.get().add(deadline, reply, self, timeout)
            return await reply._wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._down() from None
        finally:
            mailbox._pending.discard(reply)

    def _deadline_exceeded(self, timeout: float) -> DeadlineExceeded:
        return DeadlineExceeded(f"no answer from {self.name!r} within {timeout:g} s", actor=self.name, timeout=timeout)


class _Deadlines:
    """The asks' deadlines of one trio run, kept in a heap and fired by one system task.

    A cancel scope per ask costs more than the rest of the round trip; a heap push does not.
    Entries of answered asks are skipped when their time comes.
    """

    _RUN_VAR: trio.lowlevel.RunVar[_Deadlines] = trio.lowlevel.RunVar("actor_ask_deadlines")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Reply, Ref[Any], float]] = []
        self._counter = 0
        self._prune_at = 1024
        self._scope: trio.CancelScope | None = None
        trio.lowlevel.spawn_system_task(self._fire, name="actor-ask-deadlines")

    @classmethod
    def get(cls) -> _Deadlines:
        try:
            return cls._RUN_VAR.get()
        except LookupError:
            deadlines = cls()
            cls._RUN_VAR.set(deadlines)
            return deadlines

    def add(self, deadline: float, reply: Reply, ref: Ref[Any], timeout: float) -> None:
        self._counter += 1
        heap = self._heap
        if len(heap) >= self._prune_at:  # drop answered entries; amortized O(1) per ask
            heap[:] = [entry for entry in heap if not entry[2].answered]
            heapq.heapify(heap)
            self._prune_at = max(1024, 2 * len(heap))
        heapq.heappush(heap, (deadline, self._counter, reply, ref, timeout))
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    async def _fire(self) -> None:
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._scope:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, reply, ref, timeout = heapq.heappop(heap)
                if not reply.answered:
                    reply.fail(ref._deadline_exceeded(timeout))


async def serve(mailbox: Mailbox[M], behaviour: Callable[[Mailbox[M]], Awaitable[None]]) -> None:
    """Run ``behaviour(mailbox)`` as the actor's life; close the mailbox when it ends.

    A normal return closes it with reason ``normal``; an exception (or cancellation) closes
    it with that reason and then propagates unchanged.
    """
    try:
        await behaviour(mailbox)
    except BaseException as exc:
        mailbox.close(exc if not isinstance(exc, trio.Cancelled) else "cancelled")
        raise
    mailbox.close("normal")


def spawn(
    nursery: trio.Nursery,
    behaviour: Callable[[Mailbox[M]], Awaitable[None]],
    *,
    name: str,
    size: int | float = 64,
) -> Ref[M]:
    """Start ``behaviour`` as an actor task in ``nursery`` and return its ``Ref``."""
    mailbox: Mailbox[M] = Mailbox(name, size)
    nursery.start_soon(serve, mailbox, behaviour, name=f"actor:{name}")
    return mailbox.ref

