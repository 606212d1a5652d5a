"""The connection actor: one MCP server, spoken to through the mcp SDK's ``Client``.

One incarnation is one connection. ``run_connection`` connects and initializes within
``connect_timeout``, learns the server's tools (and prompts and resources when advertised),
reports ready, then serves calls until the connection dies or it is asked to stop. Its
supervisor restarts it; the ``ServerLink`` it publishes into outlives every incarnation.

Guarantees:

- Calls run concurrently up to ``max_concurrency``; up to ``max_queue`` more wait, and are
  sent in the order they came (a call never takes the slot freed for one already waiting);
  beyond that a call fails at once with ``Overloaded``.
- Every call ends by its deadline: the caller's cancel scope carries it into the SDK call,
  and the SDK then sends ``notifications/cancelled`` to the server. A timed-out call gets
  ``DeadlineExceeded``; a caller that gave up is simply no longer answered.
- The actor dies (and so is restarted) when the process exits, the transport closes or
  errors, a streamable-HTTP server says it no longer knows our session (HTTP 404, see
  ``_http_answers``), an SSE server answers a message with an HTTP error status or its
  POST fails with no answer at all (refused, reset), the
  server writes more than ``garbage_threshold`` lines in a row that are not JSON-RPC (a
  JSON-RPC message in between starts the count again: a server that now and then logs a
  stray line to stdout keeps serving, one whose wire is garbled does not),
  ``hang_threshold`` consecutive calls time out (a call that timed out while the server's
  question to the client awaited its answer, or that spent most of its time so, is not
  counted: the client was slow, not the server; nor is one that spent most of its time
  waiting for a free slot while the server answered others: it was busy, not hung), or, with
  no call in flight, the server
  leaves a health check unanswered (see `_Connection.check_health`): a server that hangs
  while idle is restarted before a caller finds out.
- A remote call answered with an HTTP error status and no JSON-RPC answer (a gateway's 502,
  503 or 429) raises a typed failure naming the status: ``ServerCrashed`` for a 5xx (it may
  have run), ``ServerUnavailable`` for 408/429 (turned away unread), and for another 4xx the
  SDK's ``MCPError`` in our words (it is the answer to that request). An SSE call whose
  POST got no answer fails at once: ``ActorDown`` when no connection was made (not sent),
  else ``ServerCrashed`` (it may have run). A streamable-HTTP call answered with no
  JSON-RPC answer at all fails typed too (`_http_stand_in`): ``ServerCrashed`` for a 202
  Accepted, ``InvalidResult`` for a body of another type (a 204's none), and
  ``ServerUnavailable`` for a redirect not followed (those within the endpoint's origin
  that keep the method are followed, `MAX_REDIRECTS` hops at most).
- The SDK's transport failing in a task of its own (its reader, a stream it reopens) is
  a death with cause ``transport``, named by that task's error, for the calls in flight too.
- A server that cannot list its prompts or resources (an error, a list we cannot read)
  still serves its tools: the failure is logged and named in the status (``learn``). One
  that cannot list its tools does not connect, and the reason names ``tools/list``; one
  whose list holds tools that are no valid MCP tools (an ``inputSchema`` of ``{}``, say)
  serves the others, the invalid ones logged and named in the status (`_tools_page`).
- Clients are told when the prompts or resources it shows change (``prompts_changed``,
  ``resources_changed`` events, which the gateway turns into ``list_changed``): on the
  server's own announcement, and when an incarnation's first read differs from what the
  link showed before (the last incarnation's lists, kept while the server was down; none
  for a new server). A read that lists the same again publishes nothing
  (`telling_list_changes`).
- When it dies, every call in flight fails at once with ``ServerCrashed`` (it may or may not
  have run); calls still waiting for a slot fail with ``ActorDown``, which tells the caller
  they never reached the server and may be sent again on the next connection.
- A stdio server's whole process tree (its group, and every process carrying its incarnation id
  in its environment) is gone when the incarnation ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import mcp_types
import msgspec
import pydantic
import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.session import DISCOVER_TIMEOUT_SECONDS, _clamp_inbound_ttl, _later_revision_fields
from mcp.client.stdio import get_default_environment
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY, ResourceUpdated
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from protocol import (
    ActorDown,
    DeadlineExceeded,
    InvalidArguments,
    InvalidResult,
    Overloaded,
    ServerCrashed,
    ServerSpec,
    ServerUnavailable,
    ToolSpec,
)

from ._deprecated import call_deprecated
from ._events import publish
from ._front import DECLINE, Front, current_front, describe_request, host_front
from ._http_answers import (
    NOT_ITS_ANSWER,
    READ_MARGIN,
    ForeignEndpoint,
    HttpAnswerWatch,
    HttpRefusal,
    PostFailed,
    answer_due,
    refusals,
)
from ._wire import unsendable
from ._pipes import PipeReader, unsent_requests
from ._process import ServerProcess, kill_tree, open_stdio
from ._http_bound import PHRASE as OVER_LIMIT
from ._http_bound import bound_answers
from ._stdio import MALFORMED, OVERSIZED
from ._session_header import lift_session_header
from ._runtime import Mailbox

__all__ = ["Call", "ConnectionDied", "ServerLink", "run_connection"]

log = logging.getLogger("supervisor.connection")

CONNECTION_CLOSED = -32000  # the SDK's code for a transport that went away
#: The spec keys of the periodic checks (`_Connection.start_checks`).
_CHECK_KEYS = ("tools_ttl", "health_check_interval", "health_check_timeout")
#: HTTP statuses that say the request was turned away unread: "try again later".
_REFUSED_UNSEEN = frozenset({408, 429})
#: HTTP statuses that refuse us access (our credentials), not the request.
_REFUSED_ACCESS = frozenset({401, 403})
#: Redirects an HTTP request of the transport follows in a row (see `_http_client_factory`):
#: enough for http -> https, then a trailing slash added (two hops), and one more; a server
#: that redirects to itself gets each message sent 4 times at most.
MAX_REDIRECTS = 3
_RELISTEN_MIN = 0.5  # s before reopening a subscriptions/listen stream that ended ...
_RELISTEN_MAX = 30.0  # ... doubling up to this while it keeps ending

upstream_log = logging.getLogger("supervisor.upstream")
_LOG_HEAD = 4096  # characters of a server's log line written to our log
_LOG_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING,
    "error": logging.ERROR, "critical": logging.CRITICAL, "alert": logging.CRITICAL, "emergency": logging.CRITICAL,
}


_URL_IN_TEXT = re.compile(r"\bhttps?://[^\s'\"<>]+", re.I)


def _url_shown(match: re.Match[str]) -> str:
    """A URL as a message may show it: no userinfo, query values or fragment."""
    try:
        parts = urlsplit(match.group())
    except ValueError:
        return "***"
    netloc = parts.netloc if "@" not in parts.netloc else "***@" + parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=***" if sep else "***" for name, sep, _ in (p.partition("=") for p in parts.query.split("&"))
    ) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, "***" if parts.fragment else ""))


class ConnectionDied(Exception):
    """Why an incarnation ended: the message names it, every URL in it without userinfo,
    query values or fragment (httpx's errors quote the server's whole URL, credentials
    included); ``cause`` is one of ``protocol.DEATH_CAUSES`` (what metrics count deaths by)."""

    def __init__(self, reason: str, cause: str = "other", *, normal: bool = False) -> None:
        super().__init__(_URL_IN_TEXT.sub(_url_shown, reason))
        self.cause = cause
        #: The server process exited by itself with code 0: a normal exit (OTP's
        #: ``normal``), after which a ``transient`` server is not restarted.
        self.normal = normal



class Call(msgspec.Struct):
    """One tool call. ``deadline`` is trio time.

    Lives in ``actors`` rather than ``protocol`` because it carries a live callback.
    """

    tool: str
    arguments: dict[str, Any]
    deadline: float
    progress: Callable[[float, float | None, str | None], Awaitable[None]] | None = None
    meta: dict[str, Any] | None = None
    #: When it was sent (trio time), once it has a slot; None before: the server's latency
    #: is timed from here, not from the wait for a free slot.
    sent_at: float | None = None


class ServerLink:
    """The stable face of one server across incarnations.

    The connection actor writes it; callers read it without an actor hop. ``connected`` is
    set while an incarnation is ready; ``conn`` is that incarnation (calls run on it).
    """

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.conn: _Connection | None = None
        self.connected = trio.Event()
        self.tools: list[ToolSpec] = []
        self.tools_version = 0
        self.prompts: list[Any] = []
        self.resources: list[Any] = []
        self.resource_templates: list[Any] = []
        self.capabilities: Any = None
        self.protocol_version: str | None = None
        self.process: ServerProcess | None = None
        self.inflight = 0
        self.queued = 0
        #: What the server wrote that was dropped, over every incarnation (metrics): lines
        #: that were not JSON-RPC, and messages over ``max_message_bytes``.
        self.garbage_lines = 0
        self.oversized = 0
        self.last_error: str | None = None  # the last failure (connect, crash, hang)
        self.down_reason: str | None = None  # why the last incarnation went (a failure or a stop)
        self.removed: str | None = None  # why it is no longer supervised (`retire`)
        self._went_down = trio.Event()
        #: Incarnations that ended in failure (a crash, a failed connect, a hang), counted
        #: so a wait for the next one can tell when that one failed too (`wait_connected`).
        self.failures = 0
        self._failure_counted = False  # this incarnation's (its end is told up to 3 times)
        #: Why no incarnation is coming (the supervisor gave up restarting it), or None.
        self.no_restart: str | None = None
        self._changed = trio.lowlevel.ParkingLot()  # unparked when one comes up or goes
        #: The optional lists (prompts, resources) the server failed to give at the last
        #: read: method -> why. See `learn`.
        self.unread_lists: dict[str, str] = {}
        #: Resource URIs subscribed to through this server; kept across restarts (each new
        #: incarnation subscribes to them again). Updates are published as
        #: ``resource_updated`` events with ``data={"uri": ...}``.
        self.subscriptions: set[str] = set()
        #: The ``logging/setLevel`` level handshake-era incarnations are told at connect
        #: (`set_log_level`); None: never told, the server's own default holds.
        self.log_level: str | None = None
        #: Called as ``listener(kind, link)`` with kind "up", "down" or "tools"; synchronous,
        #: so they must not block (the server subtree tells its breaker and the registry).
        self.listeners: list[Callable[[str, ServerLink], None]] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def count_oversized(self) -> None:
        self.oversized += 1

    async def subscribe(self, uri: str) -> None:
        """Subscribe to ``uri``'s updates. While the server is down the subscription is
        kept and made when it is back. Raises the server's own ``MCPError`` if it refuses
        (the subscription is then dropped), and ``MCPError`` (invalid params) for a URI that
        cannot be sent (`unsendable`): kept, it would end every incarnation that sent it."""
        why = unsendable(uri)
        if why is not None:
            raise MCPError(code=mcp_types.INVALID_PARAMS, message=f"resource URI cannot be sent as JSON: {why}")
        self.subscriptions.add(uri)
        try:
            if self.conn is not None:
                await self.conn.sync_subscriptions()
        except BaseException:
            self.subscriptions.discard(uri)
            raise

    async def unsubscribe(self, *uris: str) -> None:
        """Stop ``uris``' updates (a no-op for a URI not subscribed to). They are dropped
        from `subscriptions` at once, before any wait: a later incarnation never makes
        them again, whether or not the server answers this one in time."""
        self.subscriptions.difference_update(uris)
        if self.conn is not None:
            await self.conn.sync_subscriptions()

    async def set_log_level(self, level: str) -> None:
        """Have the server send log lines at ``level`` and above: a handshake-era
        incarnation is told now (``logging/setLevel`` within the call ``timeout``: raises as
        `request`) and every later one at connect. A 2026-07-28 server has no such
        method: each call carries its level in ``_meta`` instead, so it is not told."""
        self.log_level = level
        conn = self.conn
        if conn is not None and not conn.modern:
            await self.request(lambda client: _tell_log_level(client, level))

    async def request(self, ask: Callable[[Client], Awaitable[Any]]) -> Any:
        """``ask(client)`` on the connected incarnation's MCP client (a ``prompts/get``, a
        ``resources/read``: any request but a tool call) within the server's call
        ``timeout``. Raises ``ServerUnavailable`` when no incarnation is connected,
        ``DeadlineExceeded`` at the deadline (the request is cancelled, and the SDK tells
        the server so) and ``ServerCrashed`` when the connection is lost under it (the
        incarnation dies); the server's own ``MCPError`` passes through. A draining
        incarnation finishes the requests in flight on it; one made while it drains goes
        to the next incarnation, as a call does."""
        conn = self.conn
        if conn is None:
            raise self._not_connected()
        deadline = trio.current_time() + self.spec.timeout
        with trio.move_on_at(deadline):
            while True:
                try:
                    return await conn.request(ask)
                except ActorDown:
                    if self.conn is conn:  # draining, still published
                        await self._went_down.wait()
                    conn = await self.wait_connected(deadline)
                except (MCPError, *_TRANSPORT_ERRORS) as exc:
                    lost = _transport_lost(exc)
                    if lost is None:
                        raise
                    conn.die(lost, "transport")
                    raise conn._crash_failure() from None
        raise DeadlineExceeded(f"server {self.spec.name!r} did not answer within {self.spec.timeout:g} s", server=self.spec.name)

    def _notify(self, kind: str) -> None:
        for listener in list(self.listeners):
            listener(kind, self)

    def _up(self, conn: _Connection) -> None:
        self.conn = conn
        self.no_restart = None
        self.connected.set()
        self._changed.unpark_all()
        self._notify("up")

    def _down(self, reason: str, *, failed: bool = True) -> None:
        """The incarnation is gone, for ``reason``; ``failed`` unless the supervisor stopped it
        (only a failure becomes ``last_error``: a restart is not one)."""
        was_up = self.conn is not None
        self.conn = None
        self.down_reason = reason
        if failed:
            self.last_error = reason
            if not self._failure_counted:
                self.failures += 1
                self._failure_counted = True
        if self.connected.is_set():
            self.connected = trio.Event()
        self.inflight = self.queued = 0
        self._went_down.set()
        self._went_down = trio.Event()
        self._changed.unpark_all()
        if was_up:
            self._notify("down")

    def restart_abandoned(self, why: str | None) -> None:
        """Say no incarnation is coming (``why``), or None: one may again. Waits given
        ``until_failures`` end at once (`wait_connected`)."""
        self.no_restart = why
        self._changed.unpark_all()

    def retire(self, why: str = "was removed") -> None:
        """The server is no longer supervised (``why``, said after its name): calls waiting
        for an incarnation fail now (``ServerUnavailable``) instead of at their deadline."""
        self.removed = why
        self.connected.set()
        self._changed.unpark_all()

    def _publish_tools(self, tools: list[ToolSpec]) -> None:
        self.tools = tools
        self.tools_version += 1
        self._notify("tools")

    async def wait_connected(self, deadline: float, *, until_failures: int | None = None) -> _Connection:
        """The ready incarnation, waiting up to ``deadline`` (trio time) for one. Raises
        ``ServerUnavailable`` at the deadline, when the server is removed, and, given
        ``until_failures``, once more incarnations than that have failed (`failures`) or
        none is coming (`restart_abandoned`): the wait would otherwise last through every
        restart's backoff, or to the deadline for a server the supervisor gave up on."""
        while self.conn is None:
            if self.removed:
                raise ServerUnavailable(f"server {self.name!r} {self.removed}; the call was not sent", server=self.name)
            if until_failures is not None and (self.failures > until_failures or self.no_restart is not None):
                why = self.no_restart or (
                    f"its next incarnation failed too: {self.down_reason}" if self.down_reason
                    else "its next incarnation failed too"
                )
                raise ServerUnavailable(f"server {self.name!r} did not come back ({why})", server=self.name)
            with trio.move_on_at(deadline):
                await self._changed.park()
                continue
            raise self._not_connected()
        return self.conn

    def _not_connected(self) -> ServerUnavailable:
        why = f" ({self.down_reason})" if self.down_reason else ""
        return ServerUnavailable(f"server {self.name!r} is not connected{why}", server=self.name)

    async def call(self, call: Call) -> Any:
        """Send ``call`` on the current incarnation; one that never went out waits for the next.

        Raises ``ServerUnavailable`` when no incarnation took it by its deadline, or when the
        next one failed too or none is coming (the call was not sent either way).
        """
        while True:
            conn = self.conn
            if conn is None:
                conn = await self.wait_connected(call.deadline, until_failures=self.failures)
            try:
                return await conn.call(call)
            except ActorDown:
                if self.conn is conn:  # going away (draining its calls), still published
                    with trio.move_on_at(call.deadline):
                        await self._went_down.wait()
                if trio.current_time() >= call.deadline:
                    raise ServerUnavailable(
                        f"server {self.name!r} did not get back in time to take the call", server=self.name
                    ) from None
                await trio.lowlevel.checkpoint()

    def detail(self) -> dict[str, Any]:
        proc = self.process
        return {
            "transport": self.spec.kind,
            "protocol_version": self.protocol_version,
            "tools": len(self.tools),
            "inflight": self.inflight,
            "queued": self.queued,
            # None once it exited: a pid that is gone may already name another process
            "pid": proc.pid if proc and not proc.exited.is_set() else None,
            # MCP_SUPERVISOR_INCARNATION in the environment of each of its processes
            "incarnation": proc.incarnation if proc else None,
            "last_error": self.last_error,
            "unread_lists": dict(self.unread_lists),
            # this incarnation's (a remote server's are counted as its calls fail)
            "oversized_dropped": proc.oversized if proc else self.conn.oversized if self.conn is not None else 0,
            "stderr_tail": proc.stderr_tail(20) if proc else [],
        }


