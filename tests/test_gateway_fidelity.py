"""Gateway fidelity (issue #8): everything an MCP server says reaches the client intact through
the daemon.

`observe(client)` drives every feature of ``tests/servers/everything.py`` and returns a
JSON-comparable transcript of what the client saw. It runs twice per protocol era, once
directly against the fixture and once through ``python -m supervisor run --stdio`` fronting it
(bare names: namespace "none"); the two transcripts must be equal once the direct one is mapped
by `expected_through_daemon`, the documented differences:

- a log line's ``logger`` gains the server's name: ``"<server>/<logger>"`` (just ``"<server>"``
  when the upstream gave none); its level and data are unchanged. A client of an aggregating
  gateway cannot otherwise tell which server spoke.
- an elicitation's ``requestedSchema`` has no top-level ``title``/``description`` (see
  `ELICITATION_SCHEMA_KEYS_LOST_UPSTREAM`): the daemon talks to its upstream at 2026-07-28,
  where the SDK drops them, whatever era the front client speaks.
- nothing else: tool lists and schemas, results (content, structured content, ``_meta``,
  ``isError``), the questions a server asks (sampling, elicitation, roots) and the answers,
  progress, completions, resources and their updates, list changes, JSON-RPC errors (code,
  message, data) and the server capabilities that announce them pass through unchanged. The
  one field left out of every comparison is the ``serverInfo`` stamp in a result's ``_meta``
  (the gateway stamps its own).

Eras: the SDK ``Client`` chooses ``mode="auto"`` (2026-07-28: questions travel as
``InputRequiredResult`` rounds, logs need the per-request ``_meta`` opt-in, subscriptions go
through ``subscriptions/listen``) or ``mode="legacy"`` (the initialize handshake at 2025-11-25:
questions are server->client requests mid-call, ``logging/setLevel``, ``resources/subscribe``).
It cannot pick an older handshake version, so 2025-11-25 stands for the handshake era.

The twin runs go through a ``--stdio`` daemon started for each. The small tests after them
each check one feature, so a failure names it, through one daemon over streamable HTTP shared
by the module (so both front transports are covered). Every wait has a deadline; every daemon
and fixture process carries a /proc marker and none may remain once its test (or, for the
shared daemon, the module) is done.
"""

import json
import socket
import sys
import time
import uuid
from difflib import unified_diff
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.subscriptions import ResourceUpdated

from conftest import SERVERS, procs_with_marker, wait_until
from test_daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = SERVERS / "everything.py"
SERVER_NAME = "everything"
ERAS = {"modern": "auto", "handshake": "legacy"}
NOTIFICATION_WAIT = 20.0
"""How long to wait for a notification that should arrive (s): what has arrived by then is
recorded. A deadline, not an expectation: each wait ends as soon as what it waits for has
come, so it is sized for a loaded machine (it was 2 s, which a busy CI overran)."""

ROOTS = [types.Root(uri="file:///tmp/fidelity-root", name="fidelity root")]
COUNTER = "state://counter"
SENTINEL = "notes://alpha"
QUESTION = "What is your favourite colour?"

# logging, ping and subscribe are the handshake era's API, deprecated at 2026-07-28.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


ELICITATION_SCHEMA_KEYS_LOST_UPSTREAM = ("title", "description")
"""Top-level keys of an elicitation's ``requestedSchema`` that the SDK drops when it parses the
question at 2026-07-28 (its ``RequestedSchema`` ignores extra keys). The daemon's upstream
connection speaks 2026-07-28, so a handshake-era front never sees them through the daemon."""


def daemon_logger(server: str, logger: str | None) -> str:
    """The logger name a client sees for a line an upstream logged as ``logger`` (see module docstring)."""
    return f"{server}/{logger}" if logger else server


CHANGE_NOTIFICATIONS = (
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
)


# -- the client's side: callbacks that record what they were asked --------------------------


