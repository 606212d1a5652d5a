"""Calls/s through the supervisor with 1, 4, 16 and 64 stdio servers, next to the direct SDK.

For each server count N, in one process and one run:

(a) direct: one ``mcp.Client`` per server (N echo servers, ``tests/servers/echo.py``);
(b) supervised: ``supervisor.Supervisor`` over N other echo servers of the same script.

Both sets run at the same time; the load (``--in-flight`` calls, 50 by default, spread
round-robin over the servers) alternates between (a) and (b) in short slices, so both see
the same machine noise. Prints calls/s of each path, the ratio b/a, and this process's CPU
share (process CPU time / wall time, 1.0 = one core busy) while each path ran: the
supervisor's own cost, since the servers run in their own processes.

    python bench/scaling.py [--servers 1 4 16 64] [--seconds 3] [--slice 0.5] [--in-flight 50]

``run(...)`` returns the figures as a dict; every call is checked (an echo that comes back
wrong, or a failure, stops the bench).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from mcp import Client, StdioServerParameters

from protocol import ServerSpec
from supervisor import Supervisor

ECHO = Path(__file__).resolve().parent.parent / "tests" / "servers" / "echo.py"
ARGS = {"text": "hello"}
#: Starting 64 Python servers on 2 cores takes far longer than the default 30 s.
CONNECT_TIMEOUT = 600.0
START_DEADLINE = 900.0
SLICE_DEADLINE = 120.0

CallOn = Callable[[int], Awaitable[object]]


class Load:
    """One path's totals over all its slices: calls, wall time and process CPU time."""

    def __init__(self, call_on: CallOn, servers: int) -> None:
        self.call_on = call_on
        self.servers = servers
        self.calls = 0
        self.wall = 0.0
        self.cpu = 0.0

    async def slice(self, seconds: float, in_flight: int) -> None:
        """Keep ``in_flight`` calls going for ``seconds``, then wait for the last ones."""
        stop_at = time.perf_counter() + seconds
        done = 0

        async def worker(first: int) -> None:
            nonlocal done
            target = first
            while time.perf_counter() < stop_at:
                result = await self.call_on(target % self.servers)
                if result.content[0].text != ARGS["text"]:  # type: ignore[attr-defined]
                    raise AssertionError(f"wrong echo: {result!r}")
                done += 1
                target += 1

        cpu0, t0 = time.process_time(), time.perf_counter()
        with trio.fail_after(seconds + SLICE_DEADLINE):
            async with trio.open_nursery() as nursery:
                for i in range(in_flight):
                    nursery.start_soon(worker, i)
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - cpu0
        self.calls += done

    @property
    def rate(self) -> float:
        return self.calls / self.wall

    @property
    def cpu_share(self) -> float:
        return self.cpu / self.wall


def echo_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(ECHO)])


def echo_specs(n: int) -> list[ServerSpec]:
    return [
        ServerSpec(
            name=f"s{i}",
            command=sys.executable,
            args=[str(ECHO)],
            namespace="prefix",
            max_concurrency=64,
            connect_timeout=CONNECT_TIMEOUT,
        )
        for i in range(n)
    ]


