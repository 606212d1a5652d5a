"""The session's streams over a stdio server's pipes: no reader or writer task.

The SDK's own stdio transport hands each message between the session and two tasks of its
own, a reader and a writer; each hand-over is a trio scheduling round (an epoll call, and
in a guest run a turn of the host's loop), eight per call. Here the session's own tasks
read and write the pipes: `PipeReader` frames stdout with the stdio wire's framing
(`actors._stdio`) when the session asks for the next message, and `PipeWriter` writes each
message from the task that sends it. A supervised stdio call takes three rounds. Reading
and writing skip trio's leading checkpoint (`_read_some`): a task yields only to wait, or,
reading, when bytes were there at once, so that a flooding server cannot starve the others.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import select
from collections.abc import Callable, Iterator
from typing import Any, Self

import anyio
import mcp_types
import trio
from mcp.shared.message import SessionMessage

from ._stdio import (
    _GONE,
    Delivered,
    MalformedRequest,
    OversizedRequest,
    _drain,
    _encoded,
    _Framer,
    _read_some,
    _unencodable,
)

__all__ = ["Closing", "PipeReader", "PipeWriter", "Receiving", "unsent_requests"]

#: Set by a caller around its request, to a set of its own: `PipeWriter` adds the id of each
#: request sent from that context that it wrote not a byte of, stdin being broken. Such a
#: request provably never reached the server, though the SDK turns the failed write into the
#: same "Connection closed" as an answer lost after the send.
unsent_requests: contextvars.ContextVar[set[Any] | None] = contextvars.ContextVar("unsent_requests", default=None)


def _note_unsent(message: SessionMessage) -> None:
    # A tool call's own request only: the SDK may send others from the caller's task (a
    # tools/list to check the answer's output schema, after the call ran), and those going
    # unsent say nothing of whether the call reached the server.
    unsent = unsent_requests.get()
    sent = message.message
    if unsent is not None and isinstance(sent, mcp_types.JSONRPCRequest) and sent.method == "tools/call":
        unsent.add(sent.id)


class Closing:
    """``aclose`` and ``async with`` for a stream whose ``close`` needs no waiting."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Receiving(Closing):
    """Async iteration over ``receive`` (which raises ``anyio.EndOfStream`` at the end)."""

    async def receive(self) -> Delivered:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivered:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class PipeReader(Receiving):
    """The session's read stream over a server's stdout pipe: the session's own task reads
    and frames the pipe (`_Framer`) when it asks for the next message, so no reader task
    hands messages over (one scheduling round less per message, a turn of the host loop in
    a guest run).

    One chunk at a time: the pipe is read again only once every message of the last chunk
    was taken, so a flooding server is held back by its own pipe. The stream ends
    (``anyio.EndOfStream``) when stdout does, or at ``end`` (the writer found stdin
    broken). ``inject`` hands the session a message of ours (an error answer to a request
    that could not be sent), ahead of what the pipe holds. Once the session closes the
    stream, the rest of stdout is read and dropped by a task of ``nursery``, so a server
    blocked on a full pipe can still exit (until the process that opened the pipe closes
    it). A session cancelled while waiting loses nothing: bytes read are kept.
    """

    def __init__(
        self,
        stdout: trio.lowlevel.FdStream,
        nursery: trio.Nursery,
        max_bytes: int,
        server: str,
        dropped: Callable[[], None] = lambda: None,
        refuse: Callable[[OversizedRequest | MalformedRequest], None] = lambda request: None,
    ) -> None:
        self._stdout = stdout
        self._nursery = nursery
        self._framer = _Framer(max_bytes, server, dropped, refuse)
        self._lines: Iterator[Delivered] = iter(())
        self._injected: collections.deque[Delivered] = collections.deque()
        self._ended = False
        self._closed = False
        self._reading: trio.CancelScope | None = None  # the session's wait for the pipe
        self._handled_in_a_task = False

    def inject(self, message: Delivered) -> None:
        self._injected.append(message)
        self._interrupt()

    def end(self) -> None:
        self._ended = True
        self._interrupt()

    def hung_up(self) -> bool:
        """Whether no process holds the pipe's write end any more (or the stream ended): what
        is left in the pipe, if anything, is followed by EOF, which the session will see.
        False while some process still has it open: one the server started, say, outliving it."""
        fd = self._stdout.fileno()
        if self._ended or self._closed or fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def _interrupt(self) -> None:
        if self._reading is not None:
            self._reading.cancel()  # it looks again: at the injected message, or the end

    async def receive(self) -> Delivered:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._handled_in_a_task:
            # The SDK handles the last message (a notification, a request, a bad line) in
            # a task of its own: that task starts before anything after the message is
            # read, as it would have behind a reader task. Else a burst of log lines
            # would be relayed out of order, an answer reach its caller before the lines
            # the server wrote ahead of it, and the garbage count see lines out of order.
            self._handled_in_a_task = False
            await trio.lowlevel.cancel_shielded_checkpoint()
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._injected:
                return self._injected.popleft()
            message = next(self._lines, None)
            if message is not None:
                self._handled_in_a_task = not _is_answer(message)
                return message
            if self._ended:
                raise anyio.EndOfStream
            with trio.CancelScope() as self._reading:
                try:
                    chunk = await _read_some(self._stdout)
                except (*_GONE, OSError):
                    chunk = b""
                if chunk:
                    self._lines = self._framer.feed(chunk)
                else:
                    self._lines = self._framer.end()
                    self._ended = True
            self._reading = None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._interrupt()  # (a session closing from another task): the drain reads now
            self._nursery.start_soon(_drain, self._stdout)


