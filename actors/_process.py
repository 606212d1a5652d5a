"""The stdio server's process: spawned, watched and reaped by us.

The SDK's ``stdio_client`` frames its wire in time quadratic in a message's size and
without bound (see `actors._stdio`, which frames it here with the SDK's parser); it also
hides the process, does not notice a server that dies while a child of it holds stdout
open, and leaves the server's children alive when the server itself exits within its grace
period. So this module spawns the server itself, and keeps the SDK's shutdown sequence
(close stdin, wait, kill the tree):

- the server's stderr goes to a pipe we read into a bounded ring buffer (last 200 lines,
  each cut to its first 4 KiB);
- we learn the moment the server process exits, and how (its exit code or signal);
- the server runs in a new session, so its pid is its process group id, and ``kill_tree``
  reaches every descendant that did not leave the group, even after the server itself is
  gone: SIGTERM, a grace period, then SIGKILL;
- a descendant that did leave the group (a helper that daemonizes with ``setsid``) is
  found by its environment: each incarnation gets a fresh id in ``MCP_SUPERVISOR_INCARNATION``,
  which every descendant inherits, and ``kill_tree`` signals every process of ours that
  carries it (the cookie Jenkins' process-tree killer uses), and its process group as a
  whole: one that keeps changing its pid (forking and exiting) is gone from the pid a scan
  of /proc found, but keeps its group. One that clears or replaces its environment at exec
  is out of reach;
- a process of ours that dies with no chance to clean up (SIGKILL, a crash) still leaves no
  server behind: the first stdio server starts a reaper, a tiny process in a session of its
  own that learns every live process group (and its incarnation id) through a pipe from
  us, and each incarnation's id already before its spawn: the server is forked in a worker
  thread, and runs a while before its group is known here. When the pipe closes, which the
  kernel does as we die, it kills every group still listed (unless its number now belongs
  to a later process: see ``_REAPER``) and every process carrying a listed id, with its
  group (SIGTERM, 1 s, SIGKILL), then exits. A fork of this process that does not exec
  closes its copy of the pipe at once, so it cannot hold the reaper off by outliving us.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable

import trio
from mcp import StdioServerParameters

from ._pipes import PipeReader, PipeWriter
from ._stdio import refuser

__all__ = ["INCARNATION_VAR", "ServerProcess", "kill_every_server_now", "kill_servers_now", "kill_tree", "open_stdio"]

log = logging.getLogger("supervisor.process")

#: The environment variable that marks every process of one stdio server incarnation.
INCARNATION_VAR = "MCP_SUPERVISOR_INCARNATION"

#: Every stdio server this process runs: its process group -> its incarnation id and its
#: leader's start time (`_start_time`).
_live_groups: dict[int, tuple[str, str]] = {}
#: The incarnation ids of the stdio servers being spawned: listed with the reaper before
#: the fork, until their group is (`_watch_group`) or the spawn failed. ``open_process``
#: forks in a worker thread, and the process runs from then on, its group unknown here
#: until this task resumes: it is found by its id meanwhile.
_spawning: set[str] = set()


def kill_every_server_now() -> int:
    """SIGKILL every stdio server still running, with its process group and every process
    carrying its incarnation id; returns how many servers.

    Synchronous and immediate, for a forced exit (``os._exit``) that skips the orderly
    shutdown: the servers and their children go with this process rather than outlive it.
    """
    return kill_servers_now([incarnation for incarnation, _ in list(_live_groups.values())] + list(_spawning))


def kill_servers_now(incarnations: Iterable[str]) -> int:
    """`kill_every_server_now` for the servers of ``incarnations`` only (their ids,
    `ServerProcess.incarnation`); returns how many were killed. A server being spawned,
    whose group is not listed yet, is found by its id (a scan of /proc); one not exec'd yet
    is the reaper's, which knows its id and acts once the pipe closes: as we exit, and that
    process (which holds a copy until it execs) lets go of it. An id of a server gone
    meanwhile touches nothing (its group's number may be another's since)."""
    wanted = set(incarnations)
    killed = 0
    for pgid, (incarnation, start) in list(_live_groups.items()):
        if incarnation in wanted:
            escaped: set[int] = set()
            _, marked = _survey(pgid, incarnation, int(start) if start.isdigit() else None, escaped)
            if _signal_tree(pgid, marked, escaped, signal.SIGKILL, incarnation):
                killed += 1
    for incarnation in wanted & _spawning:
        scan = _scan(incarnation, None)
        if scan is None:
            continue
        marked = scan[1]
        escaped = set(marked.values()) - _not_ours()  # its own group (it leads it), and any it left for
        if _signal_tree(None, marked, escaped, signal.SIGKILL, incarnation):
            killed += 1
    return killed


#: Scans in a row that must find no process of a server that had some leave its group
#: before its tree counts as gone (`kill_tree`).
_CLEAN_SCANS = 3

# Runs with -I -S: no site, no environment, nothing but os and signal; fast to start.
# Lines from us: "?<incarnation id>" (a server about to be spawned: its processes carry
# that id, its group is not known yet), "+<pgid> <incarnation id> <leader's start time>"
# (a server started: its id is no longer only pending), "!<incarnation id>" (its spawn
# failed: nothing carries that id), "-<pgid>" (it is gone). A line it cannot read (one cut
# short as we died) is skipped: the sweep matters more.
#
# A server being spawned is found by its id alone, and its group goes with it as any
# process's outside the listed groups does (below): forked in a worker thread, it has run
# a while before its "+" line is written. Until just before its exec it holds a copy of
# the pipe, so the sweep starts no earlier (and a process caught in its exec is what the
# CLEAN_SCANS sweeps below are for).
#
# A group listed but long gone (its "-" line was lost: a stall, `_forget_group` at the
# last server) must not cost a stranger whose group took its number since. The kernel
# hands out no pid while a process group of that number lives; so a process numbered
# as the group that started at another time than its leader did means the group is gone,
# and that number is spared (processes carrying its id are still ours, and go).
#
# A process carrying a listed id outside the listed groups (it left its server's group)
# has its own group killed too, and again at every sweep while that group exists (the
# kernel hands out no pid of its number meanwhile): one that keeps changing its pid by
# forking and exiting is gone from a pid found a moment ago, but not from its group.
_REAPER = """
import os, signal, sys, time
groups, spawning = {}, set()
for line in sys.stdin:
    kind, rest = line[:1], line[1:].strip()
    try:
        if kind == "+":
            pgid, _, rest = rest.partition(" ")
            groups[int(pgid)] = rest.split(" ")
            spawning.discard(groups[int(pgid)][0])
        elif kind == "-":
            groups.pop(int(rest), None)
        elif kind == "?" and rest:
            spawning.add(rest)
        elif kind == "!":
            spawning.discard(rest)
    except ValueError:
        pass
