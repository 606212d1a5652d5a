"""What an HTTP status says that the mcp SDK does not: a lost session, a refused message
(and, over SSE, a message whose POST got no HTTP answer at all).

Over streamable HTTP and SSE every JSON-RPC message the client sends is an HTTP POST. Some
answers to it the mcp 2.3 client leaves uninterpreted, or takes at their word, and
`HttpAnswerWatch`, an httpx response hook on the transport's client, reads them:

- **A lost session.** A handshake-era server (any revision before 2026-07-28) keeps each
  client's session in memory under its ``Mcp-Session-Id``. When it restarts, or expires the
  session, it answers every request of that session with HTTP 404, and the spec says the
  client must then start a new session. The client hands the 404 to the caller as an
  ordinary JSON-RPC error and keeps the dead session, so a remote server that restarted
  while we stayed connected would fail every call until something else made us reconnect:
  nothing does, since the transport itself never breaks. A 404 to a request that carried a
  session id calls ``on_lost`` (unless the body is a JSON-RPC "method not found" error,
  which some servers send with a 404 for a session they do know); the connection actor
  ends the incarnation, and the next one starts a fresh session. 2026-07-28 connections
  carry no session id, so they are never affected.
- **A refusal**: an error status (400 and up) with no JSON-RPC error in the body, as a
  gateway or proxy in front of the server sends it (502, 503, 504, 429) or a server whose
  HTTP layer failed; also a 200 with an HTML page (a proxy's sign-in page, a wrong path),
  whose first words then name it. Streamable HTTP hands the caller a JSON-RPC error that
  says only "Server returned an error response", which would pass for the tool's own
  error: not retried, and a success for the breaker. The hook puts an `HttpRefusal` (status, reason,
  the start of the body) in the list `refusals` holds in the context of the task whose
  message it was (the SDK posts each message in a copy of its sender's context), so the
  call can raise a typed failure instead. Over SSE, any error status to a POST also calls
  ``on_broken``: the SDK's SSE transport stops sending anything after one, so the
  connection is gone, however the server still looks. A ``Retry-After`` header (429, 503)
  is kept (``HttpRefusal.retry_after``): a retry waits at least that long, or is given up
  at once when that is past the call's deadline.
- **Another request's answer** (streamable HTTP): a request's POST answered with one JSON
  body whose JSON-RPC id is not the request's (or that has none) was handed on by the SDK
  as it was, so the request waited out its deadline (and counted as a hang). Reading that
  body now raises `NotItsAnswer`, which the SDK turns into an error for that request
  alone; the connection recognises it by `NOT_ITS_ANSWER` (an ``InvalidResult``). An
  answer that came as an event on the POST's event stream was worse: the SDK rewrote its
  id to the request's, so with two calls in flight each could get the other's result.
  Each answer event on a request's stream is checked the same way (`_AnswerIdChecked`),
  and one for another id raises `NotItsEvent` before the SDK reads it. So is each event of
  that stream resumed: when it ends after an event with an SSE ``id:``, the SDK opens it
  again with a GET that carries ``Last-Event-ID`` and rewrites the answers there too; each
  ``id:`` a request's stream carries is noted with the request (`HttpAnswerWatch.resumes`,
  at most `MAX_RESUMES`, until its answer came), and a GET that resumes after one is
  checked for that request's answer.
- **A huge ``retry:``** (streamable HTTP): the SDK waits what an event stream's ``retry:``
  field asks before it resumes the stream, with no bound, so a call whose answer stream
  ended after asking for a day waited out its deadline (and counted as a hang); one too
  large for a float ended the whole transport. Each event stream's ``retry:`` is now read as
  at most `MAX_RETRY_WAIT` (`_RetryBounded`).
- **No answer at all** (SSE only, `HttpAnswerWatch.watch_posts`): a POST that fails with an
  httpx transport error (refused, reset, timed out) likewise ends the SDK's SSE transport,
  which only logs it, so the call would wait out its deadline and the connection would
  look up. A `PostFailed` goes into ``refusals`` the same way, then ``on_broken`` is called.
  A POST whose answer never comes fails so after ``connect_timeout`` (not the SDK's 300 s,
  for which every later message waited behind it); over streamable HTTP too, for a POST
  that carries no request (a notification), which the SDK sends one at a time as well.
- **A session's end left unanswered** (streamable HTTP): the SDK ends a handshake-era
  session with a DELETE as the incarnation ends, and waited for its answer the POSTs' read
  timeout (at least 300 s), the next incarnation with it. It is awaited for
  ``connect_timeout`` at most (`HttpAnswerWatch.on_request`).
- **An endpoint on another origin** (SSE): the SDK refuses an ``endpoint`` event whose URL
  is on another origin (scheme, host, port) than the server's URL, but its error went where
  nobody read it, so the handshake waited out ``connect_timeout`` and said only that. The
  GET's event stream is watched until its first ``endpoint`` event (`_EndpointWatched`);
  one on another origin calls ``on_broken`` with a `ForeignEndpoint`.

Guarantees: the hook never raises; it never changes the response's status or headers, nor
its body but for an event stream's ``retry:`` over `MAX_RETRY_WAIT` (a body it reads is
cached by httpx for the transport to read again; reading one may raise, for an answer cut
short or another request's); it reads a body only for an error status or a 200 HTML page,
and records no refusal for an answer that carries a JSON-RPC error (the server's own, at
whatever status; over SSE ``on_broken`` is called all the same, since the transport is
broken either way).
"""

