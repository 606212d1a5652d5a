"""The front: the party a tool call is made for, who answers what the server asks mid-call.

An upstream server may, while serving a call, ask its client something (``sampling/
createMessage``, ``elicitation/create``, ``roots/list``) or tell it something
(``notifications/message``). The supervisor is only the middle of that conversation: the
question belongs to whoever made the call. A `Front` is that party:

- the daemon's gateway makes one per front request (``supervisor._gateway``), so a question
  goes back to the client whose call caused it, and a log line reaches that client;
- the embedding host gives one to the `Supervisor` (``on_input_request``) for calls that have
  no front of their own; without one, `DECLINE` answers every question with a clear refusal.

How a question is tied to its call (the SDK does not say): a front is installed in a
context variable around the call (`calling_for`), so a question the SDK asks in the caller's
own task (the 2026-07-28 ``InputRequiredResult`` rounds) finds it directly. A question that
arrives on the connection's own task (a handshake-era server's mid-call request) goes to the
one front with calls in flight on that connection; when calls of several fronts are in
flight, nothing on the wire says which one asked, so the connection's default front answers.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Final, Protocol

import mcp_types
import pydantic

__all__ = [
    "DECLINE", "Front", "HostFront", "InputRound", "calling_for", "current_front", "describe_request", "host_front",
]


class InputRound:
    """A 2026-07-28 front's own multi-round-trip state, handed through to the server.

    ``responses`` and ``state`` are what the front sent back with its retried request; the
    server's next ``InputRequiredResult`` is returned to the front unchanged rather than
    answered here (``passes_input_required``).
    """

    __slots__ = ("responses", "state")

    def __init__(self, responses: Any = None, state: str | None = None) -> None:
        self.responses = responses
        self.state = state


class Front(Protocol):
    """Who a call is made for. Every method must end by the call's deadline (the caller's
    cancel scope bounds it) and must not raise for a refusal: it returns ``ErrorData``."""

    #: Set for a front that drives 2026-07-28 input rounds itself: the server's
    #: ``InputRequiredResult`` goes back to it unchanged, with its retry's ``input_round``.
    input_round: InputRound | None

    async def answer(self, server: str, request: mcp_types.InputRequest) -> Any:
        """The answer to a server's question: an ``InputResponse`` or ``ErrorData``."""
        ...

    async def log(self, server: str, params: mcp_types.LoggingMessageNotificationParams) -> None:
        """A log line the server sent while serving this front's call."""
        ...

    # Optional: ``client``, the identity of the client the front calls for (fronts of one
    # client share it; default: the front itself), and ``wants_log(level) -> bool`` (default:
    # every level). A server's log line is relayed only when the fronts with calls in flight
    # that want it are all one client's (see ``_Connection.on_log``).


def describe_request(request: mcp_types.InputRequest) -> str:
    """One line saying what a server asked, for refusals and logs."""
    params = request.params
    if isinstance(request, mcp_types.ElicitRequest):
        return f"elicitation ({getattr(params, 'message', '')!r})"
    if isinstance(request, mcp_types.CreateMessageRequest):
        return f"sampling ({len(getattr(params, 'messages', []) or [])} message(s), max_tokens {getattr(params, 'max_tokens', None)})"
    return "the client's roots (roots/list)"


class _Decline:
    """The front of a call nobody can answer for: every question gets a clear refusal."""

    input_round = None

    async def answer(self, server: str, request: mcp_types.InputRequest) -> Any:
        return mcp_types.ErrorData(
            code=mcp_types.INVALID_REQUEST,
            message=(
                f"server {server!r} asked for {describe_request(request)}, but this call has no client "
                "that can answer it (pass on_input_request= to the Supervisor to answer such requests)"
            ),
        )

    async def log(self, server: str, params: mcp_types.LoggingMessageNotificationParams) -> None:
        return None


DECLINE: Front = _Decline()

current_front: contextvars.ContextVar[Front | None] = contextvars.ContextVar("mcp_supervisor_front", default=None)

#: The front of calls that have none of their own: set by the ``Supervisor`` for its whole
#: tree (every actor inherits it), `DECLINE` unless the host passed ``on_input_request``.
host_front: contextvars.ContextVar[Front] = contextvars.ContextVar("mcp_supervisor_host_front", default=DECLINE)


class HostFront:
    """The embedding host as a front: ``handler(server, request)`` answers every question
    (an ``InputResponse``, or ``ErrorData`` to refuse); log lines go only to the
    ``supervisor.upstream`` logger. A handler that raises is answered for with an error
    naming the question and the exception (the server gets an answer either way)."""

    input_round = None

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def answer(self, server: str, request: mcp_types.InputRequest) -> Any:
        try:
            answer = await self.handler(server, request)
        except Exception as exc:
            return mcp_types.ErrorData(
                code=mcp_types.INTERNAL_ERROR,
                message=f"the host's on_input_request raised on {describe_request(request)}: {type(exc).__name__}: {exc}",
            )
        return _checked(answer, request)

    async def log(self, server: str, params: mcp_types.LoggingMessageNotificationParams) -> None:
        return None


#: What answers each question (`HostFront`).
_ANSWERS: Final = {
    mcp_types.ElicitRequest: (mcp_types.ElicitResult,),
    mcp_types.CreateMessageRequest: (mcp_types.CreateMessageResult, mcp_types.CreateMessageResultWithTools),
    mcp_types.ListRootsRequest: (mcp_types.ListRootsResult,),
}


def _checked(answer: Any, request: mcp_types.InputRequest) -> Any:
    """The host's ``answer`` to ``request`` if it is one (a dict is read as one), else an
    error naming what it was: the SDK would fail to send it, and blame the server."""
    wanted = _ANSWERS.get(type(request), ())
    if isinstance(answer, (*wanted, mcp_types.ErrorData)):
        return answer
    if isinstance(answer, dict):
        for shape in wanted:
            with contextlib.suppress(pydantic.ValidationError):
                return shape.model_validate(answer)
    names = " or ".join(shape.__name__ for shape in (*wanted, mcp_types.ErrorData))
    return mcp_types.ErrorData(
        code=mcp_types.INTERNAL_ERROR,
        message=f"the host's on_input_request returned {type(answer).__name__} for {describe_request(request)}, "
        f"not {names}",
    )


@contextlib.contextmanager
def calling_for(front: Front | None) -> Iterator[None]:
    """Make ``front`` the front of every call made inside the block (in this task)."""
    token = current_front.set(front)
    try:
        yield
    finally:
        current_front.reset(token)
