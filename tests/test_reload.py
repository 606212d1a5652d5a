"""Config reload completes the picture: a changed server is replaced without a gap, and the
``supervisor`` section's ``toolsets`` and ``auth_token`` take effect at once.

Real servers from ``tests/servers/`` throughout: through the façade (`Supervisor.replace_server`),
an in-process `Daemon` (its ``reload`` called directly, or its HTTP app served on a free
port), and a real ``python -m supervisor`` subprocess reloaded over ``POST /reload`` while a
client calls it. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import httpx2
import msgspec
import pytest
import trio
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from conftest import marker_of, procs_with_marker, server_spec, settled, wait_until
from protocol import BackoffPolicy, ServerSpec, BreakerPolicy, CircuitOpen, DeadlineExceeded, Failure, Overloaded, UnknownTool
from supervisor import Supervisor
from supervisor._config import ConfigError, load_config
from supervisor._gateway import Gateway
from supervisor._http import Daemon, serve_http
from test_daemon import FAILURE_META_KEY, ROOT, server_entry, start_daemon, text_of, write_config

__all__ = ["start_daemon"]  # the fixture, re-exported for pytest

GAP_KINDS = ("UnknownTool", "CircuitOpen")
"""What a caller must never see because its server is merely being replaced."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CallLoop:
    """Callers that call ``tool`` back to back until stopped, recording every outcome and
    how many calls started while ``replacing`` was set."""

    def __init__(self, call) -> None:
        self.call = call  # async (number) -> outcome tuple
        self.outcomes: list[tuple] = []
        self.replacing = False
        self.started_during_replacement = 0
        self.stop = trio.Event()

    async def run(self, callers: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(self._caller)

    async def _caller(self) -> None:
        while not self.stop.is_set():
            if self.replacing:
                self.started_during_replacement += 1
            self.outcomes.append(await self.call())
            await trio.sleep(0.005)

    def gaps(self) -> list[tuple]:
        return [outcome for outcome in self.outcomes if outcome[0] in GAP_KINDS]


# -- the façade ---------------------------------------------------------------------------------


async def test_replace_server_keeps_callers_going(tmp_path):
    spec = server_spec("echo", "echo.py")
    changed = server_spec("echo", "echo.py", "--name", "changed")
    async with Supervisor([spec]) as sup:
        with trio.fail_after(10):
            old_pid = text_of(await sup.call_tool("pid", timeout=5))

        async def one_call() -> tuple:
            try:
                result = await sup.call_tool("echo", {"text": "hi"}, timeout=10)
            except Failure as failure:
                return (failure.kind, failure.message)
            return ("result", text_of(result))

        loop = CallLoop(one_call)
        slow: list = []

        async def slow_call() -> None:  # in flight on the old incarnation when it is replaced
            try:
                slow.append(await sup.call_tool("sleep", {"seconds": 0.8}, timeout=10))
            except Failure as failure:
                slow.append(failure)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop.run, 4)
                nursery.start_soon(slow_call)
                nursery.start_soon(slow_call)
                await wait_until(lambda: len(loop.outcomes) >= 10 and sup.link("echo").inflight >= 2,
                                 timeout=10, what="calls in flight")
                loop.replacing = True
                status = await sup.replace_server(changed)
                loop.replacing = False
                calls_before = len(loop.outcomes)
                await wait_until(lambda: len(loop.outcomes) >= calls_before + 10, timeout=10, what="calls after")
                loop.stop.set()

        assert status.state == "running", status
        assert loop.started_during_replacement > 0, "no call arrived during the replacement: the test proves nothing"
        assert not loop.gaps(), loop.gaps()
        assert all(outcome == ("result", "hi") for outcome in loop.outcomes), [o for o in loop.outcomes if o[0] != "result"]
        # The calls in flight on the old incarnation were drained, not cut off.
        assert len(slow) == 2 and all(not isinstance(r, Failure) and not r.is_error for r in slow), slow
        assert sup.handle("echo").spec == changed
        with trio.fail_after(10):
            assert text_of(await sup.call_tool("pid", timeout=5)) != old_pid
        await wait_until(lambda: not procs_with_marker(marker_of(spec)), timeout=10, what="the old incarnation to exit")
        assert procs_with_marker(marker_of(changed))


