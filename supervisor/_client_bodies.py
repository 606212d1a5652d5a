"""What a client POSTs to ``/mcp`` that the SDK's HTTP transport would leave unanswered.

- A request whose id no answer can carry is refused, not accepted unanswered. The SDK's
  parser reads ``{"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}`` (an id of
  ``null``, ``true``, an object alike) as a notification: its HTTP transport answered
  ``202 Accepted``, ran nothing, and the client waited for an answer that never came.
  JSON-RPC 2.0 answers such a request with an Invalid Request error whose id is null; the
  daemon now does, with a 400 like the SDK's for any other body it cannot take, on the
  HTTP front as on the stdio front (`actors._stdio.unusable_id`).
- A client's answer to a server's question (sampling, elicitation, roots) that is no valid
  JSON-RPC (``"result": null``) but names the question's id is taken as an error answer
  to it (`actors._stdio.answer_as_error`), as on the stdio front: the SDK answered it 400
  and dropped it, and the question waited out the server's timeout for an answer that
  had come.
- A body that nests arrays and objects too deep for Python's JSON parser (over ~1000
  levels: ``json.loads`` raises ``RecursionError``) is refused with a 400 and a JSON-RPC
  parse error saying so; it was a 500 with an empty body and a traceback in the log. Such
  a client's answer that names the question's id where it begins (``{"jsonrpc": "2.0",
  "id": 7, "result": [[[...``) is taken as an error answer to it, as any other answer the
  daemon cannot read. (Any body over the SDK's own parser's limit, ~200 levels, is a 400
  parse error from the SDK: a request never reaches a server so nested.)
- A body whose JSON is no object (a batch ``[...]``, ``[]``, ``null``, a number) is
  refused with a 400 and the ``--stdio`` front's Invalid Request (-32600), from the same
  code (`actors._stdio`): the SDK answered it -32602 with pydantic's 1.7 KB dump of four
  validation errors. The daemon follows MCP 2025-06-18 and later, which removed JSON-RPC
  batching (2025-03-26 had it; the SDK never served it): a batch runs nothing, and, as on
  the stdio front, each request in it gets its own error carrying its id ("the request is
  part of a batch (a JSON array): MCP takes one message at a time"), so every call is
  answered. Over HTTP those errors come in one body, a JSON array, as JSON-RPC 2.0 answers
  a batch. A batch with no request in it, or JSON of another shape, gets one error whose
  id is null.
- A request (or notification) that is no valid JSON-RPC (no ``"jsonrpc"``, ``params``
  that are no object, a ``method`` that is no string) is refused with a 400 and the
  ``--stdio`` front's Invalid Request, from its code: the request's own id and one line
  saying what is wrong (``the request is not valid JSON-RPC: jsonrpc: Field required``).
  The SDK answered -32602 with id null and pydantic's dump of six validation errors.
- A request whose id is in flight on its session already is refused with a 400 and an
  Invalid Request error carrying its id (`InFlight`): the SDK's transport names each
  request's event stream ``str(id)``, so ``5`` and ``"5"``, or an id sent twice, shared
  one, and the first request never got its answer. A request with id ``"_GET_stream"``
  (the SDK's name for the session's GET stream) is refused alike: it took that stream
  over, and every later notification of the session was lost.

The body was already read whole by the SDK's ``RequestBodyLimitMiddleware`` (one
``http.request`` message, replayed here as it came, or mended); only a body in which an
``"id"`` is followed by no string or integer, one with no ``"method"`` (an answer), or
one whose ``"jsonrpc"``, ``"method"`` or ``"params"`` looks wrong (`_maybe_invalid`) is
parsed again, nor one that does not begin with ``{`` (no object), so a request as
clients send it costs a scan of its bytes, and msgspec's reading of its ``id`` and
``method`` (the rest skipped unbuilt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec
from mcp import types as mcp_types
from mcp.server.streamable_http import GET_STREAM_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from actors._stdio import MalformedRequest, answer_as_error, top_level_keys, unusable_id

# The --stdio front's own reading of a client's line: what it refuses a batch, or JSON
# that is no object, with (kept in one place, so that both fronts say the same).
from actors._stdio import _answerable as _stdio_answerable
from actors._stdio import _parse as _stdio_parse

from ._asgi import refuse_unread, respond

__all__ = ["InFlight", "screen_client_body"]

#: An ``"id"`` key whose value does not start as a string or an integer does.
_SUSPECT: Final = re.compile(rb'"id"\s*:\s*(?:[^-\d"\s]|-?\d+\s*[.eE])')
#: What a request that is no valid JSON-RPC may hold: a ``"jsonrpc"`` that is not
#: ``"2.0"``, a ``"method"`` that is no string, ``"params"`` that are no object.
_MAYBE_INVALID: Final = re.compile(rb'"jsonrpc"\s*:(?!\s*"2\.0")|"method"\s*:\s*[^"\s]|"params"\s*:\s*[^{\s]')
#: The first array or object within the body's outermost one: where its head ends.
_NESTED: Final = re.compile(rb"[\[{]")
_TOO_DEEP: Final = (
    "Parse error: the body nests arrays and objects too deep (over a thousand levels) for JSON to be read; "
    "it was not read"
)


class _TooDeep(Exception):
    """The body nests too deep for ``json.loads`` (which raised ``RecursionError``)."""


class _Head(msgspec.Struct):
    """What a body says of itself that `InFlight` needs: its id, and whether it is a
    request (a ``method``). Any other field is skipped unread."""

    id: Any = None
    method: Any = None


class InFlight:
    """The requests in flight on each MCP session over HTTP, by the name the SDK's
    transport gives each one's event stream: ``str(id)``, so ``5`` and ``"5"`` (two ids,
    to JSON-RPC) share one, as does an id sent again before its answer. The second such
    request took the first one's stream: the first call ran, and its answer never came
    (its POST open and silent for good); or, sent once the first one's client had left
    while its call still ran, it was answered with that call's late answer, and its own
    was dropped. It is refused now (`_Claim.claim`) while the first is in flight: until
    its answer has been sent whole or, when its client left before, until the server has
    answered it (`answered`: the SDK stores that answer for a client that resumes) or its
    session ended (`session_ended`). A request with id ``"_GET_stream"`` (the SDK's name
    for the session's GET stream, ``GET_STREAM_KEY``) is refused: it took that stream
    over, and the session's notifications went nowhere once it was answered. (A
    2026-07-28 request has no session, and a stream of its own.)"""

    def __init__(self) -> None:
        #: Each request in flight: ``"open"`` (its POST is), ``"answered"`` (its answer is
        #: stored, its POST not yet done) or ``"left"`` (its client left before the answer).
        self._held: dict[tuple[str, str], str] = {}
        #: Whether a session is open (set by the session manager); a request on one that
        #: is not is forgotten when it ends.
        self.is_open: Any = lambda session: True

    @contextmanager
    def request(self, scope: Any) -> Iterator[_Claim]:
        """A `_Claim` for one HTTP request: what it claims is released once the request's
        answer has been sent whole (`_Claim.watch`); when the request ends without (its
        client gone), once the server answers it or its session ends."""
        claim = _Claim(self, _session_of(scope))
        try:
            yield claim
        finally:
            claim.end()

    def answered(self, session: str, stream: str) -> None:
        """The server's answer to request ``stream`` of ``session`` is out (stored for a
        client that resumes, sent if its POST is open)."""
        key = (session, stream)
        state = self._held.get(key)
        if state == "left":
            del self._held[key]
        elif state == "open":
            self._held[key] = "answered"

    def session_ended(self, session: str) -> None:
        for key in [key for key in self._held if key[0] == session]:
            del self._held[key]


class _Claim:
    """The stream names one HTTP request holds on its session (see `InFlight`)."""

    def __init__(self, in_flight: InFlight, session: str | None) -> None:
        self._in_flight = in_flight
        self._session = session
        self._mine: list[tuple[str, str]] = []

    def claim(self, body: bytes) -> MalformedRequest | None:
        """Claims the stream of the request ``body`` is, on its session; the refusal (its
        own id, Invalid Request) when another request in flight holds it. None for a
        body that is no request with an id, or sent with no session (an ``initialize``
        opens one; a 2026-07-28 request has none)."""
        if self._session is None or b'"method"' not in body:
            return None
        try:
            head = msgspec.json.decode(body, type=_Head)
        except (msgspec.DecodeError, RecursionError):
            return None  # not a request the SDK can read: it refuses it
        request_id = head.id
        if not isinstance(head.method, str) or isinstance(request_id, bool) or not isinstance(request_id, int | str):
            return None
        key = (self._session, str(request_id))
        if key[1] == GET_STREAM_KEY:
            return MalformedRequest(
                request_id,
                mcp_types.INVALID_REQUEST,
                f"the id {json.dumps(request_id)} is the HTTP transport's name for the session's own event stream "
                "(its GET): a request with it would take that stream over; send it with another id",
            )
        held = self._in_flight._held
        if key in held:
            return MalformedRequest(
                request_id,
                mcp_types.INVALID_REQUEST,
                f"a request with id {json.dumps(request_id)} (or {json.dumps(_other(request_id))}: "
                "the HTTP transport takes both as one) is still in flight on this session: "
                "send it again once that one is answered, or with another id",
            )
        held[key] = "open"
        self._mine.append(key)
        return None

    def watch(self, send: Any) -> Any:
        """``send``, releasing what was claimed once the answer's last part is sent."""

        async def watched(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._release()

        return watched

    def _release(self) -> None:
        for key in self._mine:
            self._in_flight._held.pop(key, None)
        self._mine.clear()

    def end(self) -> None:
        """The request is done: what it holds unanswered is held on (`InFlight`) while
        its session is open, the call running on."""
        held = self._in_flight._held
        for key in self._mine:
            if held.get(key) == "open" and self._in_flight.is_open(key[0]):
                held[key] = "left"
            elif held.get(key) != "left":
                held.pop(key, None)
        self._mine.clear()


def _other(request_id: int | str) -> int | str:
    """The id that ``request_id`` is taken for: ``5`` for ``"5"`` (when it reads as one
    back) and ``"5"`` for ``5``."""
    if isinstance(request_id, int):
        return str(request_id)
    try:
        number = int(request_id)
    except ValueError:
        return request_id
    return number if str(number) == request_id else request_id


def _session_of(scope: Any) -> str | None:
    """The ``Mcp-Session-Id`` of a handshake-era request; None without one, or for a
    2026-07-28 request (its ``MCP-Protocol-Version`` is no handshake era's: the SDK
    serves it on its own, whatever session it names)."""
    headers: dict[bytes, bytes] = {}
    for key, value in scope.get("headers", []):
        headers.setdefault(key.lower(), value)  # the first, as the SDK reads them
    version = headers.get(b"mcp-protocol-version")
    if version is not None and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    session = headers.get(b"mcp-session-id")
    return None if session is None else session.decode("latin-1")


async def screen_client_body(receive: Any, send: Any, claim: _Claim | None = None) -> Any:
    """The ``receive`` to hand the app (the body's first message replayed, or mended, then
    ``receive`` itself), or None when the request was answered here with a 400. With
    ``claim``, a request whose id is in flight on its session already is refused (see
    `InFlight`)."""
    message = await receive()
    body = message.get("body", b"") if message["type"] == "http.request" else b""
    if body and not message.get("more_body"):
        try:
            if body.lstrip()[:1] != b"{":
                refused = _not_an_object(body)
                if refused is not None:
                    await _refuse(send, refused)
                    return None
            if _SUSPECT.search(body) is not None:
                try:
                    why = _judged(body, unusable_id)
                except ValueError:
                    why = None  # not JSON: the SDK says so
                if why is not None:
                    await refuse_unread(send, 400, why)
                    return None
            if b'"method"' not in body:
                mended = _mended_answer(body)
                if mended is not None:
                    message = {**message, "body": mended}
            else:
                refused = _invalid_request(body) if _maybe_invalid(body) else None
                if refused is None and claim is not None:
                    refused = claim.claim(body)
                if refused is not None:
                    await _refuse(send, refused)
                    return None
        except _TooDeep:
            mended = _too_deep_answer(body)
            if mended is None:
                await refuse_unread(send, 400, _TOO_DEEP, code=mcp_types.PARSE_ERROR)
                return None
            message = {**message, "body": mended}
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replay


def _not_an_object(body: bytes) -> list[MalformedRequest] | MalformedRequest | None:
    """The refusal, as the ``--stdio`` front gives it, of ``body`` when it is JSON but no
    object: each request of a batch (with its id), or one refusal with id null (an empty
    batch, one with no request in it, ``null``, a number). None for a body that is not
    JSON (the SDK says so: a parse error). Raises `_TooDeep` for one nested too deep."""
    try:
        data = _judged(body, lambda data: data)
    except ValueError:
        return None
    if isinstance(data, dict):
        return None
    refused = _stdio_answerable(body, _stdio_parse(body, mend=False))
    if isinstance(refused, MalformedRequest) or (isinstance(refused, list) and refused):
        return refused
    return None


def _maybe_invalid(body: bytes) -> bool:
    """Whether ``body`` (an object with a ``"method"``) may be no valid JSON-RPC: a scan of
    its bytes, so that only such a body is parsed here."""
    return b'"jsonrpc"' not in body or _MAYBE_INVALID.search(body) is not None


def _invalid_request(body: bytes) -> MalformedRequest | None:
    """The ``--stdio`` front's refusal of ``body`` when it is a request (or notification)
    that is no valid JSON-RPC (no ``"jsonrpc"``, ``params`` that are no object): its own
    id, Invalid Request, one line saying why; the SDK answered -32602 with id null and
    pydantic's dump of six validation errors. None for a body the SDK can read."""
    parsed = _stdio_parse(body, mend=False)
    if not isinstance(parsed, (ValueError, MalformedRequest)):
        return None
    refused = _stdio_answerable(body, parsed)
    return refused if isinstance(refused, MalformedRequest) else None


async def _refuse(send: Any, refused: list[MalformedRequest] | MalformedRequest) -> None:
    """A 400 with the JSON-RPC error of ``refused``, or, for a batch, the array of the
    errors of its requests (JSON-RPC 2.0's answer to a batch)."""
    errors = [
        {"jsonrpc": "2.0", "id": request.id, "error": {"code": request.code, "message": request.reason}}
        for request in (refused if isinstance(refused, list) else [refused])
    ]
    await respond(send, 400, json.dumps(errors if isinstance(refused, list) else errors[0]).encode() + b"\n")


def _judged(body: bytes, judge: Any) -> Any:
    """``judge(json.loads(body))``; raises ``ValueError`` for a body that is not JSON, and
    `_TooDeep` for one nested too deep to parse, or to judge (``json.dumps`` of an id)."""
    try:
        return judge(json.loads(body))
    except RecursionError:
        raise _TooDeep from None


def _mended_answer(body: bytes) -> bytes | None:
    """The error answer (as a body) that stands for ``body`` when it is a client's answer
    that is no valid JSON-RPC, else None (valid, or no answer: the SDK judges it). Raises
    `_TooDeep` for a body nested too deep to read."""
    try:
        mcp_types.jsonrpc_message_adapter.validate_json(body, by_name=False)
        return None
    except ValueError as exc:
        try:
            error = _judged(body, lambda data, exc=exc: answer_as_error(data, body, exc))
        except ValueError:
            return None
        return None if error is None else error.model_dump_json(by_alias=True, exclude_none=True).encode()


def _too_deep_answer(body: bytes) -> bytes | None:
    """The error answer (as a body) that stands for ``body``, nested too deep to read, when
    its head (what comes before its first nested array or object) reads as a client's
    answer with an id an answer can carry; else None."""
    start = body.find(b"{")
    nested = _NESTED.search(body, start + 1) if start >= 0 else None
    keys = top_level_keys(body[: nested.start() if nested else 0])
    request_id = keys.get("id")
    if "method" in keys or not ("result" in keys or "error" in keys) or request_id is None:
        return None
    error = mcp_types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=mcp_types.ErrorData(
            code=mcp_types.INVALID_REQUEST,
            message="the client's answer nests arrays and objects too deep (over a thousand levels) to be read",
        ),
    )
    return error.model_dump_json(by_alias=True, exclude_none=True).encode()
