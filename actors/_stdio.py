"""The stdio wire: newline-delimited JSON-RPC between an MCP session and a server's pipes.

The mcp SDK's own stdio transport frames lines by concatenating every chunk it reads onto
what it holds and splitting the whole again: a message spanning many 64 KiB pipe reads
costs time quadratic in its size, on the event loop (a 16 MiB tool result took 14 s of
CPU in 2026-12 measurements, every other server's calls stalled meanwhile), and a server
that writes without a newline grows the buffer without bound. Images from the copilot's
tools are megabytes. So the supervisor frames the pipes itself, with the SDK's parser and
serializer, and nothing else of the protocol (a server's pipes are read and written by the
session's own tasks: `actors._pipes`; the daemon's own stdin and stdout, by the tasks of
`read_messages` and `write_messages`):

- reading is linear: each chunk is scanned once; a line is joined once, when it ends; a
  last line the stream ends without a newline after is read as if it had one (a client
  that pipes in a file without a final newline lost its last request unanswered), and a
  UTF-8 byte order mark before a line is skipped (an editor's, at the start of a file);
- a line over ``max_bytes`` is never held: its first and last bytes are kept, the rest is
  counted and dropped up to its newline, and the wire goes on with the next line. If it
  was an answer (a ``result`` or ``error``, no ``method``, its ``id`` at either end), the
  request gets a JSON-RPC error saying how large the answer was (`oversized`), so the call
  fails at once instead of waiting for its deadline; a request (its ``id`` at either end) is answered with an error
  saying how large it was (`OversizedRequest`, through ``refuse``), so the peer's call
  fails at once too; a notification is dropped and logged; anything else is one garbage
  line. The wire is the same in both directions: the supervisor reads servers with it, and
  the daemon's ``--stdio`` front reads its client with it;
- a request (a readable ``id``, a ``method``) that is not valid JSON-RPC (``params`` of
  the wrong type, a method that is no string, bytes that are not UTF-8, JSON cut short
  after its ``id`` and ``method``, a batch: each request in it) is answered with an error
  saying what is wrong (`MalformedRequest`, through ``refuse``), so the peer's call fails
  at once; any other line that is not UTF-8 or not JSON-RPC is handed on as the exception
  the SDK's parser raised, as the SDK's transport does (the session counts it as
  garbage), except from a client, which gets an error with ``id: null``, as JSON-RPC 2.0
  says (`_answerable`: the daemon's ``--stdio`` front); an empty line (or one of
  whitespace: a server that ends its lines with ``\r\n\r\n``) is skipped; a lone
  surrogate escape (half an emoji, valid JSON that the SDK's parser refuses) in a server's
  message is read as U+FFFD instead of costing the whole message (a client's request that
  holds one is refused: the daemon's front runs nothing on changed input);
- at most `MAX_PENDING_REFUSALS` of those error answers wait for a peer that does not read
  its stdin; past them a refused request goes unanswered (logged), so such a peer costs
  no memory per request;
- one line at a time: no read-ahead while the session has not taken the last message, so a
  flooding server is held back by its own pipe;
- writing: one line at a time, in the order the senders came; a message the SDK's
  serializer cannot encode (a lone surrogate in a value) is not written; a request gets an
  error answer instead, so the call is answered and the wire stays sound;
- when the session stops reading, the rest of stdout is read and dropped, so a server
  blocked on a full pipe can still exit (until the process that opened the wire closes
  stdout: a process out of reach may hold it open for good).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import anyio
import mcp_types
import msgspec
import pydantic_core
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

__all__ = [
    "MALFORMED", "MAX_PENDING_REFUSALS", "OVERSIZED", "Delivered", "MalformedRequest", "OversizedRequest",
    "answer_as_error",
    "answer_refused", "oversized", "read_messages", "refusal", "refuser", "top_level_keys", "unusable_id", "write_messages",
]

log = logging.getLogger("supervisor.stdio")

#: The key in the ``data`` of the error that answers a request whose answer was too large.
OVERSIZED: Final = "max_message_bytes"
#: The key in the ``data`` of the error that stands for a server's answer that was no
#: valid JSON-RPC (`answer_as_error`).
MALFORMED: Final = "malformed_answer"

_READ_SIZE: Final = 65536
_HEAD: Final = 4096  # what is kept of the start of an oversized line: enough to find its id
_TAIL: Final = 256  # and of its end, where some serializers put the id
#: A top-level ``"id"`` that ends the object (perhaps before ``"jsonrpc"``).
_TRAILING_ID: Final = re.compile(
    rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?}\s*$'
)
#: A top-level ``"method"`` that ends the object (a serializer that writes it after the params).
_TRAILING_METHOD: Final = re.compile(rb'"method"\s*:\s*"(?:[^"\\]|\\.)*"\s*}\s*$')
_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, trio.ClosedResourceError, trio.BrokenResourceError)

Delivered = SessionMessage | Exception


class OversizedRequest(msgspec.Struct, frozen=True):
    """A request from the peer whose line was over ``max_bytes``: dropped unread."""

    id: Any
    size: int
    max_bytes: int


class MalformedRequest(msgspec.Struct, frozen=True):
    """A request from the peer (a readable ``id``, a ``method``) that is not valid JSON-RPC
    (``params`` of the wrong type, a method that is no string, a line that is not UTF-8,
    ...): refused."""

    id: Any
    code: int
    reason: str


def refusal(request: OversizedRequest | MalformedRequest) -> SessionMessage:
    """The error answer to a refused request: an `OversizedRequest` (invalid request, saying
    how large) or a `MalformedRequest` (saying what is wrong)."""
    if isinstance(request, MalformedRequest):
        error = mcp_types.ErrorData(code=request.code, message=request.reason)
    else:
        message = f"the request was {request.size} bytes, over the limit of {request.max_bytes}; it was not read"
        error = mcp_types.ErrorData(
            code=mcp_types.INVALID_REQUEST, message=message, data={"size": request.size, "limit": request.max_bytes}
        )
    return SessionMessage(mcp_types.JSONRPCError(jsonrpc="2.0", id=request.id, error=error))


async def answer_refused(
    writer: MemoryObjectSendStream[SessionMessage], request: OversizedRequest | MalformedRequest
) -> None:
    """Send the `refusal` of ``request`` on ``writer`` (a clone of the writer's input);
    nothing when the wire is closed meanwhile."""
    try:
        await writer.send(refusal(request))
    except _GONE:
        pass


#: How many refusals (`answer_refused`) may wait for the writer at once; past them one is
#: dropped: the peer is not reading its answers, and each would hold a task.
MAX_PENDING_REFUSALS: Final = 64


def refuser(
    nursery: trio.Nursery, writer: MemoryObjectSendStream[SessionMessage]
) -> Callable[[OversizedRequest | MalformedRequest], None]:
    """A ``refuse`` for `read_messages`: each refusal is sent on ``writer`` from a task of
    ``nursery`` (the reader must not wait), at most `MAX_PENDING_REFUSALS` at once; one
    past them is dropped and logged (a peer that sends requests and never reads its stdin
    would otherwise have us hold a task per request, without bound)."""
    pending = 0
    told = False

    async def answer(request: OversizedRequest | MalformedRequest) -> None:
        nonlocal pending, told
        try:
            await answer_refused(writer, request)
        finally:
            pending -= 1
            told = False

    def refuse(request: OversizedRequest | MalformedRequest) -> None:
        nonlocal pending, told
        if pending >= MAX_PENDING_REFUSALS:
            if not told:  # once until the peer reads again
                log.warning("%d error answers wait for the peer to read: request %r and those after it go unanswered",
                            pending, request.id)
                told = True
            return
        pending += 1
        nursery.start_soon(answer, request)

    return refuse


class _Framer:
    """Cuts a byte stream into lines, and each line into what the session is handed (see
    the module docstring): a parsed message, or the exception that stands for a line that
    is not JSON-RPC. ``dropped`` is called for each line over ``max_bytes``, ``refuse`` for
    each of those that was a request with an id, and for each malformed request with a
    readable id (it must not block: it answers from another task, as the writer may be
    waiting for the peer to read, and the peer for us)."""

    def __init__(
        self,
        max_bytes: int,
        server: str,
        dropped: Callable[[], None],
        refuse: Callable[[OversizedRequest | MalformedRequest], None],
        from_client: bool = False,
    ) -> None:
        self._max_bytes = max_bytes
        self._from_client = from_client
        self._server = server
        self._dropped = dropped
        self._refuse = refuse
        self._pending: list[bytes] = []
        self._size = 0
        self._head = self._tail = b""  # of a line over max_bytes; _size counts all of it

    def end(self) -> Iterator[Delivered]:
        """What the last line gives when the stream ends without a newline after it (a
        client that pipes in its requests, a server that exits after its last answer): it
        is read as if it had one, not dropped unanswered."""
        return self.feed(b"\n") if self._size or self._head else iter(())

    def feed(self, chunk: bytes) -> Iterator[Delivered]:
        """What the lines that ``chunk`` ends give, parsed one at a time as they are taken;
        a line it does not end is held for the next chunk (once this one is taken whole)."""
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            self._size += len(piece)
            if self._head:  # an oversized line: counted, only its last bytes kept
                self._tail = piece[-_TAIL:] if len(piece) >= _TAIL else (self._tail + piece)[-_TAIL:]
            elif self._size > self._max_bytes:
                self._pending.append(piece)
                held = b"".join(self._pending)
                self._head, self._tail, self._pending = held[:_HEAD], held[-_TAIL:], []
            else:
                self._pending.append(piece)
            if end < 0:
                return
            line = b""
            if self._head:
                self._dropped()
                message = oversized(self._head, self._tail, self._size, self._max_bytes, self._server)
                if self._from_client and isinstance(message, Exception):
                    why = f"a line of {self._size} bytes, over the limit of {self._max_bytes}, with no request id: not read"
                    message = MalformedRequest(None, mcp_types.INVALID_REQUEST, why)
            else:
                line = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
                message = None if not line or line.isspace() else _parse(line, mend=not self._from_client)
            self._pending, self._size, self._head, self._tail = [], 0, b"", b""
            start = end + 1
            if self._from_client and message is not None:
                message = _answerable(line, message)
            elif isinstance(message, ValueError) and line:
                message = _server_answer(line, message)
            if isinstance(message, (OversizedRequest, MalformedRequest)):
                self._refuse(message)
            elif isinstance(message, list):  # a batch
                for request in message:
                    self._refuse(request)
            elif message is not None:
                yield message


async def read_messages(
    stdout: trio.abc.ReceiveStream,
    messages: MemoryObjectSendStream[Delivered],
    max_bytes: int,
    server: str,
    dropped: Callable[[], None] = lambda: None,
    refuse: Callable[[OversizedRequest | MalformedRequest], None] = lambda request: None,
    from_client: bool = False,
) -> None:
    """Hand each line of ``stdout`` to ``messages``, parsed (`_Framer`, which says what
    ``dropped`` and ``refuse`` are for), until stdout ends; then close ``messages``. The
    reader task for a stream that is no pipe of ours (the daemon's own stdin, read from a
    thread); a server's stdout is read by `PipeReader`.

    ``from_client``: the peer is a client, which JSON-RPC answers where a server's stray
    lines are only counted. A request with a lone surrogate escape is refused instead of
    read with U+FFFD in its place (nothing may run on input changed behind its back), and
    a line that is no JSON-RPC message and names no id an answer could carry is refused
    with ``id: null`` (`_answerable`), as JSON-RPC 2.0 says, instead of handed on."""
    framer = _Framer(max_bytes, server, dropped, refuse, from_client)
    try:
        async with messages:
            while True:
                try:
                    chunk = await _read_some(stdout)
                except (*_GONE, OSError):
                    chunk = b""
                for message in framer.feed(chunk) if chunk else framer.end():
                    try:  # handed straight to a session that waits for it
                        messages.send_nowait(message)
                    except anyio.WouldBlock:
                        await messages.send(message)
                if not chunk:
                    return
    except _GONE:
        pass  # the session stopped reading
    finally:
        await _drain(stdout)


def _parse(line: bytes, mend: bool = True) -> Delivered | MalformedRequest | list[MalformedRequest]:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line.decode(), by_name=False))
    except ValueError as exc:  # pydantic's ValidationError, or UnicodeDecodeError
        if line.startswith(codecs.BOM_UTF8):  # a file saved by an editor that writes one
            return _parse(line[len(codecs.BOM_UTF8) :], mend)
        if mend and b"\\u" in line:  # perhaps half an emoji: mended, it may parse
            mended = _ESCAPE.sub(_mend, line)
            if mended != line:
                with contextlib.suppress(ValueError):
                    return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(mended.decode(), by_name=False))
        return _malformed_request(line, exc) or exc


def _loads(text: str | bytes) -> Any:
    """``json.loads``, with JSON nested too deeply for it (Python's recursion limit; a
    line of a few KB does it) refused as any other unreadable line: a ``ValueError``, not
    the ``RecursionError`` that ended the whole wire (the connection, or the daemon's
    ``--stdio`` front)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


TOO_DEEP: Final = "nested too deeply to read"


def _malformed_request(line: bytes, exc: ValueError) -> MalformedRequest | list[MalformedRequest] | None:
    """A request (a readable ``id``, a ``method``) that failed to parse: refused with an
    answer (else the peer's call would wait out its timeout); each such request of a batch
    (JSON-RPC batches are gone from MCP); one cut short (not JSON), when its id and method
    come before the cut. None for anything else (garbage, a notification)."""
    text = line.decode("utf-8", "replace").lstrip("\ufffd\ufeff \t\r")  # a stray BOM does not hide the id
    try:
        data = _loads(text)
    except ValueError as not_json:
        keys = top_level_keys(text.encode())
        if not _is_request(keys):
            return None
        why = f"the request is {TOO_DEEP}" if str(not_json) == TOO_DEEP else f"the request is not JSON: {not_json}"
        return MalformedRequest(keys["id"], mcp_types.PARSE_ERROR, why)
    if isinstance(data, list):
        batch = "the request is part of a batch (a JSON array): MCP takes one message at a time"
        return [MalformedRequest(item["id"], mcp_types.INVALID_REQUEST, batch) for item in data if _is_request(item)]
    if not _is_request(data):
        return None
    return _malformed(data["id"], "request", line, exc)


_MEMBERS: Final = {"request": "JSONRPCRequest", "notification": "JSONRPCNotification"}


def _malformed(request_id: Any, what: str, line: bytes, exc: ValueError, member: str | None = None) -> MalformedRequest:
    """The refusal of ``line``, a ``what`` ("request", "notification", or another with the
    ``member`` of the SDK's message union it failed as) that is JSON but failed the SDK's
    parser with ``exc``, saying why."""
    if isinstance(exc, UnicodeDecodeError):
        why = f"the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        return MalformedRequest(request_id, mcp_types.PARSE_ERROR, why)
    lone = next((m.group(0) for m in _ESCAPE.finditer(line) if len(m.group(0)) == 6), None)
    if lone is not None:
        why = (f"the {what} holds a lone surrogate escape ({lone.decode()}): half of a UTF-16 pair (an emoji cut "
               "in two?), which no UTF-8 text can hold; it was not run")
        return MalformedRequest(request_id, mcp_types.INVALID_PARAMS, why)
    errors = exc.errors() if isinstance(exc, pydantic_core.ValidationError) else []
    member = member or _MEMBERS[what]  # the shape it failed as
    first = next((e for e in errors if e["loc"][:1] == (member,)), errors[0] if errors else None)
    where = ".".join(str(part) for part in first["loc"][1:]) if first else ""
    why = f"{where}: {first['msg']}" if first and where else (first["msg"] if first else str(exc))
    return MalformedRequest(request_id, mcp_types.INVALID_REQUEST, f"the {what} is not valid JSON-RPC: {why}")


def _answerable(
    line: bytes, message: Delivered | OversizedRequest | MalformedRequest | list[MalformedRequest]
) -> Delivered | OversizedRequest | MalformedRequest | list[MalformedRequest]:
    """``message`` (what the client's ``line`` gave), or the refusal with ``id: null`` of a
    line that is no JSON-RPC message and names no usable id: not JSON, JSON of another
    shape, a batch with no request in it, or a request whose id is no string or integer
    (the SDK's parser reads ``{"id": 1.5, "method": "tools/list"}`` as a notification,
    which gets no answer). Over HTTP each of these is a 400 with a JSON-RPC error; over
    stdio the client got nothing at all. An answer with a usable id that is no valid
    JSON-RPC (``"result": null``) becomes an error answer to that id, handed on: the
    question it answers fails at once, saying why, instead of waiting for its timeout."""
    notification = isinstance(message, SessionMessage) and isinstance(message.message, mcp_types.JSONRPCNotification)
    if notification and b'"id"' not in line:  # the common case, decided without parsing again
        return message
    no_request_in_batch = isinstance(message, list) and not message
    if not (notification or isinstance(message, Exception) or no_request_in_batch):
        return message
    try:
        data = _loads(line.removeprefix(codecs.BOM_UTF8))
    except ValueError as exc:
        return MalformedRequest(None, mcp_types.PARSE_ERROR, f"the line is not JSON ({exc}): one JSON-RPC message per line")
    if isinstance(data, dict) and "method" in data:
        why = unusable_id(data)  # (one an answer could carry would have been refused by it)
        if why is not None:
            return MalformedRequest(None, mcp_types.INVALID_REQUEST, why)
        if isinstance(message, ValueError):
            return _malformed(None, "notification", line, message)
    if isinstance(message, SessionMessage):
        return message  # a notification that has "id" only inside its params
    mended = answer_as_error(data, line, message)
    if mended is not None:
        return SessionMessage(mended)
    if isinstance(data, list):
        why = "a batch (a JSON array) with no request in it: MCP takes one message at a time"
    else:
        why = ('no JSON-RPC 2.0 message: a request is an object with "jsonrpc": "2.0", a string "method" and an '
               '"id" that is a string or an integer; a notification, the same with no "id"')
    return MalformedRequest(None, mcp_types.INVALID_REQUEST, why)


def _server_answer(line: bytes, exc: ValueError) -> Delivered:
    """What a server's ``line`` that failed the SDK's parser with ``exc`` stands for: an
    error answer to the request it answers (`answer_as_error`), or ``exc`` (garbage)."""
    try:
        data = _loads(line.removeprefix(codecs.BOM_UTF8))
    except ValueError as unreadable:
        if str(unreadable) != TOO_DEEP:
            return exc
        # Its id and "result"/"error" come before what is too deep: keep those.
        data, exc = top_level_keys(line), ValueError(TOO_DEEP)
        if "jsonrpc" not in data:
            return exc
    mended = answer_as_error(data, line, exc, "server")
    return exc if mended is None else SessionMessage(mended)


def answer_as_error(data: Any, line: bytes, exc: ValueError, peer: str = "client") -> mcp_types.JSONRPCError | None:
    """The error answer that stands for ``line``, the ``peer``'s answer to one of our
    requests that is no valid JSON-RPC (``data``: its parse; ``exc``: the SDK parser's
    verdict), or None when ``line`` is no answer or names no usable id. Handed on in its
    place, it fails the request now, saying what was wrong with the answer, instead of
    leaving it to wait out its timeout for an answer that came. A server's carries
    `MALFORMED` in its ``data``: the answer's fault, not the server's own error."""
    if not (isinstance(data, dict) and "method" not in data and ("result" in data or "error" in data)):
        return None
    if not _usable_id(data.get("id")):
        return None
    shape = "JSONRPCError" if "error" in data else "JSONRPCResponse"
    why = _malformed(None, f"{peer}'s answer", line, exc, shape).reason
    error = mcp_types.ErrorData(
        code=mcp_types.INVALID_REQUEST, message=why, data={MALFORMED: True} if peer == "server" else None
    )
    return mcp_types.JSONRPCError(jsonrpc="2.0", id=data["id"], error=error)


def unusable_id(data: Any) -> str | None:
    """Why ``data`` (a parsed JSON message) is a request no answer can carry, or None: it
    has a ``method`` and an ``id`` that is no string or integer (``1.5``, ``null``,
    ``true``, an object). The SDK's parser reads it as a notification, so it would get no
    answer at all; JSON-RPC 2.0 answers it with an error whose id is null."""
    if not isinstance(data, dict) or "method" not in data or "id" not in data or _is_request(data):
        return None
    return f"the request's id {json.dumps(data['id'])} is no string or integer: no answer could carry it, so it was not run"


def _is_request(data: Any) -> bool:
    """Whether ``data`` is meant as a request: it has a ``method`` (a string or not: a
    response has none) and an ``id`` an answer can carry."""
    return isinstance(data, dict) and "method" in data and _usable_id(data.get("id"))


def _usable_id(request_id: Any) -> bool:
    return isinstance(request_id, (int, str)) and not isinstance(request_id, bool)


#: A JSON escape: a surrogate pair, a lone surrogate, or any other (so that ``\\\\`` is
#: consumed whole and the scan stays aligned on real escapes).
_ESCAPE: Final = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[dD][89a-fA-F][0-9a-fA-F]{2}|.)", re.S
)