async def test_call_waiting_for_a_replacement_is_bounded_by_its_deadline():
    spec = server_spec("echo", "echo.py")
    # The new incarnation takes longer to start than the call may wait.
    slow_start = server_spec("echo", "slow_start.py", "--delay", "3", connect_timeout=10)
    async with Supervisor([spec]) as sup:
        with trio.fail_after(10):
            await sup.call_tool("pid", timeout=5)
        outcome: list = []

        async def waiting_call() -> None:
            await wait_until(lambda: sup.handle("echo").replacing is not None, timeout=5, what="the replacement")
            start = trio.current_time()
            try:
                await sup.call_tool("echo", {"text": "x"}, timeout=0.5)
            except Failure as failure:
                outcome.append((failure, trio.current_time() - start))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting_call)
                await sup.replace_server(slow_start)
        [(failure, _)] = outcome
        assert failure.kind == "ServerUnavailable" and "being replaced" in failure.message, failure
        assert not isinstance(failure, (UnknownTool, CircuitOpen))
        with trio.fail_after(10):
            assert text_of(await sup.call_tool("echo", {"text": "back"}, timeout=5)) == "back"


async def test_a_call_a_replacement_cuts_off_says_so_and_is_no_error_of_the_server():
    """A call still running when a replacement's drain ends (``shutdown_timeout``) failed
    "server 'echo' died while the call was in flight (connection closed: Connection
    closed)", and the new incarnation's status kept that as its last error. Now the
    failure says the server was being stopped and the call cut off at its
    ``shutdown_timeout``, and the server's last error is untouched."""
    spec = server_spec("echo", "hang.py", shutdown_timeout=0.5)
    async with Supervisor([spec]) as sup:
        outcome: list = []

        async def long_call() -> None:  # not retry-safe: not run again on the new incarnation
            try:
                await sup.call_tool("hang", {}, timeout=60)
            except Failure as failure:
                outcome.append(failure)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_call)
                await wait_until(lambda: sup.link("echo").inflight > 0, timeout=10, what="the call in flight")
                await sup.restart_server("echo")
        [failure] = outcome
        assert failure.kind == "ServerCrashed", failure
        assert "was being stopped" in failure.message and "shutdown_timeout (0.5 s)" in failure.message, failure
        assert "died" not in failure.message, failure
        assert sup.link("echo").last_error is None, sup.link("echo").last_error


async def test_restart_server_brings_back_a_failed_server_and_drains_a_healthy_one(tmp_path):
    """An operator's restart: a server that gave up (``max_consecutive``) and stays down on
    its own is started again; a healthy one gets a new process, its call in flight finishes
    on the old one, and the old process is gone."""
    fixed = tmp_path / "fixed"
    broken = server_spec(
        "broken", "crash_at_start.py", "--until-file", str(fixed), namespace="prefix",
        backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=2),
    )
    echo = server_spec("echo", "echo.py")
    async with Supervisor([echo, broken]) as sup:
        await wait_until(lambda: server_state(sup, "broken") == "failed", timeout=20, what="broken to give up")
        fixed.touch()
        await trio.sleep(0.5)
        assert server_state(sup, "broken") == "failed"  # nothing restarts it by itself
        with trio.fail_after(20):
            status = await sup.restart_server("broken")
        assert connection_of(status).state == "running", status
        assert text_of(await sup.call_tool("broken__echo", {"text": "up"}, timeout=10)) == "up"

        old_pid = sup.link("echo").process.pid
        in_flight: list = []

        async def slow_call() -> None:
            in_flight.append(await sup.call_tool("sleep", {"seconds": 0.5}, server="echo", timeout=10))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                await wait_until(lambda: sup.link("echo").inflight == 1, what="the call in flight")
                await sup.restart_server("echo")
        assert len(in_flight) == 1 and not in_flight[0].is_error
        assert procs_with_marker(marker_of(echo)) == [sup.link("echo").process.pid] != [old_pid]
        with pytest.raises(KeyError, match="no server 'nope'"):
            await sup.restart_server("nope")