class Recorder:
    """The client's callbacks. Each records what it was given and answers deterministically:
    sampling echoes the last user text, elicitation accepts (or declines/cancels when the
    message says ``[decline]``/``[cancel]``), roots lists `ROOTS`."""

    def __init__(self) -> None:
        self.questions: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.changed = trio.Event()

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate, timeout: float = NOTIFICATION_WAIT) -> bool:
        """Wait until ``predicate()`` holds or ``timeout`` passes; True if it holds."""
        with trio.move_on_after(timeout):
            while not predicate():
                await self.changed.wait()
        return bool(predicate())

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.questions.append({"sampling": dump(params)})
        last = params.messages[-1].content
        text = getattr(last, "text", "?")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"model says: {text}"),
            model="fidelity-model",
            stop_reason="endTurn",
        )

    async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.questions.append({"elicitation": dump(params)})
        if "[decline]" in params.message:
            return types.ElicitResult(action="decline")
        if "[cancel]" in params.message:
            return types.ElicitResult(action="cancel")
        return types.ElicitResult(action="accept", content={"colour": "teal", "count": 3, "sure": True})

    async def list_roots(self, context: Any) -> types.ListRootsResult:
        self.questions.append({"roots": "roots/list"})
        return types.ListRootsResult(roots=ROOTS)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append({"level": params.level, "logger": params.logger, "data": params.data})
        self._note()

    async def message(self, message: Any) -> None:
        """Handshake-era change notifications (2026-07-28 ones arrive on listen streams)."""
        if isinstance(message, Exception):
            self.notifications.append({"exception": f"{type(message).__name__}: {message}"})
        else:
            root = getattr(message, "root", message)
            method = getattr(root, "method", None)
            if method in CHANGE_NOTIFICATIONS:
                uri = getattr(getattr(root, "params", None), "uri", None)
                self.notifications.append({"method": method, **({"uri": str(uri)} if uri else {})})
        self._note()

    def client(self, params: StdioServerParameters | str, era: str, **overrides: Any) -> Client:
        """An SDK client with every callback installed (``overrides`` replaces some)."""
        kwargs: dict[str, Any] = dict(
            mode=ERAS[era],
            sampling_callback=self.sampling,
            elicitation_callback=self.elicitation,
            list_roots_callback=self.list_roots,
            logging_callback=self.log,
            message_handler=self.message,
            log_level="info" if era == "modern" else None,
            cache=None,
        )
        kwargs.update(overrides)
        return Client(params, **kwargs)


# -- normalization ------------------------------------------------------------------------------


def dump(model: Any) -> Any:
    """A model as JSON-comparable data (wire names, no nulls), without the serverInfo stamp."""
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(data, dict) and isinstance(data.get("_meta"), dict):
        data["_meta"].pop(types.SERVER_INFO_META_KEY, None)
        if not data["_meta"]:
            del data["_meta"]
    return data


def error_of(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MCPError):
        out: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            out["data"] = exc.data
        return {"error": out}
    return {"exception": f"{type(exc).__name__}: {exc}"}


async def attempt(make) -> Any:
    """``await make()`` dumped, or the error it raised (MCPError: code, message, data)."""
    try:
        value = await make()
    except (MCPError, RuntimeError, ValueError, TimeoutError) as exc:
        return error_of(exc)
    return dump(value) if hasattr(value, "model_dump") else value


def by_name(items: list[dict[str, Any]], key: str = "name") -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: str(item.get(key)))


CAPABILITY_KEYS = ("tools", "prompts", "resources", "logging", "completions")


# -- the observation -----------------------------------------------------------------------------


