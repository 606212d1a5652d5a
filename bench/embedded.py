"""openai-agents' own stdio MCP server vs the supervised adapter in guest mode, per call.

On the same stdio echo server script (``tests/servers/echo.py``, one subprocess per path), in
one plain asyncio process and one run:

(a) ``agents.mcp.MCPServerStdio.call_tool``: what the copilot does today;
(b) ``SupervisedMCPServer.call_tool`` over ``supervisor.embed``: the tree as a trio guest run
    on the same asyncio loop.

Batches of calls rotate (a b / b a ...) so every path sees the same machine
noise. Prints p50/p99 per call, this process's CPU time per call (the servers' not counted)
and the ratios to (a). The issue's goal: p50 of b/a <= 1.0.

    python bench/embedded.py [--calls 2000] [--batch 50]

Where the gap comes from: host CPU. The server's own work is the same for both paths, and
the extra latency of (b) tracks the extra CPU per call in this process. Measured on
2026-12-03 (same hour, same echo server): the mcp SDK's own ``Client`` costs ~0.93 ms of CPU
per stdio call on asyncio and on trio alike, openai-agents' ``MCPServerStdio`` ~1.1-1.2 ms,
the supervisor run natively under trio (``trio.run``) ~1.05-1.2 ms, and the same supervisor
as a guest run ~1.65-2.0 ms. Counted in Python function calls per in-process call: 907 for
the SDK, 1048 for the supervisor under ``trio.run``, 1548 for it as a guest run. The extra
500 are the guest run's bookkeeping: every trio scheduling batch (one stdio call takes 10,
one of them ours) is one host callback, one more turn of the asyncio loop (with its own
select and a context copy per ``call_soon``) and trio's own zero-timeout epoll, plus the
request's hand-off into trio and the asyncio future it resolves.

What it is not: the hand-off from trio's I/O helper thread. A driver that waited in the
host loop's own selector instead (asyncio's ``add_reader`` on trio's epoll fd, ticking trio
from there: no helper thread, no GIL hand-over, the request entering trio in the loop turn
it was made in) measured the same, p50 ratio 1.28-1.39 against 1.29-1.36 for trio's stock
guest mode over three alternating runs each, and so did running several ready trio batches
in one host callback (1.19-1.29 either way). Both were dropped: private trio internals for
no gain. A "busy poll" knob that kept the guest runnable for a few ms after each request
was tried earlier: it cut the p50 ratio from about 1.27 to 1.16 but doubled host CPU per
call and worsened p99, so it was dropped too (see the commit that added this file).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agents.mcp import MCPServerStdio

from protocol import ServerSpec
from supervisor import SupervisedMCPServer, embed

ECHO = Path(__file__).resolve().parent.parent / "tests" / "servers" / "echo.py"
ARGS = {"text": "hello"}

Call = Callable[[], Awaitable[object]]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Path_:
    """One way of calling the tool, with its per-call latencies and host CPU time."""

    def __init__(self, call: Call, before: Callable[[], None] = lambda: None) -> None:
        self.call = call
        self.before = before
        self.samples: list[float] = []
        self.cpu = 0.0

    async def batch(self, n: int) -> None:
        self.before()
        cpu0 = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            await self.call()
            self.samples.append(time.perf_counter() - t0)
        self.cpu += time.process_time() - cpu0


async def rotated_batches(paths: list[Path_], calls: int, size: int) -> None:
    """``calls`` calls per path in batches of ``size``; the order rotates every round so each
    path runs first, in the middle and last equally often (same machine noise for all)."""
    for i in range(max(1, calls // size)):
        shift = i % len(paths)
        for path in paths[shift:] + paths[:shift]:
            await path.batch(size)


async def measure(calls: int, size: int) -> dict[str, float]:
    """The figures: p50/p99 (seconds) and host CPU per call of each path, and ratios to (a)."""
    params = {"command": sys.executable, "args": [str(ECHO)]}
    spec = ServerSpec(name="echo", command=sys.executable, args=[str(ECHO)], max_concurrency=64)
    async with MCPServerStdio(params, cache_tools_list=True, name="echo") as direct, embed([spec]) as sup:
        adapter = SupervisedMCPServer(sup, server="echo")

        async def sdk() -> None:
            result = await direct.call_tool("echo", ARGS)
            assert not result.is_error, result

        async def supervised() -> None:
            result = await adapter.call_tool("echo", ARGS)
            assert not result.is_error, result

        paths = {
            "sdk": Path_(sdk),
            "supervised": Path_(supervised),
        }
        for path in paths.values():  # warm up
            await path.batch(100)
            path.samples.clear()
            path.cpu = 0.0
        await rotated_batches(list(paths.values()), calls, size)
    figures: dict[str, float] = {"calls": float(len(paths["sdk"].samples))}
    for name, path in paths.items():
        figures[f"{name}_p50"] = statistics.median(path.samples)
        figures[f"{name}_p99"] = percentile(path.samples, 0.99)
        figures[f"{name}_cpu_per_call"] = path.cpu / len(path.samples)
    figures["supervised_ratio_p50"] = figures["supervised_p50"] / figures["sdk_p50"]
    figures["supervised_ratio_p99"] = figures["supervised_p99"] / figures["sdk_p99"]
    figures["ratio_p50"] = figures["supervised_ratio_p50"]  # the figure: b/a
    return figures


def report(figures: dict[str, float]) -> None:
    rows = [
        ("(a) agents MCPServerStdio", "sdk"),
        ("(b) SupervisedMCPServer via embed", "supervised"),
    ]
    print(f"stdio echo server, {int(figures['calls'])} calls per path, rotated batches")
    print(f"  {'':38} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/call':>12} {'p50 x(a)':>9} {'p99 x(a)':>9}")
    for label, key in rows:
        ratios = (
            f"{figures[f'{key}_ratio_p50']:9.3f} {figures[f'{key}_ratio_p99']:9.3f}" if key != "sdk" else f"{'1':>9} {'1':>9}"
        )
        print(
            f"  {label:38} {figures[f'{key}_p50'] * 1e3:8.3f} {figures[f'{key}_p99'] * 1e3:8.3f}"
            f" {figures[f'{key}_cpu_per_call'] * 1e3:12.3f} {ratios}"
        )
    print(f"  ratio b/a p50: {figures['ratio_p50']:.3f} (goal <= 1.0)")


def run(calls: int = 2000, batch_size: int = 50) -> dict[str, float]:
    """Measure on a fresh plain asyncio loop (the host loop ``embed`` needs)."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(measure(calls, batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per path")
    parser.add_argument("--batch", type=int, default=50, help="calls per batch before switching path")
    args = parser.parse_args()
    report(run(args.calls, args.batch))


if __name__ == "__main__":
    main()