async def test_an_operator_restart_is_not_shown_as_the_last_error():
    """After ``restart_server`` (as after a replacing reload) a healthy server's status said
    "last error: stopped by the supervisor", which the CLI paints red, as if it had failed.
    A stop the supervisor made is not a failure: the last error stays what it was (none
    at first; a crash's reason after one), while ``down_reason`` (what the breaker and a
    call waiting between incarnations are told) still says why it went down."""
    echo = server_spec("echo", "echo.py")
    async with Supervisor([echo]) as sup:
        link = sup.link("echo")
        with trio.fail_after(20):
            status = await sup.restart_server("echo")
        assert connection_of(status).state == "running"
        assert (link.last_error, link.down_reason) == (None, "stopped by the supervisor")
        assert connection_of(status).detail["last_error"] is None

        os.kill(link.process.pid, signal.SIGKILL)
        await wait_until(lambda: link.last_error is not None, timeout=20, what="the crash seen")
        crash = link.last_error
        await wait_until(lambda: link.conn is not None, timeout=20, what="the restart after the crash")
        with trio.fail_after(20):
            status = await sup.restart_server("echo")
        assert link.last_error == crash == connection_of(status).detail["last_error"]
        assert text_of(await sup.call_tool("echo", {"text": "up"}, timeout=10)) == "up"


async def test_a_change_of_live_keys_only_is_applied_in_place():
    """A reload that changes only ``LIVE_KEYS`` (timeouts, limits, retry policy, namespace,
    categories, ...) updates the running server: the same process and session (a stateful
    server keeps its state), a call in flight goes on under the deadline it started with,
    and the new values hold for the next call. A change to any other key replaces it."""
    spec = server_spec("echo", "echo.py")
    tight = msgspec.structs.replace(
        spec, timeout=0.3, max_concurrency=1, max_queue=0, namespace="prefix", categories={"echo": "search"},
        breaker=BreakerPolicy(enabled=False),
    )
    async with Supervisor([spec]) as sup:
        pid = sup.link("echo").process.pid
        in_flight: list = []

        async def slow_call() -> None:
            in_flight.append(await sup.call_tool("sleep", {"seconds": 1.0}, timeout=20))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                await wait_until(lambda: sup.link("echo").inflight == 1, what="the call in flight")
                diff = await sup.reconcile([tight])
                assert (diff["updated"], diff["replaced"]) == (["echo"], []), diff
                with pytest.raises(Overloaded):  # max_concurrency 1, max_queue 0, and one is in flight
                    await sup.call_tool("echo__echo", {"text": "x"}, timeout=5)
        assert len(in_flight) == 1 and not in_flight[0].is_error  # 1 s: its own deadline, not 0.3 s
        with pytest.raises(DeadlineExceeded):
            await sup.call_tool("echo__sleep", {"seconds": 3})
        assert [t.name for t in sup.list_tools(category="search")] == ["echo__echo"]
        assert sup.handle("echo").breaker.state == "disabled"
        assert sup.link("echo").process.pid == pid
        assert server_restarts(sup, "echo") == 0

        with trio.fail_after(30):
            diff = await sup.reconcile([msgspec.structs.replace(tight, args=[*tight.args, "--name", "other"])])
        assert (diff["updated"], diff["replaced"]) == ([], ["echo"]), diff
        assert sup.link("echo").process.pid != pid
        assert text_of(await sup.call_tool("echo__echo", {"text": "new"}, timeout=5)) == "new"  # still tight, now new


async def test_a_live_update_while_the_server_connects_reaches_the_new_connection():
    """The connection is built once the handshake is over: an update made meanwhile must
    be the spec it runs with, not the one its attempt started from."""
    spec = server_spec("slow", "slow_start.py", "--delay", "1.0", connect_timeout=20)
    tight = msgspec.structs.replace(spec, max_concurrency=1, max_queue=0)
    async with Supervisor([]) as sup:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.add_server, spec)
                await wait_until(lambda: "slow" in sup.servers, what="the server to be added")
                assert (await sup.reconcile([tight]))["updated"] == ["slow"]
                assert sup.link("slow").conn is None  # still connecting
        assert sup.link("slow").conn.spec == tight


async def test_a_health_check_turned_on_by_a_reload_starts_without_a_restart():
    """``health_check_interval`` from off to 0.3 s: the running connection starts checking
    (and so finds a tool the server added without a word), with the same process."""
    spec = server_spec("quiet", "list_changed.py", health_check_interval=None)
    async with Supervisor([spec]) as sup:
        await settled(sup, "quiet")  # the lists read after its listen stream opened: read before the change
        pid = sup.link("quiet").process.pid
        await sup.call_tool("add_tool", {"name": "unannounced", "notify": False}, server="quiet", timeout=10)
        await trio.sleep(0.5)
        assert "unannounced" not in {t.name for t in sup.link("quiet").tools}  # nobody looks
        checked = msgspec.structs.replace(spec, health_check_interval=0.3, health_check_timeout=5)
        assert (await sup.reconcile([checked]))["updated"] == ["quiet"]
        await wait_until(lambda: "unannounced" in {t.name for t in sup.link("quiet").tools}, what="a health check")
        assert sup.link("quiet").process.pid == pid and server_restarts(sup, "quiet") == 0