def _mend(escape: re.Match[bytes]) -> bytes:
    """A lone surrogate escape as U+FFFD; any other escape as it was. JSON allows
    ``"\\ud83d"`` alone (a JavaScript server that cuts a string in the middle of an
    emoji writes it), but the SDK's parser refuses it, and with it the whole answer: the
    call would wait out its deadline for an answer that came."""
    text = escape.group(0)
    return rb"\ufffd" if len(text) == 6 else text


async def _drain(stdout: trio.abc.ReceiveStream) -> None:
    """Read and drop the rest of stdout; ends when it ends, is closed, or is cancelled (not
    shielded: a process out of reach may hold stdout open for good)."""
    try:
        while await stdout.receive_some(_READ_SIZE):
            pass
    except (*_GONE, OSError):
        pass


def oversized(
    head: bytes, tail: bytes, size: int, max_bytes: int, server: str
) -> Delivered | OversizedRequest | None:
    """What stands for a line of ``size`` bytes over ``max_bytes`` that began with ``head``
    and ended with ``tail``: an error answer to its request if it was an answer (a
    ``result`` or ``error`` key, no ``method``, an ``id`` at either end); an
    `OversizedRequest` if it was a request with an id at its start (a ``method`` key at
    either end); None if it was a notification (dropped); the parse error otherwise
    (garbage)."""
    keys = top_level_keys(head)
    is_request = "method" in keys or _TRAILING_METHOD.search(tail) is not None
    answer_id = None
    if is_request or "result" in keys or "error" in keys:
        answer_id = keys.get("id")
        if answer_id is None:  # the TypeScript SDK writes {...request, jsonrpc, id}
            found = _TRAILING_ID.search(tail)
            answer_id = json.loads(found.group(1)) if found else None
    if is_request and answer_id is not None:
        log.warning("%r sent a request of %d bytes (limit %d): refused unread", server, size, max_bytes)
        return OversizedRequest(answer_id, size, max_bytes)
    if answer_id is None:
        what = "a notification" if is_request else "a line that is no JSON-RPC answer"
        log.warning("%r wrote %s of %d bytes (limit %d): dropped", server, what, size, max_bytes)
        if is_request:
            return None
        return ValueError(f"a line of {size} bytes, over max_message_bytes ({max_bytes}), that is not a JSON-RPC answer")
    log.warning("server %r answered request %r with %d bytes (max_message_bytes %d): dropped", server, answer_id, size, max_bytes)
    return SessionMessage(
        mcp_types.JSONRPCError(
            jsonrpc="2.0",
            id=answer_id,
            error=mcp_types.ErrorData(
                code=mcp_types.INTERNAL_ERROR,
                message=f"the server's answer was {size} bytes, over max_message_bytes ({max_bytes}); it was dropped",
                data={OVERSIZED: max_bytes, "size": size},
            ),
        )
    )


