"""The openai-agents adapter: ``SupervisedMCPServer``, an ``agents.mcp.MCPServer`` whose every
request goes through the supervisor.

::

    sup = await embed(config)                               # once, at process start
    main_tools = SupervisedMCPServer(sup, toolset="main", session_id=session_id)
    agent = Agent(name="copilot", mcp_servers=[main_tools], ...)
    await Runner.run(agent, "...")                          # per request: no connection opened

One adapter covers one supervised server (``server=``), or a toolset (``toolset=``: the
seed's main, rewrite, debug, search, or the config's own) and/or a category, or every tool.
Adapters are cheap: they hold no connection, so one per request (or per session) costs
nothing; the supervisor's connections are shared by all of them.

It works over either

- an ``EmbeddedSupervisor`` (``embed``: a trio guest run on the host's asyncio loop), or
- a trio ``Supervisor``, when the agents code runs in trio-asyncio (``trio_asyncio.open_loop``
  and ``aio_as_trio``) inside ``async with Supervisor(...)``.

Guarantees:

- ``call_tool`` returns the tool's own ``CallToolResult`` (``is_error`` included) or, for a
  typed failure (``UnknownTool``, ``InvalidArguments``, ``CircuitOpen``, ``ServerUnavailable``,
  ``Overloaded``, ``DeadlineExceeded``, ``ServerCrashed``, ...) or a JSON-RPC error from the
  server, a ``CallToolResult`` with ``is_error=True`` whose text is the seed's tool result
  ``{"tool_name", "success": false, "result": null, "error": "<kind>: <message>", "ext": []}``.
  Such failures never raise, so they never abort an agent run: the model reads them.
  Cancellation still propagates (and cancels the call on the server).
- A server that is down fails only its own tools' calls; the other servers' tools work.
- An adapter calls only the tools of its scope as it is at the call: a name outside its
  ``toolset=``/``category=`` (one the model made up, or a tool a reload took out of the
  toolset) is an ``UnknownTool`` failure, never sent.
- An adapter whose scope a reload took away (its ``server=`` removed, its ``toolset=`` no
  longer known) lists no tools, prompts, resources or templates, with a warning logged
  once each time its scope goes (and a note when it is back), and its calls come back as
  ``UnknownTool`` failures: an agent holding it still runs, with its other adapters'
  tools. ``get_prompt`` and ``read_resource`` raise the ``MCPError`` (``INVALID_PARAMS``)
  of an unknown prompt or resource, naming the scope. ``connect`` is strict: it raises
  for such a scope, so a misspelt name is caught there.
- The session id (``session_id=``, the copilot's ``X-Session-Id``) travels in every request's
  ``_meta`` under ``session_meta_key`` on the shared connection: no connection per session.
  To an HTTP/SSE server it also goes as the ``X-Session-Id`` header of each request's POST,
  whatever the key (`actors._session_header`: once an adapter used a key, a session under
  it is lifted for every request of the process, after one under ``session_id``).
  A per-call ``meta`` (the SDK's ``tool_meta_resolver``, say) is merged over it.
- Every tool name ``list_tools`` hands the model is one model APIs accept as a function name
  (``^[a-zA-Z0-9_-]{1,64}$``, OpenAI's and Anthropic's rule; MCP allows 128 characters and
  ``.``/``/``, and one such name made the provider refuse every turn of the agent, not just
  that tool): a name that does not fit is listed under `model_safe_name`'s stand-in, and
  ``call_tool`` takes the stand-in back to the tool. Names that fit are unchanged.
- ``tool_filter`` narrows the tools ``list_tools`` gives the model, as on the SDK's own
  servers. Their options that the supervisor does itself (``cache_tools_list``,
  ``client_session_timeout_seconds``, ``max_retry_attempts``, ``message_handler``, ...)
  raise ``TypeError`` naming what does that job here, rather than be ignored.
- ``connect`` opens nothing and ``cleanup`` closes nothing: the supervisor owns the
  connections and outlives its adapters. ``list_tools`` always reads the registry's current
  view (refreshed by the servers' ``list_changed``), so a tool list never goes stale;
  ``cached_tools`` is the last list it returned.
- Prompts and resources are listed from and read on the servers of the adapter's scope
  through their live ``mcp.Client``, within the server's ``timeout``; a server that is down is
  left out of a listing spanning several servers and raises ``ServerUnavailable`` when it is
  the only one.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
import logging
import re
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mcp_types
import msgspec
from agents.exceptions import UserError
from agents.mcp import MCPServer, ToolFilter, ToolFilterContext
from mcp import MCPError

from actors._registry import NAMESPACE_SEPARATOR
from actors._session_header import use_session_meta_key
from actors._wire import unsendable
from protocol import INVALID_PARAMS, Failure, ToolResult, ToolSpec, UnknownTool

from ._embed import EmbeddedSupervisor, _call_maybe_async
from ._facade import Supervisor, check_timeout

if TYPE_CHECKING:
    from agents.agent import AgentBase
    from agents.run_context import RunContextWrapper

__all__ = ["SESSION_META_KEY", "SupervisedMCPServer", "failure_result", "model_safe_name"]

log = logging.getLogger("supervisor.agents")

#: The ``_meta`` key the session id travels under unless ``session_meta_key`` says otherwise.
SESSION_META_KEY = "session_id"

#: What the SDK's own servers (``MCPServerStdio`` and its kin) take and an adapter does not,
#: with what does that job here: moving from one to the other fails at once, saying so.
_SUPERVISED_ELSEWHERE = {
    "cache_tools_list": "the supervisor's registry keeps every tool list, re-read when the server says it "
                        "changed (supervisor.cache_tools and cache_ttl in the config)",
    "client_session_timeout_seconds": "give timeout= here, or the server's timeout in the config",
    "max_retry_attempts": "retries follow the server's retry policy in the config",
    "retry_backoff_seconds_base": "retries follow the server's retry policy in the config",
    "retry_backoff_seconds_max": "retries follow the server's retry policy in the config",
    "message_handler": "the supervisor's events (EmbeddedSupervisor.events()) carry what servers say",
    "params": "the server's command, url and env are in the supervisor's config; name it with server=",
}

_MAX_PAGES = 100  # a paginator that never ends cannot hang a listing

#: A function name the model APIs accept (OpenAI, Anthropic).
_MODEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_IN_MODEL_NAMES = re.compile(r"[^A-Za-z0-9_-]+")


def model_safe_name(name: str, digits: int = 8) -> str:
    """``name`` when model APIs accept it as a function name; else a stable stand-in: its
    other characters replaced by ``_``, cut to fit, and ``digits`` hex digits of its SHA-256
    appended, so two names cut to the same stem stay apart."""
    if _MODEL_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:digits]
    stem = _NOT_IN_MODEL_NAMES.sub("_", name)[: 64 - 1 - digits].strip("_-") or "tool"
    return f"{stem}_{digest}"


def _model_names(names: list[str]) -> dict[str, str]:
    """Each name in ``names`` by the name the model is to see, all distinct."""
    taken = {name for name in names if _MODEL_NAME.fullmatch(name)}
    exposed = {}
    for name in names:
        safe = model_safe_name(name)
        digits = 8
        while safe != name and safe in taken:  # a stand-in another tool's real name already is
            digits += 8
            safe = model_safe_name(name, digits)
        taken.add(safe)
        exposed[safe] = name
    return exposed


def failure_result(tool_name: str, error: Failure | MCPError) -> mcp_types.CallToolResult:
    """A typed failure (or a server's JSON-RPC error) as a tool result the model can read:
    ``is_error=True`` and the seed's tool-result JSON with ``success: false``."""
    if isinstance(error, Failure):
        message = f"{error.kind}: {error.message}"
    else:
        message = f"MCP error {error.error.code}: {error.error.message}"
    text = ToolResult(tool_name=tool_name, success=False, error=message, ext=[]).to_json()
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)],
        structured_content=msgspec.json.decode(text),
        is_error=True,
    )


