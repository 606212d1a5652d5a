"""What the call path reports: one ``CallOutcome`` per finished attempt, sent with ``tell``."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["BREAKER_FAILURES", "BREAKER_IGNORED", "CallOutcome", "OutcomeKind"]

OutcomeKind = Literal[
    "success",  # the tool answered
    "tool_error",  # the tool answered with isError: the caller's problem, not the server's health
    "UnknownTool",
    "InvalidArguments",
    "CircuitOpen",
    "ServerUnavailable",
    "Overloaded",
    "DeadlineExceeded",
    "ServerCrashed",
    "InvalidResult",  # the server answered, but with no valid result: a bug of the tool, not ill health
    "cancelled",  # the caller gave up: neither a failure nor a success
]

#: Outcomes the breaker counts as failures of the server.
BREAKER_FAILURES = frozenset({"ServerCrashed", "DeadlineExceeded", "ServerUnavailable"})
#: Outcomes the breaker ignores entirely: they say nothing about the server's health.
#: ``Overloaded`` is the supervisor's own queue turning a call away unsent: load, not ill
#: health (a slow server shows in its calls' timeouts and slow-call rate); counted, it
#: made a burst on a healthy server open the breaker and fail every caller for minutes.
BREAKER_IGNORED = frozenset({"UnknownTool", "InvalidArguments", "CircuitOpen", "Overloaded", "cancelled"})


class CallOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One finished attempt of one tool call. ``at`` and ``duration`` are trio-clock seconds."""

    server: str
    tool: str
    outcome: OutcomeKind
    duration: float
    at: float
    error: str | None = None
    attempt: int = 1
    slow: bool = False
    #: The attempt held a half-open trial permit: its outcome decides the trial (or, ignored,
    #: hands the permit back). Only such an outcome may: a refused call held none.
    trial: bool = False
    #: False: the attempt never reached the server (its deadline passed before it could be
    #: sent: a timeout of 0, a wait for a free slot), or reached it too late to say anything
    #: of it (it waited most of its time for a slot while the server answered others):
    #: counted under its kind, as the caller saw it, but no verdict on the server, so the
    #: breaker ignores it.
    sent: bool = True
