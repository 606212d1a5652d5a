"""An HTTP answer held to ``max_message_bytes``, as it is read.

Over streamable HTTP a server may answer a request with one plain JSON body (instead of an
SSE stream), and the mcp 2.3 client reads that body whole (``response.aread()``) before it
parses it: a server that answers with a gigabyte, by a bug or a runaway tool, takes that
much memory of the process every server shares. The SDK's SSE reader has a cap per event
(``max_sse_event_size``, which the connection sets to ``max_message_bytes``); a JSON body
had none. Neither had an error body the client reads to find a JSON-RPC error in it.

`bound_answers` is an httpx response hook that puts a bound on the *decoded* size of every
answer but an event stream (whose events are bounded one by one): httpx decodes gzip,
deflate, brotli and zstd bodies in bounded pieces, so counting what comes out of its decoder
bounds memory at the limit plus one piece, even for a body that is small on the wire and
enormous decoded. A body whose ``Content-Length`` already says it is too large is refused
before any of it is read.

Over the limit, reading the body raises `AnswerTooLarge`, an ``httpx.StreamError``: the SDK
answers the request with a JSON-RPC parse error that carries its message (and the
connection's `_unread_answer` recognises it by `PHRASE`), the response is closed, and the
connection lives on. Relies on one private detail of httpx2 (pinned with mcp 2.3):
``Response._get_content_decoder`` and the ``_decoder`` it caches; without them the hook
leaves the response alone, and ``test_a_large_remote_answer_is_bounded_...`` fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import httpx2

__all__ = ["PHRASE", "AnswerTooLarge", "bound_answers"]

#: In every `AnswerTooLarge` message, so that the SDK's parse error that carries it is known.
PHRASE: Final = "over max_message_bytes"


class AnswerTooLarge(httpx2.StreamError):
    """An answer's body is larger than ``max_message_bytes``; it was not read further."""


class _BoundedDecoder:
    """httpx's content decoder for one response, counting what it yields."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.size = 0

    def _count(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.size += len(piece)
            if self.size > self.limit:
                raise AnswerTooLarge(f"the server's answer was {PHRASE} ({self.limit}); it was dropped")
            yield piece

    def decode(self, data: bytes) -> Iterator[bytes]:
        return self._count(self.inner.decode(data))

    def flush(self) -> Iterator[bytes]:
        return self._count(self.inner.flush())


class _Refused:
    """The decoder of a response whose ``Content-Length`` is over the limit: reads nothing."""

    def __init__(self, declared: int, limit: int) -> None:
        self.message = f"the server's answer was {declared} bytes (its Content-Length), {PHRASE} ({limit}); it was dropped"

    def decode(self, data: bytes) -> Iterator[bytes]:
        raise AnswerTooLarge(self.message)

    flush = decode


def bound_answers(limit: int) -> Callable[[Any], Awaitable[None]]:
    """An httpx response hook holding each answer but an event stream to ``limit`` bytes.

    It must come before any other hook that reads the body. Never raises; reads nothing.
    """

    async def hook(response: Any) -> None:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "text/event-stream" or not hasattr(response, "_get_content_decoder"):
            return
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit and not response.headers.get("content-encoding"):
            response._decoder = _Refused(int(declared), limit)
        else:
            response._decoder = _BoundedDecoder(response._get_content_decoder(), limit)

    return hook