from __future__ import annotations

import contextvars
import email.utils
import http
import math
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import httpx2
import msgspec
import trio
from mcp_types import METHOD_NOT_FOUND

__all__ = ["NOT_ITS_ANSWER", "ForeignEndpoint", "HttpAnswerWatch", "HttpRefusal", "NotItsAnswer", "NotItsEvent", "PostFailed", "refusals"]

SESSION_ID_HEADER = "mcp-session-id"
LAST_EVENT_ID_HEADER = "last-event-id"


class HttpRefusal(msgspec.Struct, frozen=True):
    """An error status a POST got instead of a JSON-RPC answer."""

    status: int
    reason: str
    text: str  # the start of the body
    retry_after: float | None = None  # s, from a Retry-After header (seconds or a date)

    def __str__(self) -> str:
        said = f" (body: {self.text!r})" if self.text else ""
        return f"HTTP {self.status} {self.reason}".rstrip() + said

    @property
    def hint(self) -> str:
        """What an operator can do about it, to end a message with ("" when nothing)."""
        return _HINTS.get(self.status, "")


#: What an operator can do about a status (a wrong or missing token is the common case, and
#: "401 Unauthorized" alone does not say where the supervisor's credentials come from).
_HINTS = {
    401: '; the server wants credentials: give them in this server\'s "headers" in the config '
         '(for example "Authorization": "Bearer ${TOKEN}")',
    403: '; the server refused access: check the credentials in this server\'s "headers" in the config',
}


class PostFailed(msgspec.Struct, frozen=True):
    """A POST that got no HTTP answer, or one cut short: an httpx transport error."""

    error: str  # the exception, named
    sent: bool  # False when no connection was made: the server cannot have read it
    cut_short: bool = False  # the answer began (its status came), then broke

    def __str__(self) -> str:
        return f"an answer cut short ({self.error})" if self.cut_short else f"no answer ({self.error})"

    hint = ""


class ForeignEndpoint(msgspec.Struct, frozen=True):
    """An SSE server's ``endpoint`` event that names another origin than the server's URL
    (the SDK refuses to post there, as it should)."""

    endpoint: str  # as the SDK reads it: joined to the server's URL
    url: str  # the server's

    def __str__(self) -> str:
        return (
            f"the server's endpoint event names {self.endpoint}, on another origin (scheme, host, port) "
            f"than the server's URL {self.url}; the SDK does not post messages to another origin"
        )

    hint = ""


