"""Chaos, CI profile: one supervisor, 10 stdio servers and one remote, a steady load of calls,
and one fault after another under that load. One of the stdio servers starts a child in a
session of its own at every start, so every restart and the shutdown must find it by its
incarnation id, not its process group.

Faults, in order (each runs ``CHAOS_PHASE_SECONDS``, default 4; the long profile sets it
to 60 or more):

- **SIGSTOP**: one server's whole process group is frozen. Its calls time out; after
  ``hang_threshold`` consecutive timeouts the actor dies, the frozen tree is killed (SIGKILL
  reaches a stopped process) and a new one started.
- **garbage**: one server writes non-JSON lines onto its stdout; past
  ``garbage_threshold`` the actor dies and restarts.
- **crash at start**: one server is killed and then crashes at every start for half the
  phase, then recovers.
- **HTTP drop**: the remote server's process is killed, then started again on the same port
  half-way through the phase.
- **restart storm**: every stdio server is killed at once, every 0.5 s. Server subtrees and
  ``servers`` have no restart intensity (the backoff paces a server's restarts): nothing
  gives up, and one server never takes its siblings down.
- **HTTP refusals**: a gateway in front of the remote server answers bursts of its calls
  with 429, 502 or 503 and a plain-text body (``http_echo.py --http-errors``), while calls
  to it run concurrently: each refusal must reach the call whose POST it was (a 429 is
  retried, a 5xx only when the tool is retry-safe), so no destructive call runs twice.

Invariants after every fault: every call got exactly one answer (result, tool error or
typed failure) by its deadline + 1 s (+ the time this process was starved of CPU meanwhile,
measured: see ``_load.LoopLag``; a storm restarts ten Python servers at once on two cores); no destructive call ran twice; the faulted server is
back. After shutdown: no process of any server's tree is left (/proc), the process's fds are
back to their starting count, and its RSS did not grow past a bound.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import trio

from _load import Ledger, LoopLag, open_fds, rss_mb, run_load
from conftest import SERVERS, marker_of, procs_with_marker, server_spec
from protocol import BackoffPolicy, BreakerPolicy, RetryPolicy, ServerSpec
from supervisor import Supervisor

PHASE = float(os.environ.get("CHAOS_PHASE_SECONDS", "4"))
IN_FLIGHT = 50
TIMEOUT = 2.0
RSS_GROWTH_MB = 64  # the bound for the whole run, after the servers are up
FAST = BackoffPolicy(min=0.05, max=0.4, jitter=0.1)


def start_http_server(exec_log: Any, port: int = 0) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / "http_echo.py"), "--port", str(port), "--exit-on-stdin-close", "--http-errors"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "EXEC_LOG": str(exec_log)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("LISTENING"), line
    return proc, int(line.split()[1])


def stop_http_server(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def specs_for(tmp: Any, port: int) -> list[ServerSpec]:
    common: dict[str, Any] = {
        "env": {"EXEC_LOG": str(tmp / "exec.log")},
        "namespace": "prefix",
        "backoff": FAST,
        "retry": RetryPolicy(max_retries=2, initial_delay=0.05, max_delay=0.2),
        "timeout": TIMEOUT,
    }
    specs = [server_spec(f"s{i}", "echo.py", **common) for i in range(7)]
    # The same echo tools, from a server whose every incarnation leaves a child outside its
    # process group: each restart must take that child too (the final /proc check).
    specs.append(server_spec("s7", "spawns_grandchild.py", "--child-session", "new", **common))
    specs.append(server_spec("junk", "garbage.py", "--when", "call", **common))
    specs.append(
        server_spec("phoenix", "crash_at_start.py", "--until-file", str(tmp / "phoenix.ok"), **common)
    )
    specs.append(
        ServerSpec(
            name="remote",
            url=f"http://127.0.0.1:{port}/mcp",
            transport="streamable-http",
            namespace="prefix",
            backoff=FAST,
            timeout=TIMEOUT,
            connect_timeout=3,
            # Refusals must keep reaching calls through the whole HTTP-refusal phase, not be
            # cut short by a breaker that trips on them (they count as failures).
            breaker=BreakerPolicy(failure_threshold=10_000, min_calls=10_000),
        )
    )
    return specs


def mix(names: list[str], fault: str):
    """Quick (readOnly), slow and destructive calls, spread over ``names``; each destructive
    call's note is unique in the whole run."""

    def pick(rng: random.Random, n: int) -> tuple[str, dict[str, Any]]:
        server = names[rng.randrange(len(names))]
        kind = rng.random()
        if kind < 0.6:
            return f"{server}__echo", {"text": str(n)}
        if kind < 0.85:
            return f"{server}__sleep", {"seconds": 0.2}
        return f"{server}__write_note", {"text": f"{fault}-{server}-{n}"}

    return pick


