"""A server's processes that are hard to catch: one that keeps changing its pid outside the
server's process group, one forked but not listed yet, and a /proc scan that takes long
(`actors._process`).

Real processes. A hopper that escapes (on a supervisor that cannot catch it) is killed by
the test itself, by its process group and by the marker in its environment, so a failure
here leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
import trio

from actors import _process, kill_every_server_now, kill_servers_now
from actors._process import INCARNATION_VAR, kill_tree
from conftest import marker_of, procs_with_marker, server_spec, wait_until
from protocol import BackoffPolicy, ServerSpec
from supervisor import Supervisor

#: The helper's longest stay at one pid: a few ms, or none (it forks again at once).
PAUSES = pytest.mark.parametrize("pause", ["0.005", "0"], ids=["hops-every-few-ms", "hops-at-once"])
ZOMBIES = 1500  # a busy machine: each scan of /proc takes longer


def _groups_with_marker(marker: str) -> set[int]:
    needle = f"MCP_TEST_MARKER={marker}".encode()
    groups = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    groups.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2]))
            except (OSError, IndexError, ValueError):
                pass
    return groups


def _group_runs(group: int) -> bool:
    """True if a scan of /proc (newest pids first, stat only: the quickest look) finds a
    live process in ``group``. A process that keeps changing its pid is easily missed by a
    slower look (``procs_with_marker`` reads each environment too), so a test asks several
    times."""
    for pid in sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), reverse=True):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(group) and fields[0] not in ("Z", "X"):
            return True
    return False


def _kill_by_marker(marker: str, known_groups: set[int]) -> None:
    """SIGKILL every process group holding a process with ``marker`` (and ``known_groups``),
    until no such process is seen for a second (bounded: 30 s)."""
    own = {os.getpgrp(), os.getsid(0)}
    deadline = time.monotonic() + 30
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
        groups = _groups_with_marker(marker)
        if groups:
            quiet_since = time.monotonic()
        for group in (groups | known_groups) - own:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


_CROWD = """
import os, sys
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        os._exit(0)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def crowded_proc(zombies: int):
    """``zombies`` more entries in /proc, for as long as the block runs: children of a
    process that never reaps them (as a machine running many processes has: each scan of
    /proc takes longer)."""
    crowd = subprocess.Popen([sys.executable, "-c", _CROWD, str(zombies)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert crowd.stdout is not None
        assert crowd.stdout.readline() == "ready\n"
        yield
    finally:
        crowd.kill()  # its zombies go to init, which reaps them
        crowd.wait()


@PAUSES
async def test_a_helper_that_keeps_changing_its_pid_outside_the_group_goes_too(pause):
    """A helper left the server's group (``setsid``), then forked and exited every few ms.
    The stop killed each process of ours outside the group by its pid, found in a /proc
    scan: by the time of the kill that pid was gone and the helper at a new one, and after
    1 s of this it gave up, leaving the helper running. Now the process group of every
    process of ours found outside the server's group is killed too, which the helper keeps
    across its forks. One that forks again at once stays at a pid for less time than a
    listing of /proc takes: the scan looks at the newest pids first, before the listing."""
    spec = server_spec("hopper", "hopper.py", "--pause", pause, shutdown_timeout=0.3,
                       backoff=BackoffPolicy(min=30.0, max=30.0, jitter=0.0))
    marker = marker_of(spec)
    groups: set[int] = set()
    try:
        with crowded_proc(ZOMBIES):
            async with Supervisor([spec]) as sup:
                result = await sup.call_tool("hopper_group", {}, server="hopper", timeout=10)
                (group,) = groups = {int(result.content[0].text)}
        with trio.move_on_after(3.0):  # anything still dying goes (a look can miss it: see _group_runs)
            while any(_group_runs(group) for _ in range(10)):
                await trio.sleep(0.02)
        seen_running = sum([_group_runs(group) for _ in range(50)])
    finally:
        _kill_by_marker(marker, groups)
    assert seen_running == 0, f"the helper's group was seen running in {seen_running} of 50 looks"
    assert procs_with_marker(marker) == []


_SUPERVISOR = """
import sys, msgspec, trio
from protocol import ServerSpec
from supervisor import Supervisor

async def main():
    spec = msgspec.json.decode(sys.argv[1], type=ServerSpec)
    async with Supervisor([spec]) as sup:
        result = await sup.call_tool("hopper_group", {}, server=spec.name, timeout=10)
        print("ready", result.content[0].text, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@PAUSES
async def test_the_reaper_takes_a_helper_that_keeps_changing_its_pid(pause):
    """The same helper, when the supervisor is SIGKILLed: its reaper swept /proc killing the
    processes carrying a listed id one pid at a time, and the helper outlived it. Now the
    reaper kills the group of each such process, as `kill_tree` does."""
    spec = server_spec("hopper", "hopper.py", "--pause", pause)
    marker = marker_of(spec)
    groups: set[int] = set()
    supervisor = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, msgspec.json.encode(spec).decode()],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        with crowded_proc(ZOMBIES):
            assert supervisor.stdout is not None
            with trio.fail_after(30):
                line = await trio.to_thread.run_sync(supervisor.stdout.readline)
            assert line.startswith("ready"), line
            (group,) = groups = {int(line.split()[1])}
            supervisor.kill()
            supervisor.wait()
            # gone once ten looks in a row find it nowhere (a look can miss it: see _group_runs)
            await wait_until(lambda: not any(_group_runs(group) for _ in range(10)), timeout=10,
                             what="the reaper to kill the helper")
            seen_running = sum([_group_runs(group) for _ in range(50)])
    finally:
        supervisor.kill()
        supervisor.wait()
        _kill_by_marker(marker, groups)
    assert seen_running == 0, f"the helper's group was seen running in {seen_running} of 50 looks"
    assert procs_with_marker(marker) == []


async def test_a_slow_proc_scan_leaves_the_loop_running(monkeypatch):
    """`kill_tree` scans /proc (every process's stat, and the environment of those that may
    be the server's) every 20 ms. The scan ran on the trio thread: with thousands of
    processes it took hundreds of ms, and every other server's calls stalled meanwhile
    (DeadlineExceeded on a healthy server during another's restart). Now it runs in a
    worker thread.

    The scan is made to wait inside its listing of /proc until a trio task lets it go:
    that task only runs if the scan leaves the loop running. On the trio thread the scan
    waits out the 10 s safety instead, and the test fails. (The listing is patched: a real
    slow /proc takes thousands of processes, and how slow it gets is the machine's to say,
    where this test must fail on the old code every time; the process killed is real.)"""
    started, released = threading.Event(), threading.Event()
    released_by_loop: list[bool] = []
    real_listdir = os.listdir

    def listdir(path="."):
        if path == "/proc" and not started.is_set():
            started.set()
            released_by_loop.append(released.wait(10))
        return real_listdir(path)

    incarnation = "0123456789abcdef"
    target = subprocess.Popen(["sleep", "60"], start_new_session=True, env={INCARNATION_VAR: incarnation})
    try:
        monkeypatch.setattr(_process.os, "listdir", listdir)

        async def release_the_scan() -> None:
            while not started.is_set():
                await trio.sleep(0.001)
            released.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_the_scan)
                await kill_tree(target.pid, incarnation, 1.0)
        assert released_by_loop == [True]
        assert target.wait(timeout=10) == -signal.SIGTERM
    finally:
        target.kill()
        target.wait()


def _wait_for_environ(pid: int) -> None:
    """Wait until ``pid``'s exec is over. `Popen` returns once the exec has let go of the
    parent, a moment before the kernel sets up the new environment: until then
    /proc/PID/environ reads empty (a CI run caught it)."""
    deadline = time.monotonic() + 10
    while not open(f"/proc/{pid}/environ", "rb").read():
        assert time.monotonic() < deadline, f"{pid} never showed an environment"
        time.sleep(0.001)


async def test_an_escaped_groups_number_taken_by_a_stranger_is_not_killed():
    """An escaped group is remembered by its number between scans; once all of it is gone
    the number is free, and a process of someone else's that then leads a group of that
    number was killed with the rest (a review forced the reuse in a pid namespace). Such a
    number is dropped now: a live group leader that does not carry the incarnation's id is
    no group of ours. Here a real stranger stands in for the reused number."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # leads group = its pid
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True, env={INCARNATION_VAR: "inc-ours"})
    try:
        _wait_for_environ(ours.pid)
        assert _process._number_taken(stranger.pid, "inc-ours")
        assert not _process._number_taken(ours.pid, "inc-ours")
        escaped = {stranger.pid, ours.pid}
        assert _process._signal_tree(None, {}, escaped, signal.SIGKILL, "inc-ours")
        assert escaped == {ours.pid}
        assert ours.wait(10) == -signal.SIGKILL
        assert stranger.poll() is None, "the stranger was killed"
    finally:
        for proc in (stranger, ours):
            proc.kill()
            proc.wait(10)


async def test_kill_tree_kills_the_group_even_when_no_thread_can_be_started(monkeypatch):
    """The scans of /proc run in a worker thread; a host that allows no more threads made
    ``to_thread`` raise before the first signal, so the server was not even sent SIGTERM
    and the stop's cleanup was skipped (a review). The group is signalled before any scan
    now, and a scan that gets no thread runs here. (No real thread limit is set: one would
    hold for the whole test process; the patch raises what trio raises then.)"""
    async def no_thread(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    server = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        monkeypatch.setattr(trio.to_thread, "run_sync", no_thread)
        with trio.fail_after(20):
            await kill_tree(server.pid, None, grace=1.0)
        assert server.wait(10) == -signal.SIGTERM
    finally:
        server.kill()
        server.wait(10)


def _deaf_server(marker: str) -> ServerSpec:
    """A server that lives on when its stdin closes (as one that ignores the end of its
    stdin does): only a kill ends it. It never answers, and is not started again."""
    return ServerSpec(name="deaf", command="/bin/sleep", args=["3600"], env={"MCP_TEST_MARKER": marker},
                      connect_timeout=30, health_check_interval=None,
                      backoff=BackoffPolicy(min=30.0, max=30.0, jitter=0.0))  # no new incarnation meanwhile


_HELD_SPAWN = """
import os, subprocess, sys, time, msgspec, trio
from protocol import ServerSpec
from supervisor import Supervisor

real_popen = subprocess.Popen

class HeldPopen(real_popen):
    def __init__(self, args, *rest, **kwargs):
        super().__init__(args, *rest, **kwargs)  # forked and exec'd: the server runs
        if args[0] == "/bin/sleep":
            print("forked", self.pid, flush=True)
            time.sleep(60)  # the worker thread, not scheduled back (killed before it is)

subprocess.Popen = HeldPopen

async def main():
    async with Supervisor([msgspec.json.decode(sys.argv[1], type=ServerSpec)]):
        await trio.sleep_forever()

trio.run(main)
"""


def _kill_marked(marker: str) -> None:
    for pid in procs_with_marker(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_the_reaper_takes_a_server_forked_but_not_listed_yet():
    """``open_process`` forks the server in a worker thread; its group was listed with the
    reaper only once the task resumed. A supervisor SIGKILLed in between (a loaded machine
    holds the thread a while) left the server running, unknown to anyone: the probe saw up
    to 10 such orphans in 20 runs. Now the reaper learns the incarnation's id before the
    fork, and sweeps for it.

    The supervisor is a real process, and so is its server (forked and exec'd by the real
    ``Popen``); the patch only holds the worker thread once ``Popen`` has returned, so the
    SIGKILL lands in that moment every time."""
    marker = f"held-{os.getpid()}-{time.monotonic_ns()}"
    spec = msgspec.json.encode(_deaf_server(marker)).decode()
    supervisor = subprocess.Popen([sys.executable, "-c", _HELD_SPAWN, spec],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert supervisor.stdout is not None
        with trio.fail_after(30):
            line = await trio.to_thread.run_sync(supervisor.stdout.readline)
        assert line.startswith("forked"), line
        server = int(line.split()[1])
        _wait_for_environ(server)
        assert procs_with_marker(marker) == [server]
        supervisor.kill()
        supervisor.wait()
        await wait_until(lambda: procs_with_marker(marker) == [], timeout=10, what="the reaper to kill the server")
    finally:
        supervisor.kill()
        supervisor.wait()
        _kill_marked(marker)


@pytest.mark.parametrize("kill", ["every", "its-id", "another-id"])
async def test_kill_every_server_now_takes_a_server_forked_but_not_listed_yet(monkeypatch, kill):
    """The forced exit (the daemon's second SIGTERM) killed the listed groups only: a server
    forked in a worker thread whose task had not resumed yet was not listed, and outlived
    the exit ("killed 0"). Now a server being spawned is found by its incarnation id; so is
    it by `kill_servers_now` given its id (an embedding host's loop closed without
    ``aclose()`` kills its own tree's servers so), and one given another id spares it.

    The server is real (forked and exec'd by the real ``Popen``); the patch only holds the
    worker thread once ``Popen`` has returned, until the test lets it go."""
    marker = f"held-{os.getpid()}-{time.monotonic_ns()}"
    forked, release = threading.Event(), threading.Event()
    pids: list[int] = []

    class HeldPopen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            super().__init__(args, *rest, **kwargs)
            if args[0] == "/bin/sleep" and not forked.is_set():
                pids.append(self.pid)
                forked.set()
                release.wait(20)

    monkeypatch.setattr(subprocess, "Popen", HeldPopen)
    try:
        async with Supervisor([]) as sup:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.add_server, _deaf_server(marker))
                try:
                    assert await trio.to_thread.run_sync(forked.wait, 20)
                    (server,) = pids
                    _wait_for_environ(server)
                    assert procs_with_marker(marker) == [server]
                    if kill == "every":
                        killed = kill_every_server_now()
                    else:
                        incarnation = sup.link("deaf").process.incarnation
                        killed = kill_servers_now([incarnation if kill == "its-id" else "another"])
                    # Blocking on purpose, as before os._exit: nothing else runs meanwhile.
                    deadline = time.monotonic() + 2.0
                    while procs_with_marker(marker) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    left = procs_with_marker(marker)
                finally:
                    release.set()
                nursery.cancel_scope.cancel()
    finally:
        release.set()
        _kill_marked(marker)
    assert (killed, left) == ((0, [server]) if kill == "another-id" else (1, []))
