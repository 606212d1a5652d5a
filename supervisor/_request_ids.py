"""A request to ``/mcp`` whose id no answer can carry is refused, not accepted unanswered.

The SDK's parser reads ``{"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}`` (an id
of ``null``, ``true``, an object alike) as a notification: its HTTP transport answered
``202 Accepted``, ran nothing, and the client waited for an answer that never came. JSON-RPC
2.0 answers such a request with an Invalid Request error whose id is null; the daemon now
does, with a 400 like the SDK's for any other body it cannot take, on the HTTP front as on
the stdio front (`actors._stdio.unusable_id`).

The body was already read whole by the SDK's ``RequestBodyLimitMiddleware`` (one
``http.request`` message, replayed here as it came); only a body in which an ``"id"`` is
followed by no string or integer is parsed again, so a request as clients send it costs a
scan of its bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from actors._stdio import unusable_id

from ._asgi import refuse_unread

__all__ = ["refuse_unusable_id"]

#: An ``"id"`` key whose value does not start as a string or an integer does.
_SUSPECT: Final = re.compile(rb'"id"\s*:\s*(?:[^-\d"\s]|-?\d+\s*[.eE])')


async def refuse_unusable_id(receive: Any, send: Any) -> Any:
    """The ``receive`` to hand the app (the body's first message replayed, then ``receive``
    itself), or None when the request was answered here with a 400."""
    message = await receive()
    body = message.get("body", b"") if message["type"] == "http.request" else b""
    if body and not message.get("more_body") and _SUSPECT.search(body) is not None:
        try:
            why = unusable_id(json.loads(body))
        except ValueError:
            why = None  # not JSON: the SDK says so
        if why is not None:
            await refuse_unread(send, 400, why)
            return None
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replay