async def test_a_restart_policy_changed_in_place_applies_at_the_next_exit():
    """``restart: temporary`` (and a new backoff) by reload: the running server is not
    touched, its status says the new policy, and when it is killed it stays down, as a
    temporary child does, instead of being restarted as the permanent one it was."""
    spec = server_spec("echo", "echo.py")
    temporary = msgspec.structs.replace(spec, restart="temporary", backoff=BackoffPolicy(min=0.05, max=0.1, jitter=0.0))
    async with Supervisor([spec]) as sup:
        pid = sup.link("echo").process.pid
        assert (await sup.reconcile([temporary]))["updated"] == ["echo"]
        (servers,) = [c for c in sup.status().children if c.id == "servers"]
        (server,) = [c for c in servers.children if c.id == "server:echo"]
        assert connection_of(server).restart == "temporary" and sup.link("echo").process.pid == pid
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: sup.link("echo").conn is None, what="the connection to end")
        await trio.sleep(1.0)  # a permanent child would be back within 0.05 s (FAST_BACKOFF)
        assert sup.link("echo").conn is None and procs_with_marker(marker_of(spec)) == []


def server_restarts(sup: Supervisor, name: str) -> int:
    (servers,) = [c for c in sup.status().children if c.id == "servers"]
    (server,) = [c for c in servers.children if c.id == f"server:{name}"]
    return connection_of(server).restarts


def server_state(sup: Supervisor, name: str) -> str:
    """The state of ``name``'s connection (``failed`` is a child's state, not a subtree's)."""
    (servers,) = [c for c in sup.status().children if c.id == "servers"]
    (server,) = [c for c in servers.children if c.id == f"server:{name}"]
    return connection_of(server).state


def connection_of(server):
    (conn,) = [c for c in server.children if c.id.startswith("connection:")]
    return conn


async def test_replace_server_adds_an_unknown_server_and_refuses_overlap():
    spec = server_spec("echo", "echo.py")
    async with Supervisor([]) as sup:
        with trio.fail_after(20):
            await sup.replace_server(spec)
            assert text_of(await sup.call_tool("echo", {"text": "new"}, timeout=5)) == "new"
            changed = server_spec("echo", "echo.py", "--name", "changed")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.replace_server, changed)
                await wait_until(lambda: sup.handle("echo").replacing is not None, timeout=5, what="the replacement")
                with pytest.raises(RuntimeError, match="being replaced or removed"):
                    await sup.replace_server(spec)
                with pytest.raises(RuntimeError, match="being replaced or removed"):
                    await sup.remove_server("echo")
                with pytest.raises(RuntimeError, match="being replaced or removed"):
                    await sup.add_server(spec)
            assert sup.handle("echo").spec == changed


async def test_a_cancelled_restart_or_removal_runs_to_the_end_and_a_second_add_is_refused():
    """A restart (or a removal) whose caller was cancelled while the old incarnation drained
    its calls stopped half-way: the server stayed listed with no process (every call failed
    CircuitOpen, a second restart raised KeyError). Now it runs to the end, then the
    cancellation is raised. And adding a name supervised already replaced its handle (the
    running server unreachable); now it is refused and the server untouched."""
    spec = server_spec("echo", "echo.py")
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("echo", timeout=30)
        old_pid = sup.link("echo").process.pid
        with trio.fail_after(60):
            for change in ("restart", "remove"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lambda: sup.call_tool("sleep", {"seconds": 1.0}, server="echo", timeout=10))
                    await wait_until(lambda: sup.link("echo").inflight == 1, what="the call in flight")
                    with trio.move_on_after(0.2) as gave_up:
                        if change == "restart":
                            await sup.restart_server("echo")
                        else:
                            await sup.remove_server("echo")
                    assert gave_up.cancelled_caught
                if change == "restart":
                    assert sup.link("echo").process.pid != old_pid
                    assert text_of(await sup.call_tool("echo", {"text": "back"}, timeout=10)) == "back"
                    with pytest.raises(ValueError, match="supervised already"):
                        await sup.add_server(spec)
                    assert text_of(await sup.call_tool("echo", {"text": "untouched"}, timeout=10)) == "untouched"
        assert sup.servers == [] and sup.list_tools() == []
        with pytest.raises(UnknownTool):
            await sup.call_tool("echo", {"text": "gone"}, timeout=5)
    assert procs_with_marker(marker_of(spec)) == []