def _origin(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme, parsed.netloc  # what the SDK compares


class _EndpointWatched(httpx2.AsyncByteStream):
    """An SSE GET's event stream, read along until its first ``endpoint`` event: one whose
    URL (joined to ``url``, as the SDK joins it) is on another origin calls ``on_foreign``.
    Every byte passes on as it came, in the same pieces. At most `_ENDPOINT_HELD` bytes of
    one line are looked at; a longer one ends the watch (the SDK says what it makes of it)."""

    def __init__(self, inner: Any, url: str, on_foreign: Callable[[ForeignEndpoint], None]) -> None:
        self.inner = inner
        self.url = url
        self.on_foreign = on_foreign
        self.line = bytearray()
        self.event = ""
        self.data: list[str] | None = None
        self.done = False

    async def __aiter__(self) -> Any:
        async for chunk in self.inner:
            if not self.done:
                self._feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _feed(self, chunk: bytes) -> None:
        self.line += chunk
        at = 0
        while not self.done:
            end = _line_end(self.line, at)
            if end < 0 or (self.line[end : end + 1] == b"\r" and end + 1 == len(self.line)):
                break  # no whole line yet (a CR may be the start of a CRLF)
            self._field(bytes(self.line[at:end]).decode(errors="replace"))
            at = end + (2 if self.line[end : end + 2] == b"\r\n" else 1)
        del self.line[:at]
        if len(self.line) > _ENDPOINT_HELD:
            self.done = True
        if self.done:
            self.line.clear()

    def _field(self, line: str) -> None:
        if not line:  # an event's end
            if self.event == "endpoint" and self.data is not None:
                self.done = True
                endpoint = urllib.parse.urljoin(self.url, "\n".join(self.data))
                if _origin(endpoint) != _origin(self.url):
                    self.on_foreign(ForeignEndpoint(endpoint, self.url))
            self.event, self.data = "", None
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data = [*(self.data or []), value]


_ENDPOINT_HELD: Final = 64 * 1024

#: httpx errors raised before any byte of the request left: the message was not sent.
_NEVER_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)

#: The refusals of the messages sent from this context (None: nobody is listening).
refusals: contextvars.ContextVar[list[HttpRefusal | PostFailed] | None] = contextvars.ContextVar(
    "refusals", default=None
)

#: The deadline (trio time) of the call whose messages are sent from this context: the read
#: of its POST's answer waits until then (plus `READ_MARGIN`) when that is longer than the
#: client's read timeout (`HttpAnswerWatch.on_request`). None: no call's.
answer_due: contextvars.ContextVar[float | None] = contextvars.ContextVar("answer_due", default=None)

#: Seconds past a call's deadline (or a server's call timeout) before the read of its
#: silent answer gives up: the deadline itself ends the call first.
READ_MARGIN: Final = 10.0


class _Error(msgspec.Struct):
    code: Any = None


class _Reply(msgspec.Struct):
    error: _Error | None = None


_decoder = msgspec.json.Decoder(_Reply)
_TEXT_KEPT = 200


def _error_code(body: bytes) -> Any:
    """The JSON-RPC error code in ``body``; None when it holds no JSON-RPC error."""
    try:
        reply = _decoder.decode(body)
    except Exception:  # no body, not JSON, not an object: no JSON-RPC error
        return None
    return reply.error.code if reply.error is not None else None


def _reason(status: int, phrase: str) -> str:
    """The reason phrase, from the status when the server sent none (HTTP/2 never does)."""
    if phrase:
        return phrase
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


