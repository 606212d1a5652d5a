"""The stdio server's process: spawned by the mcp SDK, watched and reaped by us.

The SDK's ``stdio_client`` owns the wire (framing, the spec's shutdown sequence). It does not
expose the process, does not notice a server that dies while a child of it holds stdout
open, and leaves the server's children alive when the server itself exits within its grace
period. This module closes those gaps without touching the wire:

- the server's stderr goes to a pipe we read into a bounded ring buffer (last 200 lines);
- the server's pid is found through that pipe (the child of ours whose fd 2 is its write
  end), so we can watch it with a pidfd and learn the moment it exits;
- the server runs in a new session (the SDK asks for one), so its pid is its process group
  id, and ``kill_tree`` reaches every descendant that did not leave the group, even after
  the server itself is gone: SIGTERM, a grace period, then SIGKILL;
- a descendant that did leave the group (a helper that daemonizes with ``setsid``) is
  found by its environment: each incarnation gets a fresh id in ``MCP_SUPERVISOR_INCARNATION``,
  which every descendant inherits, and ``kill_tree`` signals every process of ours that
  carries it (the cookie Jenkins' process-tree killer uses). One that clears or replaces its
  environment at exec is out of reach;
- a process of ours that dies with no chance to clean up (SIGKILL, a crash) still leaves no
  server behind: the first stdio server starts a reaper, a tiny process in a session of its
  own that learns every live process group (and its incarnation id) through a pipe from
  us. When the pipe closes, which the kernel does as we die, it kills every group still
  listed and every process carrying a listed id (SIGTERM, 1 s, SIGKILL), then exits. A
  fork of this process that does not exec closes its copy of the pipe at once, so it
  cannot hold the reaper off by outliving us.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import IO

import trio
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client

__all__ = ["INCARNATION_VAR", "ServerProcess", "kill_every_server_now", "kill_tree", "open_stdio"]

log = logging.getLogger("supervisor.process")

#: The environment variable that marks every process of one stdio server incarnation.
INCARNATION_VAR = "MCP_SUPERVISOR_INCARNATION"

#: Every stdio server this process runs: its process group -> its incarnation id.
_live_groups: dict[int, str] = {}


def kill_every_server_now() -> int:
    """SIGKILL every stdio server still running, with its process group and every process
    carrying its incarnation id; returns how many servers.

    Synchronous and immediate, for a forced exit (``os._exit``) that skips the orderly
    shutdown: the servers and their children go with this process rather than outlive it.
    """
    killed = 0
    for pgid, incarnation in list(_live_groups.items()):
        if _signal_tree(pgid, _marked(pgid, incarnation), signal.SIGKILL):
            killed += 1
    return killed


# Runs with -I -S: no site, no environment, nothing but os and signal; fast to start.
# Lines from us: "+<pgid> <incarnation id>" (a server started), "-<pgid>" (it is gone).
_REAPER = """
import os, signal, sys, time
groups = {}
for line in sys.stdin:
    pgid, _, incarnation = line[1:].strip().partition(" ")
    if line[0] == "+":
        groups[int(pgid)] = incarnation
    else:
        groups.pop(int(pgid), None)
marks = {("%s=%s" % (VAR, i)).encode() for i in groups.values() if i}
def send(sig):
    alive = False
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive = True
        except OSError:
            pass
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if marks.intersection(f.read().split(b"\\0")):
                        os.kill(int(pid), sig)
                        alive = True
            except OSError:
                pass
    return alive
send(signal.SIGTERM)
end = time.monotonic() + 1.0
while time.monotonic() < end and send(0):
    time.sleep(0.02)