async def hold_clients(
    n: int, clients: list[Client], stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open ``n`` direct clients at once (each in its own task: an SDK client is closed by
    the task that opened it), report started when all are initialized, close them at ``stop``."""
    ready = 0
    all_ready = trio.Event()

    async def hold(i: int) -> None:
        nonlocal ready
        async with Client(echo_params()) as client:
            clients[i] = client
            ready += 1
            if ready == n:
                all_ready.set()
            await stop.wait()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(hold, i)
        await all_ready.wait()
        task_status.started()


async def measure_point(servers: int, seconds: float, slice_seconds: float, in_flight: int) -> dict[str, float]:
    """The figures for one server count (see the module docstring)."""
    clients: list[Client] = [None] * servers  # type: ignore[list-item]
    stop = trio.Event()
    async with trio.open_nursery() as holders:
        try:
            with trio.fail_after(START_DEADLINE):
                # Both sets start at once: the direct clients here, the supervised servers below.
                clients_ready = trio.Event()

                async def open_clients() -> None:
                    await holders.start(hold_clients, servers, clients, stop)
                    clients_ready.set()

                holders.start_soon(open_clients)
                async with Supervisor(echo_specs(servers)) as sup:
                    for name in sup.servers:
                        await sup.wait_connected(name, timeout=CONNECT_TIMEOUT)
                    await clients_ready.wait()
                    return await _measure_loads(sup, clients, seconds, slice_seconds, in_flight)
        finally:
            stop.set()
    raise AssertionError("unreachable")


async def _measure_loads(
    sup: Supervisor, clients: list[Client], seconds: float, slice_seconds: float, in_flight: int
) -> dict[str, float]:
    servers = len(clients)
    names = sup.servers

    async def direct(i: int) -> object:
        return await clients[i].call_tool("echo", ARGS)

    async def supervised(i: int) -> object:
        return await sup.call_tool("echo", ARGS, server=names[i])

    a, b = Load(direct, servers), Load(supervised, servers)
    for load in (a, b):  # warm up both paths, then forget the warm-up
        await load.slice(min(0.3, slice_seconds), in_flight)
        load.calls, load.wall, load.cpu = 0, 0.0, 0.0
    rounds = max(1, math.ceil(seconds / slice_seconds))
    for r in range(rounds):
        for load in (a, b) if r % 2 == 0 else (b, a):
            await load.slice(slice_seconds, in_flight)
    return {
        "servers": float(servers),
        "direct_calls_per_s": a.rate,
        "supervised_calls_per_s": b.rate,
        "ratio": b.rate / a.rate,
        "direct_cpu_share": a.cpu_share,
        "supervised_cpu_share": b.cpu_share,
        "direct_calls": float(a.calls),
        "supervised_calls": float(b.calls),
    }


async def measure(server_counts: list[int], seconds: float, slice_seconds: float, in_flight: int) -> dict[str, float]:
    figures: dict[str, float] = {"in_flight": float(in_flight)}
    for n in server_counts:
        for key, value in (await measure_point(n, seconds, slice_seconds, in_flight)).items():
            figures[f"{key}@{n}"] = value
    return figures


def run(
    server_counts: list[int] = [1, 4, 16, 64],  # noqa: B006 - never mutated
    seconds: float = 3.0,
    slice_seconds: float = 0.5,
    in_flight: int = 50,
) -> dict[str, float]:
    """Measure every server count; keys are ``<figure>@<servers>`` plus ``in_flight``.

    Per count: ``direct_calls_per_s``, ``supervised_calls_per_s``, ``ratio`` (b/a),
    ``direct_cpu_share``, ``supervised_cpu_share`` (this process's CPU time / wall time),
    and the call counts. Every server process it started is gone when it returns.
    """
    return trio.run(measure, list(server_counts), seconds, slice_seconds, in_flight)


def counts_of(figures: dict[str, float]) -> list[int]:
    return [int(figures[k]) for k in figures if k.startswith("servers@")]


def report(figures: dict[str, float]) -> None:
    print(f"stdio echo servers, {int(figures['in_flight'])} calls in flight, round-robin over the servers")
    print(f"  {'servers':>7} {'direct calls/s':>15} {'supervised calls/s':>19} {'ratio b/a':>10} {'cpu direct':>11} {'cpu supervised':>15}")
    for n in counts_of(figures):
        print(
            f"  {n:7d} {figures[f'direct_calls_per_s@{n}']:15.0f} {figures[f'supervised_calls_per_s@{n}']:19.0f}"
            f" {figures[f'ratio@{n}']:10.3f} {figures[f'direct_cpu_share@{n}']:11.2f}"
            f" {figures[f'supervised_cpu_share@{n}']:15.2f}"
        )
    print("  cpu = this process's CPU time / wall time while that path ran (1.0 = one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 4, 16, 64], help="server counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per path per count")
    parser.add_argument("--slice", type=float, default=0.5, help="seconds per slice before switching path")
    parser.add_argument("--in-flight", type=int, default=50)
    args = parser.parse_args()
    report(run(args.servers, args.seconds, args.slice, args.in_flight))


if __name__ == "__main__":
    main()
