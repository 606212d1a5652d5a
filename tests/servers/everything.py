"""A server that says everything an MCP server can say: the gateway fidelity fixture (issue #8).

Built on `MCPServer`; the legacy-only methods (``resources/subscribe``, ``resources/unsubscribe``,
``logging/setLevel``) are registered on its low-level server. Every answer is deterministic
(no pids, clocks or random ids), so two runs, direct and through the daemon, can be compared.
Works in both protocol eras: server->client questions go through `Resolve` markers, which the
SDK sends as real requests mid-call on handshake-era connections (2025-11-25) and as
``InputRequiredResult`` rounds on 2026-07-28 connections.

Tools:
- ``ask_sampling(prompt)``: asks the client ``sampling/createMessage``; returns its answer (JSON).
- ``ask_elicitation(question)``: asks the client a form elicitation (schema `Favourite`); returns
  ``accept <content JSON>``, ``decline`` or ``cancel``.
- ``ask_roots()``: asks ``roots/list``; returns the roots (JSON).
- ``log_levels(tag)``: logs debug, info, warning (data is an object) and error, logger
  ``everything.logs``, then returns. Handshake era: honours the level set by ``logging/setLevel``.
  2026-07-28: the SDK sends only what the request's ``_meta`` log-level opt-in allows.
- ``log_together(tag, calls)``: waits until ``calls`` calls of it are in flight at once (each
  gathering of ``calls`` is released together), then logs ``<tag>: info line`` and
  ``<tag>: error line`` (logger ``everything.logs``) and returns: log lines of concurrent calls,
  without timing.
- ``progress_steps(steps)``: reports progress ``i`` of ``steps`` with message ``step i/steps``.
- ``all_content()``: text, image, audio, embedded text and blob resources and a resource link,
  most blocks carrying ``_meta`` and/or annotations; structured content under an output schema;
  ``_meta`` on the result.
- ``own_error(message)``: a hand-built ``isError`` result (content, structured content, ``_meta``).
- ``tool_error(message)``: raises `ToolError`: the SDK's ``isError`` result.
- ``jsonrpc_error(code, message)``: raises `MCPError` with that code and message and a fixed
  ``data`` object: a JSON-RPC error response, not a result.
- ``place_order(order)``: input schema with ``$schema`` 2020-12, ``$defs`` and ``$ref``; an output
  schema; title, icons, ``_meta`` and every annotation hint.
- ``touch(uri)``: bumps the version of ``uri`` (``state://counter`` reads it) and announces
  ``notifications/resources/updated``: to ``resources/subscribe``-d handshake-era sessions, and
  on the subscription bus for 2026-07-28 ``subscriptions/listen`` streams.
- ``mutate_lists(name)``: adds tool ``name``, prompt ``name`` and resource ``dyn://<name>``, and
  announces tools/prompts/resources ``list_changed`` (both eras, as for ``touch``).

Prompts: ``recipe(dish, style="plain")``, with completions for ``dish`` (``style`` in the
completion context narrows them). Resources: ``static://hello`` (text), ``static://blob``
(binary), ``state://counter`` (subscribable, changes on ``touch``), template ``notes://{topic}``
(completions for ``topic``). A ``resources/subscribe`` to, or ``resources/unsubscribe`` from,
``slow://<seconds>`` answers after that many seconds (a request still in flight when the
daemon drains), and on arrival writes ``subscribe slow://<seconds>`` (or ``unsubscribe ...``)
to $EXEC_LOG, when set. ``--handshake-only`` makes it a server from before 2026-07-28
(no ``server/discover``: a client falls back to ``initialize``).

    python tests/servers/everything.py [--name NAME] [--handshake-only]
"""

import json
import warnings
from typing import Annotated, Any

import anyio
import mcp_types as types
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from mcp.server.elicitation import ElicitationResult
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from pydantic import BaseModel, Field

from _common import base_parser, exec_log

warnings.simplefilter("ignore", MCPDeprecationWarning)  # logging and subscribe are deprecated at 2026-07-28

LOGGER = "everything.logs"
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
JSONRPC_ERROR_DATA = {"hint": "raised on purpose", "nested": {"list": [1, 2, 3], "flag": True}}
SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# 1x1 transparent PNG and a 44-byte silent WAV header: real bytes of each type.
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WAV_EMPTY = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="
DISHES = {"pancakes": "sweet", "paella": "savoury", "pasta": "savoury", "pavlova": "sweet", "pizza": "savoury"}
TOPICS = ["alpha", "alps", "beta", "gamma"]


class Favourite(BaseModel):
    """The elicitation form: primitives only, as the spec requires."""

    colour: str = Field(description="a colour")
    count: int = Field(default=1, description="how many")
    sure: bool = Field(default=False, description="are you sure")


