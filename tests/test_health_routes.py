"""The operator's probes against a real daemon: ``/healthz`` (liveness) and ``/readyz``.

Each test starts ``python -m supervisor run`` on a free port in front of real servers from
``tests/servers/`` (helpers from ``test_daemon``) and reads the routes as a kubelet or a
load balancer would. Every wait has a deadline.
"""

from __future__ import annotations

import signal
import sys

import httpx2
import pytest
import trio
from mcp import Client

from conftest import procs_with_marker, wait_until
from test_daemon import Daemon, server_entry, start_daemon, write_config  # noqa: F401 (start_daemon: a fixture)

# A server that reads its stdin and never answers: its first start lasts its connect_timeout.
MUTE = [sys.executable, "-c", "import sys; sys.stdin.read()"]


async def get(url: str, **kw) -> httpx2.Response | None:
    """GET ``url``, or None while nothing listens there."""
    async with httpx2.AsyncClient(timeout=5) as http:
        try:
            return await http.get(url, **kw)
        except httpx2.TransportError:
            return None


async def until_answered(daemon: Daemon, path: str, check, what: str, timeout: float = 30.0, **kw) -> httpx2.Response:
    """Poll ``path`` (GET with ``kw``) until ``check(response)`` holds; fail after ``timeout`` s."""
    with trio.move_on_after(timeout):
        while True:
            if daemon.proc.poll() is not None:
                pytest.fail(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log.read_text()}")
            response = await get(daemon.url + path, **kw)
            if response is not None and check(response):
                return response
            await trio.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{daemon.log.read_text()}")


def gave_up_once_started(response: httpx2.Response) -> bool:
    body = response.json()
    return body["status"] == "serving" and body.get("not_ready", {}).get("broken") == "failed"


async def test_readyz_says_starting_while_the_servers_start(tmp_path):
    """``/healthz`` says the daemon lives from before its servers start; there was no
    readiness route at all (404 once started; while starting, every other route waited
    for the start). ``/readyz`` answers at once: 503 ``starting``, naming the server still
    starting."""
    mute, marker = server_entry("echo.py", connect_timeout=120)
    mute["command"], mute["args"] = MUTE[0], MUTE[1:]
    daemon = Daemon(write_config(tmp_path / "c.json", {"mute": mute}), tmp_path)
    try:
        with trio.fail_after(60):
            health = await until_answered(daemon, "/healthz", lambda r: r.status_code == 200, "the front")
            assert health.json()["starting"] is True
            await wait_until(lambda: procs_with_marker(marker), timeout=30, what="the server's process")
            ready = await get(daemon.url + "/readyz")
        assert ready is not None and ready.status_code == 503, ready and ready.text
        body = ready.json()
        assert (body["ready"], body["status"]) == (False, "starting")
        assert body["not_ready"] == {"mute": "starting"}
        assert (body["servers"], body["up"]) == (1, 0)
    finally:
        daemon.stop()
    await wait_until(lambda: not procs_with_marker(marker), timeout=15, what="no process left behind")


