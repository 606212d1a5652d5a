"""Data only: the supervisor's wire and actor messages as msgspec Structs.

No trio and no I/O live here. ``protocol`` is imported by ``actors`` and ``supervisor``, and
imports nothing from them.

- JSON-RPC 2.0: `Request`, `Notification`, `SuccessResponse`, `ErrorResponse`, `ErrorObject`,
  `decode` (which raises only `ProtocolError`) and `encode`.
- MCP tool payloads: `ToolSpec`, `ToolAnnotations`, `CallParams`, `ToolResult`.
- The typed failure taxonomy: `Failure` and its subclasses, `failure_from_error`.
- The supervision tree's snapshots and events: `ChildStatus`, `Event`.
"""

from ._failures import (
    ActorDown,
    CircuitOpen,
    DeadlineExceeded,
    Failure,
    InvalidArguments,
    InvalidResult,
    Overloaded,
    ServerCrashed,
    ServerUnavailable,
    UnknownTool,
    failure_from_error,
)
from ._jsonrpc import (
    DEFAULT_MAX_SIZE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ErrorObject,
    ErrorResponse,
    Message,
    Notification,
    ProtocolError,
    Request,
    SuccessResponse,
    decode,
    encode,
)
from ._calls import BREAKER_FAILURES, BREAKER_IGNORED, CallOutcome, OutcomeKind
from ._config import BackoffPolicy, BreakerPolicy, IntensityPolicy, RetryPolicy, ServerSpec
from ._metrics import MetricsSnapshot, ServerMetrics, ToolMetrics
from ._status import ChildState, ChildStatus, Event
from ._tools import CallParams, ToolAnnotations, ToolResult, ToolSpec

__all__ = [
    "BREAKER_FAILURES",
    "BREAKER_IGNORED",
    "BackoffPolicy",
    "BreakerPolicy",
    "CallOutcome",
    "IntensityPolicy",
    "MetricsSnapshot",
    "ServerMetrics",
    "ToolMetrics",
    "OutcomeKind",
    "RetryPolicy",
    "ServerSpec",
    "DEFAULT_MAX_SIZE",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "ActorDown",
    "CallParams",
    "ChildState",
    "ChildStatus",
    "Event",
    "CircuitOpen",
    "DeadlineExceeded",
    "ErrorObject",
    "ErrorResponse",
    "Failure",
    "InvalidArguments",
    "InvalidResult",
    "Message",
    "Notification",
    "Overloaded",
    "ProtocolError",
    "Request",
    "ServerCrashed",
    "ServerUnavailable",
    "SuccessResponse",
    "ToolAnnotations",
    "ToolResult",
    "ToolSpec",
    "UnknownTool",
    "decode",
    "encode",
    "failure_from_error",
]
