"""The aggregated MCP endpoint: one low-level mcp SDK ``Server`` fronting every supervised server.

Built on ``mcp.server.lowlevel.Server`` (the SDK speaks the protocol; nothing here frames
JSON-RPC). The same `Gateway` serves streamable HTTP (``/mcp``, via the SDK's session
manager, see ``_http``) and stdio (`Gateway.serve_stdio`).

What it serves:

- ``tools/list``: the registry's view (``Supervisor.list_tools()``), namespaced per config.
  Each list is answered in one page, with no ``nextCursor``; one asked with a cursor is
  refused -32602 (invalid cursor: none is one the gateway gave).
- ``tools/call``: routed through ``Supervisor.call_tool`` (breaker, retry, connection actor,
  metrics). Progress from upstream is forwarded to the calling client against the progress
  token of *its* request; the client cancelling its request cancels the upstream call (the
  handler's task is cancelled, and ``call_tool`` cancels on the server).
- ``prompts/list``, ``prompts/get``, ``resources/list``, ``resources/templates/list``,
  ``resources/read``: passed through to the owning server by lookup in each server's last
  learned lists. Prompt names are namespaced like the server's tools (``<server>__<name>``
  with ``namespace = "prefix"``, bare otherwise; a bare name two servers offer goes to a
  connected one). Resource URIs are passed through unchanged; a URI no server lists is
  tried on the servers that advertise templates.

The failure mapping (MCP spec: errors *in* a tool's execution belong in a result with
``isError: true`` so the model can see them; protocol problems are JSON-RPC errors):

==========================  ================================================================
``UnknownTool``             JSON-RPC error, code -32001, ``data.kind`` = "UnknownTool"
``InvalidArguments``,       ``CallToolResult(isError=True)``: one text block "<kind>: <message>",
``CircuitOpen``,            ``structuredContent`` = ``{"error": {"kind", "code", "message",
``ServerUnavailable``,      "data"}}`` and the same object under
``Overloaded``,             ``_meta["io.github.mcp-supervisor/failure"]`` (invalid arguments
``DeadlineExceeded``,       too, since the spec's 2025-11-25 SEP-1303: the model reads what
``ServerCrashed``,          was wrong and corrects its call; the call was never sent)
``ActorDown``,
``InvalidResult``
the upstream's ``MCPError``  passed through unchanged (its code, message and data)
==========================  ================================================================

A typed error's ``data`` always carries ``kind``, so ``protocol.failure_from_error`` turns it
back into the same ``Failure`` on the client side.

What upstream servers ask and say mid-call goes to the client whose call caused it (see
``_front_relay`` and ``actors._front`` for how a question is tied to its call): sampling,
elicitation and roots requests, and log lines (logger ``<server>/<logger>``, at the level
that client asked for). ``logging/setLevel`` is kept per client and passed to handshake-era
upstreams. ``completion/complete`` goes to the server owning the prompt (namespacing undone)
or resource template. ``resources/subscribe`` (and a 2026-07-28 ``subscriptions/listen``'s
resource subscriptions) are made on the owning server and released when no client wants
them (a client's connection closing releases what it held). A URI a client holds outlives
its server: when a server comes that offers it (one a reload added back, say) it is made
there again (`_resubscribe`), as each new incarnation of a server makes its own; ``ping``
is the SDK's.

Change notifications: on every ``tools_changed``, ``prompts_changed`` or
``resources_changed`` event of the supervisor, (1) the matching event is published on the
SDK's subscription bus, which reaches 2026-07-28 clients that opened
``subscriptions/listen`` (the SDK ``Client``'s default era), and (2) handshake-era
connections seen so far get the ``list_changed`` notification on their standalone channel
(the GET stream on HTTP, the pipe on stdio). ``resource_updated`` events go the same two
ways, to the clients subscribed to that URI. Best effort: a connection that has gone away
is forgotten, and one whose client has stopped reading (it took no notification within
`TELL_TIMEOUT`) is skipped until that client's next request. The SDK exposes the
per-request connection only as the session's private ``_connection``, which is read
defensively.

Capabilities: the gateway advertises everything it can relay (tools, prompts, resources
with subscribe and listChanged, completions, logging), whatever the upstreams support at
the moment (they come and go); a method no upstream serves gets that upstream's own error,
or "unknown"/"no server offers" when none owns the name. Upstreams are told the client
capabilities the gateway can relay (sampling, elicitation, roots); a question for a
client that lacks the capability is refused with a message that says so.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import mcp_types as types
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
import trio
from mcp import MCPError
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.uri_template import UriTemplate

from actors._front import calling_for
from actors._wire import unsendable
from protocol import DeadlineExceeded, Failure, ServerUnavailable, UnknownTool
from protocol._settings import DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_BODY_BYTES

from ._facade import Supervisor
from ._front_relay import LOG_LEVELS, FrontRelay

__all__ = ["FAILURE_META_KEY", "Gateway", "failure_result"]

log = logging.getLogger("supervisor.gateway")

#: How long the calls cut off at the end of a drain (`Gateway.drain`) get to take their
#: answers: each is cancelled on its server first, which the SDK bounds itself.
CUT_OFF_TIMEOUT = 2.0

FAILURE_META_KEY = "io.github.mcp-supervisor/failure"
"""The ``_meta`` key of an ``isError`` result that carries a typed failure."""

TELL_TIMEOUT = 1.0

#: How many resource URIs one handshake-era client may be subscribed to at once (and one
#: 2026-07-28 ``subscriptions/listen`` stream may name).
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000
_HELD_KEY = "io.github.mcp-supervisor/subscriptions"
"""How long (s) the handshake-era connections are given to take one change notification."""

_RESERVED_META_PREFIX = "io.modelcontextprotocol/"

#: Supervisor event kind -> (the 2026-07-28 bus event, the handshake-era connection method).
_LIST_CHANGED = {
    "tools_changed": (ToolsListChanged, "send_tool_list_changed"),
    "prompts_changed": (PromptsListChanged, "send_prompt_list_changed"),
    "resources_changed": (ResourcesListChanged, "send_resource_list_changed"),
}

#: Failures that are protocol problems (the request itself is wrong): JSON-RPC errors.
#: Arguments a tool's schema refuses are not among them: since 2025-11-25 (SEP-1303) the
#: spec has them a tool execution error, which the model reads and corrects its call by,
#: and the SDK's own servers answer them so on every protocol version.
_PROTOCOL_FAILURES = (UnknownTool,)


class _GatewayServer(Server[Any]):
    """The SDK's low-level server, advertising ``listChanged`` for tools, prompts and
    resources to handshake-era clients on every transport (the streamable-HTTP session
    manager asks for the defaults)."""

    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True),
            *args,
            **kwargs,
        )


def _matches(template: str, uri: str) -> bool:
    try:
        return UriTemplate.parse(template).match(uri) is not None
    except ValueError:  # InvalidUriTemplate, or a URI over the SDK's length bound
        return False


def failure_result(failure: Failure) -> types.CallToolResult:
    """A typed execution failure as an ``isError`` tool result, kind and data included."""
    error = {"kind": failure.kind, "code": failure.code, "message": failure.message, "data": failure.data}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{failure.kind}: {failure.message}")],
        structured_content={"error": error},
        is_error=True,
        _meta={FAILURE_META_KEY: error},
    )


def _as_ours(result: Any) -> Any:
    """An upstream result without the upstream's ``serverInfo`` stamp: the SDK then stamps the
    gateway's own (a handler-authored stamp would win, and the client is talking to us)."""
    meta = getattr(result, "meta", None)
    if isinstance(meta, dict) and types.SERVER_INFO_META_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != types.SERVER_INFO_META_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