async def _tell_log_level(client: Client, level: str) -> None:
    await call_deprecated(client.session.set_logging_level, level)  # type: ignore[arg-type]


def _log_upstream(server: str, params: mcp_types.LoggingMessageNotificationParams) -> None:
    """A server's log line into the ``supervisor.upstream`` log, at its level, its first
    `_LOG_HEAD` characters (the calling client gets all of it): one line may be up to
    ``max_message_bytes`` (an image a server logs as base64), and the daemon's log, which
    every server shares, took it whole."""
    level = _LOG_LEVELS.get(params.level, logging.INFO)
    if not upstream_log.isEnabledFor(level):
        return
    text = str(params.data)
    if len(text) > _LOG_HEAD:
        text = f"{text[:_LOG_HEAD]} … ({len(text)} characters)"
    upstream_log.log(level, "[%s] %s%s", server, f"{params.logger}: " if params.logger else "", text)


def _always(level: str) -> bool:
    return True


def _is_cancel(exc: BaseException) -> bool:
    """A cancellation, or a group holding nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _unwrap(exc: BaseException) -> BaseException:
    """The one cause inside the SDK's task-group wrapping: the first `ConnectionDied` leaf
    (a death we declared; the other leaves are its symptoms), else the first leaf that is
    not a cancellation (a group of only cancellations stays as it is)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    _, rest = exc.split(trio.Cancelled)
    leaves = []
    stack = [rest] if rest is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, BaseExceptionGroup):
            stack.extend(reversed(node.exceptions))
        else:
            leaves.append(node)
    declared = [leaf for leaf in leaves if isinstance(leaf, ConnectionDied)]
    return (declared or leaves or [exc])[0]


_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)

#: How the SDK's streamable HTTP transport resolves a request whose SSE answer outgrew
#: ``max_sse_event_size`` (CONNECTION_CLOSED, though only that request is given up).
_SSE_TOO_LARGE = "SSE stream failed: Server-sent event exceeded the"
#: How it resolves a request whose answer stream failed as it was read (an ``SSEError``).
_SSE_FAILED = "SSE stream failed: "
#: How it resolves a request whose plain JSON answer it could not read (ours: `AnswerTooLarge`).
_JSON_UNREAD = "Failed to parse JSON response: "
#: ... and one whose answer came as an SSE event it could not read.
_SSE_UNREAD = "Failed to parse SSE message: "


def _unread_answer(exc: BaseException, limit: int) -> str | None:
    """Why ``exc`` stands for an answer that came but could not be read, else None (the
    server's own error, a lost connection). Either it was over ``max_message_bytes`` and
    dropped (our stdio wire's error, the SDK's for an SSE event, or a JSON body
    `bound_answers` cut short), or it was no JSON-RPC (our stdio wire's error for an
    answer that names its request, `MALFORMED`, or the SDK's parse error for that
    request: not the server's own error), or it was a JSON-RPC message for another
    request (`NOT_ITS_ANSWER`). The connection is fine either way."""
    if not isinstance(exc, MCPError):
        return None
    code, message = exc.error.code, exc.error.message
    if isinstance(exc.error.data, dict) and (OVERSIZED in exc.error.data or MALFORMED in exc.error.data):
        return message
    if code == CONNECTION_CLOSED and message.startswith(_SSE_TOO_LARGE):
        return f"the server's answer was over max_message_bytes ({limit}); it was dropped ({message})"
    if code == mcp_types.PARSE_ERROR and OVER_LIMIT in message:  # see _http_bound
        return message.removeprefix(_JSON_UNREAD)
    if code == mcp_types.PARSE_ERROR and NOT_ITS_ANSWER in message:  # see _http_answers
        return message.removeprefix(_JSON_UNREAD)
    if code == CONNECTION_CLOSED and message.startswith(_SSE_FAILED) and NOT_ITS_ANSWER in message:
        return message.removeprefix(_SSE_FAILED)  # an answer event for another id (`NotItsEvent`)
    if code == mcp_types.PARSE_ERROR and message.startswith((_JSON_UNREAD, _SSE_UNREAD)):
        return f"its answer was no JSON-RPC: {message}"
    return None


