"""The daemon as a gateway: HTTP front, stdio back, next to the same server over HTTP directly.

In one run, with the same echo tool (``tests/servers/_common.make_server``) and the same
client (``mcp.Client`` over streamable HTTP, trio):

(a) direct: ``tests/servers/http_echo.py``, the echo server itself served over streamable
    HTTP by hypercorn under trio (no proxy);
(b) the daemon: ``python -m supervisor run`` with one stdio echo server
    (``tests/servers/echo.py``), the client talking to its ``/mcp`` front.

Prints serial latency (p50/p99, batches of calls rotating between the paths) and calls/s
with ``--in-flight`` calls going (slices alternating between the paths), for each path; the
difference of the serial p50s and the throughput ratio b/a. Under load it also counts the
CPU time per call of every process on the path (from ``/proc``): the server of (a); the
daemon and its stdio server for (b); the client (this process) for both. On this machine's
two cores, which all of them share, that sum bounds the throughput. The targets in DESIGN.md:
serial latency <= (a) + 1.2 ms, and throughput >= 1.3x mcp-proxy's (DESIGN.md measured
mcp-proxy 0.13 at 250-310 calls/s on this machine against 410-460 for (a); mcp-proxy needs
the v1 SDK, so it is not run here: the throughput ratio to (a) is the comparable figure,
>= 0.85 of (a) clears 1.3x mcp-proxy's by that table).

The CPU figures say why that ratio is out of reach here (2026-12-04, 300 serial calls, 3 s
of load at 25 in flight): a call through the daemon costs 2.9 ms of CPU across its three
processes (the daemon 1.19, its stdio echo server 0.75, the client 0.98), one to the
server over HTTP 1.7 ms (the server 0.86, the client 0.82). On two cores that all of them
share, (b) can serve at most 2 / 2.9 ms = ~690 calls/s, and (a) ~1160 (its server, one
thread, saturates a core): a ratio of at most ~0.59 before any scheduling loss, whatever
the daemon does. The stdio server alone (the SDK's stdio transport, which reads and writes
through a worker thread) costs 0.75 ms per call, and the client spends 0.16 ms more per
call on the daemon's answers (SSE events with ids, for resumption) than on the direct
server's. Measured: 545-569 calls/s against 1120-1170, ratio 0.48-0.49.

    python bench/daemon.py [--calls 1000] [--batch 50] [--seconds 4] [--slice 0.5] [--in-flight 25]

``run(...)`` returns the figures as a dict; every call is checked (a wrong echo or a failure
stops the bench). Both server processes are stopped at the end, on error too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import trio
from mcp import Client

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "tests" / "servers"
ARGS = {"text": "hello"}
START_DEADLINE = 60.0
CALL_DEADLINE = 30.0

Call = Callable[[], Awaitable[Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@contextmanager
def process(argv: list[str], **popen: Any):
    """A subprocess that is stopped (SIGTERM, 10 s, SIGKILL) when the block ends."""
    proc = subprocess.Popen(argv, cwd=ROOT, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def direct_server():
    """``http_echo.py`` on a port it picks; yields its /mcp URL and its pid."""
    argv = [sys.executable, str(SERVERS / "http_echo.py"), "--exit-on-stdin-close"]
    with process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"http_echo.py did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp", proc.pid


@contextmanager
def daemon(log: Path):
    """``python -m supervisor run`` over one stdio echo server; yields its base URL, its pid
    and its server's pid."""
    config = log.with_suffix(".json")
    config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [str(SERVERS / "echo.py")]}}}))
    port = free_port()
    argv = [sys.executable, "-m", "supervisor", "run", "--config", str(config), "--http", f"127.0.0.1:{port}"]
    with open(log, "wb") as out, process(argv, stdout=out, stderr=subprocess.STDOUT) as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}:\n{log.read_text()}")
            try:
                health = httpx2.get(url + "/healthz", timeout=1.0)
                if health.status_code == 200 and health.json()["down"] == 0:
                    status = httpx2.get(url + "/status", timeout=1.0).json()
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon was not healthy after {START_DEADLINE} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, proc.pid, _server_pid(status)


def _server_pid(node: dict[str, Any]) -> int:
    """The pid of the one stdio server in a ``/status`` tree."""
    pid = (node.get("detail") or {}).get("pid")
    if pid is not None:
        return pid
    for child in node.get("children") or []:
        try:
            return _server_pid(child)
        except LookupError:
            continue
    raise LookupError("no server pid in the status tree")