def _upstream_meta(front_meta: dict[str, Any], front: FrontRelay) -> dict[str, Any] | None:
    """The ``_meta`` a front's call carries upstream: the front's own keys (the SDK stamps
    its reserved ones and the progress token itself), and the log level the front wants,
    so a 2026-07-28 upstream sends the log lines at all."""
    meta = {
        k: v for k, v in front_meta.items()
        if k not in ("progress_token", "progressToken") and not k.startswith(_RESERVED_META_PREFIX)
    }
    level = front_meta.get(types.LOG_LEVEL_META_KEY) if front.modern else (front.min_log_level or "debug")
    if level is not None:
        meta[types.LOG_LEVEL_META_KEY] = level
    return meta or None


def _check_sendable(params: Any) -> None:
    """INVALID_PARAMS unless a request passed through to a server can be sent to it
    (`unsendable`: else its failure in the upstream's writer would end that connection)."""
    why = unsendable(params)
    if why is not None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"the request cannot be sent upstream as JSON: {why}")


def _check_no_cursor(params: types.PaginatedRequestParams | None, method: str) -> None:
    """INVALID_PARAMS for a ``method`` (``tools/list``, ...) asked with a ``cursor``: the
    gateway answers each list in one page and gives no ``nextCursor``, so no cursor is one
    it gave, and the spec answers an invalid cursor -32602. (The full list again instead
    read as a page "after" the cursor: a client that pages would take it twice over.) An
    empty cursor stands for none, as a client that pages until a falsy cursor reads it."""
    cursor = None if params is None else params.cursor
    if cursor:
        shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."
        raise MCPError(
            code=types.INVALID_PARAMS,
            message=f"invalid cursor {shown!r}: {method} is answered in one page and gives no cursor; ask without one",
        )