def top_level_keys(head: bytes) -> dict[str, Any]:
    """The keys of the JSON object ``head`` begins (cut anywhere), each with its value when
    that is a whole number or string (an ``id``), else None."""
    text = head.decode("utf-8", "replace").lstrip()
    if not text.startswith("{"):
        return {}
    decoder = json.JSONDecoder()
    keys: dict[str, Any] = {}
    i = 1
    while True:
        i = _skip_space(text, i)
        try:
            key, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            return keys
        i = _skip_space(text, i)
        if not isinstance(key, str) or text[i : i + 1] != ":":
            return keys
        i = _skip_space(text, i + 1)
        try:
            value, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            keys[key] = None  # cut short, more than the head holds, or too deep: stop here
            return keys
        i = _skip_space(text, i)
        if i >= len(text) and not isinstance(value, str):  # a string read whole is whole
            keys[key] = None  # a number the cut may have shortened (12345 read as 12)
            return keys
        keys[key] = value if isinstance(value, (int, str)) and not isinstance(value, bool) else None
        if text[i : i + 1] != ",":
            return keys
        i += 1


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


async def write_messages(
    stdin: trio.abc.SendStream,
    messages: MemoryObjectReceiveStream[SessionMessage],
    replies: MemoryObjectSendStream[Delivered],
    done: trio.Event,
    nursery: trio.Nursery,
) -> None:
    """Write each message of ``messages`` to ``stdin`` as one line, until ``messages`` ends:
    the writer task for a stream that is no pipe of ours (the daemon's own stdout, written
    from a thread). See `PipeWriter` for what happens to a message that cannot be encoded
    and when stdin breaks. ``done`` is set on return.
    """
    try:
        async with messages:
            async for message in messages:
                data = _encoded(message, lambda request_id, exc: nursery.start_soon(_refuse, request_id, exc, replies))
                if data is not None:
                    await stdin.send_all(data)
    except (*_GONE, OSError):
        await replies.aclose()
    finally:
        done.set()


