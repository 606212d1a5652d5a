"""What a ``${VAR}`` took from the environment, VAR's name saying it is secret, is hidden
wherever the reference stood (`supervisor._redact`, `ServerSpec.from_environ`).

Before, the runtime redactor knew only where a secret sits in a spec (a secret-named ``env``
key, a header, a ``--token`` flag, a URL's password or ``?api_key=``): ``"args": ["serve",
"${GITHUB_TOKEN}"]``, ``"url": "https://h/mcp/${SEARCH_KEY}"`` or ``"env": {"CONFIG":
"token=${OPENAI_API_KEY}"}`` brought a token into places it did not look at, and a server
that printed it (or an upstream that echoed it) put it in the status, the events, the
failures callers get and the daemon's log. ``${HOME}``-like values stay shown: hidden
everywhere, a path or a port would be blanked out of every message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx2
import msgspec
import trio

from conftest import FAST_BACKOFF, SERVERS, collect, wait_until
from supervisor import Supervisor
from supervisor._config import Substitutions, load_config, redacted
from supervisor._redact import Redactor
from test_redaction import _connection, _refused

GITHUB_TOKEN = "ghp-VARSECRET-0001"
OPENAI_API_KEY = "sk-VARSECRET-0002"
SEARCH_KEY = "srch-VARSECRET-0003"
HOME = "/home/vars-test-user"  # long enough to be hidden, were it taken for a secret
PORT = "18123"

#: Says what it was started with (its arguments and two env values), then exits.
PRINTER = (
    "import os, sys; "
    "sys.stderr.write('fatal: started as %s with CONFIG=%s WHERE=%s\\n' "
    "% (' '.join(sys.argv[1:]), os.environ['CONFIG'], os.environ['WHERE'])); "
    "sys.exit(1)"
)


def _entry() -> dict:
    return {
        "command": sys.executable,
        "args": ["-c", PRINTER, "serve", "${GITHUB_TOKEN}", "--port", "${PORT}"],
        "env": {"CONFIG": "token=${OPENAI_API_KEY}", "WHERE": "${HOME}"},
        "backoff": msgspec.to_builtins(FAST_BACKOFF),
    }


def _write(path: Path, servers: dict) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def test_secret_named_variables_are_hidden_wherever_they_went(tmp_path: Path) -> None:
    environ = {"GITHUB_TOKEN": GITHUB_TOKEN, "OPENAI_API_KEY": OPENAI_API_KEY, "SEARCH_KEY": SEARCH_KEY,
               "HOME": HOME, "PORT": PORT}
    config_path = _write(tmp_path / "c.json", {
        "local": _entry(),
        "remote": {"url": "https://h.example/mcp/${SEARCH_KEY}?v=${env:PORT}"},
        "defaulted": {"command": "x", "args": ["${DB_PASS:-written-in-file}"]},  # not from the environment
    })
    substitutions = Substitutions()
    config = load_config(config_path, environ=environ, substitutions=substitutions)
    assert config.server("local").from_environ == {
        "GITHUB_TOKEN": GITHUB_TOKEN, "PORT": PORT, "OPENAI_API_KEY": OPENAI_API_KEY, "HOME": HOME
    }
    assert config.server("remote").from_environ == {"SEARCH_KEY": SEARCH_KEY, "PORT": PORT}
    assert config.server("defaulted").from_environ == {}

    redact = Redactor(config.servers)
    said = (f"started as serve {GITHUB_TOKEN} --port {PORT} with CONFIG=token={OPENAI_API_KEY} WHERE={HOME}; "
            f"GET https://h.example/mcp/{SEARCH_KEY}?v={PORT}: 404; written-in-file")
    assert redact(said) == (f"started as serve *** --port {PORT} with CONFIG=token=*** WHERE={HOME}; "
                            f"GET https://h.example/mcp/***?v={PORT}: 404; written-in-file")
    # `check` shows the config as written: the loader's note is not part of it.
    shown = json.dumps(redacted(config, substitutions))
    assert "from_environ" not in shown and GITHUB_TOKEN not in shown and SEARCH_KEY not in shown


async def test_a_server_printing_a_substituted_secret_shows_it_nowhere_and_a_reload_learns_the_new_one(
    tmp_path: Path,
) -> None:
    environ = {"GITHUB_TOKEN": GITHUB_TOKEN, "OPENAI_API_KEY": OPENAI_API_KEY, "HOME": HOME, "PORT": PORT}
    config_path = _write(tmp_path / "c.json", {"printer": _entry()})
    events: list = []
    sup = Supervisor(load_config(config_path, environ=environ).servers)
    subscription = sup.subscribe()
    async with sup, trio.open_nursery() as nursery:
        nursery.start_soon(collect, subscription, events)
        await wait_until(lambda: _connection(sup, "printer").restarts >= 1, what="a failed start and a restart")

        failure = await _refused(sup, "echo", server="printer")
        # What the server said is there, with the tokens hidden and HOME, PORT shown.
        assert f"started as serve *** --port {PORT} with CONFIG=token=*** WHERE={HOME}" in failure.message, (
            failure.message
        )
        status = msgspec.json.encode(sup.status()).decode()
        assert f"serve *** --port {PORT}" in status and HOME in status
        assert GITHUB_TOKEN not in status and OPENAI_API_KEY not in status, status
        await wait_until(lambda: any(e.reason and "serve ***" in e.reason for e in events), what="an exit event")
        assert GITHUB_TOKEN not in msgspec.json.encode(events).decode()

        # A reload where the environment holds a new token: the new specs bring it along.
        new_token = "ghp-VARSECRET-0004-new"
        reloaded = load_config(config_path, environ={**environ, "GITHUB_TOKEN": new_token})
        assert (await sup.reconcile(reloaded.servers))["replaced"] == ["printer"]
        await wait_until(lambda: _connection(sup, "printer").restarts >= 1, what="a restart of the new one")
        failure = await _refused(sup, "echo", server="printer")
        assert f"started as serve *** --port {PORT}" in failure.message and new_token not in failure.message
        status = msgspec.json.encode(sup.status()).decode()
        assert new_token not in status and GITHUB_TOKEN not in status
        assert sup.redact(f"{GITHUB_TOKEN} {new_token} {HOME}") == f"*** *** {HOME}"  # the old one retired, kept
        assert new_token not in msgspec.json.encode(events).decode()
        nursery.cancel_scope.cancel()


async def test_a_value_renamed_to_a_secret_variable_is_hidden_without_a_restart(tmp_path: Path) -> None:
    """Where the values came from is no reason to restart a server: ``${A}`` renamed to
    ``${B_TOKEN}`` (the same value) updates the running server in place, which hides the
    value from then on."""
    value = "plain-then-secret-0005"
    entry = {"command": sys.executable, "args": [str(SERVERS / "echo.py")], "env": {"LABEL": "${LABEL}"}}
    config_path = _write(tmp_path / "c.json", {"echo": entry})
    async with Supervisor(load_config(config_path, environ={"LABEL": value}).servers) as sup:
        await sup.wait_connected("echo", timeout=20)
        incarnation = sup.link("echo").conn
        assert sup.redact(value) == value
        _write(config_path, {"echo": {**entry, "env": {"LABEL": "${LABEL_TOKEN}"}}})
        reloaded = load_config(config_path, environ={"LABEL_TOKEN": value})
        assert (await sup.reconcile(reloaded.servers))["updated"] == ["echo"]
        assert sup.link("echo").conn is incarnation, "the server was restarted"
        assert sup.redact(f"label {value}") == "label ***"


async def test_the_daemon_shows_no_substituted_secret_after_start_or_reload(tmp_path: Path, monkeypatch) -> None:
    """The daemon loads its config from its own environment, at start and at every reload;
    its log hides the values from its first line (the start's warnings came before the
    log's redaction was in place)."""
    from test_daemon import Daemon

    second = "sk-VARSECRET-0005-second"
    for name, value in {"GITHUB_TOKEN": GITHUB_TOKEN, "OPENAI_API_KEY": OPENAI_API_KEY, "HOME": HOME,
                        "PORT": PORT, "SECOND_API_KEY": second}.items():
        monkeypatch.setenv(name, value)  # the daemon inherits them
    # A command not on PATH: the start's warning about it quotes the command line.
    missing = {"command": "not-installed-mcp-server serve ${GITHUB_TOKEN}"}
    config_path = _write(tmp_path / "c.json", {"printer": _entry(), "missing": missing})
    daemon = Daemon(config_path, tmp_path)

    async def status(http: httpx2.AsyncClient) -> str:
        try:
            return (await http.get(daemon.url + "/status", timeout=2.0)).text
        except httpx2.HTTPError:
            return ""

    try:
        with trio.fail_after(60):
            async with httpx2.AsyncClient() as http:
                said = ""
                while "started as serve" not in said:
                    if daemon.proc.poll() is not None:
                        raise AssertionError(daemon.log.read_text())
                    said = await status(http)
                    await trio.sleep(0.1)
                assert f"started as serve *** --port {PORT} with CONFIG=token=*** WHERE={HOME}" in said, said
                assert GITHUB_TOKEN not in said and OPENAI_API_KEY not in said

                entry = _entry()
                entry["env"]["CONFIG"] = "key=${SECOND_API_KEY}"
                _write(config_path, {"printer": entry})
                reloaded = await http.post(daemon.url + "/reload", timeout=30.0)
                assert reloaded.status_code == 200, reloaded.text
                while "CONFIG=key=" not in said:
                    said = await status(http)
                    await trio.sleep(0.1)
                assert "with CONFIG=key=*** WHERE=" in said and second not in said, said
    finally:
        daemon.stop()
    logged = daemon.log.read_text()
    for value in (GITHUB_TOKEN, OPENAI_API_KEY, second):
        assert value not in logged, logged[-3000:]