class Report(BaseModel):
    """The structured content of ``all_content``."""

    kinds: list[str]
    count: int


class Item(BaseModel):
    sku: str = Field(description="stock keeping unit", pattern=r"^[A-Z]{3}-\d+$")
    quantity: int = Field(ge=1, le=99)


class Address(BaseModel):
    street: str
    city: str


class Customer(BaseModel):
    name: str = Field(title="Customer name", min_length=1)
    address: Address
    shipping: Address | None = None


class Order(BaseModel):
    customer: Customer
    items: list[Item] = Field(min_length=1)
    note: str | None = None


class OrderSummary(BaseModel):
    customer: str
    lines: int
    units: int


class _State:
    """Mutable server state: resource versions, the connections subscribed to each URI
    (handshake era) and the level set by ``logging/setLevel``."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.subscribers: dict[str, list[Any]] = {}
        self.min_level = "debug"
        #: `log_together`: the gathering being formed (released when it is full) and its size so far.
        self.together = anyio.Event()
        self.gathered = 0


def _as_json(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)


# Resolvers live at module level: MCPServer evaluates tool annotations in module globals.
async def sample_for(prompt: str) -> Sample:
    """The sampling request of ``ask_sampling``."""
    return Sample(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=64,
        system_prompt="You are the fidelity fixture's model.",
        temperature=0.0,
        stop_sequences=["STOP"],
        metadata={"fixture": "everything"},
        model_preferences=types.ModelPreferences(
            hints=[types.ModelHint(name="fixture-model")], speed_priority=0.5
        ),
    )


async def elicit_for(question: str) -> Elicit[Favourite]:
    """The elicitation of ``ask_elicitation``: the question is the message."""
    return Elicit(question, Favourite)


async def roots() -> ListRoots:
    """The roots/list request of ``ask_roots``."""
    return ListRoots()


def add_input_tools(mcp: MCPServer) -> None:
    """Tools whose work needs an answer from the client: sampling, elicitation, roots."""

    @mcp.tool()
    async def ask_sampling(
        prompt: str, answer: Annotated[types.CreateMessageResult, Resolve(sample_for)]
    ) -> str:
        """Ask the client's model (sampling/createMessage) and return its answer as JSON."""
        return _as_json(answer)

    @mcp.tool()
    async def ask_elicitation(
        question: str, answer: Annotated[ElicitationResult[Favourite], Resolve(elicit_for)]
    ) -> str:
        """Ask the user a form (elicitation/create) and return accept <content>, decline or cancel."""
        if answer.action == "accept":
            return f"accept {_as_json(answer.data)}"
        return answer.action

    @mcp.tool()
    async def ask_roots(listed: Annotated[types.ListRootsResult, Resolve(roots)]) -> str:
        """Ask the client for its roots (roots/list) and return them as JSON."""
        return _as_json(listed)


