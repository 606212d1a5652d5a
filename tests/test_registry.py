"""The tool registry: namespacing, collisions, categories, toolsets, validation, the view.

Every test runs a real `Registry` actor under trio and talks to it through its mailbox; the
call path is exercised the way the façade uses it, through ``registry.view``.
"""

from __future__ import annotations

import http.server
import logging
import threading
from contextlib import asynccontextmanager

import jsonschema
import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors._events import _BUS, EventBus
from conftest import drain
from actors._registry import (
    CATEGORIES,
    DEFAULT_TOOLSETS,
    MAX_REPORTED_ERRORS,
    ListTools,
    PublishTools,
    Registry,
    RegistrySnapshot,
    RegistryView,
    ServerAvailability,
    ServerTools,
    Snapshot,
    WithdrawServer,
    check_toolsets,
)
from protocol import InvalidArguments, ServerSpec, ToolSpec, UnknownTool


def tool(name: str, schema: dict | None = None, *, category: str | None = None, description: str | None = None):
    return ToolSpec(name=name, inputSchema=schema or {"type": "object"}, category=category, description=description)


@asynccontextmanager
async def running_registry(**kwargs):
    """A registry actor on a fresh event bus; yields (registry, events channel)."""
    bus = EventBus()
    token = _BUS.set(bus)
    try:
        events = bus.subscribe()
        registry = Registry(**kwargs)
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            yield registry, events
            nursery.cancel_scope.cancel()
    finally:
        _BUS.reset(token)


def kinds(events) -> list[str]:
    return [e.kind for e in drain(events)]


# -- namespacing ------------------------------------------------------------------------


async def test_prefix_namespace_exposes_server__tool():
    async with running_registry() as (registry, _):
        tools = [tool("search_nodes"), tool("get_workflow")]
        result = await registry.publish_tools("comfy", 1, tools, namespace="prefix")
        assert isinstance(result, ServerTools)
        assert result.exposed == ["comfy__search_nodes", "comfy__get_workflow"]
        entry = registry.view.resolve("comfy__search_nodes")
        assert (entry.server, entry.tool_name, entry.name) == ("comfy", "search_nodes", "comfy__search_nodes")
        assert entry.spec.name == "comfy__search_nodes" and entry.spec.server == "comfy"
        assert registry.view.resolve_on("comfy", "search_nodes") is entry
        with pytest.raises(UnknownTool):
            registry.view.resolve("search_nodes")


async def test_sync_returns_once_what_was_told_before_it_is_in_the_view():
    """``sync`` is the barrier the façade waits on after a server connects: a list told
    without waiting (as a connection tells it) is in the view once ``sync`` returns."""
    async with running_registry() as (registry, _):
        schemas = [tool(f"t{i}", {"type": "object", "properties": {"x": {"type": "string"}}}) for i in range(3)]
        registry.ref.tell_nowait(PublishTools(server="srv", version=1, tools=schemas))
        assert "t0" not in registry.view  # told, not handled yet
        await registry.sync()
        assert [entry.name for entry in registry.view.entries.values()] == ["t0", "t1", "t2"]


async def test_none_namespace_keeps_the_bare_name():
    async with running_registry() as (registry, _):
        await registry.publish_tools("comfy", 1, [tool("search_nodes")], namespace="none")
        entry = registry.view.resolve("search_nodes")
        assert entry.server == "comfy" and entry.tool_name == "search_nodes"
        assert [t.name for t in await registry.list_tools()] == ["search_nodes"]


async def test_publish_tools_for_a_configured_server_takes_its_namespace_and_categories():
    spec = ServerSpec(name="comfy", command="x", namespace="prefix", categories={"search_nodes": "search"})
    msg = PublishTools.for_server(spec, 3, [tool("search_nodes")])
    assert (msg.namespace, msg.categories, msg.version) == ("prefix", {"search_nodes": "search"}, 3)
    async with running_registry() as (registry, _):
        await registry.ref.ask(msg)
        assert registry.view.resolve("comfy__search_nodes").category == "search"


# -- collisions -------------------------------------------------------------------------


