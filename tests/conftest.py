"""Shared helpers: real server specs with a /proc marker, and /proc inspection."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import trio

from protocol import BackoffPolicy, ServerSpec

SERVERS = Path(__file__).parent / "servers"
FAST_BACKOFF = BackoffPolicy(min=0.05, max=0.4, jitter=0.0)


def server_spec(name: str, script: str, *args: str, env: dict[str, str] | None = None, **fields) -> ServerSpec:
    """A stdio ServerSpec running tests/servers/<script>, tagged with a unique env marker.

    Every process the server starts inherits the marker, so ``procs_with_marker`` finds the
    whole tree in /proc, grandchildren included.
    """
    marker = f"{name}-{uuid.uuid4().hex[:12]}"
    fields.setdefault("backoff", FAST_BACKOFF)
    return ServerSpec(
        name=name,
        command=sys.executable,
        args=[str(SERVERS / script), *args],
        env={"MCP_TEST_MARKER": marker, **(env or {})},
        **fields,
    )


def marker_of(spec: ServerSpec) -> str:
    return spec.env["MCP_TEST_MARKER"]


def is_live(pid: int | str) -> bool:
    """True for a running process; False once it has exited (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def procs_with_marker(marker: str) -> list[int]:
    """Live (non-zombie) pids whose environment carries ``MCP_TEST_MARKER=marker``."""
    needle = f"MCP_TEST_MARKER={marker}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and is_live(pid):
            found.append(int(pid))
    return sorted(found)


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` (real time) until true; fail the test after ``timeout`` s."""
    with trio.move_on_after(timeout):
        while True:
            value = predicate()
            if value:
                return value
            await trio.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def settled(sup, name: str, timeout: float = 30.0):
    """The ready incarnation of a 2026-07-28 server once it has nothing of its own left to do
    after connecting: its listen stream acknowledged and the lists re-read after that."""
    await sup.wait_connected(name, timeout=timeout)
    conn = sup.link(name).conn
    await wait_until(
        lambda: conn.acked_generation >= 1 and not conn.refreshing, timeout=timeout, what="the connection to settle"
    )
    return conn


def drain(events) -> list:
    """Whatever ``events`` (a receive channel) holds now, without waiting."""
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


async def collect(events, into):
    async for event in events:
        into.append(event)
