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
    writes it, or None when it can. A NaN or an infinite float in plain data (a caller's
    arguments) cannot: the SDK would send ``null`` in its place. (Inside a pydantic model
    its own setting decides, and it is not flagged.) Never raises."""
    try:
        written = pydantic_core.to_json(value, inf_nan_mode="constants")
        # Only a float written as NaN/Infinity differs when they are written as null (a
        # string that spells them does not).
        if (b"NaN" in written or b"Infinity" in written) and written != pydantic_core.to_json(
            value, inf_nan_mode="null"
        ):
            return "NaN and infinity have no JSON form (they would be sent as null)"
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        return str(exc)
    return None