#: Per supervisor, each adapter scope found gone (`_note_scope`), with the reason logged.
_gone_scopes: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, ...], str]] = weakref.WeakKeyDictionary()


def _note_scope(supervisor: Any, scope: tuple[str | None, ...], gone: Exception | None) -> None:
    """Log a scope found gone once per change, for every adapter of ``supervisor`` on that
    scope together (adapters are made per request: a warning per listing would flood)."""
    noted = _gone_scopes.setdefault(supervisor, {})
    if gone is None:
        if noted.pop(scope, None) is not None:
            log.info("adapter scope %s is back: its tools are listed again", _describe(scope))
        return
    reason = str(gone)
    if noted.get(scope) != reason:
        noted[scope] = reason
        log.warning(
            "adapter scope %s names nothing the supervisor has now (%s): it lists no tools, prompts or "
            "resources, and its calls fail with UnknownTool, until a reload brings it back",
            _describe(scope),
            reason,
        )


def _describe(scope: tuple[str | None, ...]) -> str:
    """``server='a'``, ``toolset='mine' category='search'``: an adapter's scope, as given."""
    named = zip(("server", "toolset", "category"), scope, strict=True)
    return " ".join(f"{key}={value!r}" for key, value in named if value is not None)


class SupervisedMCPServer(MCPServer):
    """An ``agents.mcp.MCPServer`` over supervised servers. See the module docstring.

    ``supervisor``: an ``EmbeddedSupervisor`` or a trio ``Supervisor`` (trio-asyncio).
    ``server`` / ``toolset`` / ``category`` choose the tools (``server`` alone, or a toolset
    and/or a category across servers; nothing: every tool). ``timeout`` overrides the
    server's call timeout (a finite number of seconds, or ``ValueError`` here). ``meta`` is sent in every request's ``_meta``, with
    ``session_id`` under ``session_meta_key``. ``tool_filter`` narrows what ``list_tools``
    gives the model, as on the SDK's own servers (a static allow/block list of tool names
    as the supervisor lists them, or a callable given a ``ToolFilterContext`` and the tool;
    a callable that raises leaves the tool out). Other keyword arguments go to
    ``agents.mcp.MCPServer`` (``use_structured_content``, ``require_approval``,
    ``failure_error_function``, ``tool_meta_resolver``, ...).

    Several adapters on one agent must not list the same tool name (the SDK refuses
    duplicates across an agent's MCP servers): give them disjoint scopes.
    """

    def __init__(
        self,
        supervisor: EmbeddedSupervisor | Supervisor,
        *,
        server: str | None = None,
        toolset: str | None = None,
        category: str | None = None,
        name: str | None = None,
        session_id: str | None = None,
        session_meta_key: str = SESSION_META_KEY,
        meta: dict[str, Any] | None = None,
        timeout: float | None = None,
        tool_filter: ToolFilter = None,
        **options: Any,
    ) -> None:
        refused = sorted(options.keys() & _SUPERVISED_ELSEWHERE)
        if refused:
            raise TypeError(f"SupervisedMCPServer takes no {refused[0]}=: {_SUPERVISED_ELSEWHERE[refused[0]]}")
        super().__init__(**options)
        self.tool_filter = tool_filter
        if server is not None and (toolset is not None or category is not None):
            raise ValueError("give either server= or toolset=/category=, not both")
        use_session_meta_key(session_meta_key)  # the X-Session-Id header follows it
        # Each call's own check, at once: inside an agent run, a ValueError raised by every
        # call became the SDK's "An error occurred while running the tool. Please try again."
        check_timeout(timeout)
        self.supervisor = supervisor
        self.server = server
        self.toolset = toolset
        self.category = category
        self.session_id = session_id
        self.session_meta_key = session_meta_key
        self.meta = dict(meta or {})
        self.timeout = timeout
        scope = server or toolset or category or "all"
        self._name = name or f"supervised:{scope}"
        self._run = _bridge(supervisor)
        self._tools: list[mcp_types.Tool] | None = None
        self._exposed: dict[str, str] = {}  # each listed tool's name as the model sees it -> its own

    def with_session(self, session_id: str | None) -> SupervisedMCPServer:
        """A copy of this adapter for another session (same supervisor, same scope)."""
        clone = copy.copy(self)
        clone.session_id = session_id
        clone.meta = dict(self.meta)
        clone._tools = None
        return clone

    # -- lifecycle (the supervisor owns the connections) ---------------------------------

    @property
    def name(self) -> str:
        return self._name

    async def connect(self) -> None:
        """Check the supervisor is reachable and warm ``cached_tools``; opens nothing.
        Raises ``SupervisorClosed`` once an embedded supervisor is closed, ``UnknownTool``
        for a ``server=`` not supervised, ``ValueError`` for an unknown ``toolset=``."""
        _, _, gone = await self._refresh()
        if gone is not None:
            raise gone

    async def cleanup(self) -> None:
        """Nothing to release: the supervisor, not the adapter, owns the connections."""

    async def __aenter__(self) -> SupervisedMCPServer:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.cleanup()

    # -- tools ------------------------------------------------------------------------------

    async def list_tools(
        self,
        run_context: RunContextWrapper[Any] | None = None,
        agent: AgentBase | None = None,
    ) -> list[mcp_types.Tool]:
        """The scope's tools as the registry exposes them now (a server that is down keeps
        its tools listed: calling one gives a readable failure), those ``tool_filter`` keeps.
        ``cached_tools`` is all of them, as on the SDK's own servers. No tools when the scope
        is gone (a reload removed its server or toolset): a warning says so, once. Raises the
        SDK's ``UserError`` for a callable ``tool_filter`` without ``run_context`` and ``agent``."""
        own, modeled, _ = await self._refresh()
        # This listing's own lists: another run of this adapter may refresh it while the
        # filter is awaited, and the verdicts are for these tools.
        kept = await self._kept(own, run_context, agent)
        return [tool for tool, keep in zip(modeled, kept, strict=True) if keep]

    async def _refresh(
        self,
    ) -> tuple[list[mcp_types.Tool], list[mcp_types.Tool], UnknownTool | ValueError | None]:
        """Read the scope's tools: ``cached_tools`` (under the names the model sees) and the
        stand-ins' map are set; returns them under their own names, as ``cached_tools``, and
        why the scope names nothing the supervisor has now (then there are no tools; logged
        once per scope each time it goes, by `_note_scope`) or None."""
        specs, gone = await self._run(_list_tools_in_trio, self.server, self.toolset, self.category)
        _note_scope(self.supervisor, self._scope(), gone)
        own = [mcp_types.Tool.model_validate(spec.to_dict()) for spec in specs]
        self._exposed = _model_names([tool.name for tool in own])
        modeled = {name: safe for safe, name in self._exposed.items()}
        self._tools = [
            tool if modeled[tool.name] == tool.name else tool.model_copy(update={"name": modeled[tool.name]})
            for tool in own
        ]
        return own, self._tools, gone

    async def _kept(
        self, tools: list[mcp_types.Tool], run_context: RunContextWrapper[Any] | None, agent: AgentBase | None
    ) -> list[bool]:
        """Whether ``tool_filter`` keeps each of ``tools`` (by the names the supervisor lists
        them under, the names a filter is written with)."""
        chosen = self.tool_filter
        if chosen is None:
            return [True] * len(tools)
        if isinstance(chosen, dict):
            allowed, blocked = chosen.get("allowed_tool_names"), chosen.get("blocked_tool_names") or ()
            return [(allowed is None or tool.name in allowed) and tool.name not in blocked for tool in tools]
        if run_context is None or agent is None:
            raise UserError("run_context and agent are required for dynamic tool filtering")
        context = ToolFilterContext(run_context=run_context, agent=agent, server_name=self.name)
        kept = []
        for tool in tools:
            try:
                keep = chosen(context, tool.model_copy(deep=True))  # a filter that mutates changes no list
                kept.append(bool(await keep if inspect.isawaitable(keep) else keep))
            except Exception:
                log.exception("tool_filter of %r raised for tool %r: the tool is left out", self.name, tool.name)
                kept.append(False)
        return kept

    def _get_needs_approval_for_tool(self, tool: mcp_types.Tool, agent: AgentBase | None) -> Any:
        """The SDK's approval policy (``require_approval``) for ``tool``, keyed on its own
        MCP name too: a stand-in the model sees (`model_safe_name`) is looked up under the
        name the policy was written with, and a callable policy is given the tool under
        that name; an entry for the stand-in itself still wins. (The SDK's private hook,
        pinned by openai-agents 0.24.)"""
        own = self._exposed.get(tool.name, tool.name)
        policy = getattr(self, "_needs_approval_policy", None)
        if own != tool.name and not (isinstance(policy, dict) and tool.name in policy):
            tool = tool.model_copy(update={"name": own})
        return super()._get_needs_approval_for_tool(tool, agent)

    @property
    def cached_tools(self) -> list[mcp_types.Tool] | None:
        return self._tools

    def invalidate_tools_cache(self) -> None:
        """For parity with the SDK's servers: ``list_tools`` never serves a stale list anyway."""
        self._tools = None

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> mcp_types.CallToolResult:
        """Call ``tool_name`` through the supervisor. Typed failures come back as results
        (``is_error=True``, the seed's shape), never as exceptions; so does a scope a reload
        took away (``UnknownTool``)."""
        try:
            if tool_name not in self._exposed:
                _, _, gone = await self._refresh()  # a stand-in this adapter has not listed yet, say
                if gone is not None:
                    raise gone if isinstance(gone, Failure) else UnknownTool(str(gone), tool=tool_name)
            return await self._run(
                _call_tool_in_trio,
                self._scope(),
                self._exposed.get(tool_name, tool_name),
                arguments or {},
                self.timeout,
                self._meta_with(meta),
            )
        except (Failure, MCPError) as error:
            return failure_result(tool_name, error)

    def _meta_with(self, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        merged = dict(self.meta)
        if self.session_id is not None:
            merged[self.session_meta_key] = self.session_id
        if meta:
            merged.update(meta)
        return merged or None

    # -- prompts and resources ------------------------------------------------------------

    async def list_prompts(self) -> mcp_types.ListPromptsResult:
        """The scope's prompts; none when the scope is gone (as for ``list_tools``)."""
        prompts, _ = await self._list("prompts", None)
        return mcp_types.ListPromptsResult(prompts=prompts)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> mcp_types.GetPromptResult:
        return await self._run(_get_prompt_in_trio, self._scope(), name, arguments, self._meta_with(None))

    async def list_resources(self, cursor: str | None = None) -> mcp_types.ListResourcesResult:
        """The scope's resources. ``cursor`` pages through one server; a listing over several
        servers reads every page of each and returns no cursor. None when the scope is gone
        (as for ``list_tools``)."""
        resources, next_cursor = await self._list("resources", cursor)
        return mcp_types.ListResourcesResult(resources=resources, next_cursor=next_cursor)

    async def list_resource_templates(self, cursor: str | None = None) -> mcp_types.ListResourceTemplatesResult:
        """Like ``list_resources``, for resource templates."""
        templates, next_cursor = await self._list("resource_templates", cursor)
        return mcp_types.ListResourceTemplatesResult(resource_templates=templates, next_cursor=next_cursor)

    async def _list(self, what: str, cursor: str | None) -> tuple[list[Any], str | None]:
        items, next_cursor, gone = await self._run(_list_in_trio, self._scope(), what, cursor, self._meta_with(None))
        _note_scope(self.supervisor, self._scope(), gone)
        return items, next_cursor

    async def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        return await self._run(_read_resource_in_trio, self._scope(), uri, self._meta_with(None))

    def _scope(self) -> tuple[str | None, str | None, str | None]:
        return (self.server, self.toolset, self.category)


# -- getting into trio ----------------------------------------------------------------------


def _bridge(supervisor: Any) -> Callable[..., Any]:
    """``run(fn, *args)``: await ``fn(trio_supervisor, *args)`` in trio, from asyncio code."""
    if isinstance(supervisor, EmbeddedSupervisor):
        return supervisor.run_in_trio
    if isinstance(supervisor, Supervisor):
        return _TrioAsyncioBridge(supervisor).run
    raise TypeError(f"expected an EmbeddedSupervisor or a trio Supervisor, got {type(supervisor).__name__}")


class _TrioAsyncioBridge:
    """From asyncio code running in ``trio_asyncio.open_loop()`` back into trio."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Not imported at module level: importing trio_asyncio changes asyncio's default loop
        # for the whole process. A loop of its kind is running only if it was imported.
        trio_asyncio = sys.modules.get("trio_asyncio")
        if trio_asyncio is None or not isinstance(asyncio.get_running_loop(), trio_asyncio.BaseTrioEventLoop):
            raise RuntimeError(
                "a trio Supervisor is usable from asyncio code only inside trio_asyncio.open_loop(); "
                "from a plain asyncio host, use supervisor.embed()"
            )
        return await trio_asyncio.trio_as_aio(_call_maybe_async)(fn, self.supervisor, *args)


# -- the trio side (each takes the trio Supervisor first) -----------------------------------


def _gone(sup: Supervisor, server: str | None, toolset: str | None) -> UnknownTool | ValueError | None:
    """Why a scope names nothing the supervisor has now, or None: ``UnknownTool`` for a
    server it does not run, ``ValueError`` for a toolset it does not know (an unknown
    category is a typo, never a reload's doing: it raises where it is used)."""
    try:
        if server is not None:
            sup.handle(server)
        if toolset is not None:
            sup.registry.view.categories_of(toolset)
    except (UnknownTool, ValueError) as gone:
        return gone
    return None


def _unknown(what: str, name: str, scope: tuple[str | None, str | None, str | None], gone: Exception) -> MCPError:
    """The error of a prompt or resource asked of a scope that is gone (`_gone`)."""
    return MCPError(INVALID_PARAMS, f"Unknown {what}: {name!r} (adapter scope {_describe(scope)} is gone: {gone})")


def _list_tools_in_trio(
    sup: Supervisor, server: str | None, toolset: str | None, category: str | None
) -> tuple[list[ToolSpec], UnknownTool | ValueError | None]:
    """The scope's tools, and None; or no tools and why the scope names nothing the
    supervisor has now (`_gone`)."""
    gone = _gone(sup, server, toolset)
    if gone is not None:
        return [], gone
    specs = sup.list_tools(toolset=toolset, category=category)
    return (specs if server is None else [s for s in specs if s.server == server]), None


async def _call_tool_in_trio(
    sup: Supervisor,
    scope: tuple[str | None, str | None, str | None],
    name: str,
    arguments: dict[str, Any],
    timeout: float | None,
    meta: dict[str, Any] | None,
) -> Any:
    server, toolset, category = scope
    if toolset is not None or category is not None:
        # Only the scope's tools, as they are now: a name the model made up (or was led to)
        # outside a read-only toolset, or a tool listed before a reload took it out.
        specs, gone = _list_tools_in_trio(sup, server, toolset, category)
        if gone is not None:
            raise UnknownTool(str(gone), tool=name)
        if not any(spec.name == name for spec in specs):
            raise UnknownTool(f"tool {name!r} is not in this adapter's scope ({_describe(scope)})", tool=name)
    if server is None:
        return await sup.call_tool(name, arguments, timeout=timeout, meta=meta)
    # The server's own name for the tool: a per-server adapter lists exposed names (which
    # carry the ``<server>__`` prefix when the server is namespaced).
    prefix = f"{server}{NAMESPACE_SEPARATOR}"
    own = name[len(prefix) :] if sup.handle(server).spec.namespace == "prefix" and name.startswith(prefix) else name
    return await sup.call_tool(own, arguments, server=server, timeout=timeout, meta=meta)


def _servers_in_scope(sup: Supervisor, scope: tuple[str | None, str | None, str | None]) -> list[str]:
    server, toolset, category = scope
    if server is not None:
        sup.handle(server)  # UnknownTool naming it when there is no such server
        return [server]
    if toolset is None and category is None:
        return sup.servers
    owners = dict.fromkeys(spec.server for spec in sup.list_tools(toolset=toolset, category=category))
    return [name for name in owners if name is not None]


async def _on_server(sup: Supervisor, server: str, request: Callable[[Any], Any], sending: Any = None) -> Any:
    """``request(client)`` on ``server``'s live connection, within its call timeout.
    ``sending`` is what the request carries from the caller: refused with INVALID_PARAMS
    when it cannot be sent (`unsendable`), before it can take the connection down."""
    why = unsendable(sending)
    if why is not None:
        raise MCPError(INVALID_PARAMS, f"the request cannot be sent to server {server!r} as JSON: {why}")
    return await sup.link(server).request(request)


_LISTINGS = {
    # what: (capability, client method, result field)
    "prompts": ("prompts", "list_prompts", "prompts"),
    "resources": ("resources", "list_resources", "resources"),
    "resource_templates": ("resources", "list_resource_templates", "resource_templates"),
}

#: In a listing over several servers, what an item is offered under (each once, as the
#: first server offering it lists it: the one `get_prompt`/`read_resource` reach), as the
#: daemon lists them: a prompt namespaced like its server's tools, a resource by its URI.
_OFFERED_AS: dict[str, Callable[[Supervisor, str, Any], Any]] = {
    "prompts": lambda sup, server, prompt: prompt.model_copy(update={"name": sup.prompt_name(server, prompt.name)}),
    "resources": lambda sup, server, resource: resource,
    "resource_templates": lambda sup, server, template: template,
}
_KEY = {"prompts": lambda p: p.name, "resources": lambda r: str(r.uri), "resource_templates": lambda t: t.uri_template}


async def _list_in_trio(
    sup: Supervisor,
    scope: tuple[str | None, str | None, str | None],
    what: str,
    cursor: str | None,
    meta: dict[str, Any] | None,
) -> tuple[list[Any], str | None, UnknownTool | ValueError | None]:
    """The scope's ``what``, the next cursor, and None; or nothing and why the scope is
    gone (`_gone`)."""
    gone = _gone(sup, scope[0], scope[1])
    if gone is not None:
        return [], None, gone
    capability, method, field = _LISTINGS[what]
    servers = _servers_in_scope(sup, scope)
    single = len(servers) == 1
    items: list[Any] = []
    keys: set[str] = set()
    for server in servers:
        link = sup.link(server)
        if link.conn is None and not single:
            continue  # a server that is down is left out of a listing over several
        if link.conn is not None and getattr(link.capabilities, capability, None) is None:
            continue  # it does not offer prompts (resources)

        async def page(client: Any, at: str | None) -> Any:
            return await getattr(client, method)(cursor=at, meta=meta)

        if single:
            result = await _on_server(sup, server, lambda client: page(client, cursor), (cursor, meta))
            return list(getattr(result, field)), result.next_cursor, None
        at = None
        try:
            for _ in range(_MAX_PAGES):
                result = await _on_server(sup, server, lambda client: page(client, at), meta)
                for item in getattr(result, field):
                    offered = _OFFERED_AS[what](sup, server, item)
                    if _KEY[what](offered) not in keys:
                        keys.add(_KEY[what](offered))
                        items.append(offered)
                at = result.next_cursor
                if not at:
                    break
        except MCPError as exc:
            if exc.error.code != mcp_types.METHOD_NOT_FOUND:
                raise
            # It has none of these (resources without templates, say): nothing to add.
    return items, None, None


async def _get_prompt_in_trio(
    sup: Supervisor,
    scope: tuple[str | None, str | None, str | None],
    name: str,
    arguments: dict[str, Any] | None,
    meta: dict[str, Any] | None,
) -> Any:
    if (gone := _gone(sup, scope[0], scope[1])) is not None:
        raise _unknown("prompt", name, scope, gone)
    servers = _servers_in_scope(sup, scope)
    offered = ((s, p.name) for s in servers for p in sup.link(s).prompts if sup.prompt_name(s, p.name) == name)
    owner, name = next(offered, (None, name))  # as listed over several servers (`_OFFERED_AS`)
    if owner is None:  # or under its own name
        owner = next((s for s in servers if any(p.name == name for p in sup.link(s).prompts)), None)
    if owner is None and len(servers) == 1:
        owner = servers[0]  # let the server itself say what it knows
    if owner is None:
        raise MCPError(INVALID_PARAMS, f"Unknown prompt: {name!r} (no server among {servers} offers it)")
    args = {k: str(v) for k, v in (arguments or {}).items()}
    return await _on_server(
        sup, owner, lambda client: client.get_prompt(name, args or None, meta=meta), (name, args, meta)
    )


def _template_matches(template: str, uri: str) -> bool:
    """Whether ``uri`` fits an RFC 6570 level-1 template (each ``{var}`` one path segment)."""
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", template))
    return re.fullmatch(pattern, uri) is not None


async def _read_resource_in_trio(
    sup: Supervisor,
    scope: tuple[str | None, str | None, str | None],
    uri: str,
    meta: dict[str, Any] | None,
) -> Any:
    if (gone := _gone(sup, scope[0], scope[1])) is not None:
        raise _unknown("resource", uri, scope, gone)
    servers = _servers_in_scope(sup, scope)
    owner = next((s for s in servers if any(str(r.uri) == uri for r in sup.link(s).resources)), None)
    if owner is None:
        owner = next(
            (s for s in servers if any(_template_matches(t.uri_template, uri) for t in sup.link(s).resource_templates)),
            None,
        )
    if owner is None and len(servers) == 1:
        owner = servers[0]
    if owner is None:
        raise MCPError(INVALID_PARAMS, f"Unknown resource: {uri!r} (no server among {servers} offers it)")
    return await _on_server(sup, owner, lambda client: client.read_resource(uri, meta=meta), (uri, meta))