async def test_removing_a_server_still_connecting_returns_once_its_process_is_gone():
    """A server still in its first connection attempt has nothing to stop but its task, so
    it was cancelled and given ``shutdown`` seconds, as a worker is; but its teardown (close
    stdin, wait for an exit, SIGTERM, its grace, SIGKILL) takes longer for a server that
    ignores SIGTERM, and ``remove_server`` returned with the process still running (a
    replacement would run beside it). A child supervisor is now waited for until its
    children are down, as in OTP."""
    marker = f"stubborn-{uuid.uuid4().hex[:12]}"
    spec = ServerSpec(
        name="stubborn", command=sys.executable, env={"MCP_TEST_MARKER": marker}, connect_timeout=120,
        shutdown_timeout=3.5, args=["-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    )
    async with Supervisor([]) as sup:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.add_server, spec)
                await wait_until(lambda: procs_with_marker(marker), what="the server process")
                await sup.remove_server("stubborn")
                assert procs_with_marker(marker) == []


# -- an in-process daemon -----------------------------------------------------------------------


class InProcessDaemon:
    """A `Daemon` over a real `Supervisor` started from a config file, optionally serving
    its HTTP app on a free loopback port."""

    def __init__(self, path: Path, http_host: str | None = None) -> None:
        self.path = path
        self.http_host = http_host

    async def __aenter__(self) -> Daemon:
        config = load_config(self.path)
        self._sup_cm = Supervisor(config.servers, toolsets=config.settings.toolsets or None)
        sup = await self._sup_cm.__aenter__()
        self.daemon = Daemon(config, sup, Gateway(sup), str(self.path), http_host=self.http_host)
        self.daemon.ready.set()  # its servers' first start is done, as `run` says once it is
        return self.daemon

    async def __aexit__(self, *exc_info) -> None:
        await self._sup_cm.__aexit__(*exc_info)


def stdio_entry(script: str, *args: str, **fields) -> dict:
    return server_entry(script, *args, **fields)[0]


async def test_reload_applies_toolsets_at_once(tmp_path):
    config = tmp_path / "c.json"
    echo = stdio_entry("echo.py", categories={"echo": "search", "add": "workflow"})
    write_config(config, {"echo": echo}, toolsets={"finder": ["search"]})
    async with InProcessDaemon(config) as daemon:
        sup = daemon.sup
        with trio.fail_after(20):
            assert [t.name for t in sup.list_tools(toolset="finder")] == ["echo"]
            with pytest.raises(ValueError):
                sup.list_tools(toolset="builder")

            write_config(config, {"echo": echo}, toolsets={"finder": ["workflow"], "builder": ["search", "workflow"]})
            diff = await daemon.reload()
            assert diff["settings"] == ["toolsets"] and diff["unchanged"] == ["echo"], diff
            assert [t.name for t in sup.list_tools(toolset="finder")] == ["add"]
            assert sorted(t.name for t in sup.list_tools(toolset="builder")) == ["add", "echo"]
            assert sup.list_tools(toolset="main"), "the seed's toolsets stay"

            write_config(config, {"echo": echo})  # toolsets removed: back to the seed's only
            await daemon.reload()
            with pytest.raises(ValueError):
                sup.list_tools(toolset="finder")


NEW = "new-secret-token"


async def test_invalid_reload_keeps_servers_toolsets_and_token(tmp_path):
    config = tmp_path / "c.json"
    echo = stdio_entry("echo.py", categories={"echo": "search"})
    write_config(config, {"echo": echo}, toolsets={"finder": ["search"]}, auth_token="old-token")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    old_auth = {"Authorization": "Bearer old-token"}
    async with InProcessDaemon(config) as daemon:
        sup = daemon.sup
        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: serve_http(
                    daemon, "127.0.0.1", port, shutdown_trigger=stop.wait, task_status=task_status))
                async with httpx2.AsyncClient(timeout=10) as http:
                    old_pid = text_of(await sup.call_tool("pid", timeout=5))
                    # Each of these is refused as a whole, though parts of it are fine.
                    changed = {**echo, "args": [*echo["args"], "--name", "changed"]}
                    invalid = [
                        {"mcpServers": {"echo": changed, "other": {"comand": "x"}}, "supervisor": {"auth_token": NEW}},
                        {"mcpServers": {"echo": changed},
                         "supervisor": {"auth_token": NEW, "toolsets": {"finder": ["no-such-category"]}}},
                        {"mcpServers": {}, "supervisor": {"auth_token": ""}},
                    ]
                    for data in invalid:
                        config.write_text(json.dumps(data))
                        refused = await http.post(url + "/reload", headers=old_auth)
                        assert refused.status_code == 400, refused.text
                        assert NEW not in refused.text
                        # Everything as it was: token, toolsets, servers (not even restarted).
                        assert (await http.get(url + "/status", headers=old_auth)).status_code == 200
                        assert (await http.get(url + "/status", headers={"Authorization": f"Bearer {NEW}"})).status_code == 401
                        assert [t.name for t in sup.list_tools(toolset="finder")] == ["echo"]
                        assert sup.servers == ["echo"] and text_of(await sup.call_tool("pid", timeout=5)) == old_pid
                stop.set()