class Path_:
    """One way of calling the tool: serial latencies, and calls and wall time under load."""

    def __init__(self, client: Client, pids: dict[str, int]) -> None:
        self.client = client
        self.pids = pids  # the processes serving this path, by role
        self.samples: list[float] = []
        self.calls = 0
        self.wall = 0.0
        self.cpu = dict.fromkeys([*pids, "client"], 0.0)

    async def call(self) -> None:
        with trio.fail_after(CALL_DEADLINE):
            result = await self.client.call_tool("echo", ARGS)
        if result.is_error or result.content[0].text != ARGS["text"]:  # type: ignore[union-attr]
            raise AssertionError(f"wrong echo: {result!r}")

    async def serial(self, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            await self.call()
            self.samples.append(time.perf_counter() - t0)

    async def load(self, seconds: float, in_flight: int) -> None:
        stop_at = time.perf_counter() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await self.call()
                done += 1

        cpu0 = {role: cpu_seconds(pid) for role, pid in self.pids.items()}
        client0 = time.process_time()
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker)
        self.wall += time.perf_counter() - t0
        self.cpu["client"] += time.process_time() - client0
        for role, pid in self.pids.items():
            self.cpu[role] += cpu_seconds(pid) - cpu0[role]
        self.calls += done

    @property
    def rate(self) -> float:
        return self.calls / self.wall


async def measure(
    urls: dict[str, str], pids: dict[str, dict[str, int]], calls: int, size: int, seconds: float, slice_seconds: float,
    in_flight: int,
):
    async with Client(urls["direct"]) as direct, Client(urls["daemon"] + "/mcp") as gateway:
        paths = {"direct": Path_(direct, pids["direct"]), "daemon": Path_(gateway, pids["daemon"])}
        order = list(paths.values())
        for path in order:  # warm up
            await path.serial(min(50, calls))
            path.samples.clear()
        for i in range(max(1, calls // size)):
            shift = i % 2
            for path in order[shift:] + order[:shift]:
                await path.serial(size)
        for i in range(max(1, round(seconds / slice_seconds))):
            shift = i % 2
            for path in order[shift:] + order[:shift]:
                await path.load(slice_seconds, in_flight)
    figures: dict[str, float] = {"calls": float(len(paths["direct"].samples)), "in_flight": float(in_flight)}
    for name, path in paths.items():
        figures[f"{name}_p50"] = statistics.median(path.samples)
        figures[f"{name}_p99"] = statistics.quantiles(path.samples, n=100)[-1]
        figures[f"{name}_rate"] = path.rate
        for role, cpu in path.cpu.items():
            figures[f"{name}_cpu_{role}"] = cpu / max(1, path.calls)
        figures[f"{name}_cpu"] = sum(path.cpu.values()) / max(1, path.calls)
    figures["added_p50"] = figures["daemon_p50"] - figures["direct_p50"]
    figures["ratio_p50"] = figures["daemon_p50"] / figures["direct_p50"]
    figures["ratio_p99"] = figures["daemon_p99"] / figures["direct_p99"]
    figures["throughput_ratio"] = figures["daemon_rate"] / figures["direct_rate"]
    return figures


def run(calls: int = 1000, batch_size: int = 50, seconds: float = 4.0, slice_seconds: float = 0.5, in_flight: int = 25):
    """Start both servers, measure, stop them (see the module docstring)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        direct_server() as (direct_url, direct_pid),
        daemon(Path(tmp) / "daemon.log") as (daemon_url, daemon_pid, server_pid),
    ):
        urls = {"direct": direct_url, "daemon": daemon_url}
        pids = {"direct": {"server": direct_pid}, "daemon": {"daemon": daemon_pid, "stdio server": server_pid}}
        return trio.run(measure, urls, pids, calls, batch_size, seconds, slice_seconds, in_flight)


def report(f: dict[str, float]) -> None:
    print(f"echo tool over streamable HTTP, {int(f['calls'])} serial calls per path, {int(f['in_flight'])} in flight under load")
    print(f"  {'':44} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for label, key in (("(a) the server over HTTP, no proxy", "direct"), ("(b) the daemon: HTTP front, stdio back", "daemon")):
        print(f"  {label:44} {f[f'{key}_p50'] * 1e3:8.3f} {f[f'{key}_p99'] * 1e3:8.3f} {f[f'{key}_rate']:9.0f}")
    print(
        f"  serial p50: {f['added_p50'] * 1e3:+.2f} ms (goal <= +1.2 ms), ratio {f['ratio_p50']:.3f};"
        f" p99 ratio {f['ratio_p99']:.3f}; throughput ratio b/a {f['throughput_ratio']:.3f}"
    )
    print("  CPU time per call under load, every process on the path (us):")
    paths = (("(a)", "direct", ("server", "client")), ("(b)", "daemon", ("daemon", "stdio server", "client")))
    for label, key, roles in paths:
        parts = ", ".join(f"{role} {f[f'{key}_cpu_{role}'] * 1e6:.0f}" for role in roles)
        print(f"  {label} {parts}: {f[f'{key}_cpu'] * 1e6:.0f} in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="serial calls per path")
    parser.add_argument("--batch", type=int, default=50, help="serial calls per batch before switching path")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load per path")
    parser.add_argument("--slice", type=float, default=0.5, help="seconds per load slice before switching path")
    parser.add_argument("--in-flight", type=int, default=25)
    args = parser.parse_args()
    report(run(args.calls, args.batch, args.seconds, args.slice, args.in_flight))


if __name__ == "__main__":
    main()
