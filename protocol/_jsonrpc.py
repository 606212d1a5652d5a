"""JSON-RPC 2.0 envelopes, and the one way in and out of bytes.

Four envelope kinds travel on the wire: `Request`, `Notification`, `SuccessResponse` and
`ErrorResponse` (whose payload is an `ErrorObject`). They are plain msgspec Structs: inside a
process they move as objects, at the process edges `encode` and `decode` turn them into JSON.

Guarantees:

- `encode` emits only what is present: an absent ``params`` or ``data`` (the `msgspec.UNSET`
  default) is left out of the JSON, never written as ``null``. Every envelope carries
  ``"jsonrpc": "2.0"``.
- `decode` accepts ``bytes``, ``bytearray``, ``memoryview`` or ``str`` and returns exactly one
  of the four envelopes, or raises `ProtocolError`, and nothing else, whatever the input:
  arbitrary bytes, invalid UTF-8, lone surrogates, deep nesting, huge numbers, any JSON value.
  Invalid JSON (or input longer than ``max_size`` bytes) is a parse error (-32700); valid JSON
  that is not a single JSON-RPC 2.0 envelope is an invalid request (-32600). Batches (JSON
  arrays) are refused: MCP removed them in its 2025 revisions.
- For every envelope ``m`` built from JSON values (str keys; no NaN or infinities; no lone
  surrogates), ``decode(encode(m)) == m`` and ``encode(decode(encode(m))) == encode(m)``.
- Valid input costs one msgspec decode call plus one Struct construction; only refused input
  takes the slower path that works out a precise message and recovers the ``id``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "DEFAULT_MAX_SIZE",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "ErrorObject",
    "ErrorResponse",
    "Message",
    "Notification",
    "ProtocolError",
    "Request",
    "SuccessResponse",
    "decode",
    "encode",
]

#: Largest message `decode` accepts by default, in bytes (4 MiB).
DEFAULT_MAX_SIZE: Final = 4 * 1024 * 1024

# The codes JSON-RPC 2.0 reserves (the spec's "pre-defined errors").
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603

Id = int | str
Params = dict[str, Any] | list[Any]


class ErrorObject(msgspec.Struct):
    """The ``error`` member of an error response.

    ``data`` is absent (`msgspec.UNSET`) unless given, and an absent ``data`` is left out of
    the JSON. ``data=None`` is a present ``null``.
    """

    code: int
    message: str
    data: Any | UnsetType = UNSET


class Request(msgspec.Struct, kw_only=True):
    """A call that expects exactly one response with the same ``id``.

    ``params`` is an object or an array, or absent (`msgspec.UNSET`, the default), in which
    case it is left out of the JSON.
    """

    jsonrpc: Literal["2.0"] = "2.0"
    id: Id
    method: str
    params: Params | UnsetType = UNSET


class Notification(msgspec.Struct, kw_only=True):
    """A one-way message: it has no ``id`` and is never answered."""

    jsonrpc: Literal["2.0"] = "2.0"
    method: str
    params: Params | UnsetType = UNSET


class SuccessResponse(msgspec.Struct, kw_only=True):
    """The answer to the request with the same ``id``. ``result`` may be any JSON value."""

    jsonrpc: Literal["2.0"] = "2.0"
    id: Id
    result: Any


class ErrorResponse(msgspec.Struct, kw_only=True):
    """The failed answer to the request with the same ``id``.

    ``id`` is None only when the request's id could not be read (a parse error, say).
    """

    jsonrpc: Literal["2.0"] = "2.0"
    id: Id | None
    error: ErrorObject


Message = Request | Notification | SuccessResponse | ErrorResponse


class ProtocolError(Exception):
    """Input that is not a valid JSON-RPC 2.0 message (or payload).

    ``code`` is `PARSE_ERROR` or `INVALID_REQUEST` when raised by `decode`; ``message`` says
    what was wrong. ``id`` is the message's id when it could be recovered (an int or str that
    sat in the ``id`` member of a JSON object), else None, so the receiver can answer a broken
    request with ``to_response()``. Note that the id is recovered from any kind of message:
    whether to answer is the receiver's decision.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        id: Id | None = None,
        data: Any | UnsetType = UNSET,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.data = data

    def to_error(self) -> ErrorObject:
        """The JSON-RPC error object describing this error."""
        return ErrorObject(self.code, self.message, self.data)

    def to_response(self) -> ErrorResponse:
        """An error response answering the offending message (``id`` None if unknown)."""
        return ErrorResponse(id=self.id, error=self.to_error())

    def __reduce__(self) -> Any:
        return (_rebuild_protocol_error, (self.code, self.message, self.id, self.data))

    def __repr__(self) -> str:
        return f"ProtocolError({self.code}, {self.message!r}, id={self.id!r})"


def _rebuild_protocol_error(code: int, message: str, id: Any, data: Any) -> ProtocolError:
    return ProtocolError(code, message, id=id, data=data)