async def test_collision_is_refused_naming_both_servers_and_the_tool_and_the_first_tool_stays(caplog):
    caplog.set_level(logging.INFO)
    async with running_registry() as (registry, events):
        await registry.publish_tools("alpha", 1, [tool("search", description="alpha's")])
        drain(events)
        result = await registry.publish_tools("beta", 1, [tool("search", description="beta's"), tool("other")])
        assert result.exposed == ["other"] and result.refused == ["search"]
        assert "alpha" in result.problems["search"] and "beta" in result.problems["search"]

        entry = registry.view.resolve("search")
        assert entry.server == "alpha" and entry.spec.description == "alpha's"

        # The refusal is an event ...
        collisions = [e for e in drain(events) if e.kind == "tool_collision"]
        assert len(collisions) == 1
        reason = collisions[0].reason
        assert "'alpha'" in reason and "'beta'" in reason and "'search'" in reason
        assert collisions[0].data["server"] == "beta" and collisions[0].data["kept_server"] == "alpha"
        # ... logged once, as a warning (the registry's own warning doubled every line)
        logged = [r for r in caplog.records if reason in r.getMessage()]
        assert [r.levelname for r in logged] == ["WARNING"], [(r.name, r.levelname) for r in logged]

        # ... kept in the status, and the refused tool says why when asked for directly.
        snap = await registry.snapshot()
        assert [(c.server, c.kept_server, c.tool) for c in snap.collisions] == [("beta", "alpha", "search")]
        with pytest.raises(UnknownTool, match="already exposed by server 'alpha'"):
            registry.view.resolve_on("beta", "search")

        # Publishing the same lists again does not repeat the event.
        await registry.publish_tools("beta", 1, [tool("search", description="beta's"), tool("other")])
        assert "tool_collision" not in kinds(events)


async def test_the_holder_keeps_its_name_across_republish_and_restart():
    async with running_registry() as (registry, _):
        await registry.publish_tools("alpha", 1, [tool("search")])
        await registry.publish_tools("beta", 1, [tool("search")])
        await registry.set_available("alpha", False)
        assert registry.view.resolve("search").server == "alpha"  # down, still the holder
        await registry.publish_tools("beta", 2, [tool("search")])
        await registry.publish_tools("alpha", 2, [tool("search")])  # alpha back after a restart
        assert registry.view.resolve("search").server == "alpha"


async def test_prefix_avoids_the_collision():
    async with running_registry() as (registry, _):
        await registry.publish_tools("alpha", 1, [tool("search")])
        result = await registry.publish_tools("beta", 1, [tool("search")], namespace="prefix")
        assert result.refused == [] and result.exposed == ["beta__search"]
        assert {t.name for t in await registry.list_tools()} == {"search", "beta__search"}


async def test_withdrawing_the_holder_exposes_the_refused_tool_at_once_and_republish_keeps_it():
    async with running_registry() as (registry, events):
        await registry.publish_tools("alpha", 1, [tool("search")])
        await registry.publish_tools("beta", 1, [tool("search")])
        drain(events)
        await registry.withdraw("alpha")
        entry = registry.view.resolve("search")
        assert entry.server == "beta"
        changed = [e for e in drain(events) if e.kind == "tools_changed"]
        assert changed and changed[-1].data["changed"] == ["search"]
        assert (await registry.snapshot()).collisions == []

        # Re-publishing the second server keeps it exposed; alpha coming back is now refused.
        await registry.publish_tools("beta", 2, [tool("search")])
        assert registry.view.resolve("search").server == "beta"
        result = await registry.publish_tools("alpha", 1, [tool("search")])
        assert result.refused == ["search"]
        assert registry.view.resolve("search").server == "beta"


async def test_a_holder_that_stops_listing_the_tool_hands_it_over():
    async with running_registry() as (registry, _):
        await registry.publish_tools("alpha", 1, [tool("search"), tool("a_only")])
        await registry.publish_tools("beta", 1, [tool("search")])
        await registry.publish_tools("alpha", 2, [tool("a_only")])
        assert registry.view.resolve("search").server == "beta"


async def test_a_server_listing_a_tool_twice_exposes_the_first():
    async with running_registry() as (registry, _):
        result = await registry.publish_tools(
            "dup", 1, [tool("x", description="first"), tool("x", description="second")]
        )
        assert result.exposed == ["x"]
        assert registry.view.resolve("x").spec.description == "first"
        snap = await registry.snapshot()
        assert "more than once" in snap.collisions[0].message


# -- availability -----------------------------------------------------------------------


