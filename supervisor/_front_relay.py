"""The gateway's front: one front client's request, as the `Front` of the calls it causes.

A `FrontRelay` is made per ``tools/call`` the gateway serves and installed around the
supervised call (``actors.calling_for``), so what an upstream server asks or says while
serving it goes back to *that* client:

- **Questions** (``sampling/createMessage``, ``elicitation/create``, ``roots/list``):
  - a 2026-07-28 front has no back-channel mid-call; it drives input rounds itself. Its
    ``input_round`` (the responses and state it sent) goes upstream, and an upstream
    ``InputRequiredResult`` comes back to it unchanged (the supervised call returns it);
  - a handshake-era front is asked on its own request's stream
    (``related_request_id``), and its answer (or its JSON-RPC error) goes upstream;
  - a front that did not declare the capability, or cannot be asked, gets nothing: the
    upstream gets a refusal that names what was asked and why.
- **Log lines**: sent to the front on its request's stream, the logger name prefixed with
  the server's (``<server>/<logger>``, or just ``<server>``), at the levels it asked for:
  a 2026-07-28 front's ``_meta`` log level (the SDK enforces it), a handshake-era front's
  ``logging/setLevel`` (default: every level, as the spec's handshake era does).

Never raises out of `answer` or `log` for the client's misbehaviour: a refusal is an
``ErrorData``, an undeliverable log line is dropped (it is also in ``supervisor.upstream``).
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from actors._deprecated import call_deprecated
from actors._front import InputRound, describe_request

__all__ = ["LOG_LEVELS", "FrontRelay"]

log = logging.getLogger("supervisor.gateway")

#: RFC 5424 order, lowest first (the MCP logging levels).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

_NEEDS = {
    "sampling/createMessage": (types.ClientCapabilities(sampling=types.SamplingCapability()), "sampling"),
    "elicitation/create": (types.ClientCapabilities(elicitation=types.ElicitationCapability()), "elicitation"),
    "roots/list": (types.ClientCapabilities(roots=types.RootsCapability()), "roots"),
}


def _result_type(request: types.InputRequest) -> Any:
    if isinstance(request, types.ElicitRequest):
        return types.ElicitResult
    if isinstance(request, types.ListRootsRequest):
        return types.ListRootsResult
    if getattr(request.params, "tools", None):
        return types.CreateMessageResultWithTools
    return types.CreateMessageResult


def _client_of(session: Any) -> Any:
    """What identifies the client a request came from: its connection, or at 2026-07-28,
    where the SDK makes a connection per request, the pipe those connections share (the
    ``--stdio`` front: one client). A 2026-07-28 request over HTTP has no pipe: the wire is
    stateless and carries nothing that tells two clients apart, so each such request stays
    a client of its own."""
    connection = getattr(session, "_connection", None)
    if connection is None:
        return session
    if connection.protocol_version in MODERN_PROTOCOL_VERSIONS and connection.has_standalone_channel:
        return connection.outbound
    return connection


def _rank(level: str) -> int:
    return LOG_LEVELS.index(level) if level in LOG_LEVELS else 0


class FrontRelay:
    """The `Front` of one gateway ``tools/call`` (see the module docstring)."""

    def __init__(self, ctx: Any, params: types.CallToolRequestParams, *, min_log_level: str | None) -> None:
        self.session = ctx.session
        self.request_id = ctx.request_id
        self.modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        self.input_round = InputRound(params.input_responses, params.request_state) if self.modern else None
        #: Handshake-era only: the lowest level this client asked for (None: every level).
        self.min_log_level = min_log_level
        #: Who the call is for (`_client_of`).
        self.client = _client_of(ctx.session)
        #: A 2026-07-28 call's log opt-in (its ``_meta`` level; None: no log lines wanted).
        self.log_level = dict(ctx.meta or {}).get(types.LOG_LEVEL_META_KEY) if self.modern else None

    def wants_log(self, level: str) -> bool:
        """Whether this call's client wants a server log line at ``level``."""
        floor = self.log_level if self.modern else self.min_log_level
        if self.modern and floor is None:
            return False
        return floor is None or _rank(level) >= _rank(floor)

    def _lacks(self, request: types.InputRequest) -> str | None:
        capability, feature = _NEEDS[request.method]
        if self.session.check_client_capability(capability):
            return None
        return f"the calling client did not declare the {feature} capability"

    def refuse_input_required(self, server: str, result: types.InputRequiredResult) -> types.ErrorData | None:
        """A refusal when a 2026-07-28 front is handed questions it declared it cannot answer
        (its own SDK would refuse them without saying what was asked), else None."""
        for request in (result.input_requests or {}).values():
            why = self._lacks(request)
            if why is not None:
                return self._refusal(server, request, why)
        return None

    async def answer(self, server: str, request: types.InputRequest) -> Any:
        why = self._lacks(request)
        if why is not None:
            return self._refusal(server, request, why)
        if self.modern or not self.session.can_send_request:
            # A 2026-07-28 front is asked through InputRequiredResult, which only a server of
            # the same era sends: a handshake-era server's mid-call request cannot reach it.
            return self._refusal(server, request, "the calling client cannot be asked mid-call on its protocol version")
        try:
            return await self.session.send_request(
                request, _result_type(request), metadata=ServerMessageMetadata(related_request_id=self.request_id)
            )
        except MCPError as exc:  # the client's own refusal goes upstream unchanged
            return exc.error
        except Exception as exc:  # a malformed answer or a gone client: the server still gets one
            return types.ErrorData(
                code=types.INTERNAL_ERROR,
                message=f"the calling client's answer to {describe_request(request)} failed: {type(exc).__name__}: {exc}",
            )

    async def log(self, server: str, params: types.LoggingMessageNotificationParams) -> None:
        if not self.wants_log(params.level):
            return
        logger = f"{server}/{params.logger}" if params.logger else server
        await call_deprecated(
            self.session.send_log_message, params.level, params.data, logger=logger, related_request_id=self.request_id
        )

    @staticmethod
    def _refusal(server: str, request: types.InputRequest, why: str) -> types.ErrorData:
        return types.ErrorData(
            code=types.INVALID_REQUEST, message=f"server {server!r} asked for {describe_request(request)}, but {why}"
        )