# One permissive struct that every valid envelope decodes into, so valid input costs a single
# msgspec call; `_classify` then picks the envelope kind. ``params: null`` is tolerated and
# read as absent.
class _Raw(msgspec.Struct):
    jsonrpc: Literal["2.0"]
    id: Id | None | UnsetType = UNSET
    method: str | UnsetType = UNSET
    params: Params | None | UnsetType = UNSET
    result: Any = UNSET
    error: ErrorObject | UnsetType = UNSET


_encoder: Final = msgspec.json.Encoder()
_raw_decoder: Final = msgspec.json.Decoder(_Raw)
_any_decoder: Final = msgspec.json.Decoder()


def encode(msg: Any) -> bytes:
    """Encode an envelope (or any protocol Struct) as compact UTF-8 JSON.

    Raises `TypeError` for values JSON cannot hold and `UnicodeEncodeError` for strings with
    lone surrogates: those are bugs in the caller, not bad input.
    """
    return _encoder.encode(msg)


def decode(
    data: bytes | bytearray | memoryview | str, *, max_size: int = DEFAULT_MAX_SIZE
) -> Message:
    """Decode one JSON-RPC 2.0 message; raise `ProtocolError` and nothing else otherwise.

    ``max_size`` bounds the input's size in bytes (UTF-8 bytes for a ``str``); larger input is
    refused with `PARSE_ERROR` before any parsing.

    Members the envelope does not define are skipped, not examined: msgspec checks their
    syntax but not that their strings are valid UTF-8. Everything returned is valid.
    """
    try:
        size = _size(data, max_size)
        if size > max_size:
            raise ProtocolError(
                PARSE_ERROR,
                f"Parse error: message of {size} bytes exceeds the {max_size}-byte limit",
            )
        raw = _raw_decoder.decode(data)
    except ProtocolError:
        raise
    except Exception as exc:
        raise _explain(data, exc) from None
    return _classify(raw)


def _size(data: bytes | bytearray | memoryview | str, max_size: int) -> int:
    if isinstance(data, str):
        n = len(data)
        # A str of n code points holds between n and 4n UTF-8 bytes: count only when it matters.
        if n * 4 > max_size:
            n = len(data.encode("utf-8", "surrogatepass"))
        return n
    if isinstance(data, memoryview):
        return data.nbytes
    return len(data)


def _classify(raw: _Raw) -> Message:
    id = raw.id
    if raw.method is not UNSET:
        if raw.result is not UNSET or raw.error is not UNSET:
            raise _invalid("a message with a method cannot carry a result or an error", id)
        params = UNSET if raw.params is None else raw.params
        if id is UNSET:
            return Notification(method=raw.method, params=params)
        if id is None:
            raise _invalid("a request id must be an integer or a string, not null", None)
        return Request(id=id, method=raw.method, params=params)
    if raw.result is not UNSET:
        if raw.error is not UNSET:
            raise _invalid("a response cannot carry both a result and an error", id)
        if id is UNSET or id is None:
            raise _invalid("a success response needs an integer or string id", None)
        return SuccessResponse(id=id, result=raw.result)
    if raw.error is not UNSET:
        if id is UNSET:
            raise _invalid("an error response needs an id (null when unknown)", None)
        return ErrorResponse(id=id, error=raw.error)
    raise _invalid("the message has none of method, result and error", id)


def _invalid(reason: str, id: Any) -> ProtocolError:
    if id is UNSET:
        id = None
    return ProtocolError(INVALID_REQUEST, f"Invalid Request: {reason}", id=id)


_JSON_TYPE_NAMES: Final = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _explain(data: Any, exc: Exception) -> ProtocolError:
    """Turn a failed fast-path decode into a precise ProtocolError (slow path, bad input only).

    Invalid JSON outranks an invalid envelope, as JSON-RPC requires, so the input is parsed
    again as plain JSON to tell the two apart.
    """
    if not isinstance(exc, msgspec.ValidationError):
        return _parse_error(exc)
    try:
        value = _any_decoder.decode(data)
    except Exception as exc2:
        return _parse_error(exc2)
    if isinstance(value, list):
        return ProtocolError(
            INVALID_REQUEST,
            "Invalid Request: batches (JSON arrays) are not supported; send one message at a time",
        )
    if not isinstance(value, dict):
        kind = _JSON_TYPE_NAMES.get(type(value), "a JSON value")
        return ProtocolError(
            INVALID_REQUEST, f"Invalid Request: a message must be a JSON object, not {kind}"
        )
    id = value.get("id")
    if isinstance(id, bool) or not isinstance(id, (int, str)):
        id = None
    return ProtocolError(INVALID_REQUEST, f"Invalid Request: {exc}", id=id)


def _parse_error(exc: BaseException) -> ProtocolError:
    if isinstance(exc, UnicodeError):
        reason = "the input is not valid UTF-8"
    elif isinstance(exc, RecursionError):
        reason = "the input is nested too deeply"
    elif isinstance(exc, MemoryError):
        reason = "the input is too large to parse"
    elif isinstance(exc, msgspec.MsgspecError):
        reason = str(exc) or "invalid JSON"
    else:
        reason = f"the input could not be read as JSON ({type(exc).__name__})"
    return ProtocolError(PARSE_ERROR, f"Parse error: {reason}")
