"""The daemon's ``--stdio`` front: MCP over the process's own stdin and stdout.

The mcp SDK's ``stdio_server`` reads its client line by line with no bound: a client that
sends one enormous line (a tool argument holding an image, a runaway writer without a
newline) took that much memory of the daemon, which every server and client shares
(measured: 200 MiB without a newline, +207 MB RSS). The HTTP front refuses a body over
``max_body_bytes``; this front now holds a line to the same limit, with the wire the
supervisor reads its servers with (`actors._stdio`): linear, a line over the limit never
held, a request that long answered at once with an error saying how large it was (the
client's call fails instead of waiting), a notification that long dropped. A line that is
no JSON-RPC message and names no id an answer could carry (not JSON, another shape, an id
of 1.5 or null) is answered with an error whose id is null, as JSON-RPC 2.0 says: the
SDK's transport only logged it, and the client waited for nothing.

When stdin ends, the session does not see it end until every request read before has
been answered (or the caller's ``settle`` gave up): the SDK ends a session at the end of
its input by cancelling the requests still running, and a client that piped its requests
in and then closed stdin lost some answers (one of two calls: no answer at all). Unless
the client's reader is gone: when our stdout is a pipe whose read end closed (a write
failed, or a poll of it says POLLERR/POLLHUP, as when the client is killed), no answer can
be delivered, and ``settle`` is told so (its second argument is set) to cut the requests
off at once. The reader going away while stdin is still open ends the session as the end
of stdin does (as a failed write already did), rather than at the next write.

As the SDK's transport does, the front claims fds 0 and 1 while it serves: they point at
the null device and at stderr, so a stray ``print`` (ours or a library's) cannot corrupt the
wire, and the wire is served from private duplicates; both are restored on exit. Reads and
writes run in worker threads, never on a non-blocking fd: stdin may be a terminal shared
with the shell, and ``O_NONBLOCK`` would outlive us there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import mcp_types
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from actors._pipes import Closing, Receiving
from actors._stdio import Delivered, read_messages, refuser, write_messages

__all__ = ["Unanswered", "stdio_wire"]

_READ_SIZE = 65536
_FLUSH = 0.5  # s for the last answers to go out at the end: a client that stops reading gets no more


class _ThreadedReader(trio.abc.ReceiveStream):
    """``os.read`` of a blocking fd in a worker thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await trio.to_thread.run_sync(os.read, self.fd, max_bytes or _READ_SIZE, abandon_on_cancel=True)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _ThreadedWriter(trio.abc.SendStream):
    """Whole writes to a blocking fd in a worker thread; ``gone`` is set when one fails (a
    pipe whose reader closed: EPIPE)."""

    def __init__(self, fd: int, gone: trio.Event) -> None:
        self.fd = fd
        self.gone = gone

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    async def _send(self, data: bytes) -> None:
        try:
            await trio.to_thread.run_sync(self._write_all, data, abandon_on_cancel=True)
        except OSError:
            self.gone.set()
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._send(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _wait_reader_gone(fd: int, wake: int) -> bool:
    """Block until ``fd`` (our stdout) reports POLLERR or POLLHUP (True: its reader is gone)
    or ``wake`` is readable or closed (False). Asks for no event of ``fd``: poll reports
    those two anyway, and a file, a terminal or the null device never. Closes ``wake``."""
    try:
        poller = select.poll()
        poller.register(fd, 0)
        poller.register(wake, select.POLLIN)
        while True:
            for ready, events in poller.poll():
                if ready == wake or events & select.POLLNVAL:
                    return False
                if events & (select.POLLERR | select.POLLHUP):
                    return True
    finally:
        os.close(wake)


async def _watch_reader(fd: int, gone: trio.Event, incoming: MemoryObjectSendStream[Delivered]) -> None:
    """Set ``gone`` and end the session's input (as the end of stdin does) once the reader
    of ``fd`` is gone; the polling thread is woken and ends when this task is cancelled."""
    wake, waker = os.pipe()
    try:
        reader_gone = await trio.to_thread.run_sync(_wait_reader_gone, fd, wake, abandon_on_cancel=True)
    finally:
        os.close(waker)  # the thread wakes (POLLHUP on ``wake``) and closes ``wake``
    if reader_gone:
        gone.set()
        incoming.close()


class Unanswered:
    """The ids of the requests read from the client that have no answer written yet, and
    that the client did not cancel (a cancelled request gets no answer, as the spec says)."""

    def __init__(self) -> None:
        self.ids: set[Any] = set()
        self._none = trio.Event()
        self._none.set()

    def asked(self, message: Delivered) -> None:
        if not isinstance(message, SessionMessage):
            return
        inner = message.message
        if isinstance(inner, mcp_types.JSONRPCRequest):
            self.ids.add(inner.id)
            if self._none.is_set():
                self._none = trio.Event()
        elif isinstance(inner, mcp_types.JSONRPCNotification) and inner.method == "notifications/cancelled":
            self._settled((inner.params or {}).get("requestId"))

    def answered(self, message: SessionMessage) -> None:
        if isinstance(message.message, (mcp_types.JSONRPCResponse, mcp_types.JSONRPCError)):
            self._settled(message.message.id)

    def _settled(self, request_id: Any) -> None:
        with contextlib.suppress(TypeError):  # an id no request can have (a list, say)
            self.ids.discard(request_id)
        if not self.ids:
            self._none.set()

    async def wait(self) -> None:
        """Return once every request read so far has been answered."""
        await self._none.wait()


class _Asked(Receiving):
    """The session's read stream: notes each request, and at the end of stdin ends only
    after ``settle(unanswered)`` returns."""

    def __init__(
        self,
        stream: MemoryObjectReceiveStream[Delivered],
        unanswered: Unanswered,
        settle: Callable[[Unanswered, trio.Event], Awaitable[None]],
        gone: trio.Event,
    ) -> None:
        self._stream = stream
        self._unanswered = unanswered
        self._settle = settle
        self._gone = gone

    async def receive(self) -> Delivered:
        try:
            message = await self._stream.receive()
        except anyio.EndOfStream:
            await self._settle(self._unanswered, self._gone)
            raise
        self._unanswered.asked(message)
        return message

    def close(self) -> None:
        self._stream.close()


class _Answering(Closing):
    """The session's write stream: notes each answer once the writer has taken it."""

    def __init__(self, stream: MemoryObjectSendStream[SessionMessage], unanswered: Unanswered) -> None:
        self._stream = stream
        self._unanswered = unanswered

    async def send(self, message: SessionMessage) -> None:
        await self._stream.send(message)
        self._unanswered.answered(message)

    def close(self) -> None:
        self._stream.close()


@contextlib.contextmanager
def _claimed(fd: int, stand_in: int) -> Any:
    """A private duplicate of ``fd`` while ``fd`` itself points at ``stand_in``."""
    private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(stand_in, fd)
    try:
        yield private
    finally:
        os.dup2(private, fd)
        os.close(private)


@contextlib.asynccontextmanager
async def stdio_wire(
    max_bytes: int,
    settle: Callable[[Unanswered, trio.Event], Awaitable[None]],
) -> AsyncIterator[tuple[_Asked, _Answering]]:
    """The streams for ``Server.run`` over this process's stdin and stdout, each line held
    to ``max_bytes`` (see the module docstring). When stdin ends, the read stream ends once
    ``settle(unanswered, gone)`` returns: it should wait (bounded) for ``unanswered.wait()``,
    and not once ``gone`` is set (set then or later: the client's reader of our stdout is
    gone, no answer can be delivered)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        with _claimed(0, devnull) as stdin_fd, _claimed(1, 2) as stdout_fd:
            incoming, read_stream = anyio.create_memory_object_stream[Delivered](0)
            write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
            refusals = write_stream.clone()
            written = trio.Event()
            gone = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    read_messages, _ThreadedReader(stdin_fd), incoming, max_bytes, "the stdio client",
                    lambda: None, refuser(nursery, refusals), True,  # answered as a client is
                )
                nursery.start_soon(write_messages, _ThreadedWriter(stdout_fd, gone), outgoing, incoming, written, nursery)
                nursery.start_soon(_watch_reader, stdout_fd, gone, incoming)
                unanswered = Unanswered()
                try:
                    yield _Asked(read_stream, unanswered, settle, gone), _Answering(write_stream, unanswered)
                finally:
                    write_stream.close()
                    refusals.close()
                    with trio.CancelScope(shield=True), trio.move_on_after(_FLUSH):
                        await written.wait()  # what the server answered last goes out
                    nursery.cancel_scope.cancel()
    finally:
        os.close(devnull)