async def test_reload_refuses_to_remove_the_token_of_a_non_loopback_bind(tmp_path):
    """Also before the HTTP front serves: a SIGHUP while the servers start is replayed once
    they are up, before ``serve_http`` runs, and the bind was only recorded there (so such a
    reload could open a 0.0.0.0 front with no token). The daemon knows its bind from the
    start now. (Not run against a real non-loopback bind: the test machines bind 127.0.0.1
    only.)"""
    config = tmp_path / "c.json"
    echo = stdio_entry("echo.py")
    write_config(config, {"echo": echo}, auth_token="keep-me")
    async with InProcessDaemon(config, http_host="0.0.0.0") as daemon:  # as `run` makes it for such a bind
        with trio.fail_after(20):
            write_config(config, {"echo": echo})
            with pytest.raises(ConfigError, match="non-loopback"):
                await daemon.reload()
            assert daemon.auth_header == b"Bearer keep-me"
            write_config(config, {"echo": echo}, auth_token="rotated")  # changing it is fine
            await daemon.reload()
            assert daemon.auth_header == b"Bearer rotated"


# -- a daemon subprocess ------------------------------------------------------------------------


async def echo_daemon(tmp_path, start_daemon, **settings):
    """A daemon subprocess over one echo server: (daemon, its config file, the echo entry,
    the echo server's marker)."""
    config = tmp_path / "c.json"
    echo, marker = server_entry("echo.py")
    write_config(config, {"echo": echo}, **settings)
    return await start_daemon(config), config, echo, marker


async def test_daemon_reload_replaces_a_changed_server_without_a_gap(tmp_path, start_daemon):
    daemon, config, echo, marker = await echo_daemon(tmp_path, start_daemon)

    with trio.fail_after(60):
        async with Client(daemon.url + "/mcp") as client, httpx2.AsyncClient(timeout=20) as http:
            old_pid = text_of(await client.call_tool("pid", {}))

            async def one_call() -> tuple:
                try:
                    result = await client.call_tool("echo", {"text": "hi"})
                except MCPError as exc:
                    kind = exc.data.get("kind") if isinstance(exc.data, dict) else None
                    return (kind or f"untyped {exc.code}", exc.message)
                if result.is_error:
                    failure = (result.meta or {}).get(FAILURE_META_KEY) or {}
                    return (failure.get("kind", "untyped isError"), text_of(result))
                return ("result", text_of(result))

            loop = CallLoop(one_call)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop.run, 3)
                await wait_until(lambda: len(loop.outcomes) >= 10, timeout=10, what="calls before the reload")
                changed = {**echo, "args": [*echo["args"], "--name", "changed"]}
                write_config(config, {"echo": changed})
                loop.replacing = True
                response = await http.post(daemon.url + "/reload")
                loop.replacing = False
                calls_before = len(loop.outcomes)
                await wait_until(lambda: len(loop.outcomes) >= calls_before + 10, timeout=10, what="calls after")
                loop.stop.set()

            assert response.status_code == 200, response.text
            assert response.json()["replaced"] == ["echo"] and response.json()["failed"] == []
            assert response.json()["updated"] == []  # args: what the server is, so replaced
            assert loop.started_during_replacement > 0, "no call arrived during the reload: the test proves nothing"
            assert not loop.gaps(), loop.gaps()
            others = [o for o in loop.outcomes if o[0] != "result"]
            assert not [o for o in others if o[0].startswith("untyped")], others
            assert all(o[1] == "hi" for o in loop.outcomes if o[0] == "result")
            assert text_of(await client.call_tool("pid", {})) != old_pid
    await wait_until(lambda: len(procs_with_marker(marker)) == 1, timeout=10, what="only the new incarnation to run")