def _as_mcp_error(failure: Failure) -> MCPError:
    error = failure.to_error()
    return MCPError(code=error.code, message=error.message, data=error.data)


class Gateway:
    """The front MCP server of one `Supervisor`.

    Guarantees: every ``tools/call`` ends in the tool's result, an ``isError`` result for a
    typed execution failure, or a JSON-RPC error (protocol failure or the upstream's own
    error); never in an unhandled exception. `inflight` counts the requests being served
    upstream (tool calls, ``prompts/get``, ``resources/read``, ``completion/complete``), so a
    shutdown can drain them.
    """

    def __init__(self, sup: Supervisor, *, name: str = "mcp-supervisor") -> None:
        self.sup = sup
        self.inflight = 0
        #: Set when the daemon stops accepting work: new requests for a server get
        #: ``ServerUnavailable`` (a tool call as an ``isError`` result); those in flight run
        #: to completion, or to `cut_off`. Lists are still answered (from the registry).
        self.draining = False
        self.idle = trio.Event()
        self.idle.set()
        self._served_scopes: set[trio.CancelScope] = set()
        self._cut_off_reason = ""
        self.bus = InMemorySubscriptionBus()
        self._legacy_connections: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Connections that took no notification within `TELL_TIMEOUT`, skipped until their next request.
        self._stuck: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Each handshake-era front connection's ``logging/setLevel``.
        self._log_levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.server: Server[Any] = _GatewayServer(
            name,
            version="0.1",
            instructions="One MCP endpoint in front of supervised MCP servers.",
            get_tool_input_schema=self._tool_input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_completion=self._complete,
            on_subscriptions_listen=self._listen,
        )
        self._listen_handler = ListenHandler(self.bus)
        #: Who wants each resource URI's updates: handshake-era front connections (by
        #: ``resources/subscribe``) and 2026-07-28 listen streams (counted while open).
        self._subscribers: dict[str, weakref.WeakSet[Any]] = {}
        self._listeners: collections.Counter[str] = collections.Counter()
        #: Resource URIs and templates two servers offer, logged once each (`_first_of_each`).
        self._collisions: set[tuple[str, str, str, str]] = set()
        # Registered after construction: the constructor argument warns that logging is
        # deprecated in 2026-07-28, but handshake-era clients still use it.
        self.server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_logging_level)
        # A handshake-era client is told of list changes from its handshake on, as a server
        # reached directly tells every initialized session (not only once it asked something).
        self.server.add_notification_handler("notifications/initialized", types.NotificationParams, self._initialized)

    # -- bookkeeping ----------------------------------------------------------------------

    def _seen(self, ctx: Any) -> None:
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            try:
                self._legacy_connections.add(connection)
                self._stuck.discard(connection)
            except TypeError:  # not weak-referenceable: skip rather than leak
                pass

    async def _initialized(self, ctx: Any, params: Any) -> None:
        self._seen(ctx)

    async def forward_list_changed(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Tell connected clients whenever an upstream's tools, prompts or resources list
        changes, and subscribed clients whenever a resource is updated; runs until cancelled
        or the supervisor's event bus closes. On each list change (a server came, went or
        lists other things), in a task of its own (the notifications do not wait for it), a
        server that came is told the log level clients asked for (`_tell_log_level`), and
        the resource subscriptions clients hold that no server has are made again
        (`_resubscribe`)."""
        events = self.sup.subscribe()
        lists_changed = trio.Event()

        async def keep_servers_told() -> None:
            nonlocal lists_changed
            while True:
                await lists_changed.wait()
                lists_changed = trio.Event()
                try:
                    await self._tell_log_level(only_new=True)
                    await self._resubscribe()
                except Exception as exc:  # best effort: tried again at the next change
                    log.warning("telling servers that came what clients asked for: %s", exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_servers_told)
            task_status.started()
            async with events:
                async for event in events:
                    if event.kind == "resource_updated" and event.data:
                        uri = str(event.data.get("uri"))
                        await self.bus.publish(ResourceUpdated(uri=uri))
                        await self._tell_legacy(list(self._subscribers.get(uri, ())), "send_resource_updated", uri)
                    elif event.kind in _LIST_CHANGED:
                        lists_changed.set()  # a server came, went or lists other things
                        bus_event, method = _LIST_CHANGED[event.kind]
                        await self.bus.publish(bus_event())
                        await self._tell_legacy(list(self._legacy_connections), method)
            nursery.cancel_scope.cancel()

    async def _tell_legacy(self, connections: list[Any], method: str, *args: Any) -> None:
        """Tell handshake-era connections, all at once, within `TELL_TIMEOUT` in all. One
        that cannot take the notification in that time (its client has stopped reading its
        stream: the buffers up to it are full) is skipped from then on, until its client's
        next request; one that has gone away is forgotten. So a stuck client costs the
        others one wait, once, not one per change event."""

        async def tell(connection: Any) -> None:
            with trio.move_on_after(TELL_TIMEOUT) as waited:
                try:
                    await getattr(connection, method)(*args)
                except Exception as exc:
                    log.debug("%s not delivered: %s", method, exc)
                    self._legacy_connections.discard(connection)
                    for subscribers in self._subscribers.values():
                        subscribers.discard(connection)
            if waited.cancelled_caught:
                self._stuck.add(connection)
                log.warning(
                    "client session %s took no change notification in %.0f s (it has stopped reading "
                    "its stream): it is told of no more changes until its next request",
                    getattr(connection, "session_id", None) or "(stdio)",
                    TELL_TIMEOUT,
                )

        async with trio.open_nursery() as nursery:
            for connection in connections:
                if connection not in self._stuck:
                    nursery.start_soon(tell, connection)

    # -- tools ----------------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        self._seen(ctx)
        _check_no_cursor(params, "tools/list")
        tools = [types.Tool.model_validate(spec.to_dict()) for spec in self.sup.list_tools()]
        return types.ListToolsResult(tools=tools)

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        """The exposed tool's ``inputSchema`` (None if unknown), for the SDK's check of
        ``Mcp-Param-*`` headers on 2026-07-28 calls. Without it the SDK builds a whole
        ``tools/list`` through the dispatcher before every ``tools/call``."""
        entry = self.sup.registry.view.entries.get(name)
        return None if entry is None else entry.spec.inputSchema

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        self._seen(ctx)
        session = ctx.session
        front_meta = dict(ctx.meta) if ctx.meta else {}
        wants_progress = front_meta.get("progress_token", front_meta.get("progressToken")) is not None

        async def forward_progress(progress: float, total: float | None, message: str | None) -> None:
            await session.report_progress(progress, total, message)

        legacy_level = self._log_levels.get(getattr(session, "_connection", None))
        front = FrontRelay(ctx, params, min_log_level=legacy_level)
        try:
            with self._served() as scope, calling_for(front):
                result = await self.sup.call_tool(
                    params.name,
                    dict(params.arguments or {}),
                    progress=forward_progress if wants_progress else None,
                    meta=_upstream_meta(front_meta, front),
                )
            if scope.cancelled_caught:
                return failure_result(ServerUnavailable(self._cut_off_reason))
            if isinstance(result, types.InputRequiredResult):
                entry = self.sup.registry.view.get(params.name)
                refusal = front.refuse_input_required(entry.server if entry else params.name, result)
                if refusal is not None:
                    raise MCPError.from_error_data(refusal)
            return _as_ours(result)
        except _PROTOCOL_FAILURES as failure:
            raise _as_mcp_error(failure) from None
        except Failure as failure:
            log.info("tool %r: %s: %s", params.name, failure.kind, failure.message)
            return failure_result(failure)

    @contextlib.contextmanager
    def _served(self) -> Iterator[trio.CancelScope]:
        """One request served upstream: counted in `inflight` (a drain waits for it), run in
        a scope `cut_off` cancels. Raises ``ServerUnavailable`` once the gateway drains."""
        if self.draining:
            raise ServerUnavailable("the supervisor is shutting down; the request was not sent")
        self.inflight += 1
        if self.idle.is_set():
            self.idle = trio.Event()
        scope = trio.CancelScope()
        self._served_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._served_scopes.discard(scope)
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()

    def cut_off(self, why: str) -> None:
        """Cancel every request served upstream (on its server too); each is answered with a
        ``ServerUnavailable`` saying ``why`` (a tool call as an ``isError`` result, any other
        request as a JSON-RPC error), not left without an answer. For the end of a drain
        that ran out of time."""
        self._cut_off_reason = why
        for scope in self._served_scopes:
            scope.cancel()

    async def drain(self, timeout: float, until: Callable[[], Awaitable[object]] | None = None) -> None:
        """Wait up to ``timeout`` s for ``until()`` (default: no request served upstream); past
        it, cut off the requests still running (`cut_off`: each is answered with an error) and
        wait up to `CUT_OFF_TIMEOUT` s more. Returns within ``timeout + CUT_OFF_TIMEOUT`` s,
        whatever still runs then."""
        until = until or (lambda: self.idle.wait())
        with trio.move_on_after(timeout) as waited:
            await until()
        if not waited.cancelled_caught or not self.inflight:
            return
        log.warning("%d requests still in flight after %g s (drain_timeout): cutting them off", self.inflight, timeout)
        self.cut_off(
            f"the supervisor is shutting down: the request was cut off when the drain ended ({timeout:g} s, "
            "drain_timeout), and cancelled on its server, where it may have run"
        )
        with trio.move_on_after(CUT_OFF_TIMEOUT):
            await until()

    async def _set_logging_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        """A handshake-era client's ``logging/setLevel``: kept for its connection until it
        closes (its calls' log lines are filtered to it), and the most verbose level any
        client holds is passed to every server (`_tell_log_level`)."""
        connection = getattr(ctx.session, "_connection", None)
        if self._held_by(connection) is not None:  # a connection we hear of when it closes
            self._log_levels[connection] = params.level
        await self._tell_log_level()
        return types.EmptyResult()

    async def _tell_log_level(self, *, only_new: bool = False) -> None:
        """Have every server send log lines at the most verbose level a client asked for,
        so each client gets what it asked for (the lines are filtered per client): a
        handshake-era upstream is told now, concurrently, each within its ``timeout``, and
        each incarnation after at connect (`ServerLink.set_log_level`). Once the gateway
        drains no server is told (they stop with it); a telling in flight is served like
        any request upstream (`_served`: waited for, cut off at the end of the drain).
        ``only_new``: only servers not told it yet (one a reload added since)."""
        levels = list(self._log_levels.values())
        if not levels:
            return
        level = min(levels, key=LOG_LEVELS.index)

        async def tell(server: str, link: Any) -> None:
            if self.draining:
                return
            try:
                with self._served():
                    await link.set_log_level(level)
            except Exception as exc:  # a server without logging: nothing to tell it
                log.debug("logging/setLevel not passed to %r: %s", server, exc)

        async with trio.open_nursery() as nursery:
            for server, link in self._links():
                if not (only_new and link.log_level == level):
                    nursery.start_soon(tell, server, link)

    # -- prompts and resources ------------------------------------------------------------

    def _links(self) -> list[tuple[str, Any]]:
        """Every server's link, connected ones first (a name several servers offer goes to
        one that can answer), otherwise in the supervisor's order."""
        out = []
        for name in self.sup.servers:
            try:
                out.append((name, self.sup.link(name)))
            except Failure:
                continue
        return sorted(out, key=lambda pair: pair[1].conn is None)

    async def _ask(self, link: Any, ask: Any) -> Any:
        """`ServerLink.request` (bounded by the server's timeout), its typed failures as the
        client's JSON-RPC errors, the result re-typed as ours (`_as_ours`). Served like a
        tool call: refused once the gateway drains, waited for by the drain, cut off at its
        end."""
        return _as_ours(await self._upstream(lambda: link.request(ask)))

    async def _upstream(self, exchange: Callable[[], Awaitable[Any]]) -> Any:
        """``exchange()`` served upstream (`_served`): its typed failures, the drain's
        refusal and a cut-off as the client's JSON-RPC errors, with the configured secrets
        hidden (`Supervisor.redactor`)."""
        try:
            with self._served() as scope:
                result = await exchange()
        except Failure as failure:  # its text may quote the upstream's: secrets hidden
            raise _as_mcp_error(self.sup.redactor.exception(failure)) from None
        except MCPError as exc:
            raise self.sup.redactor.exception(exc) from None
        if scope.cancelled_caught:
            raise _as_mcp_error(ServerUnavailable(self._cut_off_reason))
        return result

    async def _list_prompts(self, ctx: Any, params: Any) -> types.ListPromptsResult:
        self._seen(ctx)
        _check_no_cursor(params, "prompts/list")
        prompts = []
        seen: set[str] = set()
        for server, link in self._links():
            for prompt in link.prompts:
                exposed = self.sup.prompt_name(server, prompt.name)
                if exposed not in seen:  # a name two servers offer goes to the first (connected) one
                    seen.add(exposed)
                    prompts.append(prompt if exposed == prompt.name else prompt.model_copy(update={"name": exposed}))
        return types.ListPromptsResult(prompts=prompts)

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> Any:
        self._seen(ctx)
        _check_sendable(params)
        for server, link in self._links():
            for prompt in link.prompts:
                if self.sup.prompt_name(server, prompt.name) == params.name:
                    return await self._ask(link, lambda client: client.get_prompt(prompt.name, params.arguments))
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown prompt {params.name!r}")

    async def _list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        self._seen(ctx)
        _check_no_cursor(params, "resources/list")
        listed = self._first_of_each(lambda link: link.resources, lambda r: str(r.uri), "resource")
        return types.ListResourcesResult(resources=listed)

    async def _list_resource_templates(self, ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        self._seen(ctx)
        _check_no_cursor(params, "resources/templates/list")
        listed = self._first_of_each(lambda link: link.resource_templates, lambda t: t.uri_template, "resource template")
        return types.ListResourceTemplatesResult(resource_templates=listed)

    def _first_of_each(self, items: Callable[[Any], list[Any]], key: Callable[[Any], str], what: str) -> list[Any]:
        """Every server's ``items``, each ``key`` once: as the first (connected) server that
        offers it lists it, the one a read or a subscription of it reaches (`_owner_of`).
        A key another server offers too is logged once per pair of servers."""
        listed, owners = [], {}
        for server, link in self._links():
            for item in items(link):
                owner = owners.setdefault(key(item), server)
                if owner == server:
                    listed.append(item)
                elif (collision := (what, key(item), owner, server)) not in self._collisions:
                    self._collisions.add(collision)
                    log.warning("%s %r is offered by servers %r and %r: clients reach %r's", what, key(item),
                                owner, server, owner)
        return listed

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> Any:
        self._seen(ctx)
        _check_sendable(params)
        uri = str(params.uri)
        links = self._links()
        for server, link in links:
            if any(str(r.uri) == uri for r in link.resources):
                return await self._ask(link, lambda client: client.read_resource(uri))
        last: MCPError | None = None
        for server, link in links:
            if link.resource_templates and link.conn is not None:
                try:
                    return await self._ask(link, lambda client: client.read_resource(uri))
                except MCPError as exc:
                    last = exc
        raise last or MCPError(code=types.INVALID_PARAMS, message=f"unknown resource {uri!r}")

    # -- resource subscriptions and completion -------------------------------------------

    def _owner_of(self, uri: str, *, guess: bool = True) -> tuple[str, Any]:
        """The server a resource URI belongs to: the one listing it, else the first whose
        resource template it matches (RFC 6570, the SDK's `UriTemplate`), else (``guess``)
        the first connected one with templates (a template the SDK cannot parse, say)."""
        links = self._links()
        for server, link in links:
            if any(str(r.uri) == uri for r in link.resources):
                return server, link
        for server, link in links:
            if any(_matches(t.uri_template, uri) for t in link.resource_templates):
                return server, link
        for server, link in links if guess else ():
            if link.resource_templates:
                return server, link
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown resource {uri!r}")

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """A handshake-era client's ``resources/subscribe``: passed to the owning server
        (its refusal comes back unchanged); its updates reach this client's connection
        until it unsubscribes or the connection closes (see `_held_by`). A client may hold
        `MAX_SUBSCRIPTIONS_PER_CLIENT` URIs; one more is refused (invalid request). Served
        like a ``prompts/get`` (`_upstream`): refused once the gateway drains, waited for by
        the drain, cut off at its end."""
        self._seen(ctx)
        uri = str(params.uri)
        server, link = self._owner_of(uri)
        connection = getattr(ctx.session, "_connection", None)
        held = self._held_by(connection)
        if held is None or uri in held:
            await self._upstream(lambda: link.subscribe(uri))  # refuses a URI that cannot be sent
            return types.EmptyResult()
        if len(held) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise MCPError(
                code=types.INVALID_REQUEST,
                message=f"this client already holds {len(held)} resource subscriptions, the gateway's "
                f"limit per client: unsubscribe from one first",
            )
        # Counted before the exchange: another client's release meanwhile must see it wanted.
        held.add(uri)
        subscribers = self._subscribers.setdefault(uri, weakref.WeakSet())
        subscribers.add(connection)
        try:
            await self._upstream(lambda: link.subscribe(uri))
        except BaseException:
            held.discard(uri)
            subscribers.discard(connection)
            raise
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        connection = getattr(ctx.session, "_connection", None)
        held = self._held_by(connection)
        if held is not None:
            held.discard(uri)
        subscribers = self._subscribers.get(uri)
        if subscribers is not None:
            subscribers.discard(connection)
        await self._release(uri)
        return types.EmptyResult()

    def _held_by(self, connection: Any) -> set[str] | None:
        """The URIs ``connection``'s client has subscribed to (None for a connection with
        no state to keep them in). The first time, `_forget` is pushed on the
        connection's exit stack, which the SDK unwinds (shielded) when the connection
        closes: the client's DELETE, the session's idle timeout, the end of stdio. So a
        client that goes away without unsubscribing releases what it held upstream, and
        its log level no longer counts."""
        state = getattr(connection, "state", None)
        if not isinstance(state, dict):
            return None
        held = state.get(_HELD_KEY)
        if held is None:
            held = state[_HELD_KEY] = set()
            connection.exit_stack.push_async_callback(self._forget, connection, held)
        return held

    async def _forget(self, connection: Any, held: set[str]) -> None:
        for uri in held:
            self._subscribers.get(uri, set()).discard(connection)
        try:
            await self._release(*held)
        except Exception as exc:  # the upstream stays subscribed until its next incarnation
            log.info("releasing a closed connection's resource subscriptions: %s", exc)
        if self._log_levels.pop(connection, None) is not None:
            await self._tell_log_level()

    async def _release(self, *uris: str) -> None:
        """Unsubscribe upstream from those of ``uris`` that no client wants any more: one
        exchange per server. They are forgotten before any wait (`ServerLink.unsubscribe`),
        so a server that does not answer in time is not asked for them again. Once the
        gateway drains no server is asked (they stop with it); an exchange in flight is
        served like any request upstream (`_served`: waited for, cut off at its end)."""
        unwanted = {uri for uri in uris if not self._subscribers.get(uri) and self._listeners[uri] <= 0}
        for uri in unwanted:
            self._subscribers.pop(uri, None)
            self._listeners.pop(uri, None)
        for _, link in self._links():
            if self.draining:
                return
            if mine := sorted(unwanted & link.subscriptions):
                with self._served():
                    await link.unsubscribe(*mine)

    def _wanted(self, uri: str) -> bool:
        """Whether some client holds ``uri``: a handshake-era connection or a listen stream."""
        return bool(self._subscribers.get(uri)) or self._listeners[uri] > 0

    async def _resubscribe(self) -> None:
        """Subscribe upstream, on its owner (`_owner_of`: the server listing it or with a
        template it matches, never a guess), to each URI a client holds that its owner is
        not subscribed to: after a reload removed the server that had it and then added it
        (or another server offering it) back, the new server's link starts with no
        subscriptions, and the client, told it was subscribed, would never hear of an
        update again. Made there, it is released where it was made on a guess meanwhile.
        Run on every list change (a server that comes or goes, or lists other things). A
        URI no server offers stays held, for the next one that does; one its owner refuses stays held too (tried again at the next
        change). Each server's exchanges are served like any request upstream (`_served`),
        servers concurrently; one that does not answer in time is asked no more this time.
        A URI released meanwhile (the last client unsubscribed during the exchange) is
        released again once made, so it is not left subscribed upstream."""
        missing: dict[str, tuple[Any, list[str]]] = {}
        for uri in sorted(u for u in {*self._subscribers, *self._listeners} if self._wanted(u)):
            try:
                # Never a guess (any server with templates): made there, the URI would look
                # made, and its real owner, back later, would never be asked.
                server, link = self._owner_of(uri, guess=False)
            except MCPError:  # no server offers it now
                continue
            if uri not in link.subscriptions:
                missing.setdefault(server, (link, []))[1].append(uri)

        async def subscribe(server: str, link: Any, uris: list[str]) -> None:
            for uri in uris:
                if self.draining:
                    return
                if not self._wanted(uri) or uri in link.subscriptions:
                    continue
                try:
                    with self._served():
                        await link.subscribe(uri)
                except DeadlineExceeded as exc:
                    log.info("resource subscriptions not made again on %r: %s", server, exc)
                    return
                except Exception as exc:
                    log.info("resource %r not subscribed again on %r: %s", uri, server, exc)
                    continue
                if not self._wanted(uri):
                    try:
                        await self._release(uri)
                    except Exception as exc:
                        log.info("resource %r not released on %r: %s", uri, server, exc)
                    continue
                for other, guessed in self._links():  # made on a guess while its owner was away
                    if guessed is not link and uri in guessed.subscriptions and not self.draining:
                        try:
                            with self._served():
                                await guessed.unsubscribe(uri)
                        except Exception as exc:
                            log.info("resource %r not released on %r: %s", uri, other, exc)

        if missing:
            log.info("subscribing again to resources clients hold: %s", {s: u for s, (_, u) in missing.items()})
        async with trio.open_nursery() as nursery:
            for server, (link, uris) in missing.items():
                nursery.start_soon(subscribe, server, link, uris)

    async def _listen(self, ctx: Any, params: types.SubscriptionsListenRequestParams) -> Any:
        """A 2026-07-28 client's ``subscriptions/listen``: the SDK's handler serves the
        stream; its resource subscriptions are made upstream first (so no update between
        the acknowledgement and the first event is lost) and released when it ends. One
        stream may name `MAX_SUBSCRIPTIONS_PER_CLIENT` URIs; more are refused (invalid
        request)."""
        _check_sendable(params)
        uris = list(dict.fromkeys(str(u) for u in (params.notifications.resource_subscriptions or ())))
        if len(uris) > MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise MCPError(
                code=types.INVALID_REQUEST,
                message=f"the stream names {len(uris)} resources; the gateway takes at most "
                f"{MAX_SUBSCRIPTIONS_PER_CLIENT} per stream",
            )
        held: list[str] = []
        try:
            for uri in uris:
                self._listeners[uri] += 1  # before the exchange: a release meanwhile must see it wanted
                held.append(uri)
                try:
                    server, link = self._owner_of(uri)
                    await link.subscribe(uri)
                except Exception as exc:  # the ack still honours the URI; updates just will not come
                    log.info("listen: resource %r not subscribed upstream: %s", uri, exc)
            return await self._listen_handler(ctx, params)
        finally:
            for uri in held:
                self._listeners[uri] -= 1
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                for uri in held:
                    try:
                        await self._release(uri)
                    except Exception as exc:
                        log.debug("listen: releasing %r: %s", uri, exc)

    async def _complete(self, ctx: Any, params: types.CompleteRequestParams) -> Any:
        """``completion/complete``, routed by its reference to the server that owns the
        prompt (its exposed name mapped back) or the resource template."""
        _check_sendable(params)
        ref = params.ref
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = dict(params.context.arguments or {}) if params.context is not None else None
        for server, link in self._links():
            if isinstance(ref, types.PromptReference):
                for prompt in link.prompts:
                    if self.sup.prompt_name(server, prompt.name) == ref.name:
                        upstream_ref = ref.model_copy(update={"name": prompt.name})
                        return await self._ask(link, lambda client: client.complete(upstream_ref, argument, context))
            elif any(t.uri_template == ref.uri for t in link.resource_templates):
                return await self._ask(link, lambda client: client.complete(ref, argument, context))
        what = f"prompt {ref.name!r}" if isinstance(ref, types.PromptReference) else f"resource template {ref.uri!r}"
        raise MCPError(code=types.INVALID_PARAMS, message=f"no server offers the {what}")

    # -- stdio ----------------------------------------------------------------------------

    async def serve_stdio(
        self,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        stop: trio.Event | None = None,
        drain_timeout: Callable[[], float] = lambda: DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        """Serve this gateway over the process's stdin/stdout until stdin closes or ``stop``
        is set; a line from the client over ``max_bytes`` is refused unread (`stdio_wire`).

        When stdin closes, every request read before is answered before the session ends:
        they run to their end, for up to ``drain_timeout()`` s, then the requests still
        running are cut off (`drain`). A client may so pipe its requests in and read the
        answers. A request still running at the stop is answered with an error before the
        wire closes (within its last flush). Once the client's reader of our stdout is gone
        (a killed client: no answer can be delivered), that drain is cut short: the requests
        still running are cut off at once, cancelled on their servers."""
        from ._stdio_front import stdio_wire

        async def answered_or_gone(unanswered: Any, gone: trio.Event) -> None:
            async with trio.open_nursery() as racing:
                for wait in (unanswered.wait, gone.wait):
                    racing.start_soon(_cancel_after, wait, racing.cancel_scope)

        async def settle(unanswered: Any, gone: trio.Event) -> None:
            await self.drain(drain_timeout(), until=lambda: answered_or_gone(unanswered, gone))
            if not gone.is_set() or not self.inflight:
                return
            log.warning("the stdio client is gone (our stdout has no reader): cutting off its %d requests in flight",
                        self.inflight)
            self.cut_off(
                "the stdio client is gone (our stdout has no reader): the request was cut off, and cancelled on "
                "its server, where it may have run"
            )
            with trio.move_on_after(CUT_OFF_TIMEOUT):
                await self.idle.wait()

        async with stdio_wire(max_bytes, settle) as (read_stream, write_stream):
            # The stop cancels the session only: the wire's writer, outside this scope,
            # still carries the error the SDK answers each cut-off request with.
            async with trio.open_nursery() as session:
                if stop is not None:
                    session.start_soon(_cancel_when, stop, session.cancel_scope)
                await self.server.run(read_stream, write_stream, self.server.create_initialization_options())
                session.cancel_scope.cancel()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _cancel_after(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()