#: The longest wait a Retry-After is read as (400 digits would be an infinite float).
_MAX_RETRY_AFTER = 365 * 86400.0


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header's wait in seconds (RFC 9110: delay-seconds or an HTTP-date), at
    most `_MAX_RETRY_AFTER`; None when it is neither. Never raises."""
    if not retry_after:
        return None
    delay = retry_after.strip()
    if delay.isascii() and delay.isdigit():  # isdigit alone takes "²", which float refuses
        return min(float(delay), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - time.time()), _MAX_RETRY_AFTER)


def _web_page(response: Any) -> bool:
    """A 200 that is a web page (a proxy's sign-in page, a wrong path) where an MCP
    endpoint was meant. The SDK says only "Unexpected content type"; the page's first words
    say whose it is. (Only HTML: some servers answer a notification's POST with a 200 in
    plain text, which is no refusal.)"""
    if response.status_code != 200:
        return False
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("text/html", "application/xhtml+xml")


#: In every `NotItsAnswer` message, so that the SDK's parse error that carries it is known.
NOT_ITS_ANSWER: Final = "a JSON-RPC message for another request"


class NotItsAnswer(httpx2.StreamError):
    """A request's POST was answered with one JSON body (streamable HTTP) that holds a
    JSON-RPC message with another id than the request's, or none. The SDK handed it on as
    it was: the answer to a request nobody waits for (dropped), or worse, to another call in
    flight; and the request itself waited for an answer that could no longer come, to its
    deadline. Raised as the body is read, it is an ``httpx.StreamError``, which the SDK
    turns into an error for that request alone (a parse error that carries this message)."""


class _Sent(msgspec.Struct):
    id: Any = msgspec.UNSET
    method: Any = None


class _Came(msgspec.Struct):
    id: Any = msgspec.UNSET


_sent_decoder = msgspec.json.Decoder(_Sent)
_came_decoder = msgspec.json.Decoder(_Came)


def _request_id(request: Any) -> Any:
    """The id of the JSON-RPC request a POST carries; UNSET when it carries none (a
    notification, an answer of ours, a body that cannot be read)."""
    try:
        sent = _sent_decoder.decode(request.content)
    except Exception:
        return msgspec.UNSET
    return sent.id if isinstance(sent.method, str) else msgspec.UNSET


def _correlated(request_id: Any) -> Any:
    """An id as the SDK correlates it: "7" and 7 (and 7.0) are one id; true is none."""
    if isinstance(request_id, bool):
        return (bool, request_id)
    if isinstance(request_id, str):
        try:
            return int(request_id)
        except ValueError:
            return request_id
    if isinstance(request_id, float) and request_id.is_integer():
        return int(request_id)
    return request_id


def _not_its_answer(body: bytes, asked: Any) -> str | None:
    """Why ``body`` is no answer to request ``asked``; None when it is one, or is not a
    JSON object at all (the SDK says that itself)."""
    try:
        came = _came_decoder.decode(body)
    except Exception:
        return None
    if came.id is not msgspec.UNSET and _correlated(came.id) == _correlated(asked):
        return None
    named = "no id" if came.id is msgspec.UNSET else f"id {msgspec.json.encode(came.id).decode()[:40]}"
    text = body[:_TEXT_KEPT].decode(errors="replace").strip()
    return (
        f"the server answered the request (id {msgspec.json.encode(asked).decode()}) with "
        f"{NOT_ITS_ANSWER} ({named}), not with its answer; it was dropped (body: {text!r})"
    )


def _watch_answer_id(response: Any) -> None:
    """Make reading ``response``, one JSON body answering a request's POST, raise
    `NotItsAnswer` when that body is a JSON-RPC message for another id (or none)."""
    asked = _request_id(response.request)
    if asked is msgspec.UNSET:
        return
    aread = response.aread

    async def aread_checked() -> bytes:
        body = await aread()
        why = _not_its_answer(body, asked)
        if why is not None:
            raise NotItsAnswer(why)
        return body

    response.aread = aread_checked


def _event_stream(response: Any) -> bool:
    """An event stream as it came on the wire (no content coding: its bytes are its lines)."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return (
        kind == "text/event-stream"
        and not response.headers.get("content-encoding")
        and isinstance(response.stream, httpx2.AsyncByteStream)
    )


def _json_answer(response: Any) -> bool:
    """A 2xx answer whose body is one JSON document (not an event stream)."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return 200 <= response.status_code < 300 and kind == "application/json"


class AnswerCutShort(httpx2.StreamError):
    """A POST's answer broke off as it was read (a reset, a body shorter than its
    ``Content-Length``, a bad chunk): an ``httpx.StreamError``, which the SDK turns into
    an error for that request alone. The transport error it stands for killed the SDK's
    whole transport, and every call in flight on it."""


class _CutShortWatched(httpx2.AsyncByteStream):
    """A POST answer's body; a transport error while it is read is put in the reader's
    ``refusals`` (a `PostFailed` cut short) and raised as `AnswerCutShort`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self.inner:
                yield chunk
        except httpx2.TransportError as exc:
            said = f"{type(exc).__name__}: {exc}".rstrip(": ")
            into = refusals.get()
            if into is not None:
                into.append(PostFailed(said, True, cut_short=True))
            raise AnswerCutShort(f"the server's answer was cut short: {said}") from exc

    async def aclose(self) -> None:
        await self.inner.aclose()


#: The longest wait (s) before an event stream is resumed that a server's ``retry:`` gets
#: (`_RetryBounded`): the SDK waits what it says, whatever it says, and a call whose answer
#: stream ended with a day's ``retry:`` waited out its deadline, then counted as a hang.
MAX_RETRY_WAIT: Final = 5.0
_RETRY_FIELD = b"retry:"
_LONGEST_RETRY = 64  # bytes of a retry field's value kept; a longer one is read as too long


def _line_end(chunk: bytes, start: int) -> int:
    """Where the first line end (CR or LF) at or after ``start`` is; -1 when none."""
    lf, cr = chunk.find(b"\n", start), chunk.find(b"\r", start)
    return lf if cr < 0 else cr if lf < 0 else min(lf, cr)