async def test_daemon_reload_of_a_timeout_keeps_the_server_process(tmp_path, start_daemon):
    """Through the config file and ``POST /reload``: a changed ``timeout`` is applied in
    place (``updated``), the same process serves on, and the new timeout holds."""
    daemon, config, echo, marker = await echo_daemon(tmp_path, start_daemon)
    with trio.fail_after(60):
        async with Client(daemon.url + "/mcp") as client, httpx2.AsyncClient(timeout=20) as http:
            pid = text_of(await client.call_tool("pid", {}))
            write_config(config, {"echo": {**echo, "timeout": 0.5}})
            response = await http.post(daemon.url + "/reload")
            assert response.status_code == 200, response.text
            assert (response.json()["updated"], response.json()["replaced"]) == (["echo"], [])
            assert text_of(await client.call_tool("pid", {})) == pid
            late = await client.call_tool("sleep", {"seconds": 3})
            assert late.is_error and (late.meta or {}).get(FAILURE_META_KEY, {}).get("kind") == "DeadlineExceeded"
            assert procs_with_marker(marker) == [int(pid)]


async def test_daemon_reload_changes_the_auth_token_at_once(tmp_path, start_daemon):
    daemon, config, echo, _ = await echo_daemon(tmp_path, start_daemon, auth_token="first-token")
    first = {"Authorization": "Bearer first-token"}
    second = {"Authorization": "Bearer second-token"}

    async def status_code(http, headers) -> int:
        return (await http.get(daemon.url + "/status", headers=headers)).status_code

    with trio.fail_after(30):
        async with httpx2.AsyncClient(timeout=10) as http:
            assert await status_code(http, first) == 200
            assert await status_code(http, second) == 401

            write_config(config, {"echo": echo}, auth_token="second-token")
            reloaded = await http.post(daemon.url + "/reload", headers=first)
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["settings"] == ["auth_token"] and reloaded.json()["unchanged"] == ["echo"]
            assert "second-token" not in reloaded.text
            assert await status_code(http, first) == 401
            assert await status_code(http, second) == 200
            assert (await http.post(daemon.url + "/reload", headers=first)).status_code == 401

            # The MCP endpoint follows the same token.
            async with httpx2.AsyncClient(headers=second, timeout=10) as authed:
                async with Client(streamable_http_client(daemon.url + "/mcp", http_client=authed)) as client:
                    assert text_of(await client.call_tool("echo", {"text": "in"})) == "in"

            # Removing the token (a loopback bind) opens the routes at once.
            write_config(config, {"echo": echo})
            assert (await http.post(daemon.url + "/reload", headers=second)).status_code == 200
            assert await status_code(http, {}) == 200
    assert "first-token" not in daemon.log.read_text() and "second-token" not in daemon.log.read_text()


async def reload_in_background(http, daemon, nursery) -> list:
    """POST /reload from a task of ``nursery``; the list gets its response (or the error)."""
    answers: list = []

    async def post() -> None:
        try:
            answers.append(await http.post(daemon.url + "/reload"))
        except httpx2.HTTPError as exc:
            answers.append(exc)

    nursery.start_soon(post)
    return answers


