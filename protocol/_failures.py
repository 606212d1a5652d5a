"""The typed failure taxonomy.

Every call the supervisor routes ends in exactly one of: the tool's result, the tool's own
error (``isError``), or one of these failures. Each failure carries a JSON-RPC error code in
the implementation-defined server range (-32000 to -32099), a stable ``kind`` name and a
message a human can act on. ``to_error()`` turns one into the JSON-RPC error object sent at
the process edges; ``failure_from_error()`` turns it back, so a client of the daemon raises
the same typed failure the embedded API raises.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._jsonrpc import ErrorObject

__all__ = [
    "ActorDown",
    "CircuitOpen",
    "DeadlineExceeded",
    "Failure",
    "InvalidArguments",
    "InvalidResult",
    "Overloaded",
    "ServerCrashed",
    "ServerUnavailable",
    "UnknownTool",
    "failure_from_error",
]


class Failure(Exception):
    """Base of every typed failure. ``code`` is the JSON-RPC code, ``kind`` the stable name."""

    code: ClassVar[int] = -32000
    kind: ClassVar[str] = "Failure"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_error(self) -> ErrorObject:
        return ErrorObject(code=self.code, message=self.message, data={**self.data, "kind": self.kind})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class UnknownTool(Failure):
    """No running server offers a tool of that name."""

    code = -32001
    kind = "UnknownTool"


class InvalidArguments(Failure):
    """The arguments do not satisfy the tool's input schema; the call was never sent."""

    code = -32002
    kind = "InvalidArguments"


class CircuitOpen(Failure):
    """The server's breaker is open; ``retry_at`` (if present) says when the next trial runs."""

    code = -32003
    kind = "CircuitOpen"


class ServerUnavailable(Failure):
    """The server is not connected (starting, restarting, failed or stopped), or it turned
    the call away unread (HTTP 408 or 429): the call did not run."""

    code = -32004
    kind = "ServerUnavailable"


class Overloaded(Failure):
    """A bounded queue or mailbox is full and the caller asked not to wait."""

    code = -32005
    kind = "Overloaded"


class DeadlineExceeded(Failure):
    """The call's deadline passed; it may or may not have run on the server."""

    code = -32006
    kind = "DeadlineExceeded"


class ServerCrashed(Failure):
    """The server died while the call was in flight, or answered it with an HTTP 5xx and no
    JSON-RPC answer; it may or may not have run."""

    code = -32007
    kind = "ServerCrashed"


class ActorDown(Failure):
    """The actor asked is not running (it died or was stopped); nothing was delivered to it."""

    code = -32008
    kind = "ActorDown"


class InvalidResult(Failure):
    """The server answered, but not with a valid result for the call: one that is no
    ``CallToolResult`` under the negotiated protocol version, structured content its own
    ``outputSchema`` rejects, or input rounds past the limit. The call ran; it is not retried."""

    code = -32009
    kind = "InvalidResult"


_BY_KIND: dict[str, type[Failure]] = {
    cls.kind: cls
    for cls in (
        UnknownTool,
        InvalidArguments,
        CircuitOpen,
        ServerUnavailable,
        Overloaded,
        DeadlineExceeded,
        ServerCrashed,
        ActorDown,
        InvalidResult,
    )
}
_BY_CODE: dict[int, type[Failure]] = {cls.code: cls for cls in _BY_KIND.values()}


def failure_from_error(error: ErrorObject) -> Failure | None:
    """The typed failure an error object encodes, or None when it is not one of ours.

    An error is ours when its ``data`` is an object whose ``kind`` names one of the failures
    above *and* its code is that failure's code. The code alone is not enough: other JSON-RPC
    peers use the same range (the mcp SDK sends -32001 for a request timeout, for example).
    Never raises, whatever ``data`` holds.
    """
    data = error.data
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None or cls.code != error.code:
        return None
    failure = cls(error.message)
    failure.data = {k: v for k, v in data.items() if k != "kind"}
    return failure