async def test_a_server_that_goes_down_stays_listed_marked_unavailable():
    async with running_registry() as (registry, events):
        await registry.publish_tools("alpha", 1, [tool("search")])
        drain(events)
        before = await registry.list_tools()
        await registry.ref.ask(ServerAvailability("alpha", False))
        assert await registry.list_tools() == before  # tools/list is stable across a restart
        assert registry.view.resolve("search").available is False
        assert await registry.list_tools(available_only=True) == []
        assert "tools_changed" not in kinds(events)
        snap = await registry.snapshot()
        assert snap.servers[0].available is False and snap.tools[0].available is False

        await registry.publish_tools("alpha", 2, [tool("search")])  # reconnected
        assert registry.view.resolve("search").available is True


async def test_withdraw_removes_the_tools_and_publishes_tools_changed():
    async with running_registry() as (registry, events):
        await registry.publish_tools("alpha", 1, [tool("search")])
        added = [e for e in drain(events) if e.kind == "tools_changed"]
        assert added[-1].data["added"] == ["search"]
        await registry.ref.ask(WithdrawServer("alpha"))
        assert len(registry.view) == 0
        removed = [e for e in drain(events) if e.kind == "tools_changed"]
        assert removed[-1].data["removed"] == ["search"]
        await registry.ref.ask(ServerAvailability("ghost", True))  # unknown: ignored
        await registry.withdraw("ghost")
        assert (await registry.snapshot()).servers == []


async def test_views_are_immutable_snapshots():
    async with running_registry() as (registry, _):
        await registry.publish_tools("alpha", 1, [tool("a")])
        old = registry.view
        await registry.publish_tools("alpha", 2, [tool("a"), tool("b")])
        assert "b" not in old and "b" in registry.view
        assert registry.view.generation > old.generation
        with pytest.raises(TypeError):
            old.entries["b"] = old.entries["a"]  # type: ignore[index]
        with pytest.raises(AttributeError):
            old.generation = 99  # type: ignore[misc]


# -- categories and toolsets -------------------------------------------------------------


async def test_category_by_config_first_then_by_metadata():
    async with running_registry() as (registry, _):
        await registry.publish_tools(
            "comfy",
            1,
            [
                tool("get_workflow", category="search"),  # config wins over metadata
                tool("search_nodes", category="node"),  # metadata
                tool("plain"),  # none
                tool("odd", category="astrology"),  # metadata category we do not know: ignored
            ],
            categories={"get_workflow": "workflow"},
        )
        view = registry.view
        assert view.resolve("get_workflow").category == "workflow"
        assert view.resolve("get_workflow").spec.category == "workflow"
        assert view.resolve("search_nodes").category == "node"
        assert view.resolve("plain").category is None
        assert view.resolve("odd").category is None
        snap = await registry.snapshot()
        assert "astrology" in snap.servers[0].problems["odd"]


def test_unknown_category_in_config_is_refused_naming_server_tool_and_allowed():
    with pytest.raises(ValueError) as info:
        PublishTools(server="comfy", version=1, tools=[tool("x")], categories={"x": "astrology"})
    text = str(info.value)
    assert "'comfy'" in text and "'x'" in text and "'astrology'" in text
    for category in CATEGORIES:
        assert category in text


async def test_unknown_category_smuggled_past_construction_is_refused_by_the_actor():
    async with running_registry() as (registry, _):
        bad = PublishTools(server="comfy", version=1, tools=[tool("x")])
        # What a decoder that skipped __post_init__ would hand over.
        msgspec.structs.force_setattr(bad, "categories", {"x": "astrology"})
        with pytest.raises(ValueError, match="astrology"):
            await registry.ref.ask(bad)
        assert await registry.list_tools() == []  # refused whole, actor still alive


def test_toolsets_are_checked_like_categories():
    with pytest.raises(ValueError, match="toolset 'vision' has unknown category 'pixels'"):
        Registry(toolsets={"vision": ["workflow", "pixels"]})
    with pytest.raises(ValueError, match="expected a list"):
        check_toolsets({"vision": "workflow"})