async def test_a_stop_cuts_a_reload_short_and_answers_it(tmp_path, start_daemon):
    """A reload is waiting for a server it added to connect (a slow start: ``npx``
    downloading, say) when SIGTERM comes. The reload ran shielded to its end, so the daemon
    exited only once that server had connected, however long past ``drain_timeout``, and
    the ``POST /reload`` got no answer at all. Now the stop cuts the reload short: its
    caller is told the daemon is stopping, and the daemon exits with nothing left running."""
    daemon, config, echo, marker = await echo_daemon(tmp_path, start_daemon, drain_timeout=1)
    slow, slow_marker = server_entry("slow_start.py", "--delay", "120", connect_timeout=200)
    write_config(config, {"echo": echo, "slow": slow}, drain_timeout=1)
    with trio.fail_after(60):  # the slow server would connect after 120 s
        async with httpx2.AsyncClient(timeout=100) as http, trio.open_nursery() as nursery:
            answers = await reload_in_background(http, daemon, nursery)
            await wait_until(lambda: procs_with_marker(slow_marker), timeout=20, what="the added server to start")
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit(timeout=40) == 0
        (answer,) = answers
        assert not isinstance(answer, Exception), f"the reload got no answer: {answer!r}"
        assert answer.status_code == 503 and "stopping" in answer.json()["error"], answer.text
    assert not procs_with_marker(marker) and not procs_with_marker(slow_marker)


async def test_a_reload_asked_while_the_daemon_drains_is_refused(tmp_path, start_daemon):
    """SIGTERM, with a call in flight to drain: a ``POST /reload`` then was applied, starting
    a server the daemon was about to stop (and holding up its exit). Now it is refused,
    saying the daemon is stopping, and nothing starts. The 503 says ``"begun": false``
    (as one cut short said "unknown" too, the CLI printed "whether `reload` took effect is
    unknown" and exited 4): the CLI says nothing was done, exit 1."""
    config = tmp_path / "c.json"
    hang, marker = server_entry("hang.py")
    hang_log = tmp_path / "hang.log"
    hang["env"]["EXEC_LOG"] = str(hang_log)
    write_config(config, {"hang": hang}, drain_timeout=30)
    daemon = await start_daemon(config)
    late, late_marker = server_entry("echo.py")
    with trio.fail_after(60):
        async with Client(daemon.url + "/mcp") as client, httpx2.AsyncClient(timeout=20) as http:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "hang", {})
                await wait_until(lambda: hang_log.exists() and "hang start" in hang_log.read_text(), timeout=10,
                                 what="the call to be in flight")
                daemon.proc.send_signal(signal.SIGTERM)
                while not (await http.get(daemon.url + "/healthz")).json()["draining"]:
                    await trio.sleep(0.05)
                write_config(config, {"hang": hang, "late": late}, drain_timeout=30)
                refused = await http.post(daemon.url + "/reload")
                assert refused.status_code == 503 and "stopping" in refused.json()["error"], refused.text
                assert refused.json()["begun"] is False, refused.text
                restart = await http.post(daemon.url + "/restart/hang")
                assert restart.status_code == 503 and "stopping" in restart.json()["error"], restart.text
                for command in (["reload"], ["restart", "hang"]):
                    run = await trio.run_process(
                        [sys.executable, "-m", "supervisor", *command, "--url", daemon.url], cwd=ROOT,
                        capture_stdout=True, capture_stderr=True, check=False,
                    )
                    said = run.stderr.decode()
                    assert run.returncode == 1, (command, run.returncode, said)
                    assert "the daemon is stopping" in said and "nothing was done" in said and "unknown" not in said, said
                nursery.cancel_scope.cancel()
    assert not procs_with_marker(late_marker)
    daemon.proc.send_signal(signal.SIGTERM)  # the second: out at once
    await daemon.wait_exit(timeout=20)


async def test_an_operators_breaker_does_not_wait_for_a_reload_under_way(tmp_path, start_daemon):
    """``breaker NAME open`` is how an operator fences off a server that answers wrongly;
    it waited behind any reload under way, which waits for the servers it adds to connect
    (here 120 s). Now it acts at once on a server the reload does not touch."""
    daemon, config, echo, _ = await echo_daemon(tmp_path, start_daemon)
    slow, slow_marker = server_entry("slow_start.py", "--delay", "120", connect_timeout=200)
    write_config(config, {"echo": echo, "slow": slow})
    with trio.fail_after(60):
        async with httpx2.AsyncClient(timeout=100) as http, trio.open_nursery() as nursery:
            await reload_in_background(http, daemon, nursery)
            await wait_until(lambda: procs_with_marker(slow_marker), timeout=20, what="the added server to start")
            fenced = await http.post(daemon.url + "/breaker/echo/open", params={"reason": "bad answers"})
            assert fenced.status_code == 200, fenced.text
            assert "bad answers" in json.dumps(fenced.json())
            nursery.cancel_scope.cancel()
