"""The session id as an HTTP header on remote servers, on their one shared connection.

A copilot's backends read the chat session from an ``X-Session-Id`` header. The supervisor
keeps one connection per server for every session, so the session cannot be a header of the
connection: it travels in each request's ``_meta`` (``params._meta.session_id``, or the
key an adapter was given: ``SupervisedMCPServer(session_meta_key=)``). Over streamable HTTP
and SSE every JSON-RPC message the client sends is its own HTTP POST, so the session can be
a header of that POST: ``lift_session_header`` is an httpx request hook that copies it there.

The hook sees a body, not who sent it: the keys it reads are ``session_id`` and every other
key an adapter of this process sends the session under (``use_session_meta_key``, which the
adapter calls), process-wide, in that order (the first that holds a session wins).

Guarantees:

- A POST whose JSON-RPC body carries a string ``params._meta.session_id`` (or under a key
  in use, `use_session_meta_key`) is sent with
  ``X-Session-Id: <it>``, replacing a static ``X-Session-Id`` from the server's headers for
  that request only. A session id that is no header value (printable ASCII) is sent in
  ``_meta`` only, without the header: a line break in it used to make the transport's
  writer fail and the whole connection with it (any client of the daemon could do that).
  Every other request (GETs, bodies without one, batches, bodies that are not JSON) goes
  out exactly as the transport built it.
- The body is not changed, so servers that read ``_meta`` keep working.
- The hook never raises: a body it cannot read is left alone.
"""

from __future__ import annotations

import threading
from typing import Any

import msgspec

__all__ = ["SESSION_HEADER", "SESSION_META_KEY", "lift_session_header", "use_session_meta_key"]

SESSION_HEADER = "X-Session-Id"
#: The ``_meta`` key the session id travels under (``SupervisedMCPServer``'s default).
SESSION_META_KEY = "session_id"

_NEEDLE = f'"{SESSION_META_KEY}"'.encode()

#: The other keys in use (`use_session_meta_key`), in the order they came, each with its
#: JSON form (what a body holding it contains). Replaced whole, never changed in place:
#: the hook may read it in another thread.
_other_keys: tuple[tuple[str, bytes], ...] = ()
_adding = threading.Lock()


def use_session_meta_key(key: str) -> None:
    """From now on, also lift a session id sent in ``_meta`` under ``key`` (after
    ``session_id``, and after the keys given before). For the whole process: the hook
    cannot tell which adapter a request came from. Raises ``TypeError`` for a key that is
    not a non-empty string."""
    global _other_keys
    if not isinstance(key, str) or not key:
        raise TypeError(f"a session _meta key is a non-empty string, not {key!r}")
    with _adding:  # two adapters made at once in two threads: neither key lost
        if key != SESSION_META_KEY and all(key != known for known, _ in _other_keys):
            _other_keys = (*_other_keys, (key, msgspec.json.encode(key)))


class _Meta(msgspec.Struct):
    session_id: Any = None


class _Params(msgspec.Struct):
    meta: _Meta | None = msgspec.field(default=None, name="_meta")


class _Message(msgspec.Struct):
    params: _Params | None = None


_decoder = msgspec.json.Decoder(_Message)


class _AnyParams(msgspec.Struct):
    meta: dict[str, Any] | None = msgspec.field(default=None, name="_meta")


class _AnyMessage(msgspec.Struct):
    params: _AnyParams | None = None


_any_decoder = msgspec.json.Decoder(_AnyMessage)


def session_of(body: bytes) -> str | None:
    """The session id in a JSON-RPC message's ``params._meta`` (``session_id``, then the
    other keys in use), or None."""
    others = [key for key, needle in _other_keys if needle in body]
    if not others:
        if _NEEDLE not in body:  # most requests carry none: skip decoding them
            return None
        try:
            message = _decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        meta = message.params.meta if message.params is not None else None
        return _a_session(meta.session_id if meta is not None else None)
    try:
        any_message = _any_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    values = any_message.params.meta if any_message.params is not None else None
    if values is None:
        return None
    return next(filter(None, map(_a_session, map(values.get, [SESSION_META_KEY, *others]))), None)


def _a_session(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def lift_session_header(request: Any) -> None:
    """httpx request event hook: set ``X-Session-Id`` from the body's ``_meta``."""
    if request.method != "POST":
        return
    try:
        body = request.content
    except Exception:  # a streamed body (never the MCP transports'): leave it alone
        return
    session = session_of(body)
    if session is None:
        return
    if session.isascii() and session.isprintable():
        request.headers[SESSION_HEADER] = session
    else:
        # Not a header value (a line break would be refused by h11 in the transport's writer,
        # ending the connection; non-ASCII arrives garbled): it travels in _meta only, and no
        # static X-Session-Id stands in for it.
        request.headers.pop(SESSION_HEADER, None)
