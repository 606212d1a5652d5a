"""Chaos, CI profile: kill -9 a random connected server every 0.5 s while calls run at steady
load: 10 stdio servers, 50 calls in flight (quick echo, slow sleep and the destructive
write_note), for ``CHAOS_SECONDS`` (20: the CI profile).

Invariants checked after the run (the long profile is ``CHAOS_SECONDS=300``):

- every issued call got exactly one answer (result, tool error or typed failure) within its
  deadline + 1 s (+ the time this process was starved of CPU meanwhile, measured, as in
  the faults test): a ledger of call ids, zero lost, zero duplicated;
- no destructive call ran twice (the servers record executions to a file);
- every kill is counted as exactly one death of cause ``exited``, and every restart the
  metrics counted has a death behind it (the only other cause allowed is ``hang``: a server
  starved past its calls' deadlines under this load);
- after shutdown no process of any server's tree is left (/proc);
- the supervisor's own open file descriptors are back to their starting count.
"""

from __future__ import annotations

import os
import random
import signal
import time

import trio

from _load import Ledger, LoopLag, open_fds, run_load
from conftest import marker_of, procs_with_marker, server_spec
from protocol import BackoffPolicy, RetryPolicy
from supervisor import Supervisor

SECONDS = float(os.environ.get("CHAOS_SECONDS", "20"))
SERVERS = 10
IN_FLIGHT = 50
TIMEOUT = 5.0


def pick(rng: random.Random, serial: int) -> tuple[str, dict[str, object]]:
    server = f"s{rng.randrange(SERVERS)}"
    tool, args = rng.choice(
        [("echo", {"text": str(serial)}), ("sleep", {"seconds": 0.05}), ("write_note", {"text": f"n{serial}"})]
    )
    return f"{server}__{tool}", args


async def test_kill_9_under_load_loses_nothing_and_leaks_nothing(tmp_path):
    log = tmp_path / "exec.log"
    specs = [
        server_spec(
            f"s{i}",
            "echo.py",
            env={"EXEC_LOG": str(log)},
            namespace="prefix",
            backoff=BackoffPolicy(min=0.1, max=0.4, jitter=0.1),
            retry=RetryPolicy(max_retries=2, initial_delay=0.05, max_delay=0.2),
        )
        for i in range(SERVERS)
    ]
    fds_before = open_fds()
    kills = 0
    killed: set[int] = set()
    rng = random.Random(1)
    lag = LoopLag()  # a call may be late by as much as ten restarting servers starved us
    ledger = Ledger("kill -9", lag)

    async with Supervisor(specs) as sup:
        stop_at = trio.current_time() + SECONDS

        async def killer() -> None:
            nonlocal kills
            while trio.current_time() < stop_at - 1.0:
                await trio.sleep(0.5)
                # A random connected server, so a slow machine does not mean few kills; never
                # the same process twice (a loaded loop may not have noticed the last kill yet).
                alive = [
                    link.process.pid for link in (sup.link(spec.name) for spec in specs)
                    if link.conn is not None and link.process is not None and link.process.pid not in (None, *killed)
                ]
                if alive:
                    victim = rng.choice(alive)
                    os.kill(victim, signal.SIGKILL)
                    killed.add(victim)
                    kills += 1

        async with trio.open_nursery() as watching:
            watching.start_soon(lag.run)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: run_load(sup, ledger, pick, until=stop_at, in_flight=IN_FLIGHT, timeout=TIMEOUT))
                nursery.start_soon(killer)
            watching.cancel_scope.cancel()

        for spec in specs:  # let every server finish its restart before counting
            await sup.wait_connected(spec.name, timeout=30)
        snapshot = await sup.metrics_snapshot()
        restarts = sum(s.restarts for s in snapshot.servers)
        exits: dict[str, int] = {}
        for server in snapshot.servers:
            for cause, count in server.exits.items():
                exits[cause] = exits.get(cause, 0) + count

    notes = [line for line in log.read_text().splitlines() if line.startswith("write_note")] if log.exists() else []
    ran_twice = len(notes) - len(set(notes))
    leftovers = [pid for spec in specs for pid in procs_with_marker(marker_of(spec))]
    print(
        "\n"
        + ledger.summary(
            kills=kills, restarts=restarts, exits=exits, destructive_twice=ran_twice, orphans=len(leftovers),
            fds=f"{fds_before}->{open_fds()}",
        )
    )
    # A victim is chosen among the connected servers, so a kill lands on nearly every tick
    # (none only while all ten are restarting at once).
    assert kills >= SECONDS // 0.5 // 3
    ledger.assert_every_call_answered_once()
    assert ledger.kinds().get("result", 0) >= 100  # the load kept flowing between the kills
    assert ran_twice == 0
    # Each kill is one death of cause "exited" and one restart. A server starved past its
    # calls' 5 s deadlines by ten restarting neighbours on two cores may also be declared
    # hung (hang_threshold): a death of its own, with its own restart, and nothing else.
    assert exits.get("exited", 0) == kills, exits
    assert set(exits) <= {"exited", "hang"}, exits
    assert restarts == sum(exits.values()), (restarts, exits)
    assert leftovers == []
    # trio's and the SDK's fds are released with the runs they belonged to
    deadline = time.monotonic() + 5
    while open_fds() > fds_before and time.monotonic() < deadline:
        await trio.sleep(0.05)
    assert open_fds() <= fds_before