def _encoded(message: SessionMessage, refuse: Callable[[Any, Exception], None]) -> bytes | None:
    """``message`` as one line of JSON; None when the SDK's serializer cannot encode it
    (logged; a request is answered with an error through ``refuse(id, why)``, which must
    not wait: the session may be waiting on the writer, not reading)."""
    try:
        return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
    except (ValueError, pydantic_core.PydanticSerializationError) as exc:
        log.warning("a message to the server could not be sent as JSON, not sent: %s", exc)
        if isinstance(message.message, mcp_types.JSONRPCRequest):
            refuse(message.message.id, exc)
        return None


def _unencodable(request_id: Any, exc: Exception) -> SessionMessage:
    """The error answer to the request ``request_id``, which could not be encoded."""
    error = mcp_types.ErrorData(code=mcp_types.INVALID_PARAMS, message=f"cannot be sent as JSON: {exc}")
    return SessionMessage(mcp_types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


async def _read_some(stream: trio.abc.ReceiveStream) -> bytes:
    """``stream.receive_some(_READ_SIZE)``, without its leading checkpoint on a pipe (a
    `trio.lowlevel.FdStream`): when bytes wait, they are read and the task yields once;
    when none do, the wait for them is the only yield. Each yield of an otherwise idle
    trio is one more scheduling round (an epoll call; as a guest run, a turn of the host's
    loop), and this one ran on every message. Raises as ``receive_some`` does."""
    if not isinstance(stream, trio.lowlevel.FdStream):
        return await stream.receive_some(_READ_SIZE)
    waited = False
    while True:
        fd = stream.fileno()  # -1 once closed: os.read raises EBADF, never reads a reused fd
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            waited = True
            continue
        except OSError as exc:
            raise (trio.ClosedResourceError if exc.errno == errno.EBADF else trio.BrokenResourceError)() from exc
        if not waited:  # a server that floods us must not starve the others; what was read is
            await trio.lowlevel.cancel_shielded_checkpoint()  # returned even if cancelled meanwhile
        return data


async def _refuse(request_id: Any, exc: Exception, replies: MemoryObjectSendStream[Delivered]) -> None:
    """Answer the request ``request_id`` that could not be encoded with an error."""
    try:
        await replies.send(_unencodable(request_id, exc))
    except _GONE:
        pass  # the connection is gone: the session answers the request itself