send(signal.SIGKILL)
""".replace("VAR", repr(INCARNATION_VAR))
_reaper: subprocess.Popen[bytes] | None = None


def _watch_group(pgid: int, incarnation: str) -> None:
    """List a live process group with the reaper, starting one if none runs (or it died:
    the new one learns every group still live)."""
    global _reaper
    _live_groups[pgid] = incarnation
    line = f"+{pgid} {incarnation}\n"
    for _ in range(2):
        if _reaper is None or _reaper.poll() is not None:
            try:
                _reaper = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _REAPER],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C or a group kill aimed at us does not reach it
                    bufsize=0,
                )
            except (OSError, ValueError) as exc:  # e.g. an embedding host with no sys.executable
                _reaper = None
                log.warning("no reaper (%s): if this process is killed, its stdio servers outlive it", exc)
                return
            line = "".join(f"+{group} {mark}\n" for group, mark in _live_groups.items())
        assert _reaper.stdin is not None
        try:
            _reaper.stdin.write(line.encode())
            return
        except OSError:  # it died: close our end of its pipe, then start another
            _reaper.stdin.close()
            _reaper = None


def _after_fork_in_child() -> None:
    """A fork of this process that does not exec (multiprocessing's default on Linux) owns
    none of our servers, and must not keep the reaper's pipe open: the reaper acts only once
    every write end is closed, so a fork that outlived us would leave the servers running."""
    global _reaper
    reaper, _reaper = _reaper, None
    _live_groups.clear()
    if reaper is not None and reaper.stdin is not None:
        _parents_reaper.append(reaper)  # kept: its __del__ would poll a process not ours
        with contextlib.suppress(OSError):
            reaper.stdin.close()


_parents_reaper: list[subprocess.Popen[bytes]] = []


os.register_at_fork(after_in_child=_after_fork_in_child)


async def _forget_group(pgid: int) -> None:
    """Unlist a group that is gone. The last one ends the reaper (it lives exactly as long
    as some server does), and waits for it to exit; shielded and bounded."""
    global _reaper
    _live_groups.pop(pgid, None)
    reaper = _reaper
    if reaper is None or reaper.stdin is None:
        return
    with contextlib.suppress(OSError):
        reaper.stdin.write(f"-{pgid}\n".encode())
    if _live_groups:
        return
    _reaper = None
    reaper.stdin.close()  # with nothing listed, it exits without killing anything
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        while reaper.poll() is None:
            await trio.sleep(_POLL / 4)


STDERR_LINES = 200
_POLL = 0.02


class ServerProcess:
    """What we know of one spawned stdio server: pid, stderr tail, exit status, and the id
    its processes carry in ``INCARNATION_VAR``."""

    def __init__(self) -> None:
        self.incarnation = secrets.token_hex(8)
        self.pid: int | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.exited = trio.Event()
        self.exit_status: str | None = None

    def stderr_tail(self, lines: int = 20) -> list[str]:
        return list(self.stderr)[-lines:]


def _children_of_self() -> list[int]:
    me = os.getpid()
    pids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        return pids
    except OSError:
        pass
    for entry in _proc_pids() or ():  # kernels without /proc/*/children
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(_stat_fields(entry)[1]) == me:
                pids.append(int(entry))
    return pids


def _find_pid_by_stderr(inode: int) -> int | None:
    target = f"pipe:[{inode}]"
    for pid in _children_of_self():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/2") == target:
                return pid
    return None


def _proc_pids() -> list[str] | None:
    """Every pid in /proc (as the directory names), or None when /proc cannot be read."""
    try:
        return [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return None


def _stat_fields(pid: str) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _live(pid: int | str) -> bool:
    """True while ``pid`` runs. Zombies do not count: they hold nothing but their exit
    status, and a group leader's stays until its parent (us) reaps it, so counting them
    would make `kill_tree` wait out its whole grace."""
    try:
        return _stat_fields(str(pid))[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` still runs (zombies aside)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    entries = _proc_pids()
    if entries is None:
        return True
    for entry in entries:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(entry)
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def _marked(pgid: int, incarnation: str | None) -> list[int]:
    """The live processes outside group ``pgid`` whose environment carries ``incarnation``:
    the server's descendants that left its group."""
    if not incarnation:
        return []
    mark = f"{INCARNATION_VAR}={incarnation}".encode()
    found = []
    for entry in _proc_pids() or ():
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            fields = _stat_fields(entry)
            if int(fields[2]) != pgid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _signal_tree(pgid: int | None, marked: list[int], sig: int) -> bool:
    """Send ``sig`` to group ``pgid`` (unless None) and to each of ``marked``; False when
    none of them was there to receive it."""
    sent = False
    try:
        if pgid is not None:
            os.killpg(pgid, sig)
            sent = True
    except ProcessLookupError:
        pass
    except PermissionError:
        sent = True
    for pid in marked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent = True
    return sent


async def kill_tree(pgid: int, incarnation: str | None, grace: float) -> None:
    """SIGTERM one server's processes (group ``pgid`` and every process carrying
    ``incarnation`` outside it), wait up to ``grace`` s for them to go, then SIGKILL what is
    left; a process carrying ``incarnation`` that one of them started meanwhile is
    SIGKILLed either way.

    Shielded and bounded (``grace`` + 1 s): it finishes even when the caller is being
    cancelled.
    """
    with trio.CancelScope(shield=True):
        marked = _marked(pgid, incarnation)
        if not _signal_tree(pgid, marked, signal.SIGTERM if grace > 0 else signal.SIGKILL):
            return

        def alive() -> bool:
            return _group_alive(pgid) or any(_live(pid) for pid in marked)

        with trio.move_on_after(grace):
            while alive():
                await trio.sleep(_POLL)
        # What is left, and what left the group meanwhile, found afresh: a pid remembered
        # from before may belong to someone else by now, and so may the group's id once
        # nothing of it runs.
        marked = _marked(pgid, incarnation)
        if not _signal_tree(pgid if _group_alive(pgid) else None, marked, signal.SIGKILL):
            return
        with trio.move_on_after(1.0):
            while alive():
                await trio.sleep(_POLL)


async def _read_stderr(fd: int, proc: ServerProcess) -> None:
    stream = trio.lowlevel.FdStream(fd)
    buffer = b""
    async with stream:
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                break
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                proc.stderr.append(line.decode("utf-8", "replace"))
            if len(buffer) > 65536:  # a runaway line: keep its head, drop the rest
                proc.stderr.append(buffer[:4096].decode("utf-8", "replace") + " …")
                buffer = b""
    if buffer:
        proc.stderr.append(buffer.decode("utf-8", "replace"))


async def _watch_exit(proc: ServerProcess) -> None:
    assert proc.pid is not None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            proc.exit_status = "exited"
            proc.exited.set()
            return
        pidfd = None
    if pidfd is None:  # no pidfd: poll
        while True:
            try:
                os.kill(proc.pid, 0)
            except ProcessLookupError:
                break
            await trio.sleep(0.2)
    else:
        try:
            await trio.lowlevel.wait_readable(pidfd)
            proc.exit_status = _exit_status(pidfd)
        finally:
            os.close(pidfd)
    proc.exit_status = proc.exit_status or "exited"
    proc.exited.set()


def _exit_status(pidfd: int) -> str:
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, OSError, AttributeError):
        return "exited"  # already reaped by the SDK's process object
    if info is None:
        return "exited"
    if info.si_code == os.CLD_EXITED:
        return f"exited with code {info.si_status}"
    with contextlib.suppress(ValueError):
        return f"killed by {signal.Signals(info.si_status).name}"
    return f"killed by signal {info.si_status}"


