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

The body was already read whole by the SDK's ``RequestBodyLimitMiddleware`` (one
``http.request`` message, replayed here as it came, or mended); only a body in which an
``"id"`` is followed by no string or integer, or one with no ``"method"`` (an answer), is
parsed again, nor one that does not begin with ``{`` (no object), so a request as
clients send it costs a scan of its bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from mcp import types as mcp_types

from actors._stdio import MalformedRequest, answer_as_error, top_level_keys, unusable_id

# The --stdio front's own reading of a client's line: what it refuses a batch, or JSON
# that is no object, with (kept in one place, so that both fronts say the same).
from actors._stdio import _answerable as _stdio_answerable
from actors._stdio import _parse as _stdio_parse

from ._asgi import refuse_unread, respond

__all__ = ["screen_client_body"]

#: An ``"id"`` key whose value does not start as a string or an integer does.
_SUSPECT: Final = re.compile(rb'"id"\s*:\s*(?:[^-\d"\s]|-?\d+\s*[.eE])')
#: The first array or object within the body's outermost one: where its head ends.
_NESTED: Final = re.compile(rb"[\[{]")
_TOO_DEEP: Final = (
    "Parse error: the body nests arrays and objects too deep (over a thousand levels) for JSON to be read; "
    "it was not read"
)


class _TooDeep(Exception):
    """The body nests too deep for ``json.loads`` (which raised ``RecursionError``)."""


async def screen_client_body(receive: Any, send: Any) -> Any:
    """The ``receive`` to hand the app (the body's first message replayed, or mended, then
    ``receive`` itself), or None when the request was answered here with a 400."""
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
