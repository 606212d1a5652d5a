"""Configured secrets never leave the supervisor in text (`supervisor._redact`).

Real servers: a remote one whose refusals echo the request's ``Authorization`` header and
URL (as some gateways' error pages do), a stdio one that prints its own configured secret
to stderr and exits. What they say is copied into the failures callers get (in process and
through the gateway, so into a model's context), the status tree, the events and the log:
each with the secrets as ``***``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
import trio
from mcp import Client, MCPError

from conftest import FAST_BACKOFF, SERVERS, collect, wait_until
from protocol import Failure, ServerSpec
from supervisor import Supervisor
from supervisor._gateway import Gateway
from supervisor._redact import Redactor, redacting_logs, spec_secrets

REMOTE_TOKEN = "REMOTESECRET-0002"
URL_SECRET = "URLSECRET-0004"
DB_PASSWORD = "DBPASS-0007"


# -- what is secret -------------------------------------------------------------------------


def test_spec_secrets_are_what_check_hides():
    spec = ServerSpec(
        name="r",
        url=f"http://user:USERPASS-1@127.0.0.1:1/mcp?api_key={URL_SECRET}&v=1",
        headers={"Authorization": f"Bearer {REMOTE_TOKEN}", "X-Api-Key": "KEY-000042"},
        env={"DB": f"postgres://app:{DB_PASSWORD}@db/app", "DEBUG": "1", "PGPASSWORD": "PGPASS-0001",
             "HOME": "/srv/app", "MODE": "production"},
        args=["--token", "TOKEN-00001", "--api-key=KEY-000002", "--header", "Authorization: Bearer HDR-000003",
              "--verbose", "plainword"],
    )
    secrets = spec_secrets(spec)
    for value in (REMOTE_TOKEN, URL_SECRET, "USERPASS-1", DB_PASSWORD, "KEY-000042", "TOKEN-00001",
                  "KEY-000002", "HDR-000003", "PGPASS-0001"):
        assert value in secrets, value
    # An env value whose name says nothing of a secret is no secret, but for a URL's in it:
    # hidden everywhere, /srv/app or production would blank out paths and words in messages.
    assert not {"1", "--verbose", "plainword", "127.0.0.1", "/srv/app", "production"} & secrets
    redact = Redactor([spec])
    # The scheme stays readable; a short value (DEBUG=1) is left alone, not masked everywhere.
    said = f"rejected: Bearer {REMOTE_TOKEN} at /mcp?api_key={URL_SECRET}&v=1 from 127.0.0.1, {DB_PASSWORD}"
    assert redact(said) == "rejected: Bearer *** at /mcp?api_key=***&v=1 from 127.0.0.1, ***"
    assert redact(redact(said)) == redact(said)


def test_redactor_follows_changes():
    """A reloaded spec's new secrets are hidden at once; the old ones too (they may still be
    in a status or an event); a source read at every use (the daemon's ``auth_token``)."""
    token = ["SUPTOKEN-old-1"]
    redact = Redactor([ServerSpec(name="a", command="x", env={"API_KEY": "FIRST-SECRET"})])
    redact.add_source(lambda: [token[0], None])
    assert redact("FIRST-SECRET SECOND-SECRET SUPTOKEN-old-1") == "*** SECOND-SECRET ***"
    redact.server(ServerSpec(name="a", command="x", env={"API_KEY": "SECOND-SECRET"}))
    redact.server(ServerSpec(name="b", url="http://h/mcp", headers={"Authorization": "Basic QUxBRERJTjpPUEVOU0VTQU1F"}))
    token[0] = "SUPTOKEN-new-2"
    assert redact("FIRST-SECRET SECOND-SECRET SUPTOKEN-old-1 SUPTOKEN-new-2 Basic QUxBRERJTjpPUEVOU0VTQU1F") == (
        "*** *** *** *** Basic ***"
    )
    redact.forget("a")
    assert redact("SECOND-SECRET") == "***"


# -- a stdio server that prints its configured secret and exits ------------------------------

CRASHER = (
    "import os, sys; "
    "sys.stderr.write('fatal: cannot reach DATABASE_URL=postgres://app:%s@db/app\\n' % os.environ['DB_PASSWORD']); "
    "sys.exit(1)"
)


def _crasher(password: str) -> ServerSpec:
    return ServerSpec(
        name="db", command=sys.executable, args=["-c", CRASHER], env={"DB_PASSWORD": password}, backoff=FAST_BACKOFF
    )


def _connection(sup: Supervisor, name: str):
    (servers,) = [c for c in sup.status().children if c.id == "servers"]
    (server,) = [c for c in servers.children if c.id == f"server:{name}"]
    return next(c for c in server.children if c.id == f"connection:{name}")


async def _refused(sup: Supervisor, name: str, server: str | None = None) -> Failure:
    with pytest.raises(Failure) as caught:
        await sup.call_tool(name, {"text": "hi"}, server=server, timeout=5)
    return caught.value


async def test_stdio_stderr_secret_is_hidden_from_callers_status_and_events():
    events: list = []
    sup = Supervisor([_crasher(DB_PASSWORD)])
    subscription = sup.subscribe()  # from the first start on
    async with sup, trio.open_nursery() as nursery:
        nursery.start_soon(collect, subscription, events)
        await wait_until(lambda: (_connection(sup, "db").detail or {}).get("stderr_tail"), what="a failed start")
        await wait_until(lambda: _connection(sup, "db").restarts >= 1, what="a restart")

        failure = await _refused(sup, "echo", server="db")
        # What the server said is there (the caller learns why), its secret is not.
        assert "cannot reach DATABASE_URL=postgres://app:***@db/app" in failure.message, failure.message
        assert DB_PASSWORD not in str(failure) and DB_PASSWORD not in repr(failure.data)
        status = msgspec.json.encode(sup.status()).decode()
        assert "app:***@db" in status and DB_PASSWORD not in status
        await wait_until(lambda: any(e.reason and "app:***@db" in e.reason for e in events), what="an exit event")
        assert DB_PASSWORD not in msgspec.json.encode(events).decode()

        # A reload that changes the secret: the new one is hidden as soon as it runs.
        new_password = "DBPASS-0008-new"
        await sup.replace_server(_crasher(new_password))
        await wait_until(lambda: _connection(sup, "db").restarts >= 1, what="a restart of the new one")
        failure = await _refused(sup, "echo", server="db")
        assert "postgres://app:***@db/app" in failure.message and new_password not in failure.message
        status = msgspec.json.encode(sup.status()).decode()
        assert new_password not in status and DB_PASSWORD not in status
        assert new_password not in msgspec.json.encode(events).decode()
        nursery.cancel_scope.cancel()


RELAPSING = textwrap.dedent(
    """
    import os, sys
    if os.path.exists({flag!r}):
        sys.stderr.write("fatal: cannot reach DATABASE_URL=postgres://app:%s@db/app\\n" % os.environ["DB_PASSWORD"])
        sys.exit(1)
    os.execv(sys.executable, [sys.executable, {echo!r}])
    """
)


async def test_gateway_request_to_a_down_server_hides_its_stderr_secret(tmp_path: Path):
    """A request the gateway passes upstream other than a tool call (``prompts/get``) to a
    server that went down: the refusal names why (its last stderr lines), secrets hidden."""
    flag = tmp_path / "crash"
    script = tmp_path / "relapsing.py"
    script.write_text(RELAPSING.format(flag=str(flag), echo=str(SERVERS / "echo.py")))
    spec = ServerSpec(name="db", command=sys.executable, args=[str(script)], env={"DB_PASSWORD": DB_PASSWORD},
                      backoff=FAST_BACKOFF)
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("db", timeout=20)
        assert sup.link("db").prompts
        flag.touch()
        os.kill(sup.link("db").process.pid, signal.SIGKILL)
        await wait_until(lambda: "app:" in (sup.link("db").down_reason or ""), what="a failed restart")
        async with Client(Gateway(sup).server) as client:
            with trio.fail_after(30), pytest.raises(MCPError) as refused:
                await client.get_prompt("greet", {"who": "you"})
        said = refused.value.error.model_dump_json()
        assert "postgres://app:***@db/app" in said and DB_PASSWORD not in said, said


# -- a remote server whose refusals echo the token -------------------------------------------

ECHOING_GATEWAY = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {servers!r})
    import http_echo

    class Echoing(http_echo._Gateway):
        '''Refuses (``fail_next``) with a body that echoes the request's token and URL.'''

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                self.said = "token rejected: %s path=%s?%s" % (
                    dict(scope["headers"]).get(b"authorization", b"").decode(),
                    scope["path"], scope["query_string"].decode())
            await super().__call__(scope, receive, send)

        async def refuse(self, send):
            body = self.said.encode()
            await send({{"type": "http.response.start", "status": self.status,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]}})
            await send({{"type": "http.response.body", "body": body}})

    http_echo._Gateway = Echoing
    sys.argv[1:] = ["--port", "0", "--json-response", "--http-errors"]
    http_echo.main()
    """
)


@pytest.fixture
def echoing_remote(tmp_path: Path):
    script = tmp_path / "echoing_gateway.py"
    script.write_text(ECHOING_GATEWAY.format(servers=str(SERVERS)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("LISTENING"), line
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(10)


def _remote(port: int) -> ServerSpec:
    return ServerSpec(
        name="remote",
        url=f"http://127.0.0.1:{port}/mcp?api_key={URL_SECRET}",
        headers={"Authorization": f"Bearer {REMOTE_TOKEN}"},
        backoff=FAST_BACKOFF,
    )


def _no_secret(text: str) -> bool:
    return REMOTE_TOKEN not in text and URL_SECRET not in text


async def test_remote_refusal_echoing_the_token_is_hidden_everywhere(echoing_remote, caplog):
    caplog.set_level(logging.INFO)
    events: list = []
    sup = Supervisor([_remote(echoing_remote)])
    subscription = sup.subscribe()
    with redacting_logs(sup.redact, [caplog.handler]):
        async with sup, trio.open_nursery() as nursery:
            nursery.start_soon(collect, subscription, events)
            await sup.wait_connected("remote", timeout=20)
            await sup.call_tool("fail_next", {"status": 401, "count": 1000}, timeout=10)

            # In process: the failure says what the remote said, without the secrets.
            failure = await _refused(sup, "echo")
            assert "token rejected: Bearer *** path=/mcp?api_key=***" in failure.message, failure.message
            assert _no_secret(str(failure)) and _no_secret(repr(failure.data))

            # Through the gateway (the daemon's /mcp): the MCP client, so the model, sees the same.
            async with Client(Gateway(sup).server) as client:
                with trio.fail_after(30):
                    result = await client.call_tool("echo", {"text": "hi"})
            assert result.is_error
            said = result.model_dump_json()
            assert "token rejected: Bearer ***" in said and _no_secret(said), said

            status = msgspec.json.encode(sup.status()).decode()
            assert _no_secret(status), status
            assert _no_secret(msgspec.json.encode(await sup.metrics_snapshot()).decode())
            assert _no_secret(msgspec.json.encode(events).decode())
            # The log: the HTTP client's request lines name the URL with its query.
            assert any("api_key=***" in r.getMessage() for r in caplog.records)
            assert _no_secret(caplog.text)
            nursery.cancel_scope.cancel()


def test_log_filter_redacts_message_arguments_and_traceback(caplog):
    redact = Redactor([ServerSpec(name="s", command="x", env={"SERVICE_TOKEN": "LOGSECRET-1"})])
    caplog.set_level(logging.INFO)
    with redacting_logs(redact, [caplog.handler]):
        log = logging.getLogger("supervisor.test_redaction")
        log.info("value %s", "LOGSECRET-1")
        try:
            raise RuntimeError("boom LOGSECRET-1")
        except RuntimeError:
            log.exception("failed")
    assert "value ***" in caplog.text and "RuntimeError: boom ***" in caplog.text
    assert "LOGSECRET-1" not in caplog.text


async def test_the_daemon_log_holds_no_configured_secret(echoing_remote, tmp_path):
    """The daemon's log got a remote's refusal body and the HTTP client's request lines as
    they were: the remote's bearer token and the URL's ``?api_key=`` in plain text. Now its
    log handler redacts every record, and the daemon's own ``auth_token`` too."""
    import httpx2
    from test_daemon import Daemon, write_config

    token = "DAEMONTOKEN-0009"
    remote = {"url": f"http://127.0.0.1:{echoing_remote}/mcp?api_key={URL_SECRET}",
              "headers": {"Authorization": f"Bearer {REMOTE_TOKEN}"}, "backoff": {"min": 0.05, "max": 0.1}}
    daemon = Daemon(write_config(tmp_path / "c.json", {"remote": remote}, auth_token=token), tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with trio.fail_after(60):
            await daemon.wait_healthy()
            async with httpx2.AsyncClient(headers=auth, timeout=20) as http:
                from mcp.client.streamable_http import streamable_http_client

                async with Client(streamable_http_client(daemon.url + "/mcp", http_client=http)) as client:
                    await client.call_tool("fail_next", {"status": 401, "count": 1000})
                    refused = await client.call_tool("echo", {"text": "hi"})
                    assert refused.is_error and "Bearer ***" in refused.model_dump_json()
                # A wrong token is logged as such, never as what was sent nor what is right.
                await http.post(daemon.url + "/reload", headers={"Authorization": f"Bearer x{token}"})
            await wait_until(lambda: "token rejected: Bearer ***" in daemon.log.read_text(), what="the refusal logged")
    finally:
        daemon.stop()
    logged = daemon.log.read_text()
    assert "api_key=***" in logged, logged[-3000:]
    assert _no_secret(logged) and token not in logged, logged[-3000:]
    # Nor the HTTP client's line per request to a remote (a soak: 1,705 of a log's lines).
    assert "HTTP Request:" not in logged, logged[-3000:]


def test_what_is_hidden_is_what_its_name_says_is_secret_and_never_a_servers_name():
    """A review found both ways wrong: ``STRIPE_KEY``, ``DB_PASS``, ``MYSQL_PWD`` and
    ``ENCRYPTION_KEY`` were shown (the names were not known as secret ones), while
    ``?transport=stream`` hid the word "stream" in every message, ``Accept:
    application/json`` hid that media type, and ``AUTH_PROVIDER=github`` on the server
    "github" renamed it ``***`` in every status id, metric label and event path (two
    series of one name, which Prometheus refuses; the breaker route answered 500)."""
    leaked = {"STRIPE_KEY": "sk-live-0001", "DB_PASS": "dbpass-0002", "MYSQL_PWD": "mysqlpwd-03",
              "ENCRYPTION_KEY": "enckey-0004", "GITHUB_TOKEN": "ghp-000005"}
    spec = ServerSpec(
        name="github", url="http://127.0.0.1:1/mcp?transport=stream&version=2025-06-18&api_key=QUERYKEY-6",
        headers={"Accept": "application/json", "X-Api-Key": "HDRKEY-0007", "Authorization": "Bearer BEARER-0008"},
    )
    local = ServerSpec(name="local", command="x", env={
        **leaked, "AUTH_PROVIDER": "github", "AUTHOR": "somebody", "TOKENIZER_DIR": "/srv/models", "MODE": "production",
    })
    secrets = spec_secrets(spec) | spec_secrets(local)
    assert set(leaked.values()) | {"QUERYKEY-6", "HDRKEY-0007", "BEARER-0008"} <= secrets, secrets
    assert not {"stream", "2025-06-18", "application/json", "somebody", "/srv/models", "production"} & secrets
    redact = Redactor([spec, local])
    assert "github" in secrets  # AUTH_PROVIDER's value, but the name of a server: kept
    said = "server 'github': stream of application/json from /srv/models (sk-live-0001, Bearer BEARER-0008)"
    assert redact(said) == "server 'github': stream of application/json from /srv/models (***, Bearer ***)"
    assert redact.deep({"github": ["github", "dbpass-0002"]}) == {"github": ["github", "***"]}