def _dropped_over_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is an HTTP answer dropped for being over ``max_message_bytes`` (an
    SSE event the SDK refused, a JSON body `bound_answers` cut short)."""
    if not isinstance(exc, MCPError):
        return False
    code, message = exc.error.code, exc.error.message
    return (code == CONNECTION_CLOSED and message.startswith(_SSE_TOO_LARGE)) or (
        code == mcp_types.PARSE_ERROR and OVER_LIMIT in message
    )


#: The messages of the errors the SDK makes up, with the code ``CONNECTION_CLOSED``, for a
#: request whose answer can never come: its transport ended, or (streamable HTTP) the
#: request's own event stream did.
_SDK_CLOSED = "Connection closed"
_SDK_STREAM_LOST = ("SSE stream ",)
#: The SDK's stand-ins (code INVALID_REQUEST) for an HTTP answer to a request's POST that
#: is no JSON-RPC answer: a 202 (none will come), a body of a type it does not read (a 204's
#: none, text/plain), a redirect it did not follow. Not the server's own error (`_http_stand_in`).
_SDK_ACCEPTED = "server answered a request with 202 Accepted"
_SDK_WRONG_TYPE = "Unexpected content type: "
_SDK_REDIRECT = "Redirect to "


def _transport_lost(exc: BaseException) -> str | None:
    """Why ``exc`` means the connection is gone, or None when it is the server's answer
    (its own JSON-RPC error, say). A server's own error may carry ``CONNECTION_CLOSED``'s
    code too: -32000 opens JSON-RPC's range for server errors, and many servers use it
    for any failure. Only the SDK's own words for a lost connection count as one (else such
    an answer restarted a healthy server and counted as its crash)."""
    if isinstance(exc, MCPError):
        message = exc.error.message
        sdk_made = message == _SDK_CLOSED or message.startswith(_SDK_STREAM_LOST)
        return f"connection closed: {message}" if exc.error.code == CONNECTION_CLOSED and sdk_made else None
    if isinstance(exc, _TRANSPORT_ERRORS):
        return f"transport error: {type(exc).__name__}: {exc}"
    return None


def _http_stand_in(exc: BaseException, server: str, tool: str) -> Exception | None:
    """The typed failure for the SDK's stand-in for an HTTP answer to a call's POST that is
    no JSON-RPC answer (see `_SDK_ACCEPTED`); None for anything else. Handed on as it was,
    it passed for the tool's own error: not retried, and a success for the breaker."""
    if not isinstance(exc, MCPError) or exc.error.code != mcp_types.INVALID_REQUEST:
        return None
    message = exc.error.message
    if message == _SDK_ACCEPTED:
        return ServerCrashed(
            f"server {server!r} answered the call's POST with HTTP 202 Accepted, which says no answer "
            "will come; the call may or may not have run",
            server=server,
            tool=tool,
        )
    if message.startswith(_SDK_WRONG_TYPE):
        kind = message.removeprefix(_SDK_WRONG_TYPE).strip() or "none"
        return InvalidResult(
            f"tool {tool!r} on server {server!r}: the server answered the call's POST with no JSON-RPC "
            f"answer (content type: {kind}; an answer comes as application/json or text/event-stream)",
            server=server,
            tool=tool,
        )
    if message.startswith(_SDK_REDIRECT):
        return ServerUnavailable(
            f"server {server!r} answered the call's POST with a redirect, so the call did not run: {message}",
            server=server,
            tool=tool,
        )
    return None


def _stream_of_its_own(exc: BaseException) -> bool:
    """Whether ``exc`` is the SDK's word that one request's own SSE stream ended without
    its answer (not that the transport did)."""
    return isinstance(exc, MCPError) and exc.error.message.startswith(_SDK_STREAM_LOST[0])


def _tool_spec(tool: mcp_types.Tool, server: str) -> ToolSpec:
    """Our view of one tool; a category the server gives in ``_meta.category`` is kept."""
    category = (tool.meta or {}).get("category")
    return ToolSpec.from_dict(
        tool.model_dump(by_alias=True, mode="json", exclude_none=True),
        server=server,
        category=category if isinstance(category, str) else None,
    )