async def test_readyz_names_the_servers_down_and_leaves_out_those_fenced_off(tmp_path, start_daemon):
    """Ready: the daemon serves and every configured server (``enabled``) is connected
    with a breaker that lets calls through. A server that gave up is named ``failed``; one
    an operator fenced off (``breaker NAME open``) is down on purpose, so it is listed under
    ``fenced`` and does not hold readiness back."""
    echo, _ = server_entry("echo.py")
    broken, broken_marker = server_entry("crash_at_start.py", backoff={"max_consecutive": 1, "min": 0.05})
    off, _ = server_entry("echo.py", enabled=False)
    daemon = Daemon(write_config(tmp_path / "c.json", {"echo": echo, "broken": broken, "off": off}), tmp_path)
    try:
        with trio.fail_after(60):
            body = (await until_answered(
                daemon, "/readyz", gave_up_once_started, "the start, and the give-up"
            )).json()
            ready = await get(daemon.url + "/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "ready": False, "status": "serving", "servers": 2, "up": 1,
                "not_ready": {"broken": "failed"}, "fenced": [],
            }, body
            async with httpx2.AsyncClient(timeout=10) as http:
                fenced = await http.post(daemon.url + "/breaker/broken/open?reason=maintenance")
                assert fenced.status_code == 200, fenced.text
            ready = await get(daemon.url + "/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "ready": True, "status": "serving", "servers": 1, "up": 1, "not_ready": {}, "fenced": ["broken"],
            }
            metrics = await get(daemon.url + "/metrics")
            assert 'mcp_supervisor_server_state{server="broken",state="failed"} 1.0' in metrics.text
            assert 'mcp_supervisor_server_state{server="echo",state="running"} 1.0' in metrics.text
    finally:
        daemon.stop()
    await wait_until(lambda: not procs_with_marker(broken_marker), timeout=15, what="no process left behind")


async def test_readyz_is_503_stopping_while_the_daemon_drains(tmp_path, start_daemon):
    """On SIGTERM the daemon drains its requests in flight: ``/healthz`` stays 200 (it
    lives, ``draining``), ``/readyz`` turns 503 ``stopping`` so a load balancer sends no
    new client."""
    echo, marker = server_entry("echo.py")
    daemon = await start_daemon(write_config(tmp_path / "c.json", {"echo": echo}, drain_timeout=30))
    with trio.fail_after(60):
        ready = await get(daemon.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "serving", ready.text
        async with Client(daemon.url + "/mcp") as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: client.call_tool("sleep", {"seconds": 3.0}))
                for _ in range(300):  # until the call is on its server (not a guess at how long that takes)
                    metrics = await get(daemon.url + "/metrics")
                    if 'mcp_supervisor_inflight_calls{server="echo"} 1.0' in metrics.text:
                        break
                    await trio.sleep(0.05)
                daemon.proc.send_signal(signal.SIGTERM)
                await wait_until(lambda: "draining 1 requests" in daemon.log.read_text(), what="the drain to start")
                health, ready = await get(daemon.url + "/healthz"), await get(daemon.url + "/readyz")
        assert health.status_code == 200 and health.json()["draining"] is True
        assert ready.status_code == 503, ready.text
        assert (ready.json()["ready"], ready.json()["status"]) == (False, "stopping")
        assert await daemon.wait_exit() == 0, daemon.log.read_text()
    await wait_until(lambda: not procs_with_marker(marker), timeout=10, what="no process left behind")


async def test_readyz_needs_no_token_but_names_servers_only_to_whoever_may_read_status(tmp_path, start_daemon):
    """A probe (a kubelet, a load balancer) sends no token, so ``/readyz`` needs none, as
    ``/healthz``; but server names are for whoever may read ``/status``: without the token
    (or with a foreign ``Host``) the answer carries the counts only."""
    echo, _ = server_entry("echo.py")
    broken, _ = server_entry("crash_at_start.py", backoff={"max_consecutive": 1, "min": 0.05})
    token = "probe-s3cret"
    daemon = Daemon(write_config(tmp_path / "c.json", {"echo": echo, "broken": broken}, auth_token=token), tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with trio.fail_after(60):
            named = await until_answered(
                daemon, "/readyz", gave_up_once_started, "the start, and the give-up",
                headers=auth,
            )
            anonymous = await get(daemon.url + "/readyz")
            foreign = await get(daemon.url + "/readyz", headers={**auth, "Host": "evil.example"})
    finally:
        daemon.stop()
    assert named.status_code == 503 and named.json()["not_ready"] == {"broken": "failed"}, named.text
    for response in (anonymous, foreign):
        assert response.status_code == 503
        assert response.json() == {"ready": False, "status": "serving", "servers": 2, "up": 1}
        assert "broken" not in response.text and token not in response.text