async def test_default_toolsets_are_the_seeds():
    assert dict(DEFAULT_TOOLSETS) == {
        "main": ("workflow", "search", "node"),
        "rewrite": ("workflow", "parameter", "validation"),
        "debug": ("analysis", "validation", "workflow"),
        "search": ("search", "node"),
    }
    async with running_registry() as (registry, _):
        await registry.publish_tools(
            "comfy",
            1,
            [tool(f"{c}_tool") for c in CATEGORIES],
            categories={f"{c}_tool": c for c in CATEGORIES},
        )
        names = lambda specs: [s.name for s in specs]  # noqa: E731
        assert names(await registry.list_tools("main")) == ["workflow_tool", "node_tool", "search_tool"]
        assert names(await registry.list_tools("rewrite")) == ["workflow_tool", "parameter_tool", "validation_tool"]
        assert names(await registry.list_tools("debug")) == ["workflow_tool", "validation_tool", "analysis_tool"]
        assert names(await registry.list_tools("search")) == ["node_tool", "search_tool"]
        assert names(registry.view.tools_for_agent("main")) == names(await registry.list_tools("main"))


async def test_custom_toolsets_add_to_the_defaults_and_list_by_category():
    async with running_registry(toolsets={"vision": ["analysis", "node"], "main": ["workflow"]}) as (registry, _):
        await registry.publish_tools(
            "comfy",
            1,
            [tool("w"), tool("n"), tool("a"), tool("s")],
            categories={"w": "workflow", "n": "node", "a": "analysis", "s": "search"},
            namespace="prefix",
        )
        assert [t.name for t in await registry.list_tools("vision")] == ["comfy__n", "comfy__a"]
        assert [t.name for t in await registry.list_tools("main")] == ["comfy__w"]  # replaced by name
        assert [t.name for t in await registry.list_tools("debug")] == ["comfy__w", "comfy__a"]  # default kept
        assert [t.name for t in await registry.ref.ask(ListTools(category="search"))] == ["comfy__s"]
        assert [t.name for t in await registry.list_tools("vision", "node")] == ["comfy__n"]
        assert await registry.list_tools("vision", "search") == []
        assert all(t.server == "comfy" and t.category for t in await registry.list_tools())
        with pytest.raises(ValueError, match="unknown toolset 'nope'.*vision"):
            await registry.list_tools("nope")
        with pytest.raises(ValueError, match="unknown category 'nope'"):
            await registry.list_tools(category="nope")
        snap = await registry.snapshot()
        assert snap.toolsets["vision"] == ["analysis", "node"]


async def test_listing_order_is_registration_order_then_each_servers_own_order():
    async with running_registry() as (registry, _):
        await registry.publish_tools("b", 1, [tool("b2"), tool("b1")])
        await registry.publish_tools("a", 1, [tool("a2"), tool("a1")])
        await registry.publish_tools("b", 2, [tool("b3"), tool("b2"), tool("b1")])
        assert [t.name for t in await registry.list_tools()] == ["b3", "b2", "b1", "a2", "a1"]


# -- argument validation ------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "mode": {"enum": ["fast", "slow"]},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        },
    },
    "required": ["count"],
    "additionalProperties": False,
}


async def published(registry, schema, name="t"):
    await registry.publish_tools("srv", 1, [tool(name, schema)])
    return registry.view.resolve(name)


def failure_of(entry, arguments) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as info:
        entry.validate(arguments)
    return info.value


async def test_valid_arguments_pass():
    async with running_registry() as (registry, _):
        entry = await published(registry, SCHEMA)
        entry.validate({"count": 3, "mode": "fast", "items": [{"name": "a"}]})
        (await published(registry, {"type": "object"}, "free")).validate(None)  # None counts as {}


@pytest.mark.parametrize(
    ("arguments", "path", "rule"),
    [
        ({}, "$.count", "'count' is a required property"),
        ({"count": "3"}, "$.count", "type: expected integer, got string"),
        ({"count": True}, "$.count", "type: expected integer, got boolean"),
        ({"count": 1, "mode": "medium"}, "$.mode", "enum: 'medium' is not one of ['fast', 'slow']"),
        (
            {"count": 1, "items": [{"name": "a"}, {"name": "b"}, {"name": 3}]},
            "$.items[2].name",
            "type: expected string, got integer",
        ),
        ({"count": 1, "items": [{"name": "a"}, {}]}, "$.items[1].name", "'name' is a required property"),
        ({"count": 1, "colour": "red"}, "$.colour", "property 'colour' is not allowed"),
    ],
)
async def test_validation_errors_name_the_field_and_the_rule(arguments, path, rule):
    async with running_registry() as (registry, _):
        entry = await published(registry, SCHEMA)
        failure = failure_of(entry, arguments)
        assert f"{path}: " in failure.message and rule in failure.message
        assert "'t'" in failure.message  # the tool
        first = failure.data["errors"][0]
        assert first["path"] == path and rule in first["message"]
        assert failure.data["server"] == "srv"
        assert failure.to_error().code == InvalidArguments.code


