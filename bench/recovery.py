"""Time from kill -9 of a stdio server until its replacement is ready, minus the server's own
start time, at p50 and p99.

In one process and one run, kill by kill:

- baseline: start the same server script (``tests/servers/echo.py``) directly with
  ``mcp.Client`` until it is initialized, and, separately timed, until its tools, prompts and
  resources are listed as well (what the supervisor learns before it calls a server ready);
- supervised: ``os.kill(pid, SIGKILL)`` on one supervised server, then wait for the ``ready``
  event of its new connection from ``sup.subscribe()`` (and check ``sup.link(name).conn``
  is live on a new pid).

Both alternate, so they share the machine's noise. The servers are killed round-robin (one
server at most 8 times a minute), so the restart intensity limit (10 a minute per server)
is never what is measured, and each restart waits the backoff's first delay. The backoff
used is printed: ``BackoffPolicy(min=0.05, max=0.4, jitter=0)``, the tests' FAST_BACKOFF.

Prints p50/p99 of recovery and of the baselines, the overhead (recovery minus start) and
the overhead without the backoff delay (the supervisor's own share: noticing the death,
tearing the old incarnation down, learning the new one's tools).

    python bench/recovery.py [--kills 50]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import trio
from mcp import Client, StdioServerParameters

from protocol import BackoffPolicy, ServerSpec
from supervisor import Supervisor

ECHO = Path(__file__).resolve().parent.parent / "tests" / "servers" / "echo.py"
#: The tests' FAST_BACKOFF (tests/conftest.py): the first restart waits 0.05 s.
BACKOFF = BackoffPolicy(min=0.05, max=0.4, jitter=0.0)
KILLS_PER_SERVER = 8  # below the per-server restart intensity (10 within 60 s)
START_DEADLINE = 120.0
RECOVERY_DEADLINE = 60.0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def direct_start() -> tuple[float, float]:
    """Seconds until a fresh server is initialized, and until its lists are learned too."""
    params = StdioServerParameters(command=sys.executable, args=[str(ECHO)])
    with trio.fail_after(START_DEADLINE):
        t0 = time.perf_counter()
        async with Client(params) as client:
            initialized = time.perf_counter() - t0
            await client.list_tools()
            await client.list_prompts()
            await client.list_resources()
            await client.list_resource_templates()
            learned = time.perf_counter() - t0
    return initialized, learned


async def kill_and_wait(sup: Supervisor, events: trio.MemoryReceiveChannel, name: str) -> tuple[float, float]:
    """kill -9 ``name``'s server; seconds until its new connection is ready, and the backoff
    delay the supervisor chose for that restart."""
    link = sup.link(name)
    old_pid = link.process.pid
    assert old_pid is not None and link.conn is not None, f"{name} is not up"
    while True:  # drop what happened before this kill
        try:
            events.receive_nowait()
        except trio.WouldBlock:
            break
    delay = math.nan
    with trio.fail_after(RECOVERY_DEADLINE):
        t0 = time.perf_counter()
        os.kill(old_pid, signal.SIGKILL)
        async for event in events:
            if not event.path.endswith(f"/connection:{name}"):
                continue
            if event.kind == "restarting":
                delay = event.delay
            if event.kind == "ready":
                took = time.perf_counter() - t0
                break
    new_pid = link.process.pid if link.process else None
    assert link.conn is not None and new_pid not in (None, old_pid), f"{name} did not come back on a new pid"
    return took, delay


async def measure(kills: int) -> dict[str, float]:
    # Two servers at least, so that no server is killed again before its backoff reset
    # (then every restart waits the same first delay); one is enough for one kill.
    servers = 1 if kills == 1 else max(2, math.ceil(kills / KILLS_PER_SERVER))
    specs = [
        ServerSpec(name=f"r{i}", command=sys.executable, args=[str(ECHO)], namespace="prefix", backoff=BACKOFF)
        for i in range(servers)
    ]
    await direct_start()  # warm the file cache for both sides
    initialized, learned, recovery, delays = [], [], [], []
    # The whole run has a deadline: each start and each recovery has its own, too.
    with trio.fail_after(START_DEADLINE * servers + (START_DEADLINE + RECOVERY_DEADLINE) * kills):
        async with Supervisor(specs) as sup:
            events = sup.subscribe(10_000)
            for i in range(kills):
                init, learn = await direct_start()
                initialized.append(init)
                learned.append(learn)
                took, delay = await kill_and_wait(sup, events, specs[i % servers].name)
                recovery.append(took)
                delays.append(delay)
    figures: dict[str, float] = {"kills": float(kills), "servers": float(servers)}
    for label, samples in (("recovery", recovery), ("start", initialized), ("start_learned", learned)):
        figures[f"{label}_p50"] = statistics.median(samples)
        figures[f"{label}_p99"] = percentile(samples, 0.99)
    figures["backoff_delay"] = statistics.median(delays)
    for q in ("p50", "p99"):
        figures[f"overhead_{q}"] = figures[f"recovery_{q}"] - figures[f"start_{q}"]
        figures[f"overhead_vs_learned_{q}"] = figures[f"recovery_{q}"] - figures[f"start_learned_{q}"]
        figures[f"own_{q}"] = figures[f"overhead_vs_learned_{q}"] - figures["backoff_delay"]
        figures[f"ratio_{q}"] = figures[f"recovery_{q}"] / figures[f"start_{q}"]
    return figures


def run(kills: int = 50) -> dict[str, float]:
    """Measure ``kills`` kill -9 recoveries (and as many direct starts); seconds throughout.

    Keys: ``recovery_p50/p99``, ``start_p50/p99`` (initialized), ``start_learned_p50/p99``
    (initialized and lists learned), ``backoff_delay``, ``overhead_p50/p99`` (recovery minus
    start), ``overhead_vs_learned_p50/p99``, ``own_p50/p99`` (that minus the backoff delay),
    ``ratio_p50/p99`` (recovery / start), ``kills``, ``servers``. Every server process it
    started is gone when it returns. The supervisor's warnings (one per kill) are silenced
    while it runs.
    """
    quiet = logging.getLogger("supervisor")  # one "exited: killed by SIGKILL" warning per kill
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return trio.run(measure, kills)
    finally:
        quiet.setLevel(level)


def report(figures: dict[str, float]) -> None:
    print(
        f"kill -9 of a stdio echo server until its new connection is ready; {int(figures['kills'])} kills"
        f" round-robin over {int(figures['servers'])} servers"
    )
    print(f"backoff: BackoffPolicy(min={BACKOFF.min}, max={BACKOFF.max}, jitter={BACKOFF.jitter}) (FAST_BACKOFF),")
    print(f"  restart delay chosen: {figures['backoff_delay'] * 1e3:.0f} ms")
    print(f"  {'':48} {'p50 ms':>9} {'p99 ms':>9}")
    rows = [
        ("direct start, to initialized (baseline)", "start"),
        ("direct start, initialized + lists learned", "start_learned"),
        ("supervised: kill -9 -> ready", "recovery"),
        ("overhead: recovery - start", "overhead"),
        ("overhead: recovery - start with lists", "overhead_vs_learned"),
        ("  of which not the backoff delay", "own"),
    ]
    for label, key in rows:
        print(f"  {label:48} {figures[f'{key}_p50'] * 1e3:9.1f} {figures[f'{key}_p99'] * 1e3:9.1f}")
    print(f"  ratio recovery / start:  p50 {figures['ratio_p50']:.2f}   p99 {figures['ratio_p99']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    args = parser.parse_args()
    report(run(args.kills))


if __name__ == "__main__":
    main()