def add_notifying_tools(mcp: MCPServer, state: _State) -> None:
    """Tools that log, report progress, and change resources and lists."""

    @mcp.tool()
    async def log_levels(tag: str, ctx: Context) -> str:
        """Log at debug, info, warning and error (logger everything.logs), then return."""
        lines: list[tuple[str, Any]] = [
            ("debug", f"{tag}: debug line"),
            ("info", f"{tag}: info line"),
            ("warning", {"tag": tag, "detail": "warning data is an object", "n": [1, 2]}),
            ("error", f"{tag}: error line"),
        ]
        # Handshake era: logging/setLevel sets the floor. 2026-07-28: the SDK applies the
        # request's own _meta opt-in, and setLevel does not exist.
        floor = "debug" if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS else state.min_level
        for level, data in lines:
            if LEVELS.index(level) >= LEVELS.index(floor):
                await ctx.log(level, data, logger_name=LOGGER)
        return f"logged {tag}"

    @mcp.tool()
    async def log_together(tag: str, calls: int, ctx: Context) -> str:
        """Wait until `calls` calls of log_together are in flight, then log an info and an
        error line (logger everything.logs) and return."""
        gathering = state.together
        state.gathered += 1
        if state.gathered >= calls:
            state.together, state.gathered = anyio.Event(), 0
            gathering.set()
        await gathering.wait()
        for level in ("info", "error"):
            await ctx.log(level, f"{tag}: {level} line", logger_name=LOGGER)
        return f"logged {tag}"

    @mcp.tool()
    async def progress_steps(steps: int, ctx: Context) -> str:
        """Report progress i of `steps` (message "step i/steps") for i = 1..steps."""
        for i in range(1, steps + 1):
            await ctx.report_progress(i, steps, f"step {i}/{steps}")
        return f"done {steps} steps"

    @mcp.tool()
    async def touch(uri: str, ctx: Context, times: int = 1) -> str:
        """Bump `uri`'s version and announce notifications/resources/updated to its
        subscribers, `times` times over."""
        for _ in range(times):
            state.versions[uri] = state.versions.get(uri, 0) + 1
            for connection in list(state.subscribers.get(uri, [])):  # handshake era: resources/subscribe
                try:
                    await connection.send_resource_updated(uri)
                except Exception:  # a gone connection: forget it
                    state.subscribers[uri].remove(connection)
            await ctx.notify_resource_updated(uri)  # 2026-07-28: subscriptions/listen streams
        return f"{uri} version {state.versions[uri]}"

    @mcp.tool()
    async def mutate_lists(name: str, ctx: Context) -> str:
        """Add tool `name`, prompt `name` and resource dyn://<name>; announce all three list_changed."""

        def dynamic_tool(text: str) -> str:
            return f"{name}: {text}"

        def dynamic_prompt() -> str:
            return f"dynamic prompt {name}"

        def dynamic_resource() -> str:
            return f"dynamic resource {name}"

        mcp.add_tool(dynamic_tool, name=name, description=f"dynamically added tool {name}")
        mcp.prompt(name=name, description=f"dynamically added prompt {name}")(dynamic_prompt)
        mcp.resource(f"dyn://{name}", name=name, mime_type="text/plain")(dynamic_resource)
        # Handshake era: notifications on the connection (the SDK drops them at 2026-07-28).
        await ctx.session.send_tool_list_changed()
        await ctx.session.send_prompt_list_changed()
        await ctx.session.send_resource_list_changed()
        # 2026-07-28: events for subscriptions/listen streams.
        await ctx.notify_tools_changed()
        await ctx.notify_prompts_changed()
        await ctx.notify_resources_changed()
        return f"added {name}"


def add_result_tools(mcp: MCPServer) -> None:
    """Tools whose interest is the shape of what they return: content, errors, schemas."""

    @mcp.tool(structured_output=True)
    def all_content() -> Annotated[types.CallToolResult, Report]:
        """Return one block of every content type, structured content and _meta."""
        annotations = types.Annotations(audience=["user", "assistant"], priority=0.5, last_modified="2025-01-01T00:00:00Z")
        content: list[Any] = [
            types.TextContent(type="text", text="plain text", annotations=annotations, _meta={"block": "text"}),
            types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png", _meta={"block": "image"}),
            types.AudioContent(
                type="audio", data=WAV_EMPTY, mime_type="audio/wav", annotations=types.Annotations(priority=1.0)
            ),
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri="static://hello", mime_type="text/plain", text="embedded text", _meta={"r": 1}
                ),
                annotations=types.Annotations(audience=["assistant"]),
                _meta={"block": "embedded-text"},
            ),
            types.EmbeddedResource(
                type="resource",
                resource=types.BlobResourceContents(uri="static://blob", mime_type="application/octet-stream", blob="AAEC/w=="),
            ),
            types.ResourceLink(
                type="resource_link",
                uri="notes://alpha",
                name="alpha notes",
                title="Alpha",
                description="a link to a templated resource",
                mime_type="text/markdown",
                size=42,
                annotations=types.Annotations(priority=0.1),
                _meta={"block": "link"},
            ),
        ]
        kinds = [block.type for block in content]
        return types.CallToolResult(
            content=content,
            structured_content={"kinds": kinds, "count": len(kinds)},
            _meta={"io.github.fixture/trace": {"step": 1, "ok": True}},
        )

    @mcp.tool()
    def own_error(message: str) -> types.CallToolResult:
        """A hand-built isError result: the tool's own failure, with structured content and _meta."""
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"own error: {message}")],
            structured_content={"error": message},
            is_error=True,
            _meta={"io.github.fixture/error": {"retryable": False}},
        )

    @mcp.tool()
    def tool_error(message: str) -> str:
        """Always raises ToolError: the SDK turns it into an isError result."""
        raise ToolError(message)

    @mcp.tool()
    def jsonrpc_error(code: int, message: str) -> str:
        """Always raises an MCPError: a JSON-RPC error with `code`, `message` and fixed data."""
        raise MCPError(code=code, message=message, data=JSONRPC_ERROR_DATA)

    @mcp.tool(
        title="Place an order",
        annotations=types.ToolAnnotations(
            title="Order placement",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        icons=[types.Icon(src="https://example.invalid/order.png", mime_type="image/png", sizes=["16x16"])],
        meta={"io.github.fixture/category": "orders"},
    )
    def place_order(order: Order) -> OrderSummary:
        """Summarise an order (nested models: the input schema uses $defs and $ref)."""
        return OrderSummary(
            customer=order.customer.name, lines=len(order.items), units=sum(i.quantity for i in order.items)
        )

    tool = mcp._tool_manager.get_tool("place_order")  # pyright: ignore[reportPrivateUsage]
    assert tool is not None and "$defs" in tool.parameters, tool
    tool.parameters = {"$schema": SCHEMA_2020_12, **tool.parameters, "additionalProperties": False}


def add_prompts_and_resources(mcp: MCPServer, state: _State) -> None:
    @mcp.prompt(title="Recipe", description="Ask for a recipe.")
    def recipe(dish: str, style: str = "plain") -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": f"Give me a {style} recipe for {dish}."},
            {"role": "assistant", "content": "Sure, here it is."},
        ]

    @mcp.completion()
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion | None:
        given = (context.arguments or {}) if context is not None else {}
        if isinstance(ref, types.PromptReference) and ref.name == "recipe" and argument.name == "dish":
            wanted = given.get("style")
            values = [d for d, kind in DISHES.items() if d.startswith(argument.value) and wanted in (None, kind)]
            return types.Completion(values=values, total=len(values), has_more=False)
        if isinstance(ref, types.ResourceTemplateReference) and ref.uri == "notes://{topic}" and argument.name == "topic":
            values = [t for t in TOPICS if t.startswith(argument.value)]
            return types.Completion(values=values, total=len(values), has_more=False)
        return None

    @mcp.resource(
        "static://hello",
        name="hello",
        title="Hello",
        description="a static text resource",
        mime_type="text/plain",
        annotations=types.Annotations(audience=["user"], priority=0.9),
        meta={"io.github.fixture/kind": "static"},
    )
    def hello() -> str:
        return "hello, world"

    @mcp.resource("static://blob", name="blob", mime_type="application/octet-stream")
    def blob() -> bytes:
        return bytes([0, 1, 2, 255])

    @mcp.resource("state://counter", name="counter", description="changes on touch(uri)", mime_type="text/plain")
    def counter() -> str:
        return f"version={state.versions.get('state://counter', 0)}"

    @mcp.resource("notes://{topic}", name="notes", description="notes on a topic", mime_type="text/markdown")
    def notes(topic: str) -> str:
        return f"# {topic}\nnotes about {topic}"