async def test_several_errors_best_match_first_and_capped():
    async with running_registry() as (registry, _):
        entry = await published(registry, SCHEMA)
        arguments = {"count": "x", "mode": "medium", "a": 1, "b": 2, "c": 3, "d": 4}
        failure = failure_of(entry, arguments)
        errors = failure.data["errors"]
        assert len(errors) == MAX_REPORTED_ERRORS and failure.data["more"] == 1
        assert "(and 1 more)" in failure.message
        paths = {e["path"] for e in errors}
        assert len(paths) == MAX_REPORTED_ERRORS
        # best_match first, as jsonschema ranks it
        best = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(arguments))
        assert errors[0]["keyword"] == best.validator


async def test_the_count_of_further_errors_is_no_lie_when_the_search_stopped_early():
    """Errors are looked for among jsonschema's first 50 only, and the message counted those
    as all: 60 wrong items read "(and 45 more)". Now a search cut short says "at least";
    one that found them all gives the exact count."""
    schema = {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}}}}
    async with running_registry() as (registry, _):
        entry = await published(registry, schema)
        failure = failure_of(entry, {"xs": ["a"] * 60})
        assert failure.message.endswith("(and at least 45 more)"), failure.message
        failure = failure_of(entry, {"xs": ["a"] * 20})
        assert failure.message.endswith("(and 15 more)") and failure.data["more"] == 15, failure.message


async def test_defs_and_ref_schemas_work():
    schema = {
        "type": "object",
        "$defs": {"node": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "properties": {"nodes": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["nodes"],
    }
    async with running_registry() as (registry, _):
        entry = await published(registry, schema)
        entry.validate({"nodes": [{"id": 1}, {"id": 2}]})
        failure = failure_of(entry, {"nodes": [{"id": 1}, {"id": "two"}]})
        assert "$.nodes[1].id: type: expected integer, got string" in failure.message


@pytest.mark.parametrize("uri", ["http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema"])
async def test_a_draft_07_schema_is_validated_as_draft_07(uri):
    # In draft 07, "definitions" + "$ref" and tuple-style "items" mean what they meant then.
    schema = {
        "$schema": uri,
        "type": "object",
        "definitions": {"size": {"type": "integer", "minimum": 1}},
        "properties": {"pair": {"type": "array", "items": [{"$ref": "#/definitions/size"}, {"type": "string"}]}},
    }
    async with running_registry() as (registry, _):
        entry = await published(registry, schema)
        assert entry.validator.validator_class == "Draft7Validator"
        entry.validate({"pair": [2, "x"]})
        failure = failure_of(entry, {"pair": [2, 3]})
        assert "$.pair[1]: type: expected string, got integer" in failure.message
        failure = failure_of(entry, {"pair": [0, "x"]})
        assert "$.pair[0]: minimum" in failure.message


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "no-such-type"},  # fails the metaschema
        {"type": "object", "properties": {"x": {"minimum": "zero"}}},
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}},  # fails only when used
    ],
)
async def test_a_broken_schema_does_not_crash_and_calls_go_through(schema, caplog):
    async with running_registry() as (registry, events):
        await registry.publish_tools("srv", 1, [tool("broken", schema), tool("fine", SCHEMA)])
        entry = registry.view.resolve("broken")
        entry.validate({"x": 1})  # let through, unvalidated
        entry.validate({"x": 2})
        assert not entry.validator.usable
        assert sum("calls go unvalidated" in r.getMessage() for r in caplog.records) == 1  # logged once
        snap = await registry.snapshot()
        assert "broken" in snap.servers[0].problems
        assert [t.validated for t in snap.tools] == [False, True]
        if "$ref" not in str(schema):
            assert "tool_schema_invalid" in kinds(events)
        # the rest of the registry is untouched
        with pytest.raises(InvalidArguments):
            registry.view.resolve("fine").validate({})
        await registry.publish_tools("srv", 2, [tool("broken", schema)])