async def observe(client: Client, recorder: Recorder, era: str) -> dict[str, Any]:
    """Run every check against a connected client; return what it saw, normalized.

    Each step records its value or its error, so one missing feature shows up as one
    difference rather than stopping the run.
    """
    seen: dict[str, Any] = {"protocol_version": client.protocol_version}
    caps = dump(client.server_capabilities)
    seen["capabilities"] = {k: caps.get(k) for k in CAPABILITY_KEYS}

    if era == "handshake":
        seen["set_logging_level"] = await attempt(lambda: client.set_logging_level("info"))
        seen["ping"] = await attempt(client.send_ping)

    tools = await client.list_tools(cache_mode="bypass")
    seen["tools"] = by_name([dump(t) for t in tools.tools])
    seen["prompts"] = by_name([dump(p) for p in (await client.list_prompts(cache_mode="bypass")).prompts])
    seen["resources"] = by_name(
        [dump(r) for r in (await client.list_resources(cache_mode="bypass")).resources], "uri"
    )
    seen["resource_templates"] = by_name(
        [dump(t) for t in (await client.list_resource_templates(cache_mode="bypass")).resource_templates], "uriTemplate"
    )

    calls: dict[str, Any] = {}

    async def call(label: str, name: str, arguments: dict[str, Any], **kwargs: Any) -> None:
        calls[label] = await attempt(lambda: client.call_tool(name, arguments, **kwargs))

    # Questions to the client.
    await call("sampling", "ask_sampling", {"prompt": "say hi"})
    await call("elicitation_accept", "ask_elicitation", {"question": QUESTION})
    await call("elicitation_decline", "ask_elicitation", {"question": "Share a secret? [decline]"})
    await call("elicitation_cancel", "ask_elicitation", {"question": "Go on? [cancel]"})
    await call("roots", "ask_roots", {})
    seen["questions"] = list(recorder.questions)

    # Logs: info and above (the modern client opts in at "info"; the handshake one set it).
    await call("log_levels", "log_levels", {"tag": "t1"})
    await recorder.wait_for(lambda: any(line["level"] == "error" for line in recorder.logs))
    seen["logs"] = list(recorder.logs)

    # Progress.
    progress: list[list[Any]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append([value, total, message])

    await call("progress", "progress_steps", {"steps": 3}, progress_callback=on_progress)
    with trio.move_on_after(NOTIFICATION_WAIT):
        while len(progress) < 3:
            await trio.sleep(0.01)
    seen["progress"] = progress

    # Results of every shape, and errors.
    await call("all_content", "all_content", {})
    await call("own_error", "own_error", {"message": "mine"})
    await call("tool_error", "tool_error", {"message": "raised"})
    await call("jsonrpc_error", "jsonrpc_error", {"code": -32050, "message": "custom failure"})
    order = {
        "customer": {"name": "Ada", "address": {"street": "1 Loop", "city": "Turing"}},
        "items": [{"sku": "ABC-1", "quantity": 2}, {"sku": "XYZ-22", "quantity": 5}],
    }
    await call("place_order", "place_order", {"order": order})
    seen["calls"] = calls

    # Prompts, completions, resources.
    seen["prompt"] = await attempt(lambda: client.get_prompt("recipe", {"dish": "pasta", "style": "spicy"}))
    prompt_ref = types.PromptReference(type="ref/prompt", name="recipe")
    template_ref = types.ResourceTemplateReference(type="ref/resource", uri="notes://{topic}")
    seen["completions"] = {
        "prompt": await attempt(lambda: client.complete(prompt_ref, {"name": "dish", "value": "pa"})),
        "prompt_with_context": await attempt(
            lambda: client.complete(prompt_ref, {"name": "dish", "value": "pa"}, {"style": "sweet"})
        ),
        "template": await attempt(lambda: client.complete(template_ref, {"name": "topic", "value": "al"})),
    }
    seen["reads"] = {
        uri: await attempt(lambda uri=uri: client.read_resource(uri, cache_mode="bypass"))
        for uri in ("static://hello", "static://blob", COUNTER, SENTINEL)
    }

    seen["subscription"] = await (observe_listen(client) if era == "modern" else observe_subscribe(client, recorder))
    seen["counter_after"] = await attempt(lambda: client.read_resource(COUNTER, cache_mode="bypass"))
    seen["list_changes"] = await (
        observe_list_changes_listen(client) if era == "modern" else observe_list_changes_legacy(client, recorder)
    )
    return seen


async def observe_subscribe(client: Client, recorder: Recorder) -> dict[str, Any]:
    """Handshake era: subscribe, touch, get the update; then subscribe a sentinel URI,
    unsubscribe, touch both: the updates, in order, once the sentinel's has come, must be
    exactly one for the counter then one for the sentinel (none for the unsubscribed counter,
    no duplicates)."""
    recorder.notifications.clear()
    updates = lambda: [n.get("uri") for n in recorder.notifications if n.get("method") == "notifications/resources/updated"]
    out: dict[str, Any] = {"subscribe": await attempt(lambda: client.subscribe_resource(COUNTER))}
    out["touch"] = await attempt(lambda: client.call_tool("touch", {"uri": COUNTER}))
    await recorder.wait_for(lambda: COUNTER in updates())
    out["subscribe_sentinel"] = await attempt(lambda: client.subscribe_resource(SENTINEL))
    out["unsubscribe"] = await attempt(lambda: client.unsubscribe_resource(COUNTER))
    out["touch_after_unsubscribe"] = await attempt(lambda: client.call_tool("touch", {"uri": COUNTER}))
    out["touch_sentinel"] = await attempt(lambda: client.call_tool("touch", {"uri": SENTINEL}))
    await recorder.wait_for(lambda: SENTINEL in updates())
    out["updates"] = updates()
    return out


async def next_events(subscription: Any, count: int) -> list[Any]:
    """Up to ``count`` events from a listen stream, whatever arrives within the wait."""
    events: list[Any] = []
    with trio.move_on_after(NOTIFICATION_WAIT):
        while len(events) < count:
            events.append(await subscription.__anext__())
    return events


def event_record(event: Any) -> dict[str, Any]:
    return {"event": type(event).__name__, **({"uri": event.uri} if isinstance(event, ResourceUpdated) else {})}


async def observe_listen(client: Client) -> dict[str, Any]:
    """2026-07-28: a listen stream on the counter sees its update; then one on the sentinel
    only sees the sentinel's, not the counter's (touched first)."""
    out: dict[str, Any] = {}
    updates: list[str] = []
    try:
        async with client.listen(resource_subscriptions=[COUNTER]) as subscription:
            out["honored"] = dump(subscription.honored)
            out["touch"] = await attempt(lambda: client.call_tool("touch", {"uri": COUNTER}))
            updates += [event_record(e).get("uri", repr(e)) for e in await next_events(subscription, 1)]
        async with client.listen(resource_subscriptions=[SENTINEL]) as subscription:
            out["touch_after_unsubscribe"] = await attempt(lambda: client.call_tool("touch", {"uri": COUNTER}))
            out["touch_sentinel"] = await attempt(lambda: client.call_tool("touch", {"uri": SENTINEL}))
            updates += [event_record(e).get("uri", repr(e)) for e in await next_events(subscription, 1)]
    except (MCPError, RuntimeError, TimeoutError) as exc:
        out["listen"] = error_of(exc)
    out["updates"] = updates
    return out


async def lists_now(client: Client) -> dict[str, Any]:
    return {
        "tools": sorted(t.name for t in (await client.list_tools(cache_mode="bypass")).tools),
        "prompts": sorted(p.name for p in (await client.list_prompts(cache_mode="bypass")).prompts),
        "resources": sorted(str(r.uri) for r in (await client.list_resources(cache_mode="bypass")).resources),
    }


async def observe_list_changes_legacy(client: Client, recorder: Recorder, name: str = "grown") -> dict[str, Any]:
    """Handshake era: mutate_lists, then the three list_changed notifications and the new lists."""
    recorder.notifications.clear()
    out: dict[str, Any] = {"mutate": await attempt(lambda: client.call_tool("mutate_lists", {"name": name}))}
    changed = lambda: sorted({n["method"] for n in recorder.notifications if n.get("method", "").endswith("list_changed")})
    await recorder.wait_for(lambda: len(changed()) >= 3)
    out["notified"] = changed()
    # The gateway may learn the new lists after announcing; give it the same wait.
    await wait_for_list(client, name)
    out["lists"] = await lists_now(client)
    return out


async def observe_list_changes_listen(client: Client, name: str = "grown") -> dict[str, Any]:
    """2026-07-28: mutate_lists under a listen stream for all three lists: the events and the new lists."""
    out: dict[str, Any] = {}
    try:
        async with client.listen(
            tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True
        ) as subscription:
            out["honored"] = dump(subscription.honored)
            out["mutate"] = await attempt(lambda: client.call_tool("mutate_lists", {"name": name}))
            kinds: set[str] = set()
            with trio.move_on_after(NOTIFICATION_WAIT):
                while len(kinds) < 3:  # a kind may come twice (level triggers): wait for all three
                    kinds.add(event_record(await subscription.__anext__())["event"])
            out["notified"] = sorted(kinds)
    except (MCPError, RuntimeError, TimeoutError) as exc:
        out["listen"] = error_of(exc)
    await wait_for_list(client, name)
    out["lists"] = await lists_now(client)
    return out


async def wait_for_list(client: Client, name: str) -> None:
    """Wait (bounded) until the tool ``name`` is listed; the lists are recorded either way."""
    with trio.move_on_after(NOTIFICATION_WAIT):
        while name not in (await lists_now(client))["tools"]:
            await trio.sleep(0.05)


def expected_through_daemon(direct: dict[str, Any]) -> dict[str, Any]:
    """What the client should see through the daemon, given what it saw directly (the mapping
    the module docstring documents)."""
    expected = json.loads(json.dumps(direct))
    for line in expected["logs"]:
        line["logger"] = daemon_logger(SERVER_NAME, line["logger"])
    for question in expected["questions"]:
        if "elicitation" in question:
            schema = question["elicitation"]["requestedSchema"]
            for key in ELICITATION_SCHEMA_KEYS_LOST_UPSTREAM:
                schema.pop(key, None)
    return expected


def transcript_diff(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    """A unified diff of two transcripts, each pretty-printed with sorted keys."""
    a = json.dumps(expected, indent=1, sort_keys=True).splitlines()
    b = json.dumps(actual, indent=1, sort_keys=True).splitlines()
    return "\n".join(unified_diff(a, b, "direct (mapped)", "through the daemon", lineterm="", n=2))


# -- processes -------------------------------------------------------------------------------------


def new_marker(what: str) -> str:
    return f"fidelity-{what}-{uuid.uuid4().hex[:12]}"


def direct_params(marker: str) -> StdioServerParameters:
    """The fixture server as the client's own subprocess."""
    return StdioServerParameters(command=sys.executable, args=[str(EVERYTHING)], env={"MCP_TEST_MARKER": marker})


def daemon_params(tmp_path: Path, marker: str) -> StdioServerParameters:
    """``python -m supervisor run --stdio`` fronting the fixture server (bare names); the daemon
    and the fixture both carry ``marker``."""
    entry = {"command": sys.executable, "args": [str(EVERYTHING)], "env": {"MCP_TEST_MARKER": marker}}
    config = tmp_path / f"everything-{uuid.uuid4().hex[:6]}.json"
    config.write_text(json.dumps({"mcpServers": {SERVER_NAME: entry}}))
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "supervisor", "run", "--stdio", "--config", str(config)],
        cwd=str(ROOT),
        env={"MCP_TEST_MARKER": marker},
    )


