"""Supervised call vs direct mcp SDK call, on one stdio echo server and in-process.

Both paths run in the same process and the same run, interleaved round by round, against
the same kind of server, so the ratios hold on a noisy machine. Prints p50/p99 per call at
1 in flight, calls/s at 50 in flight, and the ratio supervised/direct. Goals: p50 ratio
<= 1.03 on stdio; <= 40 µs added per call in-process.

On stdio a third path runs in the same rotation: a second direct SDK client on a server
process of its own (an A/A control). Its ratio to the first is what the machine alone does
to two identical paths, so it says how far the b/a ratio can be trusted in that run. On
this 2-core VM (2026-12-04) fifteen A/A ratios from five runs spread from 0.91 to 1.09:
which core each server process lands on moves a whole run's p50 by several percent.

Then the supervisor's own layer alone: the same ``Supervisor.call_tool`` with the SDK call
replaced by a stub that answers at once (one checkpoint), against that stub called
directly, paired call by call. "Warm" runs the calls back to back; "cold" runs an unrelated
workload (JSON and pydantic, as the SDK and the scheduler would) before each call, so the
layer runs from cold caches, as it does between two real calls. On this 2-core VM the cold
figure is about three times the warm one (2026-12-03: +50 µs warm, +149 µs cold), and the
cold one is what the paired differences of the real calls above show.

    python bench/overhead.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import trio
from mcp import Client, StdioServerParameters
from mcp import types as mcp_types
from mcp.server.mcpserver import MCPServer

from protocol import ServerSpec
from supervisor import Supervisor

ECHO = Path(__file__).resolve().parent.parent / "tests" / "servers" / "echo.py"
ARGS = {"text": "hello"}



async def serial(call, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return times


async def paired(calls, n: int) -> list[list[float]]:
    """Rotate the paths call by call, so all see the same machine noise; one list of
    latencies per path."""
    out: list[list[float]] = [[] for _ in calls]
    for i in range(n):
        shift = i % len(calls)
        for k in list(range(shift, len(calls))) + list(range(shift)):
            t0 = time.perf_counter()
            await calls[k]()
            out[k].append(time.perf_counter() - t0)
    return out


async def concurrent(call, n: int, in_flight: int) -> float:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    return n / (time.perf_counter() - t0)


def inproc_server() -> MCPServer:
    app = MCPServer("bench", log_level="WARNING")

    @app.tool()
    def echo(text: str) -> str:
        return text

    return app


async def measure(label: str, direct_call, supervised_call, calls: int, rounds: int, control_call=None) -> None:
    """``control_call``, when given, is a second direct path on a server of its own (an A/A
    control): its ratio to ``direct_call`` is what this machine's noise alone does to two
    identical paths, the resolution of the b/a ratio in this run."""
    paths = [direct_call, supervised_call] + ([control_call] if control_call else [])
    for call in paths:  # warm up every path
        await serial(call, 50)
    direct, supervised, control, direct_tp, supervised_tp = [], [], [], [], []
    for _ in range(rounds):
        times = await paired(paths, calls)
        direct += times[0]
        supervised += times[1]
        if control_call:
            control += times[2]
        direct_tp.append(await concurrent(direct_call, calls, 50))
        supervised_tp.append(await concurrent(supervised_call, calls, 50))
    d50, s50 = statistics.median(direct), statistics.median(supervised)
    d99, s99 = statistics.quantiles(direct, n=100)[-1], statistics.quantiles(supervised, n=100)[-1]
    dtp, stp = max(direct_tp), max(supervised_tp)
    print(f"\n{label}")
    print(f"  {'':12} {'p50 ms':>9} {'p99 ms':>9} {'calls/s @50':>12}")
    print(f"  {'direct SDK':12} {d50 * 1e3:9.3f} {d99 * 1e3:9.3f} {dtp:12.0f}")
    print(f"  {'supervised':12} {s50 * 1e3:9.3f} {s99 * 1e3:9.3f} {stp:12.0f}")
    print(f"  ratio b/a:   p50 {s50 / d50:.3f}   p99 {s99 / d99:.3f}   throughput {stp / dtp:.3f}")
    if control:
        print(f"  A/A control (a second direct SDK client on its own server): p50 ratio {statistics.median(control) / d50:.3f}")
    print(f"  added per call (p50): {(s50 - d50) * 1e6:+.1f} µs")
    # Each supervised call ran right next to a direct one: the median of those differences
    # is not moved by the machine speeding up or slowing down between rounds.
    paired_diff = statistics.median(s - d for s, d in zip(supervised, direct))
    print(f"  added per call (median of paired differences): {paired_diff * 1e6:+.1f} µs")


_STUB_RESULT = mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text="hello")])
_UNRELATED = [{"n": i, "s": str(i) * 10, "l": [i] * 10} for i in range(300)]


async def _stub_call_tool(*args: object, **kwargs: object) -> mcp_types.CallToolResult:
    await trio.lowlevel.checkpoint()
    return _STUB_RESULT


def _unrelated_work() -> None:
    """What runs between two calls in real life, roughly: it evicts the layer from the caches."""
    json.loads(json.dumps(_UNRELATED))
    mcp_types.CallToolResult.model_validate({"content": [{"type": "text", "text": "x" * 100}] * 20})


async def measure_layer(sup: Supervisor, calls: int) -> None:
    """The supervisor's own cost per call, with the SDK call stubbed out (module docstring)."""
    client = sup.link("echo").conn.client
    real = client.call_tool
    client.call_tool = _stub_call_tool  # this connection only, for this measurement only
    try:

        async def stub() -> None:
            await _stub_call_tool("echo", ARGS)

        async def supervised() -> None:
            await sup.call_tool("echo", ARGS)

        print("\nthe supervisor's layer alone (SDK call stubbed), added per call, median of paired differences")
        for label, between in (("warm", None), ("cold", _unrelated_work)):
            added = []
            for i in range(calls):
                times = {}
                for call in (stub, supervised) if i % 2 else (supervised, stub):
                    if between is not None:
                        between()
                    t0 = time.perf_counter()
                    await call()
                    times[call] = time.perf_counter() - t0
                added.append(times[supervised] - times[stub])
            print(f"  {label}: {statistics.median(added) * 1e6:+.1f} µs")
    finally:
        client.call_tool = real


async def main(calls: int, rounds: int) -> None:
    params = StdioServerParameters(command=sys.executable, args=[str(ECHO)])
    spec = ServerSpec(name="echo", command=sys.executable, args=[str(ECHO)], max_concurrency=64)
    async with Client(params) as client, Client(params) as twin, Supervisor([spec]) as sup:

        async def direct() -> None:
            await client.call_tool("echo", ARGS)

        async def supervised() -> None:
            await sup.call_tool("echo", ARGS)

        async def control() -> None:
            await twin.call_tool("echo", ARGS)

        await measure("stdio echo server (a real subprocess each)", direct, supervised, calls, rounds, control)

    app = inproc_server()
    async with Client(inproc_server()) as client, Supervisor(
        [ServerSpec(name="echo", max_concurrency=64)], inproc={"echo": app}
    ) as sup:

        async def direct_inproc() -> None:
            await client.call_tool("echo", ARGS)

        async def supervised_inproc() -> None:
            await sup.call_tool("echo", ARGS)

        await measure("in-process server object", direct_inproc, supervised_inproc, calls, rounds)
        await measure_layer(sup, calls * rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.calls, args.rounds)