def _is_answer(message: Delivered) -> bool:
    """Whether ``message`` answers one of our requests (the SDK resolves it inline)."""
    return isinstance(message, SessionMessage) and isinstance(
        message.message, (mcp_types.JSONRPCResponse, mcp_types.JSONRPCError)
    )


class PipeWriter(Closing):
    """The session's write stream over a server's stdin pipe: each message is written as
    one line by the task that sends it (no writer task: a hand-over to one costs two
    scheduling rounds per message, each a turn of the host loop in a guest run).

    ``send`` returns once the whole line is in the pipe; it yields only to wait for its
    turn or for the pipe to drain. Lines never interleave: one sender writes at a time,
    the others wait their turn in order. A sender cancelled before any byte of its line
    was written has sent nothing; one cancelled half-way leaves the rest of its line to a
    task of ``nursery``, which writes it before the next line starts (a line cut short
    would break the framing of every later message). A message that cannot be encoded is
    not written (`_encoded`): a request gets its error answer through ``reader``. When
    stdin breaks (the server closed it or died), ``reader`` is ended, so the session sees
    the connection end rather than wait for answers that cannot come, and the send raises
    ``anyio.BrokenResourceError`` (the SDK's "connection closed"); a request none of whose
    bytes were written is noted in `unsent_requests`. After ``close`` a send
    raises ``anyio.ClosedResourceError``.
    """

    def __init__(self, stdin: trio.lowlevel.FdStream, reader: PipeReader, nursery: trio.Nursery) -> None:
        self._stdin = stdin
        self._reader = reader
        self._nursery = nursery
        self._turn = trio.Semaphore(1)  # held while a line is being written (no owner task)
        self._closed = False
        self._broken = False

    async def send(self, message: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._broken:
            _note_unsent(message)
            raise anyio.BrokenResourceError
        data = _encoded(message, lambda request_id, exc: self._reader.inject(_unencodable(request_id, exc)))
        if data is None:
            return
        try:
            self._turn.acquire_nowait()
        except trio.WouldBlock:
            await self._turn.acquire()  # cancelled here, nothing was written
        await self._write(data, 0, left_to_a_task=True, message=message)

    async def _write(
        self, data: bytes, sent: int, *, left_to_a_task: bool, message: SessionMessage | None = None
    ) -> None:
        """Write ``data[sent:]`` holding the turn, then give the turn back. Cancelled
        half-way, the rest goes to a task when ``left_to_a_task`` (the turn with it).
        Broken before a byte of ``message`` was written: noted in `unsent_requests`."""
        with memoryview(data) as view:
            try:
                while sent < len(data):
                    fd = self._stdin.fileno()  # -1 once closed: EBADF, never a reused fd
                    try:
                        sent += os.write(fd, view[sent:])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
            except (OSError, *_GONE) as exc:
                if sent == 0 and message is not None:
                    _note_unsent(message)
                self._turn.release()
                self._broken = True
                self._reader.end()
                raise anyio.BrokenResourceError from exc
            except BaseException:
                if sent and left_to_a_task:
                    self._nursery.start_soon(self._finish, data, sent)
                else:
                    self._turn.release()
                raise
        self._turn.release()

    async def _finish(self, data: bytes, sent: int) -> None:
        """Write the rest of a line whose sender left; a broken stdin ends it quietly (the
        session sees the end through ``reader``: the death is the server's, not ours)."""
        with contextlib.suppress(anyio.BrokenResourceError):
            await self._write(data, sent, left_to_a_task=False)

    async def flushed(self) -> None:
        """Return once every line handed to ``send`` so far (and still being sent) is
        written: the turn, taken after every sender waiting for it, then given back."""
        await self._turn.acquire()
        self._turn.release()

    def close(self) -> None:
        self._closed = True