async def assert_no_orphans(marker: str) -> None:
    await wait_until(lambda: not procs_with_marker(marker), timeout=10, what=f"processes marked {marker} to exit")


async def run_observation(params: StdioServerParameters, era: str, marker: str) -> dict[str, Any]:
    recorder = Recorder()
    with trio.fail_after(120):
        async with recorder.client(params, era) as client:
            seen = await observe(client, recorder, era)
    await assert_no_orphans(marker)
    return seen


# -- the twin run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def direct_transcripts() -> dict[str, dict[str, Any]]:
    """Per era, the transcript of the direct run (computed once, by the first test that needs it)."""
    return {}


async def direct_transcript(era: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if era not in cache:
        marker = new_marker("direct")
        cache[era] = await run_observation(direct_params(marker), era, marker)
    return cache[era]


@pytest.mark.parametrize("era", list(ERAS))
async def test_direct_run_sees_every_feature(era, direct_transcripts):
    """The fixture itself, with no daemon in between, does everything it claims: this is the
    reference the daemon is held to, so it must be complete."""
    seen = await direct_transcript(era, direct_transcripts)
    calls = seen["calls"]

    assert json.loads(calls["sampling"]["structuredContent"]["result"])["content"]["text"] == "model says: say hi"
    assert calls["elicitation_accept"]["structuredContent"]["result"].startswith("accept ")
    assert json.loads(calls["elicitation_accept"]["structuredContent"]["result"][len("accept "):]) == {
        "colour": "teal", "count": 3, "sure": True,
    }
    assert calls["elicitation_decline"]["structuredContent"]["result"] == "decline"
    assert calls["elicitation_cancel"]["structuredContent"]["result"] == "cancel"
    assert json.loads(calls["roots"]["structuredContent"]["result"])["roots"][0]["uri"] == str(ROOTS[0].uri)
    kinds = [q and next(iter(q)) for q in seen["questions"]]
    assert kinds == ["sampling", "elicitation", "elicitation", "elicitation", "roots"], seen["questions"]

    assert [(line["level"], line["logger"]) for line in seen["logs"]] == [
        ("info", "everything.logs"), ("warning", "everything.logs"), ("error", "everything.logs"),
    ], seen["logs"]
    assert seen["logs"][1]["data"] == {"tag": "t1", "detail": "warning data is an object", "n": [1, 2]}
    assert seen["progress"] == [[1, 3, "step 1/3"], [2, 3, "step 2/3"], [3, 3, "step 3/3"]]

    content = calls["all_content"]
    assert [block["type"] for block in content["content"]] == [
        "text", "image", "audio", "resource", "resource", "resource_link",
    ]
    assert content["structuredContent"] == {"kinds": [b["type"] for b in content["content"]], "count": 6}
    assert content["_meta"] == {"io.github.fixture/trace": {"step": 1, "ok": True}}
    assert calls["own_error"]["isError"] and calls["own_error"]["_meta"]
    assert calls["tool_error"]["isError"] and "raised" in calls["tool_error"]["content"][0]["text"]
    assert calls["jsonrpc_error"] == {"error": {"code": -32050, "message": "custom failure", "data": {
        "hint": "raised on purpose", "nested": {"list": [1, 2, 3], "flag": True}}}}
    assert calls["place_order"]["structuredContent"] == {"customer": "Ada", "lines": 2, "units": 7}
    place_order = next(t for t in seen["tools"] if t["name"] == "place_order")
    assert place_order["inputSchema"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    assert seen["completions"]["prompt"]["completion"]["values"] == ["pancakes", "paella", "pasta", "pavlova"]
    assert seen["completions"]["prompt_with_context"]["completion"]["values"] == ["pancakes", "pavlova"]
    assert seen["completions"]["template"]["completion"]["values"] == ["alpha", "alps"]
    assert seen["reads"]["static://blob"]["contents"][0]["blob"] == "AAEC/w=="

    assert seen["subscription"]["updates"] == [COUNTER, SENTINEL], seen["subscription"]
    assert seen["counter_after"]["contents"][0]["text"] == "version=2"
    changes = seen["list_changes"]
    assert len(changes["notified"]) == 3, changes
    assert "grown" in changes["lists"]["tools"] and "grown" in changes["lists"]["prompts"]
    assert "dyn://grown" in changes["lists"]["resources"]
    if era == "handshake":
        assert seen["ping"] == {} and seen["set_logging_level"] == {}
    assert seen["capabilities"]["completions"] is not None


@pytest.mark.parametrize("era", list(ERAS))
async def test_daemon_transcript_equals_direct(era, direct_transcripts, tmp_path):
    """Twin run: the client sees through the daemon exactly what it sees directly (mapped by
    `expected_through_daemon`)."""
    expected = expected_through_daemon(await direct_transcript(era, direct_transcripts))
    marker = new_marker("daemon")
    actual = await run_observation(daemon_params(tmp_path, marker), era, marker)
    if actual != expected:
        raise AssertionError("through the daemon differs from direct:\n" + transcript_diff(expected, actual))


# -- one feature at a time, through the daemon -------------------------------------------------------


def everything_daemon(tmp: Path, what: str) -> tuple[Daemon, str]:
    """A daemon (started, not yet healthy) over streamable HTTP fronting the fixture, and
    the /proc marker its fixture process carries."""
    marker = new_marker(what)
    entry = {"command": sys.executable, "args": [str(EVERYTHING)], "env": {"MCP_TEST_MARKER": marker}}
    config = tmp / "everything.json"
    config.write_text(json.dumps({"mcpServers": {SERVER_NAME: entry}}))
    return Daemon(config, tmp), marker


@pytest.fixture(scope="module")
def http_daemon(tmp_path_factory):
    """One daemon over streamable HTTP fronting the fixture, shared by the one-feature tests
    (they leave it as they found it, or use names of their own). At teardown it is stopped
    and no process it started may remain."""
    daemon, marker = everything_daemon(tmp_path_factory.mktemp("fidelity"), "http")
    try:
        daemon.wait_healthy_sync()
        yield daemon
    finally:
        daemon.stop()
    deadline = time.monotonic() + 10
    while procs_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs_with_marker(marker), f"left running: {procs_with_marker(marker)}"


class Through:
    """A client of the shared HTTP daemon (`http_daemon`), with its own recorder."""

    def __init__(self, daemon: Daemon, era: str, **overrides: Any) -> None:
        self.recorder = Recorder()
        self.era = era
        self.client = self.recorder.client(daemon.url + "/mcp", era, **overrides)

    async def __aenter__(self) -> "Through":
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)


def result_text(result: types.CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def test_sampling_request_is_relayed_to_the_calling_client(http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            result = await t.client.call_tool("ask_sampling", {"prompt": "relay me"})
            assert not result.is_error, result_text(result)
            answer = json.loads(result.structured_content["result"])
            assert answer["content"]["text"] == "model says: relay me" and answer["model"] == "fidelity-model"
            [question] = t.recorder.questions
            assert question["sampling"]["messages"][0]["content"]["text"] == "relay me"
            assert question["sampling"]["maxTokens"] == 64 and question["sampling"]["metadata"] == {"fixture": "everything"}


@pytest.mark.parametrize("era", list(ERAS))
async def test_elicitation_and_roots_are_relayed(era, http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, era) as t:
            accepted = await t.client.call_tool("ask_elicitation", {"question": QUESTION})
            assert result_text(accepted).startswith("accept "), result_text(accepted)
            declined = await t.client.call_tool("ask_elicitation", {"question": "Tell? [decline]"})
            assert result_text(declined) == "decline"
            roots = await t.client.call_tool("ask_roots", {})
            assert json.loads(result_text(roots))["roots"] == [r.model_dump(mode="json", exclude_none=True) for r in ROOTS]
            asked = [next(iter(q)) for q in t.recorder.questions]
            assert asked == ["elicitation", "elicitation", "roots"]
            assert t.recorder.questions[0]["elicitation"]["message"] == QUESTION
            assert set(t.recorder.questions[0]["elicitation"]["requestedSchema"]["properties"]) == {"colour", "count", "sure"}


@pytest.mark.parametrize("era", list(ERAS))
async def test_elicitation_without_client_support_is_declined_with_the_question(era, http_daemon):
    """A front client with no elicitation callback: the upstream's question is refused, and what
    the client gets (a JSON-RPC error or an isError result) says it was an elicitation and what
    was asked."""
    with trio.fail_after(120):
        async with Through(http_daemon, era, elicitation_callback=None) as t:
            try:
                result = await t.client.call_tool("ask_elicitation", {"question": QUESTION})
            except MCPError as exc:
                said = exc.message if exc.data is None else f"{exc.message} {json.dumps(exc.data)}"
            else:
                assert result.is_error, f"the call succeeded without an answer: {result_text(result)}"
                said = result_text(result)
            assert "elicitation" in said.lower() and QUESTION in said, said
            assert t.recorder.questions == []


async def test_log_messages_reach_the_client_with_the_server_named(http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            await t.client.call_tool("log_levels", {"tag": "named"})
            await t.recorder.wait_for(lambda: len(t.recorder.logs) >= 3)
            assert [(line["level"], line["logger"]) for line in t.recorder.logs] == [
                (level, daemon_logger(SERVER_NAME, "everything.logs")) for level in ("info", "warning", "error")
            ], t.recorder.logs
            assert t.recorder.logs[0]["data"] == "named: info line"


async def test_log_level_set_by_a_handshake_client_applies_upstream(http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, "handshake") as t:
            await t.client.set_logging_level("warning")
            await t.client.call_tool("log_levels", {"tag": "lvl"})
            await t.recorder.wait_for(lambda: any(line["level"] == "error" for line in t.recorder.logs))
            assert [line["level"] for line in t.recorder.logs] == ["warning", "error"], t.recorder.logs


async def test_progress_passes_through(http_daemon):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            await t.client.call_tool("progress_steps", {"steps": 4}, progress_callback=on_progress)
            with trio.move_on_after(NOTIFICATION_WAIT):
                while len(progress) < 4:
                    await trio.sleep(0.01)
    assert progress == [(i, 4, f"step {i}/4") for i in range(1, 5)]


async def test_completion_passes_through(http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, "handshake") as t:
            assert t.client.server_capabilities.completions is not None, "completions not advertised"
            prompt = await t.client.complete(
                types.PromptReference(type="ref/prompt", name="recipe"), {"name": "dish", "value": "pa"}, {"style": "savoury"}
            )
            assert prompt.completion.values == ["paella", "pasta"]
            template = await t.client.complete(
                types.ResourceTemplateReference(type="ref/resource", uri="notes://{topic}"), {"name": "topic", "value": "g"}
            )
            assert template.completion.values == ["gamma"] and template.completion.total == 1


async def test_a_clients_log_lines_never_reach_another_client(http_daemon):
    """A log line goes to the client whose call caused it, but nothing on the wire says
    which call that is: it went to every client with a call in flight on that server. B,
    waiting on its own slow call, got all of A's lines. Now a line is relayed only when the
    calls in flight that want it are one client's; with two clients' calls in flight, it
    reaches neither (only the daemon's log)."""

    class SlowToAnswer(Recorder):
        async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
            self.questions.append({"elicitation": dump(params)})
            await trio.sleep(3)
            return types.ElicitResult(action="decline")

    with trio.fail_after(120):
        async with Through(http_daemon, "handshake") as a:
            b_recorder = SlowToAnswer()
            async with b_recorder.client(http_daemon.url + "/mcp", "handshake") as b:
                await a.client.call_tool("log_levels", {"tag": "alone"})  # A's only: A gets them
                assert await a.recorder.wait_for(lambda: len(a.recorder.logs) == 4), a.recorder.logs
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(b.call_tool, "ask_elicitation", {"question": "slow"})
                    await wait_until(lambda: b_recorder.questions, what="B's call waiting on B")
                    await a.client.call_tool("log_levels", {"tag": "A-SECRET"})
            assert not any("A-SECRET" in json.dumps(line) for line in b_recorder.logs), b_recorder.logs
            assert [line["data"] for line in a.recorder.logs][:1] == ["alone: debug line"]


async def test_resource_subscription_gets_updates(http_daemon):
    """Handshake era: resources/subscribe through the daemon, then touch: the update arrives."""
    with trio.fail_after(120):
        async with Through(http_daemon, "handshake") as t:
            before = (await t.client.read_resource(COUNTER)).contents[0].text
            await t.client.subscribe_resource(COUNTER)
            await t.client.call_tool("touch", {"uri": COUNTER})
            got = await t.recorder.wait_for(
                lambda: any(n.get("uri") == COUNTER for n in t.recorder.notifications)
            )
            assert got, f"no notifications/resources/updated for {COUNTER}: {t.recorder.notifications}"
            after = (await t.client.read_resource(COUNTER)).contents[0].text
            assert int(after.split("=")[1]) == int(before.split("=")[1]) + 1, (before, after)
            await t.client.unsubscribe_resource(COUNTER)


async def subscribe_and_stop_reading(url: str, uri: str) -> socket.socket:
    """A handshake-era client, raw: it subscribes to ``uri``, opens its GET stream (the
    standalone channel its updates come on), reads the response head and nothing more. Its
    receive buffer is made small so the buffers up to it fill soon."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "stuck", "version": "0"}}}
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(url + "/mcp", json=init, headers=headers)
        assert response.status_code == 200, response.text
        headers |= {"Mcp-Session-Id": response.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
        await http.post(url + "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        subscribe = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": uri}}
        assert (await http.post(url + "/mcp", json=subscribe, headers=headers)).status_code == 200
    host = url.removeprefix("http://")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host.split(":")[0], int(host.split(":")[1])))
    head = f"GET /mcp HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.startswith("Mcp-")) + "\r\n"
    sock.sendall(head.encode())
    seen = b""
    while b"\r\n\r\n" not in seen:
        seen += await trio.to_thread.run_sync(sock.recv, 1)
    assert seen.startswith(b"HTTP/1.1 200"), seen
    return sock


async def test_a_client_that_stops_reading_costs_the_others_one_wait_once(tmp_path):
    """A handshake-era client subscribed to a resource stops reading its stream. The gateway
    told connections one after another, giving each a second, and kept the stuck one: every
    update then cost a second, so a healthy client's updates queued behind all the stuck
    client's (thousands of seconds here). Now the stuck client is skipped after one wait (the
    daemon says so) until its next request, and the healthy client hears the next update."""
    daemon, marker = everything_daemon(tmp_path, "stuck")
    try:
        await daemon.wait_healthy()
        with trio.fail_after(90):
            async with Through(daemon, "handshake") as healthy:
                await healthy.client.subscribe_resource(COUNTER)
                await healthy.client.subscribe_resource(SENTINEL)
                stuck = await subscribe_and_stop_reading(daemon.url, COUNTER)
                with stuck:
                    # Paced by the healthy client: a faster flood overflows the upstream's own
                    # listen stream (the SDK ends one 1024 events behind; it is reopened, but
                    # that is another test's business). Updates of one URI may merge on the way.
                    told = 0
                    updates = lambda: sum(n.get("uri") == COUNTER for n in healthy.recorder.notifications)
                    with trio.move_on_after(60):
                        while "stopped reading" not in daemon.log.read_text():
                            before = updates()
                            await healthy.client.call_tool("touch", {"uri": COUNTER, "times": 200})
                            told += 200
                            await healthy.recorder.wait_for(lambda: updates() > before)
                    assert "stopped reading" in daemon.log.read_text(), f"{told} updates told, the stuck client never skipped"
                    await healthy.client.call_tool("touch", {"uri": SENTINEL})
                    heard = lambda: any(n.get("uri") == SENTINEL for n in healthy.recorder.notifications)
                    assert await healthy.recorder.wait_for(heard, timeout=10), "the healthy client waits behind the stuck one"
    finally:
        daemon.stop()
    await assert_no_orphans(marker)


async def test_resource_subscription_gets_updates_on_listen_streams(http_daemon):
    """2026-07-28: subscriptions/listen on a resource through the daemon, then touch: the event arrives."""
    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            async with t.client.listen(resource_subscriptions=[COUNTER]) as subscription:
                assert subscription.honored.resource_subscriptions == [COUNTER]
                await t.client.call_tool("touch", {"uri": COUNTER})
                with trio.fail_after(NOTIFICATION_WAIT):
                    event = await subscription.__anext__()
            assert event == ResourceUpdated(uri=COUNTER)


@pytest.mark.parametrize("era", list(ERAS))
async def test_list_changes_for_prompts_and_resources_reach_the_client(era, http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, era) as t:
            name = f"grown_{era}"
            changes = await (
                observe_list_changes_listen(t.client, name) if era == "modern"
                else observe_list_changes_legacy(t.client, t.recorder, name)
            )
    assert changes.get("notified") and len(changes["notified"]) == 3, changes
    assert name in changes["lists"]["prompts"] and f"dyn://{name}" in changes["lists"]["resources"], changes


async def test_every_content_type_passes_unchanged(http_daemon, direct_transcripts):
    expected = (await direct_transcript("modern", direct_transcripts))["calls"]["all_content"]
    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            actual = dump(await t.client.call_tool("all_content", {}))
    if actual != expected:
        raise AssertionError(transcript_diff(expected, actual))


async def test_2020_12_schema_passes_unchanged(http_daemon, direct_transcripts):
    direct = await direct_transcript("modern", direct_transcripts)
    expected = next(tool for tool in direct["tools"] if tool["name"] == "place_order")
    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            listed = {tool.name: dump(tool) for tool in (await t.client.list_tools()).tools}
            summary = await t.client.call_tool("place_order", {"order": {
                "customer": {"name": "Bo", "address": {"street": "s", "city": "c"}},
                "items": [{"sku": "QRS-9", "quantity": 1}],
            }})
    if listed["place_order"] != expected:
        raise AssertionError(transcript_diff(expected, listed["place_order"]))
    assert summary.structured_content == {"customer": "Bo", "lines": 1, "units": 1}


async def test_upstream_jsonrpc_error_keeps_code_message_data(http_daemon):
    with trio.fail_after(120):
        async with Through(http_daemon, "modern") as t:
            with pytest.raises(MCPError) as raised:
                await t.client.call_tool("jsonrpc_error", {"code": -32077, "message": "upstream says no"})
    assert (raised.value.code, raised.value.message) == (-32077, "upstream says no")
    assert raised.value.data == {"hint": "raised on purpose", "nested": {"list": [1, 2, 3], "flag": True}}


async def test_ping(http_daemon):
    """Handshake era: ping through the daemon answers (2026-07-28 removed ping)."""
    with trio.fail_after(120):
        async with Through(http_daemon, "handshake") as t:
            assert dump(await t.client.send_ping()) == {}


async def test_a_client_cancelling_its_call_cancels_the_question_relayed_to_it(http_daemon):
    """Handshake era: while the client is being asked (elicitation), it cancels its call.
    The cancellation reaches the question relayed to it (its callback is cancelled), and
    the daemon and upstream serve the same client's next call."""
    asked, cancelled = trio.Event(), trio.Event()

    async def never_answers(context, params):
        asked.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with trio.fail_after(120):
        async with Through(http_daemon, "handshake", elicitation_callback=never_answers) as t:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(t.client.call_tool, "ask_elicitation", {"question": QUESTION})
                await asked.wait()
                nursery.cancel_scope.cancel()  # the SDK sends notifications/cancelled
            with trio.fail_after(60):
                await cancelled.wait()
            roots = await t.client.call_tool("ask_roots", {})
            assert not roots.is_error, result_text(roots)