marks = {("%s=%s" % (VAR, listed[0])).encode() for listed in groups.values() if listed[0]}
marks.update(("%s=%s" % (VAR, mark)).encode() for mark in spawning)
def started(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rpartition(b")")[2].split()[19].decode()
    except (OSError, IndexError):
        return None
for pgid, listed in list(groups.items()):
    now = started(pgid)
    if len(listed) > 1 and listed[1] and now is not None and now != listed[1]:
        del groups[pgid]
escaped, own = set(), {0, 1, os.getpgrp(), os.getsid(0)}
def taken(g):  # see _number_taken
    try:
        with open("/proc/%d/stat" % g, "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        if fields[0] in (b"Z", b"X") or int(fields[2]) != g:
            return False
        with open("/proc/%d/environ" % g, "rb") as f:
            return not marks.intersection(f.read().split(b"\\0"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError, IndexError):
        return True
def send(sig):
    alive = False
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive = True
        except OSError:
            pass
    for pgid in list(escaped):
        if taken(pgid):
            escaped.discard(pgid)
            continue
        try:
            os.killpg(pgid, sig)
            alive = True
        except ProcessLookupError:
            escaped.discard(pgid)
        except OSError:
            pass
    def look(pid):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if not marks.intersection(f.read().split(b"\\0")):
                    return False
            with open("/proc/%d/stat" % pid, "rb") as f:
                pgid = int(f.read().rpartition(b")")[2].split()[2])
            if pgid not in own and pgid not in groups and pgid not in escaped:
                escaped.add(pgid)
                os.killpg(pgid, sig)
            os.kill(pid, sig)
            return True
        except (OSError, ValueError, IndexError):
            return False
    def newest():
        try:
            return tuple(int(open("/proc/sys/kernel/" + n).read()) for n in ("ns_last_pid", "pid_max"))
        except (OSError, ValueError):
            return 0, 1
    # Newest pids first, chased as the kernel hands out more, then every pid listed from
    # the newest (as _scan does): a process forking and exiting in a loop lives at each pid
    # for less time than a listing takes.
    seen, (last, top), before = set(), newest(), 0
    for _ in range(RECENT_LOOKS):
        if not last or last == before:
            break
        for pid in {(last - back - 1) % top + 1 for back in range(RECENT_PIDS)} - seen:
            seen.add(pid)
            alive = look(pid) or alive
        before, (last, top) = last, newest()
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in seen]
    pids.sort(key=lambda pid: (last - pid) % top)
    for pid in pids:
        alive = look(pid) or alive
    return alive
send(signal.SIGTERM)
end = time.monotonic() + 1.0
while time.monotonic() < end and send(0):
    time.sleep(0.02)
# A process in the middle of an execve shows no environment for a moment, and one that
# keeps changing its pid may be missed by a sweep: kill until CLEAN_SCANS sweeps in a row
# find nothing, sweeping for LEAST_SWEEP s at least (see kill_tree).
start = time.monotonic()
clean, end = 0, start + 1.0
while (clean < CLEAN_SCANS or time.monotonic() < start + LEAST_SWEEP) and time.monotonic() < end:
    clean = 0 if send(signal.SIGKILL) else clean + 1
    time.sleep(0.02)
""".replace("VAR", repr(INCARNATION_VAR)).replace("CLEAN_SCANS", str(_CLEAN_SCANS)).replace(
    "RECENT_LOOKS", "32").replace("RECENT_PIDS", "4").replace("LEAST_SWEEP", "0.3")
_reaper: subprocess.Popen[bytes] | None = None
#: Lines the reaper has not taken yet: its pipe was full (a reaper that stopped reading,
#: SIGSTOPped say). Written first, in order, at the next line; never waited for.
_reaper_backlog = bytearray()


def _tell_reaper(line: str) -> bool:
    """Hand ``line`` to the reaper without ever blocking (the pipe is non-blocking: a write
    that would block would freeze every task of this thread, and an embedding host's loop
    with them). False if the reaper is gone (its pipe broke)."""
    assert _reaper is not None and _reaper.stdin is not None
    was_taken = not _reaper_backlog
    _reaper_backlog.extend(line.encode())
    try:
        while _reaper_backlog:
            del _reaper_backlog[: os.write(_reaper.stdin.fileno(), _reaper_backlog)]
    except BlockingIOError:
        if was_taken:  # once per stall, not per line
            log.warning(
                "the reaper is not reading its pipe (%d bytes wait): if this process is killed now, "
                "servers started since may outlive it",
                len(_reaper_backlog),
            )
    except OSError:
        return False
    return True


def _start_time(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``), or
    "" when it cannot be read: with its pid, what tells that process from a later one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _watch_spawn(incarnation: str) -> None:
    """List the id of an incarnation about to be spawned with the reaper (starting one if
    none runs), until `_watch_group` lists its group or `_forget_spawn` drops it."""
    _spawning.add(incarnation)
    _list(f"?{incarnation}\n")


def _watch_group(pgid: int, incarnation: str, leader_start: str) -> None:
    """List a live process group with the reaper, starting one if none runs (or it died:
    the new one learns every group still live). ``leader_start``: when its leader (pid
    ``pgid``) started (`_start_time`), so the reaper can tell the group from a later one
    that took its number. Its id, listed as being spawned (`_watch_spawn`), is then the
    group's."""
    _live_groups[pgid] = (incarnation, leader_start)
    _spawning.discard(incarnation)
    _list(f"+{pgid} {incarnation} {leader_start}\n")


def _list(line: str) -> None:
    """Tell the reaper ``line``, starting one if none runs (or it died: the new one learns
    every group and every id being spawned still listed, instead)."""
    global _reaper
    for _ in range(2):
        if _reaper is None or _reaper.poll() is not None:
            try:
                _reaper = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _REAPER],
                    # Without our own incarnation id (when we are a supervised server): a
                    # supervisor above us that kills our tree must spare our reaper.
                    env={k: v for k, v in os.environ.items() if k != INCARNATION_VAR},
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
            assert _reaper.stdin is not None
            os.set_blocking(_reaper.stdin.fileno(), False)
            _reaper_backlog.clear()  # the new one learns every group still live
            line = "".join(f"+{group} {mark} {start}\n" for group, (mark, start) in _live_groups.items())
            line += "".join(f"?{mark}\n" for mark in _spawning)
        if _tell_reaper(line):
            return
        _reaper.stdin.close()  # it died: close our end of its pipe, then start another
        _reaper = None


def _after_fork_in_child() -> None:
    """A fork of this process that does not exec (multiprocessing's default on Linux) owns
    none of our servers, and must not keep the reaper's pipe open: the reaper acts only once
    every write end is closed, so a fork that outlived us would leave the servers running."""
    global _reaper
    reaper, _reaper = _reaper, None
    _live_groups.clear()
    _spawning.clear()
    _reaper_backlog.clear()
    if reaper is not None and reaper.stdin is not None:
        _parents_reaper.append(reaper)  # kept: its __del__ would poll a process not ours
        with contextlib.suppress(OSError):
            reaper.stdin.close()


_parents_reaper: list[subprocess.Popen[bytes]] = []


os.register_at_fork(after_in_child=_after_fork_in_child)


async def _forget_group(pgid: int) -> None:
    """Unlist a group that is gone. The last one ends the reaper (it lives exactly as long
    as some server does), and waits for it to exit; shielded and bounded."""
    _live_groups.pop(pgid, None)
    await _unlist(f"-{pgid}\n")


async def _forget_spawn(incarnation: str) -> None:
    """Unlist the id of an incarnation whose spawn failed (no process of it runs), as
    `_forget_group` does a group."""
    _spawning.discard(incarnation)
    await _unlist(f"!{incarnation}\n")


async def _unlist(line: str) -> None:
    """Tell the reaper ``line``; with nothing listed any more, end it (`_forget_group`)."""
    global _reaper
    reaper = _reaper
    if reaper is None or reaper.stdin is None:
        return
    _tell_reaper(line)
    if _live_groups or _spawning:
        return
    _reaper = None
    # With nothing listed, it exits without killing anything. Lines it never took, from a
    # stall, are dropped: they only unlist groups that are gone, and a listed group whose
    # number a stranger took since is spared by the reaper (`_REAPER`).
    _reaper_backlog.clear()
    reaper.stdin.close()
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        while reaper.poll() is None:
            await trio.sleep(_POLL / 4)


STDERR_LINES = 200
_POLL = 0.02


class ServerProcess:
    """What we know of one spawned stdio server: pid, stderr tail, exit status, and the id
    its processes carry in ``INCARNATION_VAR``."""

    def __init__(self, on_oversized: Callable[[], None] = lambda: None) -> None:
        self.incarnation = secrets.token_hex(8)
        self._on_oversized = on_oversized
        self.pid: int | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.exited = trio.Event()
        self.exit_status: str | None = None
        #: Its exit code once it exited (negative: the signal that killed it).
        self.exit_code: int | None = None
        #: Lines over ``max_message_bytes`` this incarnation wrote (each dropped).
        self.oversized = 0

    def count_oversized(self) -> None:
        self.oversized += 1
        self._on_oversized()

    def stderr_tail(self, lines: int = 20) -> list[str]:
        return list(self.stderr)[-lines:]


#: Where the scans read the processes.
_PROC = "/proc"


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ..."""
    with open(f"{_PROC}/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _live(pid: int | str) -> bool:
    """True while ``pid`` runs. Zombies do not count: they hold nothing but their exit
    status, and a group leader's stays until its parent (us) reaps it, so counting them
    would make `kill_tree` wait out its whole grace."""
    try:
        return _stat_fields(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _leader_start(pgid: int) -> int | None:
    """When the leader of group ``pgid`` started (clock ticks since boot), or None when no
    process at that number leads that group any more (it was reaped)."""
    try:
        fields = _stat_fields(pgid)
        return int(fields[19]) if int(fields[2]) == pgid else None
    except (OSError, ValueError, IndexError):
        return None


def _scan(incarnation: str | None, since: int | None) -> tuple[set[int], dict[int, int]] | None:
    """One pass over /proc: the process groups holding a live process that started at or
    after ``since`` (clock ticks since boot; None: any), and among those processes the ones
    whose environment carries ``incarnation`` (pid -> its group). None if /proc cannot be read.

    Every descendant of a server started no earlier than its leader, so the environment (the
    costly read) is read only for those. Newest pids first: a process that forks and exits
    in a loop lives at each pid for less time than a listing of thousands of entries takes,
    so before /proc is listed the last few pids handed out are looked at, again each time
    the kernel hands out another (up to `_RECENT_LOOKS` times), then every pid listed, from
    the newest (`_newest_first`).
    Blocking: runs in a worker thread (`kill_tree`) but for the forced exit."""
    mark = f"{INCARNATION_VAR}={incarnation}".encode() if incarnation else None
    groups: set[int] = set()
    marked: dict[int, int] = {}
    seen: set[int] = set()

    def look(pid: int) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            seen.add(pid)
            if fields[0] in ("Z", "X") or (since is not None and int(fields[19]) < since):
                return
            group = int(fields[2])
            groups.add(group)
            if mark is not None:
                with open(f"{_PROC}/{pid}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        marked[pid] = group

    last, top, before = *_last_pid(), 0
    for _ in range(_RECENT_LOOKS):
        if not last or last == before:
            break
        for pid in {(last - back - 1) % top + 1 for back in range(_RECENT)} - seen:
            look(pid)
        before, (last, top) = last, _last_pid()
    try:
        listed = [int(entry) for entry in os.listdir(_PROC) if entry.isdigit()]
    except OSError:
        return None
    for pid in _newest_first([pid for pid in listed if pid not in seen], last, top):
        look(pid)
    return groups, marked


#: How many of the last pids handed out a scan looks at before it lists /proc, and how
#: many times, as long as new ones are handed out meanwhile (`_scan`).
_RECENT = 4
_RECENT_LOOKS = 32


def _last_pid() -> tuple[int, int]:
    """The last pid the kernel handed out in our namespace, and ``pid_max`` (0, 0 if
    unknown): pids are handed out in turn up to ``pid_max``, then from the lowest free one."""
    try:
        with open(f"{_PROC}/sys/kernel/ns_last_pid") as f:
            last = int(f.read())
        with open(f"{_PROC}/sys/kernel/pid_max") as f:
            return last, int(f.read())
    except (OSError, ValueError):
        return 0, 0


def _newest_first(pids: list[int], last: int, top: int) -> list[int]:
    """``pids`` from ``last`` (`_last_pid`) backwards, wrapping around below 1."""
    if not last:
        return sorted(pids, reverse=True)
    return sorted(pids, key=lambda pid: (last - pid) % top)


def _not_ours() -> set[int]:
    """Process groups never to be killed as a whole, whoever is found in them: our own, our
    session's, and the kernel's and init's."""
    return {0, 1, os.getpgrp(), os.getsid(0)}


def _survey(
    pgid: int, incarnation: str | None, since: int | None, escaped: set[int]
) -> tuple[bool, dict[int, int]]:
    """Whether group ``pgid`` or one of the ``escaped`` groups still holds a live process,
    and the live processes outside ``pgid`` that carry ``incarnation`` (pid -> group).

    ``escaped``: the groups of such processes found so far, updated here. A group is kept
    only while it exists and its number leads no group of someone else's (checked on
    every survey, and before every signal: `_number_taken`)."""
    for group in list(escaped):
        if _number_taken(group, incarnation):
            escaped.discard(group)
            continue
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            escaped.discard(group)
        except PermissionError:
            pass
    if not incarnation and not escaped:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False, {}
        except PermissionError:
            pass
    scan = _scan(incarnation, since)
    if scan is None:  # /proc unreadable: the group counts as live while it exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False, {}
        except PermissionError:
            pass
        return True, {}
    groups, marked = scan
    outside = {pid: group for pid, group in marked.items() if group != pgid}
    escaped.update(set(outside.values()) - _not_ours() - {pgid})
    return bool(groups & ({pgid} | escaped)), outside


def _number_taken(group: int, incarnation: str | None) -> bool:
    """Whether the number of ``group``, an escaped group of ours, now leads a group of
    someone else's: its process lives, leads a group of that number, and does not carry
    ``incarnation``. A group outlives its leader while members are left, and its number is
    free once they are gone too: a survey's "it exists" (``killpg(group, 0)``) from a
    moment ago does not say the group is still ours, and killing by its number would reach
    a stranger's. (No leader, or a zombie one: the members left are the group's own.)"""
    try:
        with open(f"{_PROC}/{group}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        if fields[0] in (b"Z", b"X") or int(fields[2]) != group:
            return False
        with open(f"{_PROC}/{group}/environ", "rb") as f:
            return f"{INCARNATION_VAR}={incarnation}".encode() not in f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except (OSError, ValueError, IndexError):
        return True  # unreadable (another user's): not ours to kill


def _signal_tree(
    pgid: int | None, marked: dict[int, int], escaped: set[int], sig: int, incarnation: str | None = None
) -> bool:
    """Send ``sig`` to group ``pgid`` (unless None), to each of ``marked`` and to each group
    of ``escaped`` (one that is gone is dropped from it); False when none of them was there
    to receive it.

    A group is signalled as a whole: a process that keeps changing its pid (forking and
    exiting) keeps its group, and a kill aimed at a pid found a moment ago misses it, while
    a group's kill reaches each of its processes, one being forked included."""
    sent = False
    try:
        if pgid is not None:
            os.killpg(pgid, sig)
            sent = True
    except ProcessLookupError:
        pass
    except PermissionError:
        sent = True
    for group in list(escaped):
        if _number_taken(group, incarnation):
            escaped.discard(group)
            continue
        try:
            os.killpg(group, sig)
            sent = True
        except ProcessLookupError:
            escaped.discard(group)
        except PermissionError:
            sent = True
    for pid in marked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent = True
    return sent


async def kill_tree(pgid: int, incarnation: str | None, grace: float) -> None:
    """SIGTERM one server's processes (group ``pgid``, every process carrying
    ``incarnation`` outside it, and the process groups of those), wait up to ``grace`` s for
    them to go, then SIGKILL what is left; a process carrying ``incarnation`` that one of
    them started meanwhile is SIGKILLed either way, even one started as the group was being
    killed.

    The scans of /proc run in a worker thread (one at a time): with thousands of processes
    one takes long, and every other task of this thread would wait for it.

    Shielded and bounded (``grace`` + 1 s, and what a scan takes): it finishes even when
    the caller is being cancelled.
    """
    with trio.CancelScope(shield=True):
        since = _leader_start(pgid)
        # A limiter of its own: a scan never waits for threads of others (the default
        # limiter's are shared with whatever an embedding host runs in threads).
        limiter = trio.CapacityLimiter(1)
        escaped: set[int] = set()

        async def survey() -> tuple[bool, dict[int, int]]:
            try:
                return await trio.to_thread.run_sync(_survey, pgid, incarnation, since, escaped, limiter=limiter)
            except RuntimeError:  # no thread to be had (a host's limit): scan here, slow or not
                return _survey(pgid, incarnation, since, escaped)

        # The group first: killing it needs no scan, whatever a scan takes or fails at.
        first = signal.SIGTERM if grace > 0 else signal.SIGKILL
        told = _signal_tree(pgid, {}, escaped, first, incarnation)
        alive, marked = await survey()
        if not (_signal_tree(None, marked, escaped, first, incarnation) or told):
            return

        with trio.move_on_after(grace):
            while alive or marked:
                await trio.sleep(_POLL)
                alive, marked = await survey()
        # What is left, and what left the group meanwhile, found afresh: a pid remembered
        # from before may belong to someone else by now, and so may the group's id once
        # nothing of it runs.
        alive, marked = await survey()
        if not _signal_tree(pgid if alive else None, marked, escaped, signal.SIGKILL, incarnation):
            return
        # One that left the group between that scan and the kill is in neither: scan again
        # until none is found (the group, killed, can start no more; each one found is).
        # A process in the middle of an execve shows no environment for a moment (0.7 ms
        # median, 7.6 ms seen unloaded), so a scan can miss it: once any left the group,
        # the scans go on until `_CLEAN_SCANS` in a row found none.
        left, clean = bool(marked or escaped), 0
        with trio.move_on_after(1.0):
            while True:
                if alive or marked:
                    clean = 0
                elif clean >= (_CLEAN_SCANS if left else 0):
                    break
                await trio.sleep(_POLL)
                alive, marked = await survey()
                left = left or bool(marked or escaped)
                _signal_tree(None, marked, escaped, signal.SIGKILL, incarnation)
                clean += 1


async def _read_stderr(fd: int, proc: ServerProcess) -> None:
    stream = trio.lowlevel.FdStream(fd)
    buffer = b""
    runaway = False  # in a line whose head is kept already: the rest of it is dropped
    async with stream:
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                break
            if not chunk:
                break
            if runaway:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                chunk, runaway = chunk[end + 1 :], False
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                proc.stderr.append(_stderr_line(line))
            if len(buffer) > 65536:  # a runaway line: keep its head, drop the rest
                proc.stderr.append(_stderr_line(buffer))
                buffer, runaway = b"", True
    if buffer:
        proc.stderr.append(_stderr_line(buffer))


_STDERR_HEAD = 4096


def _stderr_line(line: bytes) -> str:
    """A stderr line as kept: at most its first `_STDERR_HEAD` bytes, marked " …" when cut."""
    if len(line) <= _STDERR_HEAD:
        return line.decode("utf-8", "replace")
    return line[:_STDERR_HEAD].decode("utf-8", "replace") + " …"


async def _watch_exit(proc: ServerProcess, process: trio.Process) -> None:
    """Set ``proc.exited`` the moment the server exits, without reaping it: a zombie's pid
    stays taken, so no one else's process (a group leader of its own) can be handed it
    before `kill_tree` signals the server's group by that number. `open_stdio` reaps it
    after that kill."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd here (or it is gone): reap to learn
        code = await process.wait()
    else:
        try:
            await trio.lowlevel.wait_readable(pidfd)
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)
        finally:
            os.close(pidfd)
        assert info is not None
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    proc.exit_status = f"exited with code {code}" if code >= 0 else f"killed by {_signal_name(-code)}"
    proc.exit_code = code
    proc.exited.set()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


#: After stdin closes, how long the server has to exit by itself (the SDK's
#: PROCESS_TERMINATION_TIMEOUT), at most: the stop's whole budget is its ``grace``
#: (the spec's ``shutdown_timeout``), and this wait takes at most `_STDIN_SHARE` of it,
#: leaving the rest to SIGTERM (`kill_tree`).
_EXIT_AFTER_STDIN = 2.0
_STDIN_SHARE = 0.5
_FLUSH = 0.5  # for the writer to send what the session already handed it


@contextlib.asynccontextmanager
async def open_stdio(
    params: StdioServerParameters, proc: ServerProcess, *, name: str, grace: float, max_message_bytes: int
) -> AsyncIterator[tuple[PipeReader, PipeWriter]]:
    """Spawn the server and yield the streams of its wire (`actors._pipes`) for ``mcp.Client``.

    The server runs in a new session (its pid is its process group id) with
    ``INCARNATION_VAR`` set. ``proc`` learns the pid, collects stderr and has ``exited`` set
    the moment the server process dies, even when the caller's scope is cancelled (a
    connect that timed out). On exit, the spec's shutdown sequence within one budget of
    ``grace`` s: stop reading, flush, close stdin and wait for the server to exit by itself
    (up to `_EXIT_AFTER_STDIN` s and at most `_STDIN_SHARE` of ``grace``), then whatever is
    left of the server's processes is killed (`kill_tree`: SIGTERM, the rest of ``grace``,
    SIGKILL): no orphan survives, whether the server exited by itself or not. Shielded, and
    bounded by ``grace`` plus what a SIGKILLed tree takes to go (a few polls).

    Raises ``OSError`` when the command cannot be started.
    """
    env = {**(params.env or {}), INCARNATION_VAR: proc.incarnation}
    # The reaper learns the id before the fork: the process runs from the fork on, and its
    # group is listed only once this task resumes (a forced exit or a SIGKILL meanwhile).
    _watch_spawn(proc.incarnation)
    try:
        read_fd, write_fd = os.pipe()
    except BaseException:  # out of fds, say: nothing of it will run
        await _forget_spawn(proc.incarnation)
        raise
    os.set_blocking(read_fd, False)
    try:
        process = await trio.lowlevel.open_process(
            [params.command, *params.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=write_fd,
            env=env,
            cwd=params.cwd,
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        await _forget_spawn(proc.incarnation)  # Popen failed: no process of it runs
        raise
    else:
        os.close(write_fd)  # the child holds its own copy
    # No checkpoint until the finally below guards the process: a cancellation here would
    # leave it running.
    proc.pid = process.pid
    _watch_group(process.pid, proc.incarnation, _start_time(process.pid))
    assert process.stdin is not None and process.stdout is not None
    stderr_done = trio.Event()

    async def read_stderr() -> None:
        try:
            await _read_stderr(read_fd, proc)
        finally:
            stderr_done.set()

    async with trio.open_nursery() as nursery:
        read_stream = PipeReader(
            process.stdout, nursery, max_message_bytes, name, proc.count_oversized, lambda request: refuse(request)
        )
        write_stream = PipeWriter(process.stdin, read_stream, nursery)
        refuse = refuser(nursery, write_stream)  # answers to the server's requests over the limit
        # Shielded until the stop below is over: the caller's scope cancelled (a connect
        # that timed out) must not blind the stop to an exit, which it would then wait out.
        watching = trio.CancelScope(shield=True)

        async def watch_exit() -> None:
            with watching:
                await _watch_exit(proc, process)

        nursery.start_soon(read_stderr)
        nursery.start_soon(watch_exit)
        try:
            yield read_stream, write_stream
        finally:
            with trio.CancelScope(shield=True):
                now = trio.current_time()
                stop_by = now + grace
                stdin_by = now + min(_EXIT_AFTER_STDIN, grace * _STDIN_SHARE)
                read_stream.close()  # the reader drains from here: a server blocked on
                write_stream.close()  # a full stdout can read its stdin again
                with trio.move_on_at(min(stdin_by, now + _FLUSH)):
                    await write_stream.flushed()
                with contextlib.suppress(*_CLOSED):
                    await process.stdin.aclose()
                with trio.move_on_at(stdin_by):
                    await proc.exited.wait()
                try:
                    await kill_tree(process.pid, proc.incarnation, max(0.0, stop_by - trio.current_time()))
                    with trio.move_on_after(0.2):
                        await proc.exited.wait()  # how it ended, told by the watcher
                finally:
                    watching.cancel()
                await _forget_group(process.pid)
                with trio.move_on_after(0.2):
                    await stderr_done.wait()  # the last lines a dying server wrote
                with trio.move_on_after(1.0):
                    await process.wait()  # reaped (only now: see _watch_exit): no zombie left behind
                # A process out of our reach may hold stdout open: stop reading it.
                with contextlib.suppress(*_CLOSED):
                    await process.stdout.aclose()
            nursery.cancel_scope.cancel()


_CLOSED = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
