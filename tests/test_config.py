"""The config loader: formats, validation messages, variables, the environment, redaction."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol import BackoffPolicy, BreakerPolicy, RetryPolicy, ServerSpec
from protocol._settings import UNCACHED_TOOLS_TTL, Config, ServerDefaults, SupervisorSettings
from supervisor._config import REDACTED, ConfigError, load_config, redacted

EXAMPLE = Path(__file__).parent.parent / "examples" / "mcp_servers.json"


def write(tmp_path: Path, data: object, name: str = "mcp.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def load(tmp_path: Path, data: object, *, environ: dict[str, str] | None = None, name: str = "mcp.json") -> Config:
    return load_config(write(tmp_path, data, name), environ=environ or {})


def refused(tmp_path: Path, data: object, *, environ: dict[str, str] | None = None, name: str = "mcp.json") -> ConfigError:
    path = write(tmp_path, data, name)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    error = info.value
    assert str(path) in str(error), "the message names the file"
    assert error.source == str(path)
    return error


def servers(**entries: object) -> dict[str, object]:
    return {"mcpServers": entries}


STDIO = {"command": "python", "args": ["server.py"]}


# -- good configs -----------------------------------------------------------------------------

GOOD_JSON = """{
  // VS Code style comments and trailing commas are fine
  "mcpServers": {
    "comfy": {
      "command": "python",
      "args": ["-m", "comfy_mcp", "--port", "8188"],
      "env": {"COMFY_HOME": "/opt/comfy"},
      "cwd": "/srv",
      "restart": "transient",
      "backoff": {"min": 1, "max": 20},
      "breaker": {"failure_threshold": 3},
      "retry": {"max_delay": 5},
      "timeout": 120,
      "connect_timeout": 10,
      "max_concurrency": 4,
      "max_queue": 8,
      "namespace": "prefix",
      "categories": {"search_nodes": "search", "run_workflow": "workflow"},
      "retry_safe_tools": ["search_nodes"],
      "trust_annotations": false,
      "hang_threshold": 2,
      "garbage_threshold": 5,
      "tools_ttl": 600,
      "health_check_interval": 15,
      "health_check_timeout": 5,
      "shutdown_timeout": 2,
    },
    "remote": {"url": "https://example.com/mcp-server/mcp", "headers": {"X-Team": "copilot"}},
    "events": {"url": "https://example.com/8c9f/sse", "enabled": false},
    "typed": {"type": "sse", "url": "https://example.com/events"},
  },
  /* the supervisor's own section */
  "supervisor": {
    "defaults": {"timeout": 90, "retry": {"max_retries": 2}},
    "http": "0.0.0.0:9000",
    "toolsets": {"mine": ["search", "node"]},
    "max_body_bytes": 1024,
    "cache_ttl": 3600,
    "drain_timeout": 2.5,
    "stall_timeout": 12,
    "max_sessions": 50,
    "session_idle_timeout": 600,
  },
}
"""

GOOD_TOML = """
[mcpServers.comfy]
command = "python"
args = ["-m", "comfy_mcp", "--port", "8188"]
env = { COMFY_HOME = "/opt/comfy" }
cwd = "/srv"
restart = "transient"
timeout = 120
connect_timeout = 10
max_concurrency = 4
max_queue = 8
namespace = "prefix"
categories = { search_nodes = "search", run_workflow = "workflow" }
retry_safe_tools = ["search_nodes"]
trust_annotations = false
hang_threshold = 2
garbage_threshold = 5
tools_ttl = 600
health_check_interval = 15
health_check_timeout = 5
shutdown_timeout = 2

[mcpServers.comfy.backoff]
min = 1
max = 20

[mcpServers.comfy.breaker]
failure_threshold = 3

[mcpServers.comfy.retry]
max_delay = 5

[mcpServers.remote]
url = "https://example.com/mcp-server/mcp"
headers = { X-Team = "copilot" }

[mcpServers.events]
url = "https://example.com/8c9f/sse"
enabled = false

[mcpServers.typed]
type = "sse"
url = "https://example.com/events"

[supervisor]
http = "0.0.0.0:9000"
max_body_bytes = 1024
cache_ttl = 3600
drain_timeout = 2.5
stall_timeout = 12
max_sessions = 50
session_idle_timeout = 600

[supervisor.defaults]
timeout = 90

[supervisor.defaults.retry]
max_retries = 2