class _RetryBounded(httpx2.AsyncByteStream):
    """An event stream's body with each ``retry:`` field over ``most`` ms made ``most`` ms.

    The mcp 2.3 streamable HTTP client waits a server's ``retry:`` before it resumes an
    event stream that ended (a call's answer stream, the listen stream), with no bound: a
    huge one kept the call waiting to its deadline; one too large for a float
    (``OverflowError``) ended the SDK's whole transport. Every other byte passes on as it
    came, in the same pieces; only the start of each line (at most 6 bytes), and a retry
    field to its end (at most ``_LONGEST_RETRY`` bytes of it), are held back."""

    def __init__(self, inner: Any, most: int) -> None:
        self.inner = inner
        self.most = most
        self.head = b""  # the start of this line, as far as it is the start of a retry field
        self.retry: bytearray | None = None  # a retry field's value so far (None: in none)
        self.passing = False  # in a line that is no retry field: passed on to its end

    async def __aiter__(self) -> Any:
        async for chunk in self.inner:
            if out := self._feed(chunk):
                yield out
        if self.retry is not None:  # the stream ended in a retry field: no event comes of it
            yield self._retry_field()
        elif self.head:
            yield self.head

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _retry_field(self) -> bytes:
        """The retry field just read, its wait at most ``most`` ms."""
        assert self.retry is not None
        value, self.retry = bytes(self.retry), None
        if len(value) <= _LONGEST_RETRY:
            try:
                wait = int(value.decode())  # as httpx reads it
            except (UnicodeDecodeError, ValueError):
                return _RETRY_FIELD + value  # not a number: the client ignores it, as before
            if wait <= self.most:
                return _RETRY_FIELD + value
        return _RETRY_FIELD + b" %d" % self.most

    def _feed(self, chunk: bytes) -> bytes:
        if self.retry is None and not self.head and _RETRY_FIELD not in chunk:
            # No retry field begins in this chunk, save perhaps in its last line (held back).
            last = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
            if last == 0 and self.passing:
                return chunk
            tail = chunk[last:]
            if tail and _RETRY_FIELD.startswith(tail):
                self.head, self.passing = tail, False
                return chunk[:last]
            self.passing = bool(tail)
            return chunk
        out = bytearray()
        at, size = 0, len(chunk)
        while at < size:
            if self.passing or self.retry is not None:
                end = _line_end(chunk, at)
                rest = chunk[at:] if end < 0 else chunk[at:end]
                if self.passing:
                    out += rest
                elif len(self.retry) <= _LONGEST_RETRY:  # type: ignore[arg-type]
                    self.retry += rest[: _LONGEST_RETRY + 1 - len(self.retry)]  # type: ignore[arg-type, operator]
                if end < 0:
                    break
                if self.retry is not None:
                    out += self._retry_field()
                out += chunk[end : end + 1]
                self.passing, at = False, end + 1
                continue
            byte = chunk[at : at + 1]  # at a line's start
            at += 1
            if byte in (b"\r", b"\n"):
                out += self.head + byte
                self.head = b""
                continue
            head = self.head + byte
            if head == _RETRY_FIELD:
                self.head, self.retry = b"", bytearray()
            elif _RETRY_FIELD.startswith(head):
                self.head = head
            else:
                out += head
                self.head, self.passing = b"", True
        return bytes(out)


class NotItsEvent(httpx2.SSEError):
    """A request's POST was answered with an event stream (streamable HTTP) whose answer
    event holds another id than the request's, or none: the SDK rewrote its id to the
    request's and handed it on as that request's answer, so with two calls in flight each
    could get the other's. Raised as the event's end is read, it is an ``httpx.SSEError``,
    which the SDK turns into an error for that request alone ("SSE stream failed: ..."
    with this message, which carries `NOT_ITS_ANSWER`)."""


class _Event(msgspec.Struct):
    id: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_event_decoder = msgspec.json.Decoder(_Event)


def _is_answer(data: bytes) -> bool:
    """The event ``data`` is a JSON-RPC answer (a result or an error): not a notification,
    not a question of the server's, not something that is no JSON-RPC at all (the SDK says
    that itself)."""
    try:
        event = _event_decoder.decode(data)
    except Exception:
        return False
    return event.method is msgspec.UNSET and (event.result is not msgspec.UNSET or event.error is not msgspec.UNSET)


#: The most SSE event ids of requests' answer streams noted at once (`HttpAnswerWatch.resumes`);
#: past them the oldest is forgotten (a stream resumed after it is no longer checked).
MAX_RESUMES: Final = 1024