async def test_a_remote_ref_is_never_fetched():
    """A ``$ref`` to a URL made jsonschema fetch it with a blocking ``urlopen`` (no timeout)
    inside the event loop, on the call path: a server's schema could stall every call (an
    address that never answers) or have the supervisor fetch any URL and validate against
    what came back. Now nothing is fetched: the ref is unresolvable, so the tool's calls go
    through unvalidated, as with any broken schema, and its problem names the ref."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/s.json"
    try:
        async with running_registry() as (registry, _):
            schema = {"type": "object", "properties": {"x": {"$ref": url}}}
            await registry.publish_tools("srv", 1, [tool("remote", schema)])
            entry = registry.view.resolve("remote")
            entry.validate({"x": 1})  # not checked against what the URL says
            assert hits == []
            assert not entry.validator.usable and url in entry.validator.problem
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _exponential_schema(depth: int) -> dict:
    """``x`` through ``depth`` levels of ``anyOf`` two refs to the next level: 2**depth paths."""
    defs = {f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}, {"$ref": f"#/$defs/l{i + 1}"}]} for i in range(depth)}
    defs[f"l{depth}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/l0"}}, "additionalProperties": False}


async def test_a_schema_that_walks_exponentially_many_refs_cannot_hold_the_loop(caplog):
    """Validation runs synchronously on the call path, and a 1.5 KB schema whose refs fan
    out (an ``anyOf`` of two refs to the next level, 40 levels) had jsonschema walk 2**40
    paths for a wrong ``x``: the event loop, every server's calls with it, froze for good
    (16 levels already took 10 s). Now a check follows at most ``REF_BUDGET`` refs: past
    that the call goes through unchecked (the server still judges it), logged once; an
    argument that passes or fails early is judged as before."""
    async with running_registry() as (registry, _):
        await registry.publish_tools("srv", 1, [tool("deep", _exponential_schema(40))])
        entry = registry.view.resolve("deep")
        entry.validate({"x": "text"})  # the first path matches at once
        with pytest.raises(InvalidArguments, match=r"\$\.y: additionalProperties"):
            entry.validate({"y": 1})  # fails without following a ref
        with trio.fail_after(60):  # the check cannot be interrupted: a thread we can stop waiting for
            for _ in range(2):
                await trio.to_thread.run_sync(entry.validate, {"x": 1}, abandon_on_cancel=True)
        assert entry.validator.usable  # not marked broken: the next call is checked again
        assert sum("$ref lookups" in r.getMessage() for r in caplog.records) == 1
        errors = await trio.to_thread.run_sync(entry.validator.errors, {"x": 1}, abandon_on_cancel=True)
        assert [(e.path, e.keyword) for e in errors] == [("$", "$ref")]


async def test_validators_are_compiled_once_per_tool_list_version():
    async with running_registry() as (registry, _):
        await registry.publish_tools("srv", 1, [tool("a", SCHEMA), tool("b", SCHEMA)])
        assert registry.schema_compilations == 2
        for _ in range(100):
            entry = registry.view.resolve("a")
            entry.validate({"count": 1})
            with pytest.raises(InvalidArguments):
                entry.validate({})
        await registry.publish_tools("srv", 1, [tool("a", SCHEMA), tool("b", SCHEMA)])  # same version
        await registry.set_available("srv", False)
        await registry.set_available("srv", True)
        await registry.publish_tools("other", 1, [tool("a", SCHEMA)])  # a collision: compiled, not exposed
        assert registry.schema_compilations == 3
        await registry.list_tools()
        await registry.snapshot()
        assert registry.schema_compilations == 3

        await registry.publish_tools("srv", 2, [tool("a", SCHEMA), tool("b", SCHEMA)])  # new version
        assert registry.schema_compilations == 5
        # A server that sends the same version with a changed schema is still recompiled.
        await registry.publish_tools("srv", 2, [tool("a", {"type": "object"}), tool("b", SCHEMA)])
        assert registry.schema_compilations == 6
        registry.view.resolve("a").validate({})


# -- unknown tools ------------------------------------------------------------------------


async def test_unknown_tool_suggests_close_names():
    async with running_registry() as (registry, _):
        await registry.publish_tools("comfy", 1, [tool("search_nodes"), tool("get_workflow")], namespace="prefix")
        with pytest.raises(UnknownTool, match=r"did you mean 'comfy__search_nodes'\?") as info:
            registry.view.resolve("comfy__search_node")
        assert info.value.data["suggestions"] == ["comfy__search_nodes"]
        # The bare name of a prefixed tool is suggested with its prefix.
        with pytest.raises(UnknownTool, match="did you mean 'comfy__get_workflow'"):
            registry.view.resolve("get_workflow")
        with pytest.raises(UnknownTool) as info:
            registry.view.resolve("zzz")
        assert "did you mean" not in info.value.message and info.value.data["tool"] == "zzz"
        with pytest.raises(UnknownTool, match="server 'comfy' offers no tool named 'search_node'.*'search_nodes'"):
            registry.view.resolve_on("comfy", "search_node")


def test_an_empty_view_knows_no_tools():
    view = RegistryView()
    assert len(view) == 0 and view.get("x") is None
    with pytest.raises(UnknownTool, match="no running server offers a tool named 'x'"):
        view.resolve("x")


# -- the actor ---------------------------------------------------------------------------


async def test_snapshot_is_a_msgspec_struct_that_encodes():
    async with running_registry() as (registry, _):
        await registry.publish_tools("alpha", 7, [tool("a", category="node")], namespace="prefix")
        snap = await registry.ref.ask(Snapshot())
        assert isinstance(snap, RegistrySnapshot)
        decoded = msgspec.json.decode(msgspec.json.encode(snap), type=RegistrySnapshot)
        assert decoded == snap
        assert decoded.servers[0].version == 7 and decoded.tools[0].name == "alpha__a"
        assert registry.status()["tools"] == 1


async def test_a_bad_message_is_refused_and_the_actor_lives():
    async with running_registry() as (registry, _):
        with pytest.raises(TypeError, match="does not understand"):
            await registry.ref.ask("hello")
        await registry.ref.tell("hello")  # a tell is logged and dropped
        await registry.publish_tools("alpha", 1, [tool("a")])
        assert "a" in registry.view


async def test_a_restarted_run_keeps_the_table():
    registry = Registry()
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await registry.publish_tools("alpha", 1, [tool("a")])
        registry.stop()
    assert not registry.ref.alive
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        assert registry.ref.alive and "a" in registry.view
        assert [t.name for t in await registry.list_tools()] == ["a"]
        nursery.cancel_scope.cancel()


async def test_messages_encode_at_the_edges():
    msg = PublishTools(server="s", version=1, tools=[tool("a")], namespace="prefix", categories={"a": "node"})
    assert msgspec.json.decode(msgspec.json.encode(msg), type=PublishTools) == msg
    with pytest.raises(msgspec.ValidationError, match="unknown category"):
        msgspec.json.decode(b'{"server":"s","version":1,"tools":[],"categories":{"a":"x"}}', type=PublishTools)


# -- a property: nothing is ever silently shadowed ------------------------------------------

SERVERS = ("a", "b", "c")
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("publish"),
            st.sampled_from(SERVERS),
            st.lists(st.sampled_from(("x", "y", "a__x", "z")), max_size=4),
            st.sampled_from(("prefix", "none")),
        ),
        st.tuples(st.just("down"), st.sampled_from(SERVERS)),
        st.tuples(st.just("withdraw"), st.sampled_from(SERVERS)),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(ops=operations)
async def test_every_published_tool_is_exposed_or_refused_and_holders_keep_their_names(ops):
    published: dict[str, tuple[list[str], str]] = {}
    async with running_registry() as (registry, _):
        for version, op in enumerate(ops):
            before = registry.view
            if op[0] == "publish":
                _, server, names, namespace = op
                await registry.publish_tools(server, version, [tool(n) for n in names], namespace=namespace)
                published[server] = (names, namespace)
            elif op[0] == "down":
                await registry.set_available(op[1], False)
            else:
                await registry.withdraw(op[1])
                published.pop(op[1], None)
            view = registry.view
            snap = await registry.snapshot()
            refused = {(c.server, c.tool) for c in snap.collisions}
            for server, (names, namespace) in published.items():
                for name in names:
                    exposed = name if namespace == "none" else f"{server}__{name}"
                    entry = view.get(exposed)
                    assert entry is not None  # someone holds every claimed name
                    mine = entry.server == server and entry.tool_name == name
                    assert mine or (server, name) in refused, (server, name, entry)
            # A name changes hands only when its holder no longer claims it.
            for name, old in before.entries.items():
                still_claimed = old.server in published and old.tool_name in published[old.server][0] and (
                    name == (old.tool_name if published[old.server][1] == "none" else f"{old.server}__{old.tool_name}")
                )
                if still_claimed:
                    assert (view.resolve(name).server, view.resolve(name).tool_name) == (old.server, old.tool_name)