def pgid_of(sup: Supervisor, server: str) -> int:
    proc = sup.link(server).process
    assert proc is not None and proc.pid, f"{server} has no process"
    return proc.pid


async def faults(sup: Supervisor, tmp: Any, http: dict[str, Any], names: list[str]) -> list[tuple[Ledger, dict[str, Any]]]:
    """Run every fault under load; returns each one's ledger and figures."""
    runs: list[tuple[Ledger, dict[str, Any]]] = []

    async def under_load(fault: str, inject) -> None:
        lag = LoopLag()
        ledger = Ledger(fault, lag)
        pick = mix(names, fault)
        restarts_before = {s.server: s.restarts for s in (await sup.metrics_snapshot()).servers}
        until = trio.current_time() + PHASE
        figures: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lag.run)
            async with trio.open_nursery() as loaded:
                loaded.start_soon(lambda: run_load(sup, ledger, pick, until=until, in_flight=IN_FLIGHT, timeout=TIMEOUT))
                figures.update(await inject(until) or {})
            nursery.cancel_scope.cancel()
        recovered_at = trio.current_time()
        for name in names:
            await sup.wait_connected(name, timeout=30)
        figures["recover_s"] = f"{trio.current_time() - recovered_at:.2f}"
        after = {s.server: s.restarts for s in (await sup.metrics_snapshot()).servers}
        figures["restarts"] = sum(after.get(n, 0) - restarts_before.get(n, 0) for n in names)
        runs.append((ledger, figures))
        print("\n" + ledger.summary(**figures), end="")

    async def sigstop(until: float) -> dict[str, Any]:
        victim = pgid_of(sup, "s1")
        os.killpg(victim, signal.SIGSTOP)
        try:
            with trio.move_on_at(until):
                while sup.link("s1").conn is not None and pgid_of(sup, "s1") == victim:
                    await trio.sleep(0.05)
            await trio.sleep_until(until)
            reaped = not os.path.exists(f"/proc/{victim}")
        finally:
            try:
                os.killpg(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert reaped, "the frozen server was not killed"
        return {"frozen_pid_reaped": reaped}

    async def garbage(until: float) -> dict[str, Any]:
        ledger = Ledger("spew")
        answer = await ledger.call(sup, "junk__spew", {"lines": 10}, TIMEOUT)
        await trio.sleep_until(until)
        return {"spew_answer": answer}

    async def crash_at_start(until: float) -> dict[str, Any]:
        ok = tmp / "phoenix.ok"
        ok.unlink()
        os.kill(pgid_of(sup, "phoenix"), signal.SIGKILL)
        await trio.sleep_until(until - PHASE / 2)
        down = sup.link("phoenix").conn is None
        ok.touch()
        await trio.sleep_until(until)
        assert down, "phoenix should be down while it crashes at start"
        return {"down_while_crashing": down}

    async def http_drop(until: float) -> dict[str, Any]:
        await trio.to_thread.run_sync(stop_http_server, http["proc"])
        await trio.sleep_until(until - PHASE / 2)
        down = sup.link("remote").conn is None
        http["proc"], _ = await trio.to_thread.run_sync(start_http_server, tmp / "exec.log", http["port"])
        await trio.sleep_until(until)
        assert down, "the remote server should be down while its process is gone"
        return {"down_while_dropped": down}

    async def refused_attempts() -> int:
        tools = (await sup.metrics_snapshot()).tools
        kinds = ("ServerCrashed", "ServerUnavailable")
        return sum(t.failures.get(kind, 0) for t in tools if t.server == "remote" for kind in kinds)

    async def http_refuse(until: float) -> dict[str, Any]:
        before = await refused_attempts()
        bursts = 0
        ledger = Ledger("refuse")
        while trio.current_time() < until - 0.5:
            status = (429, 502, 503)[bursts % 3]
            await ledger.call(sup, "remote__fail_next", {"status": status, "count": 5}, TIMEOUT)
            bursts += 1
            await trio.sleep(0.2)
        await trio.sleep_until(until)
        return {"refusal_bursts": bursts, "refused_attempts": await refused_attempts() - before}

    async def restart_storm(until: float) -> dict[str, Any]:
        storms = 0
        stdio = [n for n in names if n != "remote"]
        while trio.current_time() < until - 1.0:
            for name in stdio:
                proc = sup.link(name).process
                if proc is not None and proc.pid:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            storms += 1
            await trio.sleep(0.5)
        await trio.sleep_until(until)
        return {"storms": storms}

    await under_load("sigstop", sigstop)
    await under_load("garbage", garbage)
    await under_load("crash_at_start", crash_at_start)
    await under_load("http_drop", http_drop)
    await under_load("restart_storm", restart_storm)
    await under_load("http_refuse", http_refuse)
    return runs


async def test_faults_under_load_lose_nothing_and_leak_nothing(tmp_path):
    fds_before = open_fds()
    proc, port = await trio.to_thread.run_sync(start_http_server, tmp_path / "exec.log")
    http: dict[str, Any] = {"proc": proc, "port": port}
    (tmp_path / "phoenix.ok").touch()
    specs = specs_for(tmp_path, port)
    names = [s.name for s in specs]
    gave_up: list[str] = []
    try:
        async with Supervisor(specs) as sup:
            for name in names:
                await sup.wait_connected(name, timeout=60)
            rss_before = rss_mb()

            async def watch(events) -> None:
                async for event in events:
                    if event.kind == "gave_up":
                        gave_up.append(event.path)

            async with trio.open_nursery() as watcher:
                watcher.start_soon(watch, sup.subscribe(10_000))
                runs = await faults(sup, tmp_path, http, names)
                watcher.cancel_scope.cancel()
            rss_after = rss_mb()
    finally:
        await trio.to_thread.run_sync(stop_http_server, http["proc"])

    print(f"\nrss {rss_before:.0f}->{rss_after:.0f} MB, gave_up={gave_up}")
    for ledger, figures in runs:
        ledger.assert_every_call_answered_once()
        assert ledger.kinds().get("result", 0) >= 50, f"{ledger.fault}: the load did not keep flowing"
        if ledger.fault == "http_refuse":  # refusals are answers, not deaths: nothing restarts
            assert figures["refused_attempts"] >= 1, figures
        else:
            assert figures["restarts"] >= 1, f"{ledger.fault}: the fault caused no restart"
    notes = [line for line in (tmp_path / "exec.log").read_text().splitlines() if line.startswith("write_note")]
    assert len(notes) == len(set(notes)), "a destructive call ran twice"
    # However fast a server restarted (the remote one reconnects every 0.05-0.4 s while its
    # process is gone), nothing gave up: no fault took the siblings or the tree down.
    assert gave_up == [], gave_up
    leftovers = [pid for spec in specs if spec.command for pid in procs_with_marker(marker_of(spec))]
    assert leftovers == []
    deadline = time.monotonic() + 5
    while open_fds() > fds_before and time.monotonic() < deadline:
        await trio.sleep(0.05)
    assert open_fds() <= fds_before
    assert rss_after - rss_before < RSS_GROWTH_MB