class _AnswerIdChecked(httpx2.AsyncByteStream):
    """A request's answer stream (an event stream), each ``message`` event that is a
    JSON-RPC answer checked for the request's id: one for another id (or none) raises
    `NotItsEvent` before the line that ends it passes on, so the SDK never reads it. Every
    other byte passes on as it came, in the same pieces. An event's data is kept while it
    is read, up to ``most`` bytes (past them the SDK drops the event itself).

    Each event ``id:`` that passes is noted in ``resumes`` (when given) as this request's,
    in place of the one noted before (one per stream), at most `MAX_RESUMES` in all: the SDK resumes a stream that ends before
    its answer with a GET after the last one (``Last-Event-ID``), which is checked in turn
    (`HttpAnswerWatch.__call__`). The request's own answer forgets its ids: nothing resumes
    after it."""

    def __init__(
        self, inner: Any, asked: Any, most: int, resumes: dict[str, Any] | None = None, after: str | None = None
    ) -> None:
        self.inner = inner
        self.asked = asked
        self.most = most
        self.resumes = resumes
        #: The id this stream's request was last noted under (``after``: the one a GET
        #: resumes after): the SDK resumes after the latest only, so a newer replaces it, and
        #: one busy call cannot push the other calls' ids out of `MAX_RESUMES`.
        self.noted = after
        self.line = bytearray()  # the line read so far
        self.after_cr = False  # the last line ended with a CR: an LF next belongs to it
        self.kind = b""  # the event's type (its ``event:`` field)
        self.data = bytearray()  # its data lines, each followed by LF
        self.has_data = False
        self.too_long = False

    async def __aiter__(self) -> Any:
        async for chunk in self.inner:
            at = 0
            if self.after_cr and chunk:
                self.after_cr = False
                at = 1 if chunk[:1] == b"\n" else 0
            while at < len(chunk):
                end = _line_end(chunk, at)
                if end < 0:
                    self._grow(self.line, chunk[at:])
                    break
                line = bytes(self.line) + chunk[at:end]
                self.line.clear()
                after = end + 1
                if chunk[end : end + 1] == b"\r":
                    if after < len(chunk):
                        after += chunk[after : after + 1] == b"\n"
                    else:
                        self.after_cr = True
                why = self._line(line)
                if why is not None:
                    if end:
                        yield chunk[:end]
                    raise NotItsEvent(why)
                at = after
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _grow(self, into: bytearray, more: bytes) -> None:
        if len(into) + len(more) > self.most:
            self.too_long = True
        else:
            into += more

    def _line(self, line: bytes) -> str | None:
        """Take one line; why the event it ends is not the request's answer (else None)."""
        if not line:
            why = None
            if self.has_data and not self.too_long and self.kind in (b"", b"message"):
                data = bytes(self.data[:-1])
                if _is_answer(data):
                    why = _not_its_answer(data, self.asked)
                    if why is None:
                        self._forget_ids()
            self.kind, self.has_data, self.too_long = b"", False, False
            self.data.clear()
            return why
        if line.startswith(b":"):
            return None
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self.has_data = True
            self._grow(self.data, value + b"\n")
        elif name == b"event":
            self.kind = value
        elif name == b"id" and value and b"\0" not in value and self.resumes is not None:  # as httpx keeps it
            self._note_id(value.decode(errors="replace"))
        return None

    def _note_id(self, event_id: str) -> None:
        """Note ``event_id`` as this request's latest (in place of the one noted before),
        the oldest forgotten past `MAX_RESUMES`."""
        assert self.resumes is not None
        if self.noted is not None:
            self.resumes.pop(self.noted, None)
        self.resumes.pop(event_id, None)
        self.resumes[event_id] = self.asked
        self.noted = event_id
        while len(self.resumes) > MAX_RESUMES:
            del self.resumes[next(iter(self.resumes))]

    def _forget_ids(self) -> None:
        """Forget this request's event ids: its answer came, so its stream is not resumed."""
        if self.resumes:
            mine = _correlated(self.asked)
            for event_id in [key for key, asked in self.resumes.items() if _correlated(asked) == mine]:
                del self.resumes[event_id]


#: The least time between two GETs of one connection (`HttpAnswerWatch.on_request`).
GET_SPACING: Final = 0.25
#: The longest silence of the server's event stream (a GET) before it is opened again: the
#: SDK's (``MCP_DEFAULT_SSE_READ_TIMEOUT``), not a POST's, which follows the server's timeout.
GET_READ_TIMEOUT: Final = 300.0


