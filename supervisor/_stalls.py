"""What the daemon's HTTP front does about a client that stalls, so it never waits on one for ever.

- **A body that stops coming.** hypercorn closes a connection whose request line and
  headers do not come within its ``keep_alive_timeout`` (5 s), but once the headers are in
  it waits for the body without bound: its ``read_timeout`` bounds every read of the
  socket, and would also cut a long SSE answer, during which the client sends nothing. A
  client that stalled mid-body (a hung process, a network path gone quiet) so held a
  connection, a socket and a task for good (measured: 10 such connections still open after
  70 s), and enough of them would use up the file descriptors every server's pipes need.
  `BodyDeadline` gives each request's body ``timeout()`` s from the start of the request to
  arrive whole. Past that the request is answered ``408`` with a JSON-RPC error (id null:
  its id was never read) and ``Connection: close``, and none of it reaches the app. Nor does
  a request whose client closed its side before the body was whole (hypercorn answers it
  400; the SDK, handed it, logged an error with a traceback for the client's doing). Only
  the reads of the body are bounded: the app's later reads, which wait for the client to
  go away while a long answer streams, are not.
- **An answer that is not taken.** hypercorn's writes to a client are shielded from
  cancellation, so a client that stopped reading (its window full) held the task writing
  to it, and the answer it was sent (three unread 40 MB answers: 741 MB of RSS), for good;
  and as no cancel reaches that write, the daemon never exited on SIGTERM (measured: still
  up 40 s after it). `stall_after` sets ``TCP_USER_TIMEOUT`` on the listening sockets (each
  connection inherits it): the kernel ends a connection whose data has waited that long,
  unacknowledged or untaken (a zero window), and the stuck write fails at once. An idle
  connection (an SSE stream with nothing to say) has nothing waiting and is not touched.

Both take the config's ``supervisor.stall_timeout``, read per request and set again on a
reload, so a reload applies it to the next request and connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

import trio

from ._asgi import refuse_unread

__all__ = ["BodyDeadline", "stall_after"]


class _BodyTooSlow(Exception):
    pass


class _ClientGone(Exception):
    pass


class BodyDeadline:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: Any, timeout: Callable[[], float]) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout = self.timeout()
        deadline = trio.current_time() + timeout
        whole = False

        async def bounded() -> dict[str, Any]:
            nonlocal whole
            if whole:
                return await receive()
            with trio.move_on_at(deadline):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                whole = not message.get("more_body", False)
                return message
            raise _BodyTooSlow

        try:
            await self.app(scope, bounded, send)
        except _BodyTooSlow:
            await _answer_too_slow(send, timeout)
        except _ClientGone:  # the body ended early: hypercorn has answered 400 already
            pass


async def _answer_too_slow(send: Any, timeout: float) -> None:
    message = f"the request body did not arrive whole within {timeout:g} s (supervisor.stall_timeout); it was not read"
    await refuse_unread(send, 408, message, headers=[(b"connection", b"close")])


def stall_after(sockets: Iterable[socket.socket], seconds: float) -> None:
    """Have the kernel end a connection accepted on ``sockets`` (TCP listeners) once data
    sent on it has waited ``seconds`` for the client (``TCP_USER_TIMEOUT``, Linux)."""
    for sock in sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, round(seconds * 1000)))
