"""A large tool answer over stdio (an image, a long document): supervised vs direct mcp SDK.

One stdio server (``tests/servers/big.py``), tool ``blob(kib)``, answer sizes in MiB; for
each size, in the same run and alternating, the time of one call through the direct SDK
``Client`` (the SDK's own stdio transport) and through ``Supervisor.call_tool`` (the
supervisor's stdio wire, `actors._stdio`), and the longest the event loop went without
running a 1 ms ticker during the call: how long every other server's calls would have
waited. The SDK's transport re-joins and re-splits what it holds on each 64 KiB read, so
its time grows with the square of the size; the supervisor's is linear.

    python bench/large_answer.py [--sizes 1 4 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio
from mcp import Client, StdioServerParameters

from protocol import ServerSpec
from supervisor import Supervisor

BIG = Path(__file__).resolve().parent.parent / "tests" / "servers" / "big.py"
DEADLINE = 600.0


async def timed(call) -> tuple[float, float]:
    """Seconds the call took, and the longest stall of the event loop meanwhile."""
    stall = 0.0

    async def ticker() -> None:
        nonlocal stall
        while True:
            t = time.perf_counter()
            await trio.sleep(0.001)
            stall = max(stall, time.perf_counter() - t)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        t0 = time.perf_counter()
        await call()
        took = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return took, stall


async def measure(sizes: list[int], repeats: int) -> dict[str, float]:
    params = StdioServerParameters(command=sys.executable, args=[str(BIG)])
    spec = ServerSpec(name="big", command=sys.executable, args=[str(BIG)], timeout=DEADLINE)
    figures: dict[str, float] = {"repeats": float(repeats)}
    with trio.fail_after(DEADLINE * len(sizes) * repeats):
        async with Client(params) as client, Supervisor([spec]) as sup:
            await sup.wait_connected("big", timeout=60)
            for mib in sizes:
                kib = {"kib": mib * 1024}

                async def direct() -> None:
                    await client.call_tool("blob", kib)

                async def supervised() -> None:
                    await sup.call_tool("blob", kib, server="big")

                runs: dict[str, list[tuple[float, float]]] = {"direct": [], "supervised": []}
                for i in range(repeats):
                    for name, call in (("direct", direct), ("supervised", supervised))[:: 1 if i % 2 else -1]:
                        runs[name].append(await timed(call))
                for name, samples in runs.items():
                    figures[f"{name}_s@{mib}"] = statistics.median(took for took, _ in samples)
                    figures[f"{name}_stall_s@{mib}"] = statistics.median(stall for _, stall in samples)
                figures[f"ratio@{mib}"] = figures[f"supervised_s@{mib}"] / figures[f"direct_s@{mib}"]
    return figures


def sizes_of(figures: dict[str, float]) -> list[int]:
    return sorted(int(key.split("@")[1]) for key in figures if key.startswith("ratio@"))


def run(sizes: tuple[int, ...] = (1, 4, 16), repeats: int = 5) -> dict[str, float]:
    """Measure (see the module docstring); every figure is the median over ``repeats``."""
    return trio.run(measure, list(sizes), repeats)


def report(figures: dict[str, float]) -> None:
    print(f"one call answering N MiB over stdio, median of {int(figures['repeats'])} calls each")
    print(f"  {'MiB':>4} {'direct s':>9} {'supervised s':>13} {'ratio':>7} {'stall direct ms':>16} {'stall supervised ms':>20}")
    for mib in sizes_of(figures):
        print(
            f"  {mib:4d} {figures[f'direct_s@{mib}']:9.3f} {figures[f'supervised_s@{mib}']:13.3f}"
            f" {figures[f'ratio@{mib}']:7.3f} {figures[f'direct_stall_s@{mib}'] * 1e3:16.0f}"
            f" {figures[f'supervised_stall_s@{mib}'] * 1e3:20.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report(run(tuple(args.sizes), args.repeats))


if __name__ == "__main__":
    main()