def _bound_answer_wait(request: httpx2.Request) -> float | None:
    """Make ``request`` wait for its answer (read) no longer than its connect timeout; that
    bound, or None when it had none to give."""
    timeout = request.extensions.get("timeout")
    if not isinstance(timeout, dict):
        return None
    bound, read = timeout.get("connect"), timeout.get("read")
    if bound is None or (read is not None and read <= bound):
        return None
    request.extensions = {**request.extensions, "timeout": {**timeout, "read": bound}}
    return bound


class HttpAnswerWatch:
    """httpx response hook: see the module docstring."""

    def __init__(
        self,
        on_lost: Callable[[], None],
        on_broken: Callable[[HttpRefusal | PostFailed | ForeignEndpoint], None] | None = None,
        max_event: int = 32 * 1024 * 1024,
        url: str | None = None,
    ) -> None:
        self.on_lost = on_lost
        self.on_broken = on_broken  # set for SSE
        self.url = url  # the server's (SSE: its endpoint event is checked against it)
        self.max_event = max_event  # the bytes of an answer event whose id is checked (max_message_bytes)
        self.last_refusal: HttpRefusal | None = None  # whoever sent the message
        self._next_get = -math.inf
        #: The SSE event ids seen on requests' answer streams, each with the id of the
        #: request it answers (`_AnswerIdChecked`): a GET that resumes after one of them
        #: carries that request's answer.
        self.resumes: dict[str, Any] = {}

    async def on_request(self, request: Any) -> None:
        """httpx request hook. A call's request POSTed over streamable HTTP (`answer_due`)
        reads its answer until the call's deadline (plus `READ_MARGIN`) when that is past the
        client's read timeout: an answer may come as one JSON body after all the call's
        silence, and a call given a longer ``timeout=`` than its server's failed at the read
        timeout instead (the transport lost, for a call still within its deadline).

        A GET (the server's event stream, opened again after it ends) waits until
        `GET_SPACING` s after the one before. The SDK reopens that stream after the wait the
        server's ``retry:`` field asks for, and a server that asks for none (``retry: 0``)
        and ends the stream at once had the process open it some thousand times a second, on
        the loop every server shares. Over streamable HTTP its silence is bounded as the SDK
        bounds it (a dead stream noticed within minutes, `GET_READ_TIMEOUT`), whatever longer
        read a server's long calls gave its POSTs; over SSE, where that stream carries every
        answer, it keeps the read its client was given (the server's call timeout and a
        margin, at least the SDK's 300 s).

        A DELETE (the end of a session, sent as an incarnation ends) waits for its answer
        ``connect_timeout`` at most (the client's connect timeout), as an acknowledgement
        does (`watch_posts`): the next incarnation starts only once it is done."""
        timeout = request.extensions.get("timeout")
        if request.method == "POST":
            due = answer_due.get()
            if due is not None and self.on_broken is None and isinstance(timeout, dict) and timeout.get("read"):
                wait = due - trio.current_time() + READ_MARGIN
                # Not a notification (the call's cancellation), whose acknowledgement is
                # awaited for connect_timeout at most (`watch_posts`), as over SSE every POST's.
                if wait > timeout["read"] and _request_id(request) is not msgspec.UNSET:
                    request.extensions = {**request.extensions, "timeout": {**timeout, "read": wait}}
            return
        if request.method == "DELETE":
            # The session's end, sent as an incarnation ends (a stop, a death): with the
            # read timeout of every POST (at least 300 s) a server or proxy that took it and
            # never answered kept a dead server down that long before its next incarnation.
            _bound_answer_wait(request)
            return
        if request.method != "GET":
            return
        if self.on_broken is None and isinstance(timeout, dict) and (
            timeout.get("read") is None or timeout["read"] > GET_READ_TIMEOUT
        ):
            request.extensions = {**request.extensions, "timeout": {**timeout, "read": GET_READ_TIMEOUT}}
        now = trio.current_time()
        if self._next_get > now:
            await trio.sleep(self._next_get - now)
        self._next_get = max(now, self._next_get) + GET_SPACING

    async def __call__(self, response: Any) -> None:
        status = response.status_code
        if status < 400 and not _web_page(response):
            if response.request.method == "POST" and isinstance(response.stream, httpx2.AsyncByteStream):
                response.stream = _CutShortWatched(response.stream)
            if (
                response.request.method == "GET" and self.on_broken is not None and self.url is not None
                and _event_stream(response)
            ):  # SSE: the stream that names the endpoint
                response.stream = _EndpointWatched(response.stream, self.url, self.on_broken)
            if response.request.method == "POST" and self.on_broken is None and _json_answer(response):
                _watch_answer_id(response)  # streamable HTTP: the body is the request's answer
            if self.on_broken is None and _event_stream(response):  # streamable HTTP: resumed after retry:
                response.stream = _RetryBounded(response.stream, int(MAX_RETRY_WAIT * 1000))
                if response.request.method == "POST":
                    asked = _request_id(response.request)
                else:  # a GET resuming a request's answer stream after one of its events?
                    resumed = response.request.headers.get(LAST_EVENT_ID_HEADER)
                    asked = self.resumes.get(resumed, msgspec.UNSET) if resumed else msgspec.UNSET
                if asked is not msgspec.UNSET:  # a request's answer stream: its answer is the request's
                    after = None if response.request.method == "POST" else resumed
                    response.stream = _AnswerIdChecked(response.stream, asked, self.max_event, self.resumes, after)
            return
        try:
            body = await response.aread()
        except Exception:  # a broken stream: the status alone speaks
            body = b""
        code = _error_code(body)
        if status == 404 and SESSION_ID_HEADER in response.request.headers:
            if code != METHOD_NOT_FOUND:  # else a method this server lacks, not our session
                self.on_lost()
            return
        text = body[:_TEXT_KEPT].decode(errors="replace").strip()
        retry_after = _seconds(response.headers.get("retry-after"))
        refusal = HttpRefusal(status, _reason(status, response.reason_phrase), text, retry_after)
        if response.request.method != "POST":
            if status < 400:  # a web page for the SSE stream's GET: the handshake's failure names it
                self.last_refusal = refusal
            return
        if code is None:
            self.last_refusal = refusal
            into = refusals.get()
            if into is not None:
                into.append(refusal)
        if self.on_broken is not None and status >= 400:
            self.on_broken(refusal)

    def watch_posts(self, client: httpx2.AsyncClient) -> None:
        """Make ``client`` report each POST that fails with a transport error: a `PostFailed`
        in the sender's ``refusals``, then ``on_broken`` (SSE), and the error propagates;
        without ``on_broken`` (streamable HTTP) one that may have reached the server is
        answered with a bare 502 instead, which fails its request alone. Only
        ``client.send`` is wrapped (every request of the MCP transports goes through it);
        other requests and answers are untouched. Not seen: a body that breaks after its
        status came (an SSE server's answer to a POST is a few bytes long).

        ``sent`` is False only for an error raised before a connection was made
        (`_NEVER_SENT`); any later one may have delivered the message.

        A POST whose answer is only an acknowledgement (202) is awaited for the client's
        connect timeout at most (the connection's ``connect_timeout``), not its read timeout
        (300 s): over SSE every POST, over streamable HTTP one that carries no request (a
        notification, an answer of ours). The SDK sends those one at a time (SSE: every
        message; streamable HTTP: every one but a request), so one the server never answered
        held up every later message that long, and each call behind it waited out its
        deadline. A server acknowledges a message as it takes it, before it handles it; no
        answer by then is a POST that failed: over SSE it ends the transport as any other
        does, over streamable HTTP it is lost alone (a 502 in its place)."""
        send = client.send

        async def send_watched(request: httpx2.Request, *args: Any, **kwargs: Any) -> httpx2.Response:
            acknowledged = request.method == "POST" and (self.on_broken is not None or _request_id(request) is msgspec.UNSET)
            bound = _bound_answer_wait(request) if acknowledged else None
            try:
                return await send(request, *args, **kwargs)
            except httpx2.TransportError as exc:
                if request.method == "POST":
                    error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    if bound is not None and isinstance(exc, httpx2.ReadTimeout):
                        error = f"ReadTimeout after {bound:g} s, the connect_timeout"
                    failed = PostFailed(error, not isinstance(exc, _NEVER_SENT))
                    into = refusals.get()
                    if into is not None:
                        into.append(failed)
                    if self.on_broken is not None:
                        self.on_broken(failed)
                    elif failed.sent:
                        # Streamable HTTP: each POST is an exchange of its own, and this one's
                        # answer is what was lost (a reset, a proxy's timeout), not the
                        # connection; raised, the error would end the SDK's whole transport
                        # and every call in flight on it. An error status in its place fails
                        # this request alone, as `failed` (in the sender's ``refusals``) says.
                        return httpx2.Response(502, request=request)
                raise

        client.send = send_watched  # type: ignore[method-assign]
