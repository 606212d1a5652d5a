"""What can go on the wire: a check made before a caller's values are handed to a server.

The mcp SDK serializes each outgoing message in its transport's writer task, after the
request has left the caller. A message that fails there (an object JSON has no form for, a
string holding a lone surrogate) ends that writer, and with it the whole connection: over
stdio the server is restarted and every other call in flight on it fails. A lone surrogate
is easy to meet: half of an emoji cut in two by a streaming model, or a ``\\ud800`` escape
from a client (valid JSON that no UTF-8 encoder writes). So what a caller sends is checked
first, with the serializer the SDK uses.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

__all__ = ["unsendable"]


def unsendable(value: Any) -> str | None:
    """Why ``value`` cannot go on the wire as JSON, as the SDK's serializer (pydantic's)
    writes it, or None when it can. Never raises."""
    try:
        pydantic_core.to_json(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        return str(exc)
    return None
