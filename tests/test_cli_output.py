"""What the command line prints, fact by fact: the status tree says each fact once (real
servers' real status), ``tools`` gives one line per tool, ``call`` loses no part of a result."""

from __future__ import annotations

import pytest
import trio

from conftest import server_spec, wait_until
from protocol import BackoffPolicy
from supervisor import Supervisor
from supervisor.__main__ import render_tree


def server_lines(shown: str, name: str) -> tuple[str, str]:
    """The breaker's and the connection's lines of server ``name``."""
    (breaker,) = [line for line in shown.splitlines() if line.strip().startswith(f"breaker:{name}:")]
    (connection,) = [line for line in shown.splitlines() if line.strip().startswith(f"connection:{name}:")]
    return breaker, connection


async def test_a_server_that_gave_up_says_its_error_once():
    """A server that crashes at start and gave up (``backoff.max_consecutive``): its error
    was printed three times, as the connection's "last exit", as its "last error" (the same
    text without the exception's type) and as the breaker's reason ("connection down: " and
    the same text, then "failed for good ..." and a second `restart` hint). Now the
    connection's line says it once, with the hint once; the breaker's says it is open because
    the connection is down."""
    spec = server_spec("s", "crash_at_start.py", backoff=BackoffPolicy(min=0.05, max=0.05, jitter=0.0, max_consecutive=1))
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "failed for good" in (sup.handle("s").breaker.reason or ""), timeout=30, what="it to fail")
        shown = render_tree(sup.status(), stderr=False)
    breaker, connection = server_lines(shown, "s")
    assert shown.count("exiting before the handshake") == 1, shown
    assert "ConnectionDied: could not connect: " in connection and "the server process exited with code 1" in connection
    assert connection.count("restart s") == 1 and "restart s" not in breaker, shown
    assert breaker.endswith("breaker open (connection down)"), breaker
    assert connection.startswith("      connection:s: failed, restarts=1, last exit: ConnectionDied: "), connection
    assert "last error" not in connection, connection


async def test_a_restarting_server_says_its_error_once():
    """A server waiting for its next start: the error three times as above. Now once, on
    the connection's line; the breaker's says when calls may go through again."""
    spec = server_spec("s", "crash_at_start.py", backoff=BackoffPolicy(min=30, max=30, jitter=0.0))
    async with Supervisor([spec]) as sup:
        await wait_until(lambda: "exiting before" in (sup.handle("s").breaker.reason or ""), timeout=30, what="the crash")
        shown = render_tree(sup.status())
    breaker, connection = server_lines(shown, "s")
    assert shown.count("exiting before the handshake") == 1, shown
    assert "connection:s: restarting, restarts=1, next attempt in 30.0 s, last exit: ConnectionDied: " in connection
    assert breaker.endswith("breaker open (connection down), next trial in 30 s"), breaker



async def test_a_breaker_opened_by_the_operator_keeps_its_reason():
    """Only a reason the connection's line already gives is shortened: an operator's is not."""
    spec = server_spec("s", "echo.py")
    async with Supervisor([spec]) as sup:
        await sup.wait_connected("s", timeout=30)
        await sup.set_breaker("s", "open", reason="maintenance window")
        shown = render_tree(sup.status())
    breaker, connection = server_lines(shown, "s")
    assert breaker.endswith("breaker forced_open (forced open: maintenance window)"), breaker
    assert ", pid " in connection and "last error" not in connection, connection