@contextlib.asynccontextmanager
async def open_stdio(params: StdioServerParameters, proc: ServerProcess, grace: float) -> AsyncIterator:
    """The SDK's stdio transport, plus stderr capture, exit watching and a group sweep.

    Yields the transport's streams for ``mcp.Client``. ``proc`` learns the pid, collects
    stderr and has ``exited`` set the moment the server process dies. On exit, after the
    SDK's own shutdown (close stdin, wait, kill), whatever is left of the server's process
    group is killed (SIGTERM, ``grace`` s, SIGKILL): no orphan survives, whether the server
    exited by itself or not.
    """
    params = params.model_copy(update={"env": {**(params.env or {}), INCARNATION_VAR: proc.incarnation}})
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    inode = os.fstat(write_fd).st_ino
    errlog: IO[str] = os.fdopen(write_fd, "w")
    stderr_done = trio.Event()

    async def read_stderr() -> None:
        try:
            await _read_stderr(read_fd, proc)
        finally:
            stderr_done.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stderr)
            try:
                async with stdio_client(params, errlog=errlog) as streams:
                    errlog.close()  # the child holds its own copy
                    proc.pid = _find_pid_by_stderr(inode)
                    if proc.pid is not None:
                        _watch_group(proc.pid, proc.incarnation)
                        nursery.start_soon(_watch_exit, proc)
                    yield streams
            finally:
                if proc.pid is not None:
                    await kill_tree(proc.pid, proc.incarnation, grace)
                    await _forget_group(proc.pid)
                with trio.move_on_after(0.2, shield=True):
                    await stderr_done.wait()  # the last lines a dying server wrote
                nursery.cancel_scope.cancel()
    finally:
        if not errlog.closed:
            errlog.close()