def add_legacy_methods(mcp: MCPServer, state: _State) -> None:
    """Handshake-era methods MCPServer does not serve itself: subscribe, unsubscribe, setLevel."""
    lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]

    # A ServerSession is made per request; the connection under it is what a subscription is for.
    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        if str(params.uri).startswith("slow://"):
            exec_log(f"subscribe {params.uri}")
            await anyio.sleep(float(str(params.uri).removeprefix("slow://")))
        connections = state.subscribers.setdefault(str(params.uri), [])
        if ctx.session._connection not in connections:
            connections.append(ctx.session._connection)
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        if str(params.uri).startswith("slow://"):
            exec_log(f"unsubscribe {params.uri}")
            await anyio.sleep(float(str(params.uri).removeprefix("slow://")))
        connections = state.subscribers.get(str(params.uri), [])
        if ctx.session._connection in connections:
            connections.remove(ctx.session._connection)
        return types.EmptyResult()

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        state.min_level = params.level
        return types.EmptyResult()

    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)


def make_everything(name: str = "everything") -> MCPServer:
    """The fixture server, every feature registered."""
    mcp = MCPServer(name, version="1.0.0", instructions="The fidelity fixture.", log_level="WARNING")
    state = _State()
    add_input_tools(mcp)
    add_notifying_tools(mcp, state)
    add_result_tools(mcp)
    add_prompts_and_resources(mcp, state)
    add_legacy_methods(mcp, state)
    return mcp


async def serve(mcp: MCPServer, handshake_only: bool = False) -> None:
    """Serve over stdio, advertising listChanged for tools, prompts and resources (handshake era)."""
    lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    options = lowlevel.create_initialization_options(
        NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True)
    )
    async with stdio_server() as (read_stream, write_stream):
        if not handshake_only:
            await lowlevel.run(read_stream, write_stream, options)
            return
        async with lowlevel.lifespan(lowlevel) as state:  # the SDK's handshake-only loop
            await serve_loop(lowlevel, read_stream, write_stream, lifespan_state=state, init_options=options)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--handshake-only", action="store_true", help="no server/discover, as before 2026-07-28")
    args = parser.parse_args()
    try:
        anyio.run(serve, make_everything(args.name or "everything"), args.handshake_only)
    except KeyboardInterrupt:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
