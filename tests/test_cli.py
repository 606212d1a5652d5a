"""The command line's own promises: ``check`` shows no secret; ``reload``, ``restart`` and
``breaker`` give no false verdict (a refusal, a reachability error) for what they cannot
know, and wait on a daemon as long as it is alive. Real subprocesses, real daemons
(`test_daemon.Daemon`), real strangers on real ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from supervisor._config import Substitutions, load_config

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# -- check --------------------------------------------------------------------------------------


def test_check_shows_nothing_a_variable_took_from_the_environment(tmp_path):
    """`check` ("secrets redacted") printed a ``${VAR}``'s value wherever no pattern caught
    it: a positional argument, after ``--key`` or ``-t``, after ``Bearer `` in an
    argument, in a command line put in ``command`` (its warning on stderr too). Now every
    value taken from the environment is ``***`` wherever it stands, and what the daemon
    runs is unchanged."""
    secret = "sk-SECRET123"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"mcpServers": {
        "x": {"command": "/bin/echo", "args": [
            "serve", "${MY_API_KEY}", "--key", "${MY_API_KEY}", "-t", "${MY_API_KEY}", "--apikey=${MY_API_KEY}",
            "postgres://u:${MY_API_KEY}@h/db", "Bearer ${MY_API_KEY}", "--port", "${ONE}", "--level=${LEVEL:-info}",
        ], "env": {"K": "${MY_API_KEY}"}},
        "r": {"url": "http://127.0.0.1:18199/mcp/${MY_API_KEY}/x", "headers": {"X": "${MY_API_KEY}"}},
        "line": {"command": "no-such-tool-xyz --opaque ${MY_API_KEY}"},
    }}))
    env = {"MY_API_KEY": secret, "ONE": "1"}
    run = cli("check", "--config", str(config), env=env)
    assert run.returncode == 0, run.stderr
    assert secret not in run.stdout + run.stderr, run.stdout + run.stderr
    shown = json.loads(run.stdout)
    servers = {server["name"]: server for server in shown["servers"]}
    assert servers["x"]["args"] == [
        "serve", "***", "--key", "***", "-t", "***", "--apikey=***", "postgres://***@h/db", "Bearer ***",
        "--port", "***", "--level=info",  # a default written in the file is no secret
    ]
    assert servers["r"]["url"] == "http://127.0.0.1:18199/mcp/***/x"
    assert servers["line"]["command"] == "no-such-tool-xyz --opaque ***"
    # A short value is hidden where it was put, not in every string that holds a "1".
    assert shown["settings"]["http"] == "127.0.0.1:8765" and servers["x"]["command"] == "/bin/echo"
    assert "no-such-tool-xyz --opaque ***" in run.stderr, run.stderr  # the warning about it

    config_run = load_config(config, environ={**os.environ, **env})  # what the daemon uses
    assert config_run.server("x").args[1] == secret and config_run.server("r").headers == {"X": secret}


def test_substitutions_change_nothing_the_config_says(tmp_path):
    """Collecting the substitutions is seen only by `redacted`: the loaded config is the
    same with and without them."""
    environ = {"TOKEN": "t0k3n-value"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"mcpServers": {"a": {"url": "http://h/mcp", "headers": {"A": "Bearer ${TOKEN}"}}}}))
    seen = Substitutions()
    assert load_config(path, environ=environ, substitutions=seen) == load_config(path, environ=environ)
    assert seen.values == {"t0k3n-value"} and seen.shown == {"Bearer t0k3n-value": "Bearer ***"}