class _NotedRequests:
    """A transport's write stream that notes the method of the last request sent on it
    while ``noting``: what a connect that timed out was waiting for (the handshake and the
    first reads of the lists are one request at a time, so the last one sent is the one
    unanswered)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.noting = True
        self.last: str | None = None

    async def send(self, item: Any) -> None:
        if self.noting:
            message = getattr(item, "message", None)
            if isinstance(message, mcp_types.JSONRPCRequest):
                self.last = message.method
        await self.stream.send(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    async def __aenter__(self) -> _NotedRequests:
        await self.stream.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.stream.__aexit__(*exc)


@contextlib.asynccontextmanager
async def _noting_requests(transport: Any, noted: list[_NotedRequests]) -> Any:
    """``transport`` with its write stream a `_NotedRequests`, put in ``noted``."""
    async with transport as (read_stream, write_stream):
        noted.append(_NotedRequests(write_stream))
        yield read_stream, noted[-1]


@contextlib.asynccontextmanager
async def _exit_watched(transport: Any, proc: ServerProcess, on_exit: Callable[[PipeReader], None]) -> Any:
    """``transport`` (a stdio server's) with a task that calls ``on_exit(read_stream)`` the
    moment the server process exits: while connecting, nothing else waits on the exit (a
    connected incarnation's `_Connection.watch_death` does)."""
    async with transport as (read_stream, write_stream):
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await proc.exited.wait()
                on_exit(read_stream)

            nursery.start_soon(watch)
            try:
                yield read_stream, write_stream
            finally:
                nursery.cancel_scope.cancel()


def _waited_on(noted: list[_NotedRequests], garbled: bool) -> str:
    """What a connect that timed out was waiting for, said after its reason; why a
    ``server/discover`` may go unanswered, unless the wire was ``garbled`` (that says why)."""
    method = noted[0].last if noted else None
    if method is None:
        return ""
    said = f"; it was waiting for the server's answer to {method}"
    if method == "server/discover" and not garbled:
        said += (
            f" (the SDK's probe of the protocol era, which it gives up on after {DISCOVER_TIMEOUT_SECONDS:g} s "
            "and falls back to initialize: a server that ignores requests it does not know never answers it; "
            f"a connect_timeout above {DISCOVER_TIMEOUT_SECONDS:g} s lets it connect)"
        )
    return said


def _transport(spec: ServerSpec, proc: ServerProcess, inproc: Any, watch: HttpAnswerWatch) -> Any:
    if inproc is not None:
        return inproc
    if spec.command is not None:
        params = StdioServerParameters(
            command=spec.command,
            args=list(spec.args),
            env={**get_default_environment(), **spec.env},
            cwd=spec.cwd,
        )
        return open_stdio(
            params, proc, name=spec.name, grace=spec.shutdown_timeout, max_message_bytes=spec.max_message_bytes
        )
    assert spec.url is not None
    http_factory = _http_client_factory(watch, spec.max_message_bytes)
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT

    if spec.transport == "sse":
        from mcp.client.sse import sse_client

        # The event stream carries every answer: its silence may last as long as a call.
        return sse_client(
            spec.url,
            headers=dict(spec.headers) or None,
            timeout=spec.connect_timeout,
            sse_read_timeout=max(MCP_DEFAULT_SSE_READ_TIMEOUT, spec.timeout + READ_MARGIN),
            httpx_client_factory=http_factory,
        )
    from mcp.client.streamable_http import streamable_http_client

    @contextlib.asynccontextmanager
    async def transport() -> Any:
        # connect_timeout bounds what the SDK's default (30 s) did, and so the wait for a
        # notification's acknowledgement (`HttpAnswerWatch.watch_posts`). Read: the SDK's 5
        # minutes of silence, or longer for a server whose calls may take longer (a call's
        # answer may come as one JSON body after all that silence); each call's own deadline
        # bounds it anyway.
        read = max(MCP_DEFAULT_SSE_READ_TIMEOUT, spec.timeout + READ_MARGIN)
        timeout = httpx2.Timeout(spec.connect_timeout, read=read)
        async with http_factory(headers=dict(spec.headers) or None, timeout=timeout) as http:
            async with streamable_http_client(
                spec.url, http_client=http, max_sse_event_size=spec.max_message_bytes
            ) as streams:
                yield streams

    return transport()



def _http_client_factory(watch: HttpAnswerWatch, max_message_bytes: int) -> Any:
    """The SDK's httpx client, with ``X-Session-Id`` lifted into each POST's headers
    (`lift_session_header`), every answer's body held to ``max_message_bytes``
    (`bound_answers`, first: the watch may read the body) and every answer watched
    (`HttpAnswerWatch`), and POSTs that get no answer too (`watch_posts`)."""
    from mcp.shared._httpx_utils import create_mcp_http_client

    def factory(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
        client = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        # The SDK follows a redirect of a POST (307/308 within the endpoint's origin) up to
        # max_redirects times: httpx's 20, so a server that redirected to itself had each
        # message sent 21 times. An endpoint needs two hops at most (http -> https, then a
        # trailing slash added), and `MAX_REDIRECTS` allows one more.
        client.max_redirects = MAX_REDIRECTS
        hooks = client.event_hooks
        hooks["request"] = [*hooks.get("request", []), lift_session_header, watch.on_request]
        hooks["response"] = [bound_answers(max_message_bytes), *hooks.get("response", []), watch]
        client.event_hooks = hooks
        watch.watch_posts(client)
        return client

    return factory


class _Asked:
    """What one call's questions to its client cost (see `_Connection.answer`): how many
    wait for the client's answer now (and since when), the seconds answers took before,
    and the last question asked."""

    __slots__ = ("pending", "since", "waited", "what")

    def __init__(self) -> None:
        self.pending = 0
        self.since = 0.0
        self.waited = 0.0
        self.what: str | None = None

    def waited_by(self, now: float) -> float:
        return self.waited + (now - self.since if self.pending else 0.0)


#: The call whose task this is (`_Connection.call`): a question the SDK asks in the
#: caller's own task (2026-07-28 input rounds) is that call's.
_calling: contextvars.ContextVar[trio.CancelScope | None] = contextvars.ContextVar("mcp_supervisor_call", default=None)


class _Connection:
    """One incarnation: the live client, its calls in flight, the reasons it may die.

    The connection actor owns it. Calls do not travel through the actor's mailbox: the
    caller's own task borrows the live session (``call``), with admission, in-flight
    bookkeeping and death all handled synchronously here. That keeps an actor hop and a
    task spawn off the hot path, and makes the caller's cancellation the SDK call's
    cancellation with nothing in between.
    """

    def __init__(self, spec: ServerSpec, link: ServerLink, client: Client, mailbox: Mailbox[Any]) -> None:
        self.spec = spec
        self.link = link
        self.client = client
        self.mailbox = mailbox
        #: Each call in flight: its cancel scope and the front it is made for.
        self.inflight: dict[trio.CancelScope, Front | None] = {}
        #: Each call in flight that the server asked the client something for (`answer`).
        self.asked: dict[trio.CancelScope, _Asked] = {}
        #: Answers what the server asks when no caller's front can (the tree's host front).
        self.host_front: Front = host_front.get()
        #: Handshake-era servers: the URIs this incarnation has subscribed to.
        self.subscribed: set[str] = set()
        self.subscribing = trio.Lock()
        #: 2026-07-28 servers: set when ``link.subscriptions`` changed (the listen stream is
        #: reopened with the new set).
        self.subscriptions_changed = trio.Event()
        self.listen_generation = 0  # streams opened so far
        self.acked_generation = 0  # the latest one the server acknowledged (or refused)
        self.acked = trio.Event()  # set (and replaced) at each acknowledgement
        self.slots = trio.lowlevel.ParkingLot()
        self.queued = 0  # calls waiting in `slots`
        self.requests = 0  # `request`s in flight (a drain waits for them as for calls)
        self.idle: trio.Event | None = None  # made by whoever waits for the calls to end
        self.stopping = False
        self.consecutive_timeouts = 0
        self.answered_at = trio.current_time()  # the server's last answer (health checks)
        self.over_http = spec.kind in ("sse", "streamable-http")  # see _http_answers
        self.checks: trio.CancelScope | None = None  # the running `start_checks`
        self.death: ConnectionDied | None = None
        self.died = trio.Event()
        #: Remote answers over max_message_bytes dropped (a stdio server's: its process counts).
        self.oversized = 0
        #: The SDK's transport failed in a task of its own, which ended this incarnation (`_live`).
        self.task_failed = False
        #: Lines that were not JSON-RPC since the server's last JSON-RPC message (it dies past
        #: ``garbage_threshold``), and in this incarnation's whole life (for the log).
        self.garbage = 0
        self.garbage_lines = 0
        self.nursery: trio.Nursery | None = None
        #: The lists being re-read -> whether they changed again meanwhile (`_refresh_soon`).
        self.refreshing: dict[str, bool] = {}
        #: Log lines and progress being relayed, per front or per call (see `_settle`).
        self.relaying: dict[object, int] = {}
        self.relayed = trio.Event()

    @contextlib.contextmanager
    def _relaying(self, key: object) -> Iterator[None]:
        self.relaying[key] = self.relaying.get(key, 0) + 1
        try:
            yield
        finally:
            left = self.relaying.pop(key) - 1
            if left:
                self.relaying[key] = left
            self.relayed.set()
            self.relayed = trio.Event()

    async def _settle(self, *keys: object) -> None:
        """Wait until what the server sent before a call's result has reached the caller.

        The SDK runs each notification (log line, progress) in a task of its own, so the
        result can overtake them; a front whose stream closes with the result (streamable
        HTTP) would lose them. One checkpoint lets every notification task that was spawned
        before the result start (each marks itself in ``relaying`` at once); then we wait
        for those to finish (each delivery has its own bound).
        """
        await trio.lowlevel.checkpoint()
        while any(self.relaying.get(key) for key in keys):
            await self.relayed.wait()

    def die(self, reason: str, cause: str = "other", *, failed: bool = True, normal: bool = False) -> None:
        """Declare this incarnation dead: calls in flight are cut off, new ones go elsewhere.
        ``failed``: unless the supervisor stopped it (see ``ServerLink._down``); ``normal``:
        see `ConnectionDied`. The first death declared is the one that counts."""
        if self.death is None:
            self.death = ConnectionDied(reason, cause, normal=normal)
            self.link._down(reason, failed=failed)
            for scope in self.inflight:
                scope.cancel()
            self.slots.unpark_all()
            self.died.set()

    # -- calls (run in the caller's task) ------------------------------------------------

    def reconfigure(self, spec: ServerSpec) -> None:
        """Go on under ``spec`` (same server; see ``supervisor``'s ``LIVE_KEYS`` for what may
        differ): later calls and lines read it; calls waiting for a slot look again; the
        health check and the tools TTL start over on their new settings if they changed."""
        old, self.spec = self.spec, spec
        self.slots.unpark_all()
        if any(getattr(old, key) != getattr(spec, key) for key in _CHECK_KEYS):
            self.start_checks()

    def start_checks(self) -> None:
        """(Re)start the periodic work ``self.spec`` asks for in the background nursery:
        the health check (`check_health`) and the tools TTL (`expire_tools`)."""
        if self.nursery is None:
            return  # not live yet: `_live` starts them, reading the spec then
        if self.checks is not None:
            self.checks.cancel()
        self.checks = trio.CancelScope()
        self.nursery.start_soon(self._run_checks, self.checks, self.spec)

    async def _run_checks(self, scope: trio.CancelScope, spec: ServerSpec) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                if spec.tools_ttl:
                    nursery.start_soon(self.expire_tools, spec.tools_ttl)
                if spec.health_check_interval:
                    nursery.start_soon(self.check_health, spec.health_check_interval, spec.health_check_timeout)

    def _count(self) -> None:
        """Show this incarnation's calls in flight and queued on the link while it is alive;
        a dead one's are 0 there (`ServerLink._down`), however its calls end after."""
        if self.death is None:
            self.link.inflight = len(self.inflight)
            self.link.queued = self.queued

    def _never_sent(self, why: str) -> ActorDown:
        return ActorDown(f"connection to {self.spec.name!r} {why}; the call was not sent", server=self.spec.name)

    async def call(self, call: Call) -> Any:
        """Run one tool call in the caller's task. See the module guarantees."""
        spec = self.spec
        if self.death is not None or self.stopping:
            raise self._never_sent("is going away")
        arrived = trio.current_time()
        if arrived >= call.deadline:
            # Not the server's doing (a timeout of 0, a deadline spent before getting here):
            # sending it would only time out at once and count towards hang_threshold.
            raise DeadlineExceeded(
                f"tool {call.tool!r} on server {spec.name!r}: the call's deadline had passed "
                "before it could be sent; it was not sent",
                server=spec.name,
                tool=call.tool,
                sent=False,
            )
        # Behind the calls already waiting, even with a slot free: it is the slot of the one
        # woken for it, which has not run yet (taking it sent that one to the back).
        behind = self.queued > 0
        if behind or len(self.inflight) >= spec.max_concurrency:
            # Every call in the queue counts, those woken for a slot that have not taken it
            # yet too (counting only those parked let a newcomer in past max_queue then).
            if self.queued >= spec.max_queue:
                raise Overloaded(
                    f"server {spec.name!r} has {len(self.inflight)} calls in flight and "
                    f"{self.queued} waiting (max_concurrency {spec.max_concurrency}, "
                    f"max_queue {spec.max_queue})",
                    server=spec.name,
                )
            self.queued += 1
            self._count()
            try:
                with trio.move_on_at(call.deadline) as waiting:
                    while (behind or len(self.inflight) >= self.spec.max_concurrency) and self.death is None \
                            and not self.stopping:
                        await self.slots.park()
                        behind = False
            finally:
                self.queued -= 1
                self._count()
            # A call woken for its slot may run only after its deadline (the call ahead did
            # a long stretch of work with no checkpoint): it is then not cancelled, just late.
            if waiting.cancelled_caught or trio.current_time() >= call.deadline:
                if len(self.inflight) < self.spec.max_concurrency:
                    self.slots.unpark()  # the slot it was woken for goes to the next in line
                raise DeadlineExceeded(
                    f"tool {call.tool!r} on server {spec.name!r} waited for a free slot past its deadline "
                    f"(max_concurrency {spec.max_concurrency}); it was never sent",
                    server=spec.name,
                    tool=call.tool,
                    sent=False,
                )
            if self.death is not None or self.stopping:
                raise self._never_sent("ended while the call waited for a slot")
            if len(self.inflight) + 1 < self.spec.max_concurrency and self.slots:
                self.slots.unpark()  # a slot more is free: the next in line need not wait for a call to end
        scope = trio.CancelScope(deadline=call.deadline)
        front = current_front.get()
        self.inflight[scope] = front
        sent_at = call.sent_at = trio.current_time()
        self._count()
        progress = call.progress
        if progress is not None:
            relay_progress = progress

            async def progress(value: float, total: float | None, message: str | None) -> None:
                # Bounded as a log line is: a caller that stops taking progress must not hold
                # back the answer (`_settle`, or an in-process server's report) nor pile up tasks.
                with self._relaying(scope), trio.move_on_after(1.0):
                    await relay_progress(value, total, message)

        refused = None
        if self.over_http:
            refused = []
            listening = refusals.set(refused)
            due = answer_due.set(call.deadline)
        calling = _calling.set(scope)
        unsent: set[Any] = set()  # this call's request, if stdin broke before a byte of it went out
        noting = unsent_requests.set(unsent)
        try:
            result = None
            with scope:
                if front is not None and front.input_round is not None:
                    # The front drives 2026-07-28 input rounds itself: hand it the server's
                    # InputRequiredResult unchanged, and its answers to the server.
                    why = unsendable(front.input_round.responses)
                    if why is not None:
                        raise InvalidArguments(
                            f"the input responses for tool {call.tool!r} cannot be sent as JSON: {why}",
                            server=spec.name,
                            tool=call.tool,
                        )
                    responses, state = front.input_round.responses, front.input_round.state
                    result = await self._request(
                        lambda: self.client.session.call_tool(
                            call.tool,
                            call.arguments,
                            progress_callback=progress,
                            input_responses=responses,
                            request_state=state,
                            meta=call.meta,
                            allow_input_required=True,
                        )
                    )
                else:
                    result = await self._request(
                        lambda: self.client.call_tool(call.tool, call.arguments, progress_callback=progress, meta=call.meta)
                    )
                if front is not None or progress is not None:  # else nothing is relayed to this call
                    await self._settle(scope, front)
        except (MCPError, *_TRANSPORT_ERRORS) as exc:
            if refused:
                code = exc.error.code if isinstance(exc, MCPError) else mcp_types.INTERNAL_ERROR
                raise self._refused(call, refused[-1], code) from None
            unread = _unread_answer(exc, spec.max_message_bytes)
            if unread is not None:
                if self.over_http and _dropped_over_limit(exc):
                    self.oversized += 1  # a stdio server's wire counts its own
                    self.link.count_oversized()
                self.consecutive_timeouts = 0
                self._heard()
                raise InvalidResult(
                    f"tool {call.tool!r} on server {spec.name!r}: {unread}", server=spec.name, tool=call.tool
                ) from None
            stand_in = _http_stand_in(exc, spec.name, call.tool) if self.over_http else None
            if stand_in is not None:
                self.consecutive_timeouts = 0
                self._heard()
                raise stand_in from None
            lost = _transport_lost(exc)
            if lost is not None and spec.kind == "streamable-http" and _stream_of_its_own(exc):
                # This request's own event stream ended unanswered: its answer is lost, not the
                # connection (each POST is an exchange of its own). A server that is gone
                # is found by the next request, or the health check.
                raise ServerCrashed(
                    f"server {spec.name!r}: the call's answer stream ended without an answer ({lost}); "
                    "the call may or may not have run",
                    server=spec.name,
                    tool=call.tool,
                ) from None
            if lost is not None:
                self.die(lost, "transport", failed=not self.stopping)  # a drain's end is no failure
                if unsent:
                    # Its write failed before a byte went out (the server closed its stdin, or
                    # died): it never reached the server, so it is safe to send again (the link
                    # sends it to the next incarnation). No verdict for the breaker either.
                    why = f"lost the server's stdin ({lost}) before a byte of the request was written"
                    raise self._never_sent(why) from None
                raise self._crash_failure() from None
            self.consecutive_timeouts = 0
            self._heard()
            raise  # the server's own JSON-RPC error, passed through unchanged
        except (RuntimeError, pydantic.ValidationError) as exc:
            # The SDK's verdict on the answer (see `InvalidResult`): every RuntimeError the
            # SDK's call_tool raises once connected is one (UnexpectedClaimedResult,
            # InputRequiredRoundsExceededError and the output-schema check are RuntimeErrors).
            if isinstance(exc, pydantic.ValidationError) and exc.title.endswith(("Request", "RequestParams")):
                # The SDK could not build the request from what it was given: nothing was
                # sent, and nothing is the server's fault.
                raise InvalidArguments(
                    f"the call to tool {call.tool!r} cannot be sent: {exc}", server=spec.name, tool=call.tool
                ) from exc
            self.consecutive_timeouts = 0
            self._heard()
            raise InvalidResult(
                f"tool {call.tool!r} on server {spec.name!r} answered with no valid result: "
                f"{type(exc).__name__}: {exc}".rstrip(),
                server=spec.name,
                tool=call.tool,
            ) from exc
        finally:
            _calling.reset(calling)
            unsent_requests.reset(noting)
            if refused is not None:
                refusals.reset(listening)
                answer_due.reset(due)
            self.inflight.pop(scope, None)
            asked = self.asked.pop(scope, None)
            self._count()
            self._maybe_idle()
            if self.slots:
                self.slots.unpark()
        if result is not None:
            self.consecutive_timeouts = 0
            self._heard()
            return result
        if self.death is not None:
            raise self._refused(call, refused[-1]) if refused else self._crash_failure()
        # Our deadline: a caller's own cancellation never reaches this line (it propagates).
        now = trio.current_time()
        if asked is not None and (asked.pending or 2 * asked.waited_by(now) >= now - sent_at):
            # The time went on the client's answer, not the server: no sign of a hang.
            took = (
                "when the deadline came" if asked.pending
                else f"for {asked.waited:.1f} s of the call's {now - sent_at:.1f} s"
            )
            raise DeadlineExceeded(
                f"tool {call.tool!r} on server {spec.name!r} did not answer in time: it was waiting on the "
                f"client's answer to the server's question ({asked.what}) {took}, so it does not count "
                "towards hang_threshold; the request was abandoned, and a cancellation sent to the server "
                "where its wire took one; it may or may not have run",
                server=spec.name,
                tool=call.tool,
            )
        if 2 * (now - sent_at) < now - arrived and self.answered_at > arrived:
            # Most of its time went waiting for a free slot while the server answered the calls
            # ahead of it: busy, not hung (a hung one answers nothing, and its timeouts count
            # however long they queued). No verdict on the server, for the breaker either.
            raise DeadlineExceeded(
                f"tool {call.tool!r} on server {spec.name!r} did not answer in time: it waited "
                f"{sent_at - arrived:.1f} s for a free slot (max_concurrency {spec.max_concurrency}) and had "
                f"{now - sent_at:.1f} s on the wire, so it does not count towards hang_threshold; the request "
                "was abandoned, and a cancellation sent to the server where its wire took one; it may or may "
                "not have run",
                server=spec.name,
                tool=call.tool,
                no_verdict=True,
            )
        self.consecutive_timeouts += 1
        if self.consecutive_timeouts >= spec.hang_threshold:
            self.die(f"{self.consecutive_timeouts} consecutive calls timed out (hang_threshold)", "hang")
        raise DeadlineExceeded(
            f"tool {call.tool!r} on server {spec.name!r} did not answer in time; "
            "the request was abandoned, and a cancellation sent to the server where its wire took one; "
            "it may or may not have run",
            server=spec.name,
            tool=call.tool,
        )

    async def check_health(self, interval: float, timeout: float) -> None:
        """Make sure an idle server still answers; return only by dying.

        After ``interval`` s with no answer from the server and no call in flight, ask it for
        its tool list: the one request every server here serves, and cheap (the 2026-07-28
        revision has no ``ping``). Any answer, an error included, proves it alive; none
        within ``timeout`` s means it hangs, and this incarnation dies so it is restarted
        before a caller meets it. An HTTP 5xx with no JSON-RPC answer (a gateway's 502/503:
        the server behind it did not answer) counts as none, so the status does not say
        "running" of a server nobody can reach; a 429 is an answer (someone is there). A
        list that differs from the cached one (a change the server did not announce, or one
        we missed) is read in full and published. While calls (or requests: `request`) are
        in flight no check is sent: a server busy with a long call may be slow to answer
        anything else, and the calls' own deadlines (``hang_threshold``) judge it then.
        """
        refused: list[HttpRefusal | PostFailed] = []
        if self.over_http:
            refusals.set(refused)  # this task's own context: what the gateway said to the check
        while True:
            await trio.sleep_until(self.answered_at + interval)
            if self.inflight or self.requests:
                await trio.sleep(interval)  # busy: look again later
                continue
            if trio.current_time() < self.answered_at + interval:
                continue  # answered meanwhile
            refused.clear()
            with trio.move_on_after(timeout):
                try:
                    page = await self._request(lambda: _tools_page(self.client, None, {}))
                except Exception as exc:
                    lost = _transport_lost(exc)
                    if lost is not None:
                        self.die(lost, "transport")
                        return
                    if refused and (
                        isinstance(refused[-1], PostFailed)
                        or refused[-1].status >= 500
                        or refused[-1].status in _REFUSED_ACCESS  # our credentials: every call would fail
                    ):
                        why = f"the health check (tools/list) got {refused[-1]} instead of an answer"
                        self.die(why, "unresponsive")
                        return
                    # an answer all the same (an error, a list we cannot read, a rate limit)
                    log.debug("server %r: health check answered with %s", self.spec.name, _unwrap(exc))
                else:
                    if self._differs_from_cache(page):
                        self._refresh_soon("tools")  # a change nobody announced (or we missed)
                self._heard()
                continue
            self.die(f"no answer to a health check (tools/list) within {timeout:g} s while idle", "unresponsive")
            return

    def _differs_from_cache(self, page: mcp_types.ListToolsResult) -> bool:
        """Whether a one-page tool list is not the cached one (a list we cannot read counts
        as different: the full read logs why)."""
        if page.next_cursor is not None:
            return False  # paginated: one page cannot say
        try:
            return [_tool_spec(tool, self.spec.name) for tool in page.tools] != self.link.tools
        except Exception:
            return True

    def _refused(
        self, call: Call, refusal: HttpRefusal | PostFailed, code: int = mcp_types.INTERNAL_ERROR
    ) -> Exception:
        """What a call raises whose POST got an HTTP error status, not a JSON-RPC answer,
        or no answer at all (see `_http_answers`): typed when it says something about the
        server, so it is retried as such and counts for the breaker."""
        name = self.spec.name
        if isinstance(refusal, PostFailed):
            if not refusal.sent:
                return self._never_sent(f"failed: the call's POST could not connect ({refusal.error})")
            return ServerCrashed(
                f"server {name!r}: the call's POST got {refusal}; the call may or may not have run",
                server=name,
                tool=call.tool,
            )
        said = f"server {name!r} answered the call with {refusal} instead of a JSON-RPC answer"
        data: dict[str, Any] = {"server": name, "tool": call.tool, "http_status": refusal.status}
        asks = ""
        if refusal.retry_after is not None:
            data["retry_after"] = refusal.retry_after
            asks = f"; it asks to wait {refusal.retry_after:g} s before trying again"
        if refusal.status in _REFUSED_UNSEEN:
            return ServerUnavailable(f"{said}: it turned the call away unread, so the call did not run{asks}", **data)
        if refusal.status in _REFUSED_ACCESS:
            # Not this request's fault but ours (a token expired, revoked): every call will
            # meet it, so the breaker must count it, as the tool's own error it did not.
            return ServerUnavailable(f"{said}: it refused the call unread, so the call did not run{refusal.hint}", **data)
        if refusal.status >= 500:
            # Not even a 503 proves the call did not run: proxies answer 503 when the upstream
            # reset the connection after it had the request (Envoy's "reset before headers").
            return ServerCrashed(f"{said}; the call may or may not have run{asks}", **data)
        return MCPError(code=code, message=said + refusal.hint)  # about this request: the SDK's code, our words

    async def _request(self, send: Callable[[], Awaitable[Any]]) -> Any:
        """``await send()``, the SDK's request, left behind when the caller is cancelled.

        A cancelled SDK request writes a courtesy ``notifications/cancelled``, shielded, for
        up to 5 s; over SSE, and in a handshake-era streamable HTTP session, the transport
        sends one POST at a time, so behind a stalled POST that write waits the whole 5 s,
        and the call answered its caller that much past its deadline. So over HTTP the
        request runs in this incarnation's nursery: its caller leaves at once when
        cancelled (its deadline, `die`, its own caller), and the request is cancelled
        there, its courtesy cancel going out behind it. A request cut off with the
        incarnation leaves its caller waiting for `die` (which cancels the caller's
        scope), bounded by the caller's own deadline."""
        nursery = self.nursery
        if not self.over_http or nursery is None:
            return await send()
        done = trio.Event()
        answer: list[Any] = []
        failure: list[Exception] = []
        request_scope = trio.CancelScope()

        async def run() -> None:
            with request_scope:
                try:
                    answer.append(await send())
                except Exception as exc:
                    failure.append(exc)
                finally:
                    done.set()

        try:
            nursery.start_soon(run)
        except RuntimeError:  # the nursery is closed: this incarnation is ending
            raise self._never_sent("is going away") from None
        try:
            await done.wait()
            if failure:
                raise failure[0]
            if not answer:  # cut off with the incarnation, before `die` reached this scope
                await self.died.wait()
                raise self._crash_failure()
            return answer[0]
        finally:
            request_scope.cancel()

    def _maybe_idle(self) -> None:
        if not self.inflight and not self.requests and self.idle is not None:
            self.idle.set()

    async def request(self, ask: Callable[[Client], Awaitable[Any]]) -> Any:
        """``ask(client)`` for `ServerLink.request`, counted so a drain waits for it.
        Raises ``ActorDown`` (not sent) when this incarnation is going away."""
        if self.death is not None or self.stopping:
            raise self._never_sent("is going away")
        self.requests += 1
        try:
            return await self._request(lambda: ask(self.client))
        finally:
            self.requests -= 1
            self._maybe_idle()

    def _crash_failure(self) -> ServerCrashed:
        if self.stopping:  # drained: replaced, removed, restarted by an operator, shut down
            return ServerCrashed(
                f"server {self.spec.name!r} was being stopped (replaced, removed or shut down) and the call "
                f"was cut off at the end of its shutdown_timeout ({self.spec.shutdown_timeout:g} s); "
                "the call may or may not have run",
                server=self.spec.name,
            )
        return ServerCrashed(
            f"server {self.spec.name!r} died while the call was in flight ({self.death}); "
            "the call may or may not have run",
            server=self.spec.name,
        )

    # -- the actor loop -------------------------------------------------------------------

    async def serve(self, mailbox: Mailbox[Any]) -> None:
        """Live until stopped (``Ref.stop()``), then let the calls in flight finish."""
        async for _msg, reply in mailbox:  # no control messages yet: it waits for stop()
            if reply is not None:
                reply.fail(TypeError(f"connection:{self.spec.name} takes no messages"))
        self.stopping = True  # drain: new calls go to the next incarnation
        self.slots.unpark_all()
        if self.inflight or self.requests:
            self.idle = trio.Event()
            await self.idle.wait()

    async def watch_death(self) -> None:
        """Raise ``ConnectionDied`` when the process exits or a call path declares death."""
        proc = self.link.process
        async with trio.open_nursery() as watchers:
            if proc is not None and proc.pid is not None:

                async def process_exit() -> None:
                    await proc.exited.wait()
                    self.die(f"server process {proc.exit_status}", "exited", normal=proc.exit_code == 0)

                watchers.start_soon(process_exit)
            await self.died.wait()
            watchers.cancel_scope.cancel()
        assert self.death is not None
        if proc is not None and proc.pid is not None and "server process" not in str(self.death):
            with trio.move_on_after(0.5):  # a closed pipe usually means the process is dying
                await proc.exited.wait()
            if proc.exited.is_set():
                # the process ending is the cause; the transport going first is its symptom
                raise ConnectionDied(
                    f"{self.death}; server process {proc.exit_status}", "exited", normal=proc.exit_code == 0
                )
        raise self.death

    def _heard(self) -> None:
        """The server answered: it is alive (health checks), and its wire is sound."""
        self.answered_at = trio.current_time()
        self.garbage = 0

    # -- notifications ------------------------------------------------------------------

    async def on_message(self, message: Any) -> None:
        """The SDK's message handler: garbage counting, a broken SSE stream, list_changed
        (legacy servers)."""
        if isinstance(message, httpx2.TransportError):  # the SSE client's event stream broke
            self.die(f"transport error: {type(message).__name__}: {message}", "transport")
            return
        if isinstance(message, Exception):
            self.garbage += 1
            self.garbage_lines += 1
            self.link.garbage_lines += 1
            # Over HTTP what was no JSON-RPC is an event of the server's event stream.
            what, where = ("message", "on its event stream") if self.over_http else ("line", "on stdout")
            # All counted, not all logged: a server that keeps below garbage_threshold runs on,
            # and a warning per line filled the log for as long as it did.
            if self.garbage_lines <= 10 or not self.garbage_lines & (self.garbage_lines - 1):
                log.warning(
                    "server %r wrote a %s %s that is not JSON-RPC (%d in a row, %d in all%s)",
                    self.spec.name, what, where, self.garbage, self.garbage_lines,
                    "; logged at the 10 first, then at 16, 32, 64 ..." if self.garbage_lines == 10 else "",
                )
            if self.garbage > self.spec.garbage_threshold:
                self.die(f"{self.garbage} {what}s in a row {where} were not JSON-RPC (garbage_threshold)", "garbage")
            return
        self.garbage = 0  # a JSON-RPC message: the wire is sound
        root = getattr(message, "root", message)
        meta = getattr(getattr(root, "params", None), "meta", None) or {}
        if SUBSCRIPTION_ID_META_KEY in meta:
            return  # the SDK tees listen-stream events here too; `_listen_stream` handles them
        changed = _changed_list(root)
        if changed is not None:
            self._refresh_soon(changed)
        elif isinstance(root, mcp_types.ResourceUpdatedNotification):
            publish("resource_updated", data={"uri": str(root.params.uri)})

    # -- what the server asks or tells while serving calls ------------------------------

    def front_of_question(self) -> Front:
        """Whom a server's question belongs to: the caller's front when the SDK asks in the
        caller's task, else the one front with calls in flight, else the default front."""
        front = current_front.get()
        if front is not None:
            return front
        fronts = {id(f): f for f in self.inflight.values() if f is not None}
        if len(fronts) == 1:
            return next(iter(fronts.values()))
        return self.host_front

    def _asking(self, front: Front) -> list[_Asked]:
        """The calls a question relayed to ``front`` may be for: the caller's own when the
        SDK asks in its task, else those of that front; every call in flight when the
        default front answers (the asker cannot be told, or has no front of its own)."""
        scope = _calling.get()
        if scope is not None and scope in self.inflight:
            return [self.asked.setdefault(scope, _Asked())]
        return [
            self.asked.setdefault(each, _Asked()) for each, of in self.inflight.items()
            if front is self.host_front or of is front
        ]

    async def answer(self, request: mcp_types.InputRequest) -> Any:
        """Relay one server question to its front; a front that does not answer within the
        server's ``timeout`` is answered for, with an error naming the question. The calls
        it may be for are marked as waiting on the client meanwhile: one that times out
        then, or after spending most of its time so, did not hang (see `call`)."""
        front = self.front_of_question()
        clients = len({id(f) for f in self.inflight.values() if f is not None})
        if front is DECLINE and clients > 1:
            return mcp_types.ErrorData(
                code=mcp_types.INVALID_REQUEST,
                message=(
                    f"server {self.spec.name!r} asked for {describe_request(request)} while calls of {clients} "
                    "clients were in flight on it, and nothing on its wire says which call asked: no client "
                    "is shown a question that may not be its own"
                ),
            )
        asking = self._asking(front)
        started = trio.current_time()
        for asked in asking:
            asked.what = describe_request(request)
            if not asked.pending:
                asked.since = started
            asked.pending += 1
        try:
            with trio.move_on_after(self.spec.timeout):
                return await front.answer(self.spec.name, request)
        finally:
            now = trio.current_time()
            for asked in asking:
                asked.pending -= 1
                if not asked.pending:
                    asked.waited += now - asked.since
        return mcp_types.ErrorData(
            code=mcp_types.INTERNAL_ERROR,
            message=f"no answer to {describe_request(request)} within {self.spec.timeout:g} s",
        )

    async def on_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        """A server log line goes to this process's log, and to the client whose call it
        belongs to when that can be told: nothing on the wire says which call a line is
        for, so it is relayed only when the calls in flight that want it are all one
        client's (`Front.client`). With several clients' calls in flight it is relayed to
        none: one client's log lines must never reach another. A relayed line goes out on
        the stream of one of that client's calls, and none of the calls it may belong to
        gives its result before the line is out (`_settle`)."""
        _log_upstream(self.spec.name, params)
        wanting = [f for f in self.inflight.values() if f is not None and getattr(f, "wants_log", _always)(params.level)]
        clients = {id(getattr(front, "client", front)) for front in wanting}
        if len(clients) != 1:
            if clients:
                log.debug("a log line of %r not relayed: calls of %d clients in flight", self.spec.name, len(clients))
            return
        front = wanting[0]
        with contextlib.ExitStack() as relaying:
            # The line may be any of these calls': none of their results may overtake it.
            for each in wanting:
                relaying.enter_context(self._relaying(each))
            try:
                with trio.move_on_after(1.0):  # a slow client must not stall the server's stream
                    await front.log(self.spec.name, params)
            except Exception as exc:  # a gone client: the log line is only lost to it
                log.debug("log line from %r not delivered: %s", self.spec.name, exc)

    def _refresh_soon(self, what: str) -> None:
        """Re-read ``what`` (tools, prompts or resources) in the background, coalesced: at
        most one read of each runs, and a change announced while it runs earns exactly one
        more read after it. A burst of ``list_changed`` is a few reads, never one per
        notification, and the last read always starts after the last announcement."""
        if self.nursery is None:
            return
        if what in self.refreshing:
            self.refreshing[what] = True  # changed again meanwhile: once more when done
            return
        self.refreshing[what] = False
        self.nursery.start_soon(self._refresh_until_current, what)

    async def _refresh_until_current(self, what: str) -> None:
        refusals.set(None)  # not the spawner's: a health check must not read a refresh's refusals as its own
        try:
            while True:
                self.refreshing[what] = False
                await self._refresh(what)
                if not self.refreshing[what]:
                    return
        finally:
            del self.refreshing[what]

    @property
    def modern(self) -> bool:
        return self.client.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def sync_subscriptions(self) -> None:
        """Make the server's resource subscriptions match ``link.subscriptions``: a
        handshake-era server by ``resources/(un)subscribe`` (its refusal raises), a
        2026-07-28 one by reopening the listen stream with the new set."""
        if self.modern:
            wanted = self.listen_generation + 1
            self.subscriptions_changed.set()
            with trio.move_on_after(self.spec.timeout):  # the stream with the new set is open
                while self.acked_generation < wanted:
                    await self.acked.wait()
                return
            raise DeadlineExceeded(
                f"server {self.spec.name!r} did not open a subscriptions/listen stream within {self.spec.timeout:g} s",
                server=self.spec.name,
            )
        with trio.move_on_after(self.spec.timeout):
            async with self.subscribing:
                session = self.client.session
                for uri in sorted(self.link.subscriptions - self.subscribed):
                    await call_deprecated(session.subscribe_resource, uri)
                    self.subscribed.add(uri)
                for uri in sorted(self.subscribed - self.link.subscriptions):
                    self.subscribed.discard(uri)
                    await call_deprecated(session.unsubscribe_resource, uri)
            return
        raise DeadlineExceeded(
            f"server {self.spec.name!r} did not answer resources/(un)subscribe within {self.spec.timeout:g} s",
            server=self.spec.name,
        )

    async def listen(self) -> None:
        """What the server announces: a 2026-07-28 server only on a ``subscriptions/listen``
        stream (list changes and the subscribed resources' updates; reopened whenever the
        subscriptions change); a handshake-era one on its own, once it is told the
        subscriptions this link carries from earlier incarnations."""
        if not self.modern:
            try:
                await self.sync_subscriptions()
            except Exception as exc:
                log.warning("server %r: resubscribing failed: %s", self.spec.name, _unwrap(exc))
            if self.link.log_level is not None:
                try:
                    with trio.move_on_after(self.spec.timeout):
                        await _tell_log_level(self.client, self.link.log_level)
                except Exception as exc:  # a server without logging: nothing to tell it
                    log.debug("server %r: logging/setLevel: %s", self.spec.name, _unwrap(exc))
            return
        caps = self.client.server_capabilities
        wants = {
            "tools_list_changed": bool(caps.tools and caps.tools.list_changed),
            "prompts_list_changed": bool(caps.prompts and caps.prompts.list_changed),
            "resources_list_changed": bool(caps.resources and caps.resources.list_changed),
        }
        while True:
            changed = self.subscriptions_changed = trio.Event()
            self.listen_generation += 1
            uris = sorted(self.link.subscriptions)
            if any(wants.values()) or uris:
                async with trio.open_nursery() as stream:
                    stream.start_soon(self._listen_stream, wants, uris, self.listen_generation)
                    await changed.wait()
                    stream.cancel_scope.cancel()
            else:
                self._acknowledged(self.listen_generation)
                await changed.wait()

    def _acknowledged(self, generation: int) -> None:
        self.acked_generation = max(self.acked_generation, generation)
        acked, self.acked = self.acked, trio.Event()
        acked.set()

    async def _listen_stream(self, wants: dict[str, bool], uris: list[str], generation: int) -> None:
        """Hold one ``subscriptions/listen`` stream open for this incarnation's life.

        Once the server acknowledges a stream, the lists it watches are re-read: a change
        made before that reached no one. A stream the server ends or drops after
        acknowledging it (a graceful close, a backlog it capped, a proxy's idle timeout) is
        reopened, 0.5 s later at first and up to 30 s when it keeps ending, and what it may
        have missed meanwhile is caught up: the lists, and each subscribed resource is
        announced as updated. A stream the server refuses (never acknowledged) is not asked
        for again: calls work without it.
        """
        delay = _RELISTEN_MIN
        reopened = False
        while True:
            opened_at: float | None = None
            try:
                async with self.client.listen(**wants, resource_subscriptions=uris) as subscription:
                    opened_at = trio.current_time()
                    self._acknowledged(generation)
                    # A change made before the server had this stream went to no one (the
                    # first one: after `learn` read the lists at connect); re-read what it
                    # watches. Published only if it did change.
                    self._catch_up(wants, uris if reopened else [])
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated):
                            publish("resource_updated", data={"uri": event.uri})
                            continue
                        kind = type(event).__name__.lower()
                        what = "tools" if "tool" in kind else "prompts" if "prompt" in kind else "resources"
                        self._refresh_soon(what)
                why = "the server ended it"
            except Exception as exc:
                why = str(_unwrap(exc))
            finally:
                self._acknowledged(generation)  # nobody waits on a stream that is not coming
            if self.death is not None:
                return  # it went with its connection; the next incarnation opens its own
            if opened_at is None:
                log.info("server %r: no subscriptions/listen stream (%s)", self.spec.name, why)
                return
            if trio.current_time() - opened_at >= _RELISTEN_MAX:
                delay = _RELISTEN_MIN  # it had been holding: start again from the shortest wait
            log.info("server %r: subscriptions/listen stream lost (%s); reopening in %g s", self.spec.name, why, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, _RELISTEN_MAX)
            reopened = True

    def _catch_up(self, wants: dict[str, bool], uris: list[str]) -> None:
        """What a listen stream may have missed while it was down: re-read the lists it
        watches, and tell subscribers each of its resources may have changed."""
        for what in ("tools", "prompts", "resources"):
            if wants[f"{what}_list_changed"]:
                self._refresh_soon(what)
        for uri in uris:
            publish("resource_updated", data={"uri": uri})

    async def _refresh(self, what: str) -> None:
        """Re-read ``what``; publish ``prompts_changed`` / ``resources_changed`` only when the
        list did change (the gateway tells every client of each). Tools are the registry's
        to announce: it publishes ``tools_changed`` when the tools it exposes change."""
        try:
            with trio.fail_after(self.spec.timeout), telling_list_changes(self.link, what):
                await learn(self.client, self.link, what)
        except Exception as exc:
            log.warning("server %r: refreshing %s failed: %s", self.spec.name, what, _unwrap(exc))

    async def expire_tools(self, ttl: float) -> None:
        while True:
            await trio.sleep(ttl)
            await self._refresh("tools")


_MAX_PAGES = 100

#: The lists the gateway shows from a link besides its tools (which are the registry's to
#: announce), by the event that says they changed: ``<what>_changed``.
_OPTIONAL_LISTS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompts",),
    "resources": ("resources", "resource_templates"),
}


def announce_lists(link: ServerLink, *whats: str, path: str | None = None) -> None:
    """Publish ``<what>_changed`` (under ``path``) for each of ``whats`` ("prompts",
    "resources") that the link shows any of: what the gateway lists changes when such a
    link leaves it, or shows them under other names."""
    for what in whats:
        if any(getattr(link, name) for name in _OPTIONAL_LISTS[what]):
            publish(f"{what}_changed", path=path, data={"count": len(getattr(link, _OPTIONAL_LISTS[what][0]))})


@contextlib.contextmanager
def telling_list_changes(link: ServerLink, what: str = "all") -> Iterator[None]:
    """Around a read of ``link``'s lists (`learn`): publish ``prompts_changed`` /
    ``resources_changed`` for each of them that differs afterwards from what the link
    showed before, whether the read ended well or not (part of it may have been taken).
    Nothing is published for a list that came out the same: a re-read, or a new
    incarnation listing what the last one did. The link keeps its lists while the server
    is down (the gateway goes on listing them), so a new incarnation is compared with the
    last one, and a link's first incarnation with the nothing it showed before."""
    watched = {key: names for key, names in _OPTIONAL_LISTS.items() if what in ("all", key)}
    before = {key: [getattr(link, name) for name in names] for key, names in watched.items()}
    try:
        yield
    finally:
        for key, names in watched.items():
            if [getattr(link, name) for name in names] != before[key]:
                publish(f"{key}_changed", data={"count": len(getattr(link, names[0]))})


class UnreadableList(Exception):
    """The server answered a list request with an error (``code``, its JSON-RPC code), or
    with a list we cannot read (``code`` None)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


async def _read(method: str, read: Callable[[], Awaitable[Any]]) -> Any:
    """``await read()``; a failure that is the server's answer (not a lost connection)
    becomes `UnreadableList` naming ``method``."""
    try:
        return await read()
    except Exception as exc:
        cause = _unwrap(exc)
        if _transport_lost(cause) is not None:
            raise
        code = cause.error.code if isinstance(cause, MCPError) else None
        raise UnreadableList(f"the server's answer to {method}: {type(cause).__name__}: {cause}", code) from exc


async def _read_pages(link: ServerLink, method: str, request: Callable[..., Awaitable[Any]], field: str) -> list[Any]:
    """Every page of a list, fresh from the server (the SDK's cache bypassed); at most
    `_MAX_PAGES`, so a paginator that never ends cannot hang us. Raises as `_read`."""
    items: list[Any] = []
    cursor = None
    for _ in range(_MAX_PAGES):
        page = await _read(method, lambda: request(cursor=cursor, cache_mode="bypass"))
        items.extend(getattr(page, field))
        cursor = page.next_cursor
        if not cursor:
            return items
    log.warning("server %r: its %s did not end after %d pages; the %d read so far are used", link.name, method, _MAX_PAGES, len(items))
    return items


def _why_invalid(exc: pydantic.ValidationError) -> str:
    """A tool's first validation error, short: where in the tool, and what is wrong."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"][2:]) or "the tool"
    return f"{where}: {error['msg']}"


async def _tools_page(client: Client, cursor: str | None, left_out: dict[str, str]) -> mcp_types.ListToolsResult:
    """One page of ``tools/list``, fresh from the server (the SDK's cache bypassed).

    The SDK rejects a page whole when one of its tools is no valid MCP tool (an
    ``inputSchema`` of ``{}``, say). Such a page is read again, and each tool judged alone
    by the same rules (the negotiated revision's): the invalid ones are left out, named in
    ``left_out`` with why, and the rest go through the SDK's own reading of a listing, so
    its output-schema cache (against which it checks each call's result) and its
    2026-07-28 header filter hold exactly the tools served. A page that is invalid
    apart from its tools raises the SDK's ``ValidationError``."""
    try:
        return await client.list_tools(cursor=cursor, cache_mode="bypass")
    except pydantic.ValidationError as exc:
        rejected = exc
    session = client.session
    version = client.protocol_version or "2025-11-25"
    request = mcp_types.ListToolsRequest(params=mcp_types.PaginatedRequestParams(cursor=cursor))
    data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
    opts: Any = {}
    session._stamp(data, opts)  # as the SDK's send_request, less its check of the page as a whole
    if session._session_read_timeout_seconds is not None:
        opts["timeout"] = session._session_read_timeout_seconds
    raw = await session._dispatcher.send_raw_request(data["method"], data.get("params"), opts)
    _clamp_inbound_ttl(raw)
    listed = raw.get("tools")
    if not isinstance(listed, list):
        raise rejected
    envelope = {key: value for key, value in raw.items() if key != "tools"}
    _methods.validate_server_result("tools/list", version, {**envelope, "tools": []})  # the page itself
    kept = []
    for tool in listed:
        try:
            _methods.validate_server_result("tools/list", version, {**envelope, "tools": [tool]})
        except pydantic.ValidationError as exc:
            name = tool.get("name") if isinstance(tool, dict) else None
            left_out[str(name) if name is not None else f"(a tool with no name: {str(tool)[:60]})"] = _why_invalid(exc)
        else:
            kept.append(tool)
    page = {key: value for key, value in envelope.items() if key not in _later_revision_fields("tools/list", version)}
    result = mcp_types.ListToolsResult.model_validate({**page, "tools": kept}, by_name=False)
    return session._absorb_tool_listing(result, complete=cursor is None and result.next_cursor is None)


async def _read_tools(client: Client, link: ServerLink) -> list[ToolSpec]:
    """Every page of the server's tools (at most `_MAX_PAGES`), less those that are no
    valid MCP tools (`_tools_page`): a bug of one tool is no reason to fence off the
    others. Those are logged and named in ``link.unread_lists["tools/list"]`` (shown in
    the status) until a read lists none. Raises as `_read`."""
    left_out: dict[str, str] = {}
    pages = await _read_pages(link, "tools/list", lambda cursor, cache_mode: _tools_page(client, cursor, left_out), "tools")
    if left_out:
        why = "; ".join(f"{name!r} ({reason})" for name, reason in left_out.items())
        count = f"{len(left_out)} tool{'s' if len(left_out) != 1 else ''}"
        note = f"left out {count} it listed that {'are' if len(left_out) != 1 else 'is'} no valid MCP tool: {why}"
        if link.unread_lists.get("tools/list") != note:
            log.warning("server %r: %s (its other tools are served)", link.name, note)
        link.unread_lists["tools/list"] = note
    else:
        link.unread_lists.pop("tools/list", None)
    return [_tool_spec(t, link.name) for t in pages]


async def learn(client: Client, link: ServerLink, what: str = "all") -> None:
    """Read the server's tools (and prompts, resources when advertised) into ``link``.

    Raises `UnreadableList` when ``tools/list`` fails on a server that advertises tools (a
    server whose tools cannot be read cannot serve), and whatever a lost connection raises;
    one that does not advertise them (prompts or resources only) has none when it refuses.
    A failing prompts or resources list does not stop the tools: it is logged, named in
    ``link.unread_lists`` (shown in the status) and kept as it was until a read succeeds;
    "Method not found" (resources without templates, say) is an empty list, and so is a
    list the server does not advertise (an earlier incarnation's is not kept).
    """
    caps = client.server_capabilities
    if what in ("all", "tools"):
        try:
            tools = await _read_tools(client, link)
        except UnreadableList:
            if caps.tools is not None:
                raise
            tools = []  # it never said it had tools: a server of prompts or resources only
            link.unread_lists.pop("tools/list", None)
        link._publish_tools(tools)
    # (method, the result's field and the link's attribute, the request)
    optional: list[tuple[str, str, Callable[..., Awaitable[Any]]]] = []
    if what in ("all", "prompts"):
        optional.append(("prompts/list", "prompts", client.list_prompts))
    if what in ("all", "resources"):
        optional.append(("resources/list", "resources", client.list_resources))
        optional.append(("resources/templates/list", "resource_templates", client.list_resource_templates))
    advertised = {"prompts": caps.prompts is not None, "resources": caps.resources is not None}
    for method, attribute, _ in optional:
        if not advertised[method.split("/")[0]]:  # not (or no longer: a restart) offered: none
            setattr(link, attribute, [])
            link.unread_lists.pop(method, None)
    optional = [entry for entry in optional if advertised[entry[0].split("/")[0]]]
    for method, attribute, request in optional:
        try:
            setattr(link, attribute, await _read_pages(link, method, request, attribute))
        except UnreadableList as exc:
            if exc.code == mcp_types.METHOD_NOT_FOUND:  # resources without templates, say
                setattr(link, attribute, [])
                link.unread_lists.pop(method, None)
                continue
            link.unread_lists[method] = str(exc)
            log.warning("server %r: %s (its tools are served all the same)", link.name, exc)
        else:
            link.unread_lists.pop(method, None)


async def _live(
    spec: ServerSpec,
    proc: ServerProcess | None,
    state: _Connection,
    mailbox: Mailbox[Any],
    link: ServerLink,
    announced: set[str],
) -> str:
    """Serve until stopped (returns why) or dead (raises). Answers every call either way.
    ``announced``: the lists a handshake-era server said had changed before this
    incarnation was ready (while `learn` read them): read again at once."""
    why = "stopped by the supervisor"
    died = False
    cause_of_death = "other"
    try:
        async with trio.open_nursery() as side:
            state.nursery = side  # background work of this incarnation (`_refresh_soon`)
            for what in sorted(announced):
                state._refresh_soon(what)
            side.start_soon(state.watch_death)
            side.start_soon(state.listen)
            state.start_checks()
            await state.serve(mailbox)
            side.cancel_scope.cancel()
        return why
    except BaseException as exc:
        cause = _unwrap(exc)
        failed_task = _failed_task(cause)
        if failed_task is not None and state.death is None:
            # The SDK's transport failed in a task of its own (its reader, a stream it
            # reopens): its task group cancelled us, and its error comes out of the client
            # after this (`run_connection` names it). Not the supervisor's stop.
            died, cause_of_death = True, "transport"
            why = f"transport error: {failed_task}"
            state.task_failed = True
        elif failed_task is not None or not _is_cancel(cause):
            # (A task that failed after a death was declared, a hang say, while
            # `watch_death` waited for the process: a symptom, as below.)
            died = True
            if state.death is not None and not isinstance(cause, ConnectionDied):
                # Declared dead first (a refused SSE POST, say): what failed next, a send on
                # the closed stream, is its symptom, and the declared cause is the exit's.
                why = str(state.death)
                raise state.death from cause
            why = str(cause) if isinstance(cause, ConnectionDied) else f"{type(cause).__name__}: {cause}"
        raise
    finally:
        # In-flight calls first (ServerCrashed), then whatever is left in the mailbox
        # (ActorDown: never sent, safe to send again).
        state.die(why, cause_of_death, failed=died)  # cut off what is in flight (each caller raises)
        mailbox.close(why)
        link._down(why, failed=died)
        if died and proc is not None and proc.pid is not None:
            await kill_tree(proc.pid, proc.incarnation, 0)  # a dead or hung server gets no grace period


_CHILD_FAILED = "child task raised exception "


def _failed_task(cause: BaseException) -> str | None:
    """What failed when ``cause`` is a cancellation by a task group whose other task
    raised (the SDK's transport's, around the connection), as trio says it ("OSError('x')");
    None for any other cancellation (the supervisor's, a deadline) or exception.

    Only the SDK's task group can be that nursery: every tree child runs under a shielded
    scope of its own (``supervisor/_tree.py``, ``_launch``), so no nursery of ours (nor of
    the host's) sits between that shield and `_live` to cancel it when a sibling raises;
    `_live`'s own nursery's failures come with the error that caused them."""
    if isinstance(cause, BaseExceptionGroup):
        cancels = cause.split(trio.Cancelled)[0]
        if cancels is None or len(cancels.exceptions) != len(cause.exceptions):
            return None
        cause = cancels.exceptions[0]
        while isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]
    if isinstance(cause, trio.Cancelled) and cause.source == "nursery" and cause.reason:
        return cause.reason.removeprefix(_CHILD_FAILED)
    return None


def _changed_list(notification: Any) -> str | None:
    """The list a handshake-era ``list_changed`` notification is about, else None."""
    if isinstance(notification, mcp_types.ToolListChangedNotification):
        return "tools"
    if isinstance(notification, mcp_types.PromptListChangedNotification):
        return "prompts"
    if isinstance(notification, mcp_types.ResourceListChangedNotification):
        return "resources"
    return None


def _garbage_seen(lines: list[Exception], over_http: bool = False) -> str:
    """What a server that never finished the handshake wrote that was not JSON-RPC: the
    likely reason (a banner or a log line on stdout, which may have swallowed an answer;
    over HTTP, events of its event stream)."""
    if not lines:
        return ""
    first = lines[0]
    shown: Any = str(first)
    if isinstance(first, pydantic.ValidationError) and first.errors():
        shown = first.errors()[0].get("input", shown)
    shown = str(shown)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    are = "are" if len(lines) != 1 else "is"
    if over_http:
        count = f"{len(lines)} message{'s' if len(lines) != 1 else ''}"
        return f"; it sent {count} on its event stream that {are} not JSON-RPC (the first: {shown!r})"
    count = f"{len(lines)} line{'s' if len(lines) != 1 else ''}"
    return (
        f"; it wrote {count} on stdout that {are} not JSON-RPC (the first: "
        f"{shown!r}): stdout is the wire, so a banner or a log line there can swallow an answer"
    )


def _why_it_ended(proc: ServerProcess) -> str:
    """What a stdio server that hung up during the handshake left to say: how it exited
    (when it did by itself) and its last stderr lines, the usual "why" (an import error, a
    missing setting)."""
    said = ""
    if proc.exit_status is not None and proc.exit_status.startswith("exited"):
        said += f"; the server process {proc.exit_status}"
    tail = [line for line in proc.stderr_tail(3) if line.strip()]
    if tail:
        said += "; its last stderr lines: " + " | ".join(line.strip()[:200] for line in tail)
    return said


async def run_connection(
    link: ServerLink,
    *,
    inproc: Any = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """One incarnation of the connection to the server ``link.spec`` describes (read at
    start, so a spec updated in place reaches every later incarnation): a supervised
    child's start function.

    Reports ready (``task_status.started(ref)``) once connected, initialized and with its
    tools learned, all within ``connect_timeout``. Returns normally only when asked to stop
    (its ref's ``stop()``) and drained; every other end raises ``ConnectionDied`` naming the
    cause (the SDK's exception groups are unwrapped so the supervisor reports the cause). A
    connect that timed out names the request whose answer it was waiting for (`_waited_on`).
    """
    spec = link.spec
    proc = ServerProcess(link.count_oversized) if spec.command is not None and inproc is None else None
    link.process = proc
    link._failure_counted = False  # a new incarnation: its failure is one more
    mailbox: Mailbox[Any] = Mailbox(f"connection:{spec.name}", size=max(16, spec.max_queue))
    early_garbage: list[Exception] = []
    early_changes: set[str] = set()  # list_changed heard while the lists were being read
    state: _Connection | None = None
    noted: list[_NotedRequests] = []  # the transport's write stream (see `_waited_on`)

    async def on_message(message: Any) -> None:
        if state is not None:
            await state.on_message(message)
        elif isinstance(message, Exception):
            early_garbage.append(message)
            link.garbage_lines += 1
        elif (changed := _changed_list(getattr(message, "root", message))) is not None:
            early_changes.add(changed)

    async def ask_front(request: Any) -> Any:
        if state is None:  # asked while connecting: the host answers, within the same bound
            answer = mcp_types.ErrorData(
                code=mcp_types.INTERNAL_ERROR,
                message=f"no answer to {describe_request(request)} within {spec.timeout:g} s",
            )
            with trio.move_on_after(spec.timeout):
                answer = await default_front.answer(spec.name, request)
        else:
            answer = await state.answer(request)
        why = unsendable(answer)  # else the SDK's writer fails on it, and the connection with it
        if why is not None:
            return mcp_types.ErrorData(
                code=mcp_types.INTERNAL_ERROR,
                message=f"the answer to {describe_request(request)} cannot be sent as JSON: {why}",
            )
        return answer

    async def on_sampling(context: Any, params: Any) -> Any:
        return await ask_front(mcp_types.CreateMessageRequest(params=params))

    async def on_elicitation(context: Any, params: Any) -> Any:
        return await ask_front(mcp_types.ElicitRequest(params=params))

    async def on_list_roots(context: Any) -> Any:
        return await ask_front(mcp_types.ListRootsRequest())

    async def on_log(params: Any) -> None:
        if state is not None:
            await state.on_log(params)
        else:  # connecting: no call to relay it to, but our log keeps it (a startup problem, say)
            _log_upstream(spec.name, params)

    def on_session_lost() -> None:
        if state is not None:
            state.die(
                "the server no longer knows our MCP session (HTTP 404: it restarted or expired it)", "session_lost"
            )

    broken: list[str] = []

    def on_sse_broken(refusal: HttpRefusal | PostFailed | ForeignEndpoint) -> None:
        if isinstance(refusal, ForeignEndpoint):  # said while connecting: the SDK posts nothing
            broken.append(str(refusal))
        else:
            what = (
                "transport error: a message's POST got"  # as for a broken event stream
                if isinstance(refusal, PostFailed)
                else "the server answered a message with"
            )
            broken.append(f"{what} {refusal}, after which SSE sends nothing more{refusal.hint}")
        if state is not None:
            state.die(broken[0], "transport")
        else:
            connecting.cancel()  # the handshake's answer will never come

    exited: list[bool] = []

    def on_exit(stdout: PipeReader) -> None:
        # Connected: `watch_death` sees the exit. With stdout hung up, the handshake ends on
        # its EOF by itself and says how (`_why_it_ended`). Else a process the server started
        # holds stdout open, no EOF comes, and the connect would wait out connect_timeout.
        if state is None and not stdout.hung_up():
            exited.append(True)
            connecting.cancel()

    default_front = host_front.get()  # the tree's (the callers' own contexts do not carry it)
    current_front.set(None)  # this task's own questions have no front: the default answers

    why = "stopped by the supervisor"
    try:
        # One scope spans the connection's whole life (a scope entered around the client's
        # entry must also enclose its exit); its deadline is lifted once we are ready.
        with trio.CancelScope(deadline=trio.current_time() + spec.connect_timeout) as connecting:
            watch = HttpAnswerWatch(
                on_session_lost, on_sse_broken if spec.kind == "sse" else None, spec.max_message_bytes, spec.url
            )
            try:
                transport = _transport(spec, proc or ServerProcess(), inproc, watch)
                if inproc is None:
                    transport = _noting_requests(transport, noted)
                if proc is not None:
                    transport = _exit_watched(transport, proc, on_exit)
                client = Client(
                    transport,
                    message_handler=on_message,
                    sampling_callback=on_sampling,
                    elicitation_callback=on_elicitation,
                    list_roots_callback=on_list_roots,
                    logging_callback=on_log,
                )
                async with client:
                    with telling_list_changes(link):
                        await learn(client, link)
                    connecting.deadline = math.inf
                    for stream in noted:
                        stream.noting = False
                    state = _Connection(link.spec, link, client, mailbox)  # updated in place while connecting?
                    state.garbage_lines = len(early_garbage)  # a banner, say: the handshake came after it
                    link.protocol_version = client.protocol_version
                    link.capabilities = client.server_capabilities
                    link._up(state)
                    task_status.started(mailbox.ref)
                    why = await _live(spec, proc, state, mailbox, link, early_changes)
            except Exception as exc:
                cause = _unwrap(exc)
                if state is not None and state.task_failed and not isinstance(cause, ConnectionDied):
                    # The transport's own task failed (`_live`): its error, as it came out.
                    raise ConnectionDied(f"transport error: {type(cause).__name__}: {cause}", "transport") from cause
                if state is None and not isinstance(cause, ConnectionDied):
                    refusal = watch.last_refusal
                    heard = f" ({refusal}){refusal.hint}" if refusal is not None else ""
                    failed = f"could not connect: {type(cause).__name__}: {cause}{heard}"
                    if proc is not None and _transport_lost(cause) is not None:
                        failed += _why_it_ended(proc)
                    raise ConnectionDied(failed, "connect") from cause
                raise
        if connecting.cancelled_caught:
            if exited and proc is not None:  # told after the teardown: its stderr is all read
                killed = "" if (proc.exit_status or "exited").startswith("exited") else f"; it was {proc.exit_status}"
                said = (
                    "could not connect: the server process ended during the handshake, and its stdout stayed "
                    "open (a process it started holds it, most likely), so no end of the stream came"
                )
                raise ConnectionDied(said + killed + _why_it_ended(proc), "connect")
            if broken:
                raise ConnectionDied(f"could not connect: {broken[0]}", "connect")
            raise ConnectionDied(
                f"could not connect and initialize within connect_timeout {spec.connect_timeout:g} s"
                + _garbage_seen(early_garbage, spec.kind in ("sse", "streamable-http"))
                + _waited_on(noted, bool(early_garbage)),
                "connect",
            )
    except BaseException as exc:
        cause = _unwrap(exc)
        if _is_cancel(cause):
            raise
        link._down(str(cause))
        if proc is not None and proc.stderr:
            log.warning(
                "server %r ended (%s); last stderr lines:\n  %s", spec.name, cause, "\n  ".join(proc.stderr_tail(20))
            )
        if cause is not exc and isinstance(cause, Exception):
            raise cause from None  # the cause, not the SDK's task-group wrapping
        raise
    finally:
        mailbox.close(why)