[supervisor.toolsets]
mine = ["search", "node"]
"""


def test_good_json_config_decodes_every_key(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD_JSON)
    assert config.source == str(tmp_path / "mcp.json")
    assert [s.name for s in config.servers] == ["comfy", "remote", "events", "typed"]
    comfy = config.server("comfy")
    assert comfy == ServerSpec(
        name="comfy",
        command="python",
        args=["-m", "comfy_mcp", "--port", "8188"],
        env={"COMFY_HOME": "/opt/comfy"},
        cwd="/srv",
        transport="stdio",
        restart="transient",
        backoff=BackoffPolicy(min=1.0, max=20.0),
        breaker=BreakerPolicy(failure_threshold=3),
        retry=RetryPolicy(max_retries=2, max_delay=5.0),  # max_retries from supervisor.defaults
        timeout=120.0,
        connect_timeout=10.0,
        max_concurrency=4,
        max_queue=8,
        namespace="prefix",
        categories={"search_nodes": "search", "run_workflow": "workflow"},
        retry_safe_tools=["search_nodes"],
        trust_annotations=False,
        hang_threshold=2,
        garbage_threshold=5,
        tools_ttl=600.0,
        health_check_interval=15.0,
        health_check_timeout=5.0,
        shutdown_timeout=2.0,
    )
    remote = config.server("remote")
    assert (remote.kind, remote.transport, remote.headers) == ("streamable-http", "streamable-http", {"X-Team": "copilot"})
    assert remote.timeout == 90.0 and remote.retry.max_retries == 2  # supervisor.defaults
    assert remote.tools_ttl == 3600.0  # supervisor.cache_ttl
    events = config.server("events")
    assert (events.kind, events.enabled) == ("sse", False)  # inferred from the /sse suffix
    assert config.server("typed").kind == "sse"  # from "type"
    assert config.settings.http == "0.0.0.0:9000"
    assert config.settings.toolsets == {"mine": ["search", "node"]}
    assert config.settings.max_body_bytes == 1024
    assert config.settings.drain_timeout == 2.5
    assert config.settings.stall_timeout == 12
    assert (config.settings.max_sessions, config.settings.session_idle_timeout) == (50, 600)
    assert config.settings.defaults.timeout == 90.0


def test_json_and_toml_decode_to_the_same_config(tmp_path: Path) -> None:
    from_json = load(tmp_path, GOOD_JSON, name="mcp.json")
    from_toml = load(tmp_path, GOOD_TOML, name="mcp.toml")
    assert from_toml.source.endswith("mcp.toml")
    assert msgspec.structs.replace(from_json, source=None) == msgspec.structs.replace(from_toml, source=None)


def test_vscode_servers_key_and_types(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "inputs": [{"type": "promptString", "id": "unused"}],
            "servers": {
                "local": {"type": "stdio", "command": "node", "args": ["server.js"]},
                "remote": {"type": "http", "url": "http://localhost:3000/mcp"},
                "legacy": {"type": "sse", "url": "http://localhost:3001/events"},
            },
        },
    )
    kinds = {s.name: (s.kind, s.transport) for s in config.servers}
    assert kinds == {
        "local": ("stdio", "stdio"),
        "remote": ("streamable-http", "streamable-http"),
        "legacy": ("sse", "sse"),
    }


def test_mcpservers_and_servers_together_keep_file_order(tmp_path: Path) -> None:
    config = load(tmp_path, {"servers": {"b": STDIO}, "mcpServers": {"a": STDIO}})
    assert [s.name for s in config.servers] == ["a", "b"]  # mcpServers first, then servers


def test_transport_key_is_an_alias_of_type(tmp_path: Path) -> None:
    config = load(tmp_path, servers(x={"url": "https://h/mcp", "transport": "sse", "type": "sse"}))
    assert config.server("x").kind == "sse"


def test_relative_cwd_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load(tmp_path, servers(x={**STDIO, "cwd": "tools"}))
    assert config.server("x").cwd == str(tmp_path.resolve() / "tools")


def test_a_relative_command_path_is_relative_to_the_config_file_unless_a_cwd_is_given(tmp_path: Path, monkeypatch) -> None:
    """``cwd`` and ``envFile`` were taken relative to the config file, but a ``command``
    such as ``./run.sh`` relative to wherever the daemon was started: started from another
    directory (an untrusted one), the daemon ran that directory's ``run.sh`` (found by a
    security probe). Now a command path is the config's too; a bare name is still looked up
    on PATH, and with a ``cwd`` the path is the server's own, relative to that ``cwd`` (as a
    shell started there would take it)."""
    monkeypatch.chdir(tmp_path.parent)
    config = load(tmp_path, servers(
        dotted={"command": "./run.sh"}, nested={"command": "bin/server", "args": ["x"]},
        bare={"command": "python3"}, absolute={"command": "/usr/bin/env"},
        home={"command": "~/bin/s"}, with_cwd={"command": "./run.sh", "cwd": "tools"},
        line={"command": "npx -y @foo/server"},  # a command line put in command: check says so
    ))
    here = tmp_path.resolve()
    assert config.server("dotted").command == str(here / "run.sh")
    assert config.server("nested").command == str(here / "bin" / "server")
    assert config.server("bare").command == "python3"
    assert config.server("absolute").command == "/usr/bin/env"
    assert config.server("home").command == os.path.expanduser("~/bin/s")
    assert (config.server("with_cwd").command, config.server("with_cwd").cwd) == ("./run.sh", str(here / "tools"))
    assert config.server("line").command == "npx -y @foo/server"


def test_empty_sections_are_allowed(tmp_path: Path) -> None:
    assert load(tmp_path, {"mcpServers": {}}).servers == []


def test_defaults_match_server_spec() -> None:
    spec = ServerSpec(name="x", command="c")
    for field in msgspec.structs.fields(ServerDefaults):
        assert getattr(ServerDefaults(), field.name) == getattr(spec, field.name), field.name
    assert SupervisorSettings().default_tools_ttl is None


def test_default_config_is_the_demo_server() -> None:
    config = load_config(None, environ={})
    assert config.source is None
    (demo,) = config.servers
    assert (demo.name, demo.command, demo.args) == ("demo", sys.executable, ["-m", "supervisor._demo_server"])
    assert demo == msgspec.structs.replace(ServerSpec(name="demo", command=sys.executable), args=demo.args, transport="stdio")


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE, environ={"COMFY_TOKEN": "t", "SEARCH_API_KEY": "k", "SUPERVISOR_TOKEN": "s"})
    assert len(config.servers) >= 3


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (servers(x={"comand": "python"}), "mcpServers.x.comand", "unknown key; did you mean 'command'?"),
        (servers(x={**STDIO, "timout": 3}), "mcpServers.x.timout", "did you mean 'timeout'?"),
        (servers(x={**STDIO, "maxConcurrency": 3}), "mcpServers.x.maxConcurrency", "did you mean 'max_concurrency'?"),
        (servers(x={**STDIO, "retry": {"max_retires": 1}}), "mcpServers.x.retry.max_retires", "did you mean 'max_retries'?"),
        (servers(x={**STDIO, "breaker": {"treshold": 1}}), "mcpServers.x.breaker.treshold", "unknown key"),
        (servers(x={**STDIO, "zzz": 1}), "mcpServers.x.zzz", "allowed keys: args, backoff"),
        (servers(x={**STDIO, "name": "y"}), "mcpServers.x.name", "a server's name is its key"),
        ({"mcpServer": {"x": STDIO}}, "mcpServer", "did you mean 'mcpServers'?"),
        ({"mcpServers": {}, "supervisor": {"htp": "a:1"}}, "supervisor.htp", "did you mean 'http'?"),
        ({"mcpServers": {}, "supervisor": {"defaults": {"timeuot": 1}}}, "supervisor.defaults.timeuot", "did you mean 'timeout'?"),
        ({"mcpServers": {}, "supervisor": {"defaults": {"command": "x"}}}, "supervisor.defaults.command", "set it in each server's entry"),
        ({"mcpServers": {}, "supervisor": {"defaults": {"tools_ttl": 1}}}, "supervisor.defaults.tools_ttl", "cache_ttl"),
    ],
)
def test_unknown_keys(tmp_path: Path, data: object, key: str, reason: str) -> None:
    error = refused(tmp_path, data)
    assert error.key == key
    assert reason in error.reason
    assert f": {key}: " in str(error)


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ({**STDIO, "timeout": "slow"}, "mcpServers.x.timeout", "expected a number, got a string"),
        ({**STDIO, "max_concurrency": 2.5}, "mcpServers.x.max_concurrency", "expected an integer, got a number"),
        ({**STDIO, "max_queue": True}, "mcpServers.x.max_queue", "expected an integer, got true or false"),
        ({**STDIO, "enabled": "yes"}, "mcpServers.x.enabled", "expected true or false, got a string"),
        ({"command": "python", "args": ["a", 1]}, "mcpServers.x.args[1]", "expected a string, got an integer"),
        ({**STDIO, "env": {"OK": "1", "PORT": 8188}}, "mcpServers.x.env.PORT", "expected a string, got an integer"),
        ({**STDIO, "categories": {"a.b": 3}}, 'mcpServers.x.categories["a.b"]', "expected a string"),
        ({**STDIO, "retry": 3}, "mcpServers.x.retry", "expected an object, got an integer"),
        ({**STDIO, "retry": {"max_delay": "x"}}, "mcpServers.x.retry.max_delay", "expected a number"),
        ({**STDIO, "tools_ttl": "x"}, "mcpServers.x.tools_ttl", "expected a number or null, got a string"),
        ({**STDIO, "restart": "always"}, "mcpServers.x.restart", "must be one of 'permanent', 'transient', 'temporary'"),
        ({**STDIO, "namespace": "prefixed"}, "mcpServers.x.namespace", "did you mean 'prefix'?"),
        ({"command": 5}, "mcpServers.x.command", "expected a string or null, got an integer"),
        # before the missing variable it decides about (a string "false" is no false)
        ({**STDIO, "args": ["${NOT_SET_HERE}"], "enabled": "false"}, "mcpServers.x.enabled", "expected true or false, got a string"),
    ],
)
def test_wrong_types(tmp_path: Path, entry: object, key: str, reason: str) -> None:
    error = refused(tmp_path, servers(x=entry))
    assert (error.key, reason in error.reason) == (key, True), str(error)


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ({**STDIO, "timeout": -1}, "mcpServers.x.timeout", "must be > 0, got -1.0"),
        ({**STDIO, "timeout": 0}, "mcpServers.x.timeout", "must be > 0"),
        ({**STDIO, "connect_timeout": -0.5}, "mcpServers.x.connect_timeout", "must be > 0"),
        ({**STDIO, "shutdown_timeout": -1}, "mcpServers.x.shutdown_timeout", "must be >= 0"),
        ({**STDIO, "tools_ttl": 0}, "mcpServers.x.tools_ttl", "must be > 0"),
        ({**STDIO, "health_check_interval": 0}, "mcpServers.x.health_check_interval", "must be > 0"),
        ({**STDIO, "health_check_timeout": -2}, "mcpServers.x.health_check_timeout", "must be > 0"),
        ({**STDIO, "max_concurrency": 0}, "mcpServers.x.max_concurrency", "must be >= 1"),
        ({**STDIO, "backoff": {"min": -1}}, "mcpServers.x.backoff.min", "must be > 0"),
        ({**STDIO, "breaker": {"failure_rate": 1.5}}, "mcpServers.x.breaker.failure_rate", "must be > 0 and <= 1"),
        ({**STDIO, "retry": {"max_retries": -1}}, "mcpServers.x.retry.max_retries", "must be >= 0"),
    ],
)
def test_out_of_range_numbers(tmp_path: Path, entry: object, key: str, reason: str) -> None:
    error = refused(tmp_path, servers(x=entry))
    assert (error.key, reason in error.reason) == (key, True), str(error)


def test_nan_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, '{"mcpServers": {"x": {"command": "c", "timeout": NaN}}}')
    assert error.key == "mcpServers.x.timeout" and "must be > 0" in error.reason


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("timeout = inf", "mcpServers.x.timeout"),  # a call with no deadline
        ("connect_timeout = inf", "mcpServers.x.connect_timeout"),  # a start never given up
        ("breaker.open_seconds = inf", "mcpServers.x.breaker.open_seconds"),
        ("retry.max_delay = inf", "mcpServers.x.retry.max_delay"),
    ],
)
def test_infinity_is_refused(tmp_path: Path, toml: str, key: str) -> None:
    error = refused(tmp_path, f'[mcpServers.x]\ncommand = "c"\n{toml}\n', name="mcp.toml")
    assert (error.key, error.reason) == (key, "must be finite, got inf")


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ({"command": "python", "url": "https://h/mcp"}, "mcpServers.x", "has both 'command'"),
        ({"args": ["a"]}, "mcpServers.x", "needs 'command' (a stdio server) or 'url' (a remote server)"),
        ({}, "mcpServers.x", "needs 'command'"),
        ({"command": "  "}, "mcpServers.x.command", "must not be empty"),
        ("python server.py", "mcpServers.x", "expected an object with 'command' or 'url', got str"),
        ({"url": "https://h/mcp", "type": "websocket"}, "mcpServers.x.type", "must be one of 'stdio', 'sse'"),
        ({"url": "https://h/mcp", "transport": "streamableHttp"}, "mcpServers.x.transport", "did you mean 'streamable-http'?"),
        ({"url": "https://h/mcp", "type": "sse", "transport": "http"}, "mcpServers.x.transport", "contradicts type 'sse'"),
        ({"url": "https://h/mcp", "type": "stdio"}, "mcpServers.x.type", "'stdio' needs a 'command'"),
        ({"command": "python", "type": "sse"}, "mcpServers.x.type", "'sse' needs a 'url'"),
        ({"url": "https://h/mcp", "args": ["a"]}, "mcpServers.x.args", "only for stdio servers"),
        ({"url": "https://h/mcp", "env": {"A": "b"}}, "mcpServers.x.env", "only for stdio servers"),
        ({"command": "python", "headers": {"A": "b"}}, "mcpServers.x.headers", "only for remote servers"),
        ({"url": "ftp://h/mcp"}, "mcpServers.x.url", "must be an http:// or https:// URL"),
        ({"url": "https:///mcp"}, "mcpServers.x.url", "no host"),
        ({"url": "http://h:99999/mcp"}, "mcpServers.x.url", "not a valid URL"),
        ({"url": "https://h/mcp "}, "mcpServers.x.url", "whitespace or a control character (at position 13)"),
        ({"url": "https://h/mcp\n"}, "mcpServers.x.url", "whitespace or a control character (at position 13)"),
        ({"url": " https://h/mcp"}, "mcpServers.x.url", "whitespace or a control character (at position 0)"),
        ({"command": "python", "args": ["a", "b\u0000"]}, "mcpServers.x.args[1]", "holds a NUL character"),
        ({"command": "python", "env": {"K": "v\u0000"}}, "mcpServers.x.env.K", "holds a NUL character"),
        # JSON can say a lone surrogate and "=" in a name: no process can be started with either
        ({"command": "python", "args": ["a", "b\ud800"]}, "mcpServers.x.args[1]", "holds \\ud800, which no process"),
        ({"command": "python\udbff"}, "mcpServers.x.command", "holds \\udbff"),
        ({"command": "python", "env": {"K": "\ud83d"}}, "mcpServers.x.env.K", "holds \\ud83d"),
        ({"command": "python", "env": {"A=B": "x"}}, 'mcpServers.x.env["A=B"]', "name must be non-empty, without '='"),
        ({"command": "python", "env": {"": "x"}}, 'mcpServers.x.env[""]', "name must be non-empty"),
        ({"url": "https://h/mcp", "headers": {"X Token": "t"}}, 'mcpServers.x.headers["X Token"]', "not a valid HTTP header name"),
        ({"url": "https://h/mcp", "headers": {"A": "Bearer t\r"}}, "mcpServers.x.headers.A", "holds a line break or NUL"),
        ({"url": "https://h/mcp", "headers": {"A": "Bearer "}}, "mcpServers.x.headers.A", "starts or ends with whitespace"),
        ({"url": "https://h/mcp", "headers": {"A": "jeton-é"}}, "mcpServers.x.headers.A", "not ASCII"),
        ({**STDIO, "categories": {"search_nodes": "searching"}}, "mcpServers.x.categories.search_nodes", "unknown category 'searching'"),
    ],
)
def test_bad_server_entries(tmp_path: Path, entry: object, key: str, reason: str) -> None:
    error = refused(tmp_path, servers(x=entry))
    assert (error.key, reason in error.reason) == (key, True), str(error)


@pytest.mark.parametrize("depth", [100, 600, 5000])
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_a_config_nested_absurdly_deep_is_refused_not_a_recursion_error(tmp_path: Path, depth: int, suffix: str) -> None:
    """Past some 500 levels the JSON and TOML parsers, and the loader's own walk, raised
    ``RecursionError``: a traceback for `check`, a bare 500 for `reload`."""
    path = tmp_path / f"c{suffix}"
    nested = "[" * depth + "]" * depth
    if suffix == ".json":
        path.write_text('{"mcpServers": {"x": {"command": "python", "args": ' + nested + "}}}")
    else:
        path.write_text('[mcpServers.x]\ncommand = "python"\nargs = ' + nested + "\n")
    with pytest.raises(ConfigError) as refused_:
        load_config(path, environ={})
    assert refused_.value.source == str(path) and "nested more than 64 levels deep" in refused_.value.reason
    assert refused_.value.key in ("", "mcpServers.x.args")


def test_an_empty_config_path_is_refused_not_taken_for_no_path() -> None:
    with pytest.raises(ConfigError, match=r"^'': the config path is empty"):
        load_config("", environ={})


def test_a_header_from_a_variable_is_checked_after_expansion_and_its_value_never_shown(tmp_path: Path) -> None:
    """A token read from a file with Windows line endings: the server would never connect
    (the HTTP layer refuses the request), so the config is refused, naming the header."""
    entry = {"url": "https://h/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(servers(x=entry)))
    with pytest.raises(ConfigError) as refused_:
        load_config(path, environ={"TOKEN": "s3cret\r"})
    assert refused_.value.key == "mcpServers.x.headers.Authorization"
    assert "line break" in refused_.value.reason and "s3cret" not in str(refused_.value)


@pytest.mark.parametrize(
    ("url", "environ"),
    [
        ("https://apikey:sk-live-4f2a/mcp", {}),  # the host left out: the password read as a port
        ("${COMFY_URL}", {"COMFY_URL": "https://apikey:sk-live-4f2a/mcp"}),
    ],
)
def test_a_bad_url_is_refused_without_showing_its_credentials(tmp_path: Path, url: str, environ: dict[str, str]) -> None:
    """A URL whose userinfo had no host after it (``https://user:secret/mcp``) was refused
    with urllib's own message, which quotes the "port": the password, printed by `check`,
    `run` and `reload`. Now the reason says what is wrong without repeating any of it."""
    error = refused(tmp_path, servers(x={"url": url}), environ=environ)
    assert error.key == "mcpServers.x.url" and "port" in error.reason, str(error)
    assert "sk-live-4f2a" not in str(error)


def test_a_bad_url_variable_is_refused_without_showing_its_credentials() -> None:
    with pytest.raises(ConfigError) as refused_:
        load_config(None, environ={"COMFYUI_MCP_INTERNAL_URL": "https://apikey:sk-live-4f2a/mcp"})
    assert refused_.value.key == "environment variable COMFYUI_MCP_INTERNAL_URL"
    assert "sk-live-4f2a" not in str(refused_.value)


def test_unknown_category_message_comes_from_the_registry(tmp_path: Path) -> None:
    error = refused(tmp_path, servers(comfy={**STDIO, "categories": {"t": "nope"}}))
    assert "server 'comfy': tool 't' has unknown category 'nope'; allowed categories: workflow" in str(error)


def test_unknown_toolset_category(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mcpServers": {}, "supervisor": {"toolsets": {"mine": ["search", "nodes"]}}})
    assert error.key == "supervisor.toolsets.mine"
    assert "toolset 'mine' has unknown category 'nodes'" in error.reason


def test_toolset_must_be_a_list(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mcpServers": {}, "supervisor": {"toolsets": {"mine": "search"}}})
    assert error.key == "supervisor.toolsets.mine" and "expected a list" in error.reason


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ({"http": "8765"}, "supervisor.http", "expected 'host:port'"),
        ({"http": "localhost:http"}, "supervisor.http", "expected 'host:port'"),
        ({"http": "::1:8765"}, "supervisor.http", "brackets"),
        ({"auth_token": ""}, "supervisor.auth_token", "must not be empty"),
        ({"max_body_bytes": 0}, "supervisor.max_body_bytes", "must be >= 1"),
        ({"cache_ttl": -5}, "supervisor.cache_ttl", "must be > 0"),
        ({"drain_timeout": -1}, "supervisor.drain_timeout", "must be >= 0"),
        ({"drain_timeout": float("inf")}, "supervisor.drain_timeout", "finite"),
        ({"stall_timeout": 0}, "supervisor.stall_timeout", "must be > 0"),
        ({"max_sessions": 0}, "supervisor.max_sessions", "must be >= 1"),
        ({"session_idle_timeout": 0}, "supervisor.session_idle_timeout", "must be > 0"),
        ({"session_idle_timeout": float("inf")}, "supervisor.session_idle_timeout", "finite"),
        ({"defaults": {"timeout": -1}}, "supervisor.defaults.timeout", "must be > 0"),
        ({"defaults": {"breaker": {"open_seconds": "x"}}}, "supervisor.defaults.breaker.open_seconds", "expected a number"),
        ({"cache_tools": "no"}, "supervisor.cache_tools", "expected true or false"),
    ],
)
def test_bad_supervisor_section(tmp_path: Path, section: object, key: str, reason: str) -> None:
    error = refused(tmp_path, {"mcpServers": {}, "supervisor": section})
    assert (error.key, reason in error.reason) == (key, True), str(error)


def test_ipv6_bind_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path, {"mcpServers": {}, "supervisor": {"http": "[::1]:8765"}}).settings.http == "[::1]:8765"


def test_empty_server_name(tmp_path: Path) -> None:
    error = refused(tmp_path, servers(**{"": STDIO}))
    assert error.key == 'mcpServers[""]' and error.reason == "empty server name"


def test_duplicate_names_across_sections(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mcpServers": {"x": STDIO}, "servers": {"x": STDIO}})
    assert error.key == "servers.x"
    assert "duplicate server name: 'x' is already defined in mcpServers" in error.reason


def test_duplicate_json_keys(tmp_path: Path) -> None:
    text = '{"mcpServers": {"x": {"command": "a"}, "x": {"command": "b"}}}'
    error = refused(tmp_path, text)
    assert error.key == "mcpServers.x" and "duplicate key" in error.reason


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    error = refused(tmp_path, '{\n  "mcpServers": {\n    "x": {"command": "a",, }\n  }\n}')
    # Python 3.13's json names the comma left standing once the trailing one is dropped
    # ("Illegal trailing comma before end of object"); 3.11 and 3.12 the brace after it.
    expected = ("line 3, column 25", "Illegal trailing comma") if sys.version_info >= (3, 13) else (
        "line 3, column 28", "Expecting property name")
    assert (error.key, expected[1] in error.reason) == (expected[0], True), str(error)
    assert "invalid JSON" in error.reason


def test_comment_characters_inside_strings_are_kept(tmp_path: Path) -> None:
    config = load(tmp_path, '{"mcpServers": {"x": {"url": "https://h/a//b/*c*/", /* c */ "headers": {"k": "v,"}}}}')
    assert config.server("x").url == "https://h/a//b/*c*/"
    assert config.server("x").headers == {"k": "v,"}


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    error = refused(tmp_path, '[mcpServers.x]\ncommand = \n', name="mcp.toml")
    assert "invalid TOML" in error.reason and "line 2, column" in error.reason


def test_toml_errors_name_the_key_path(tmp_path: Path) -> None:
    error = refused(tmp_path, '[mcpServers.x]\ncommand = "a"\ntimeout = "slow"\n', name="mcp.toml")
    assert error.key == "mcpServers.x.timeout" and "expected a number" in error.reason


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    error = refused(tmp_path, "[1, 2]")
    assert "the top level must be an object" in str(error)


def test_sections_must_be_objects(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mcpServers": [STDIO]})
    assert error.key == "mcpServers" and "expected an object of servers" in error.reason


def test_file_without_servers_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, {"supervisor": {}})
    assert "no servers" in error.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.json: no such file"):
        load_config(tmp_path / "nope.json", environ={})


def test_server_names_with_dots_are_quoted_in_key_paths(tmp_path: Path) -> None:
    error = refused(tmp_path, servers(**{"my.server": {**STDIO, "timeout": "x"}}))
    assert error.key == 'mcpServers["my.server"].timeout'


# -- variables --------------------------------------------------------------------------------


def test_variables_are_expanded(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        servers(
            local={"command": "${PY}", "args": ["--root", "${ROOT:-/srv}"], "env": {"TOKEN": "${TOKEN}", "X": "a${env:TOKEN}b"}},
            remote={"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${TOKEN}", "L": "$${TOKEN}"}},
        ),
        environ={"PY": "python3", "TOKEN": "s3cret", "HOST": "example.com"},
    )
    local, remote = config.servers
    assert local.command == "python3"
    assert local.args == ["--root", "/srv"]
    assert local.env == {"TOKEN": "s3cret", "X": "as3cretb"}
    assert remote.url == "https://example.com/mcp"
    assert remote.headers == {"Authorization": "Bearer s3cret", "L": "${TOKEN}"}


def test_default_is_used_for_empty_variables(tmp_path: Path) -> None:
    config = load(tmp_path, servers(x={**STDIO, "env": {"A": "${A:-fallback}", "B": "${B:-}"}}), environ={"A": ""})
    assert config.server("x").env == {"A": "fallback", "B": ""}


def test_auth_token_is_expanded(tmp_path: Path) -> None:
    config = load(tmp_path, {"mcpServers": {}, "supervisor": {"auth_token": "${SUP_TOKEN}"}}, environ={"SUP_TOKEN": "t0k"})
    assert config.settings.auth_token == "t0k"


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({**STDIO, "env": {"API_KEY": "${API_KEY}"}}, "mcpServers.x.env.API_KEY"),
        ({"url": "https://h/mcp", "headers": {"Authorization": "Bearer ${API_KEY}"}}, "mcpServers.x.headers.Authorization"),
        ({"url": "https://${API_KEY}/mcp"}, "mcpServers.x.url"),
        ({"command": "python", "args": ["a", "${API_KEY}"]}, "mcpServers.x.args[1]"),
    ],
)
def test_missing_variable(tmp_path: Path, entry: object, key: str) -> None:
    error = refused(tmp_path, servers(x=entry))
    assert error.key == key
    assert "environment variable 'API_KEY' is not set" in error.reason


def test_missing_variable_in_a_disabled_server_is_kept(tmp_path: Path) -> None:
    config = load(tmp_path, servers(x={**STDIO, "enabled": False, "env": {"K": "${MISSING}"}}))
    assert config.server("x").env == {"K": "${MISSING}"}


@pytest.mark.parametrize("url", ["${REMOTE_URL}", "https://${HOST}:${PORT}/mcp", "${SCHEME}://h/mcp?k=${KEY}"])
def test_a_disabled_servers_url_may_hold_a_missing_variable(tmp_path: Path, url: str) -> None:
    """A variable missing in a disabled server is kept as written, as documented; but a URL
    that was such a reference (``"url": "${REMOTE_URL}"``) was then refused as no http(s)
    URL, or its ``${PORT}`` as a port that is no number: the whole config with it. Now
    such a URL is checked once the server is enabled with its variables set."""
    config = load(tmp_path, servers(x={"url": url, "enabled": False}))
    assert (config.server("x").url, config.server("x").enabled) == (url, False)
    error = refused(tmp_path, servers(x={"url": url}))
    assert error.key == "mcpServers.x.url" and "is not set" in error.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("${input:api-key}", "VS Code input variables"),
        ("${NOT CLOSED", "unterminated"),
        ("${1BAD}", "malformed variable reference"),
    ],
)
def test_bad_variable_references(tmp_path: Path, value: str, reason: str) -> None:
    error = refused(tmp_path, servers(x={**STDIO, "env": {"K": value}}))
    assert error.key == "mcpServers.x.env.K" and reason in error.reason


# -- the environment -----------------------------------------------------------------------------


def test_retry_variables(tmp_path: Path) -> None:
    env = {"COMFYUI_MCP_MAX_RETRIES": "5", "COMFYUI_MCP_RETRY_INITIAL_DELAY": "0.5", "COMFYUI_MCP_RETRY_MAX_DELAY": "20"}
    config = load(tmp_path, servers(x=STDIO), environ=env)
    expected = RetryPolicy(max_retries=5, initial_delay=0.5, max_delay=20.0)
    assert config.server("x").retry == expected
    assert config.settings.defaults.retry == expected


def test_breaker_variables(tmp_path: Path) -> None:
    env = {
        "COMFYUI_MCP_CIRCUIT_BREAKER_ENABLED": "false",
        "COMFYUI_MCP_CIRCUIT_BREAKER_THRESHOLD": "7",
        "COMFYUI_MCP_CIRCUIT_BREAKER_TIMEOUT": "30",
    }
    breaker = load(tmp_path, servers(x=STDIO), environ=env).server("x").breaker
    assert breaker == BreakerPolicy(enabled=False, failure_threshold=7, open_seconds=30.0)


@pytest.mark.parametrize(
    ("env", "cache_tools", "tools_ttl"),
    [
        ({}, True, None),
        ({"COMFYUI_MCP_CACHE_TOOLS": "true"}, True, None),
        ({"COMFYUI_MCP_CACHE_TTL": "3600"}, True, 3600.0),
        ({"COMFYUI_MCP_CACHE_TOOLS": "false"}, False, UNCACHED_TOOLS_TTL),
        ({"COMFYUI_MCP_CACHE_TOOLS": "0", "COMFYUI_MCP_CACHE_TTL": "3600"}, False, UNCACHED_TOOLS_TTL),
    ],
)
def test_cache_variables(tmp_path: Path, env: dict[str, str], cache_tools: bool, tools_ttl: float | None) -> None:
    config = load(tmp_path, servers(x=STDIO, own={**STDIO, "tools_ttl": 42}), environ=env)
    assert config.settings.cache_tools is cache_tools
    assert config.server("x").tools_ttl == tools_ttl
    assert config.server("own").tools_ttl == 42.0  # a server's own key wins


def test_remote_server_variables(tmp_path: Path) -> None:
    env = {
        "COMFYUI_MCP_INTERNAL_URL": "http://localhost:8888/mcp-server/mcp",
        "COMFYUI_MCP_INTERNAL_TIMEOUT": "300",
        "COMFYUI_MCP_MODELSCOPE_URL": "https://mcp.api-inference.modelscope.net/8c9fe550938e4f/sse",
        "COMFYUI_MCP_MODELSCOPE_TIMEOUT": "120",
    }
    config = load(tmp_path, servers(x=STDIO), environ=env)
    assert [s.name for s in config.servers] == ["x", "comfyui-internal", "modelscope"]
    internal, modelscope = config.servers[1:]
    assert (internal.url, internal.kind, internal.timeout) == (env["COMFYUI_MCP_INTERNAL_URL"], "streamable-http", 300.0)
    assert (modelscope.url, modelscope.kind, modelscope.timeout) == (env["COMFYUI_MCP_MODELSCOPE_URL"], "sse", 120.0)


def test_local_server_variable(tmp_path: Path) -> None:
    config = load_config(None, environ={"COMFYUI_LOCAL_MCP_SERVER": "/opt/plugin/server.py"})
    (local,) = config.servers  # no demo server once the environment names one
    assert (local.name, local.command, local.args, local.kind) == (
        "comfyui-local",
        sys.executable,
        ["/opt/plugin/server.py"],
        "stdio",
    )


def test_no_file_applies_the_environment_to_the_demo_server() -> None:
    config = load_config(None, environ={"COMFYUI_MCP_MAX_RETRIES": "1"})
    assert [s.name for s in config.servers] == ["demo"]
    assert config.servers[0].retry.max_retries == 1


def test_server_variables_override_a_file_server_of_that_name(tmp_path: Path) -> None:
    data = servers(**{"comfyui-internal": {"url": "https://old/sse", "timeout": 10, "type": "sse", "max_queue": 3}})
    env = {"COMFYUI_MCP_INTERNAL_URL": "https://new/events", "COMFYUI_MCP_INTERNAL_TIMEOUT": "300"}
    (spec,) = load(tmp_path, data, environ=env).servers
    assert (spec.url, spec.timeout, spec.max_queue) == ("https://new/events", 300.0, 3)
    assert spec.kind == "sse"  # the file's explicit type is kept; inference is only a fallback


def test_timeout_variable_alone_overrides_only_the_timeout(tmp_path: Path) -> None:
    data = servers(modelscope={"url": "https://h/sse", "timeout": 10})
    (spec,) = load(tmp_path, data, environ={"COMFYUI_MCP_MODELSCOPE_TIMEOUT": "99"}).servers
    assert (spec.url, spec.timeout) == ("https://h/sse", 99.0)


def test_timeout_variable_without_its_server_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load(tmp_path, servers(x=STDIO), environ={"COMFYUI_MCP_INTERNAL_TIMEOUT": "300"})
    assert [s.name for s in config.servers] == ["x"]
    assert "COMFYUI_MCP_INTERNAL_TIMEOUT" in caplog.text


def test_url_variable_for_a_stdio_file_server_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, servers(**{"comfyui-internal": STDIO}), environ={"COMFYUI_MCP_INTERNAL_URL": "https://h/mcp"})
    assert error.key == "environment variable COMFYUI_MCP_INTERNAL_URL"
    assert "runs as a command" in error.reason


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    env = {"COMFYUI_MCP_INTERNAL_URL": "", "COMFYUI_MCP_MAX_RETRIES": "  "}
    config = load(tmp_path, servers(x=STDIO), environ=env)
    assert [s.name for s in config.servers] == ["x"] and config.server("x").retry.max_retries == 3


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("COMFYUI_MCP_MAX_RETRIES", "abc", "expected an integer, got 'abc'"),
        ("COMFYUI_MCP_MAX_RETRIES", "2.5", "expected an integer"),
        ("COMFYUI_MCP_MAX_RETRIES", "-1", "must be >= 0"),
        ("COMFYUI_MCP_RETRY_INITIAL_DELAY", "soon", "expected a number"),
        ("COMFYUI_MCP_RETRY_MAX_DELAY", "-3", "must be >= 0"),
        ("COMFYUI_MCP_CIRCUIT_BREAKER_ENABLED", "maybe", "expected true or false"),
        ("COMFYUI_MCP_CIRCUIT_BREAKER_THRESHOLD", "0", "must be >= 1"),
        ("COMFYUI_MCP_CIRCUIT_BREAKER_TIMEOUT", "0", "must be > 0"),
        ("COMFYUI_MCP_CACHE_TOOLS", "sometimes", "expected true or false"),
        ("COMFYUI_MCP_CACHE_TTL", "0", "set COMFYUI_MCP_CACHE_TOOLS=false"),
        ("COMFYUI_MCP_INTERNAL_URL", "localhost:8888/mcp", "http:// or https://"),
        ("COMFYUI_MCP_INTERNAL_TIMEOUT", "-1", "must be > 0"),
        ("COMFYUI_MCP_MODELSCOPE_URL", "https://", "no host"),
        ("COMFYUI_MCP_MODELSCOPE_TIMEOUT", "x", "expected a number"),
        ("COMFYUI_MCP_INTERNAL_TIMEOUT", "inf", "must be finite, got 'inf'"),  # a wait with no deadline
        ("COMFYUI_MCP_CIRCUIT_BREAKER_TIMEOUT", "1e999", "must be finite, got '1e999'"),
        ("COMFYUI_MCP_MAX_RETRIES", "9" * 5000, "an integer of 5000 digits is out of range"),
    ],
)
def test_bad_environment_values(tmp_path: Path, var: str, value: str, reason: str) -> None:
    error = refused(tmp_path, servers(x=STDIO), environ={var: value})
    assert error.key == f"environment variable {var}"
    assert reason in str(error)


def test_bad_environment_value_without_a_file() -> None:
    with pytest.raises(ConfigError, match=r"\(no config file\): environment variable COMFYUI_MCP_MAX_RETRIES: expected an integer"):
        load_config(None, environ={"COMFYUI_MCP_MAX_RETRIES": "abc"})


# -- precedence -------------------------------------------------------------------------------


def test_precedence(tmp_path: Path) -> None:
    """built-in < supervisor.defaults < environment (all servers) < server keys < environment (one server)."""
    data = {
        "mcpServers": {
            "plain": STDIO,
            "tuned": {**STDIO, "retry": {"max_retries": 0}, "breaker": {"open_seconds": 5}},
            "modelscope": {"url": "https://h/sse", "timeout": 10},
        },
        "supervisor": {"defaults": {"retry": {"max_retries": 1, "max_delay": 4}, "breaker": {"failure_threshold": 2}, "timeout": 50}},
    }
    env = {"COMFYUI_MCP_MAX_RETRIES": "6", "COMFYUI_MCP_CIRCUIT_BREAKER_TIMEOUT": "70", "COMFYUI_MCP_MODELSCOPE_TIMEOUT": "300"}
    config = load(tmp_path, data, environ=env)
    plain, tuned, modelscope = config.servers
    # environment over supervisor.defaults; supervisor.defaults over built-ins
    assert (plain.retry.max_retries, plain.retry.max_delay, plain.retry.initial_delay) == (6, 4.0, 1.0)
    assert (plain.breaker.open_seconds, plain.breaker.failure_threshold) == (70.0, 2)
    assert plain.timeout == 50.0
    # a server's own keys over the environment's settings for all servers, merged key by key
    assert (tuned.retry.max_retries, tuned.retry.max_delay) == (0, 4.0)
    assert (tuned.breaker.open_seconds, tuned.breaker.failure_threshold) == (5.0, 2)
    # the environment's settings for one server over that server's keys
    assert modelscope.timeout == 300.0
    assert modelscope.retry.max_retries == 6


# -- redaction ----------------------------------------------------------------------------------

secrets = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), min_size=1, max_size=30).map(lambda s: "S3CR3T" + s)
#: What an HTTP header can carry (a header holding anything else is refused at load).
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30).map("T0K3N".__add__)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets, token=tokens)
@example(secret="S3CR3T${x", token="T0K3N${")  # a literal '${' in the file (a draw found it)
@example(secret="S3CR3T$${y}", token="T0K3N$${")
def test_redaction_never_leaks_a_secret(tmp_path: Path, secret: str, token: str) -> None:
    quoted = quote(secret, safe="")
    # Written into the file, a literal '${' is written '$${' (else it is a reference); the
    # values taken from the environment are never expanded again, so they stay as they are.
    literal_secret, literal_token = secret.replace("${", "$${"), token.replace("${", "$${")
    data = {
        "mcpServers": {
            "local": {
                "command": "python",
                "args": ["server.py", "--token", literal_secret, f"--api-key={literal_secret}"],
                "env": {"API_KEY": literal_secret, "FROM_ENV": "${SECRET}"},
            },
            "remote": {
                "url": f"https://user:{quoted}@example.com/mcp?key={quoted}&{quoted}#{quoted}",
                "headers": {"Authorization": f"Bearer {literal_token}", "X-From-Env": "${TOKEN}"},
            },
            "token": {"url": f"https://{quoted}@example.com/sse"},
        },
        "supervisor": {"auth_token": literal_secret},
    }
    config = load(tmp_path, data, environ={"SECRET": secret, "TOKEN": token})
    assert config.server("local").env["API_KEY"] == secret  # the real config keeps it
    assert config.server("local").env["FROM_ENV"] == secret
    assert config.server("remote").headers == {"Authorization": f"Bearer {token}", "X-From-Env": token}
    dump = json.dumps(redacted(config), ensure_ascii=False)
    assert secret not in dump
    assert quoted not in dump
    assert "S3CR3T" not in dump and "T0K3N" not in dump


def test_redacted_shape(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        servers(
            local={"command": "python", "args": ["-v", "--password", "p", "--out=x"], "env": {"A": "1"}},
            remote={"url": "https://u:p@h:8443/mcp?a=1&b#f", "headers": {"H": "v"}},
        ),
    )
    data = redacted(config)
    json.dumps(data)  # plain data
    local, remote = data["servers"]
    assert local["env"] == {"A": REDACTED}
    assert local["args"] == ["-v", "--password", REDACTED, "--out=x"]
    assert remote["headers"] == {"H": REDACTED}
    assert remote["url"] == f"https://{REDACTED}@h:8443/mcp?a={REDACTED}&{REDACTED}#{REDACTED}"
    assert data["settings"]["auth_token"] is None
    assert data["source"] == str(tmp_path / "mcp.json")
    assert msgspec.convert(data, Config) != config  # redacted values really are gone


def test_redaction_hides_the_secrets_a_bridge_takes_as_arguments(tmp_path: Path) -> None:
    """The usual way to reach a remote server from a stdio-only client, ``npx mcp-remote
    URL --header "Authorization: Bearer ${TOKEN}"``, puts the token in an argument that
    follows no secret-looking flag, and often a key in the URL's query: `check` printed
    both. Now an argument that is a URL is redacted as ``url`` is, and one that is a header
    whose name looks secret (``Authorization``, ``X-Api-Key``) keeps only its name."""
    args = [
        "-y", "mcp-remote", "https://u:pw-S3CR3T@remote.example.com/sse?api_key=S3CR3T",
        "--header", "Authorization: Bearer ${TOKEN}", "--header=X-Api-Key:S3CR3T",
        "127.0.0.1:8188", "Content-Type: application/json", "--transport", "sse-only",
    ]
    config = load(tmp_path, servers(bridge={"command": "npx", "args": args}), environ={"TOKEN": "T0K3N"})
    shown = redacted(config)["servers"][0]["args"]
    assert "S3CR3T" not in json.dumps(shown) and "T0K3N" not in json.dumps(shown), shown
    assert shown == [
        "-y", "mcp-remote", f"https://{REDACTED}@remote.example.com/sse?api_key={REDACTED}",
        "--header", f"Authorization: {REDACTED}", f"--header=X-Api-Key: {REDACTED}",
        "127.0.0.1:8188", "Content-Type: application/json", "--transport", "sse-only",
    ]


def test_health_checks_are_on_by_default_and_null_turns_them_off(tmp_path: Path) -> None:
    data = {
        **servers(on=STDIO, off={**STDIO, "health_check_interval": None}),
        "supervisor": {"defaults": {"health_check_timeout": 3}},
    }
    config = load(tmp_path, data)
    on, off = config.server("on"), config.server("off")
    assert (on.health_check_interval, on.health_check_timeout) == (30.0, 3.0)
    assert (off.health_check_interval, off.health_check_timeout) == (None, 3.0)


def test_a_config_file_anyone_may_write_is_warned_of(tmp_path: Path) -> None:
    """A config file says what commands the supervisor runs and holds its secrets; one that
    every user of the machine may write loaded without a word (found by a security probe)."""
    from supervisor._preflight import start_warnings

    config = load(tmp_path, servers(x={"command": sys.executable}))
    assert start_warnings(config) == []
    os.chmod(config.source, 0o666)
    (warning,) = start_warnings(config)
    assert warning.startswith(f"{config.source}: any user of this machine may write this file") and "chmod o-w" in warning
