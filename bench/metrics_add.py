"""ns per latency-sketch add and per metrics report, next to a plain ``list.append``.

All are measured in the same run, interleaved over several rounds (best round wins), so
the ratios mean something on a noisy machine:

- baseline: ``list.append(duration)``, the cheapest way to keep a latency at all;
- ``LatencySketch.add(duration)``: the per-call cost of the percentile sketch;
- report, caller side: ``MetricsRef.report(outcome)``, one ``tell_nowait`` (what the call
  path pays);
- report, handled: the same plus the actor handling it (counters, sketch add), measured as
  batches of reports followed by one ``Sync`` ask, divided by the number of reports.

    python bench/metrics_add.py [--n 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import random
import time

import trio

from actors._metrics import spawn_metrics
from actors._sketch import LatencySketch
from protocol import CallOutcome


async def main(n: int, rounds: int) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-4.0, 1.5) for _ in range(n)]
    kinds = ["success"] * 97 + ["tool_error", "DeadlineExceeded", "ServerCrashed"]
    outcomes = [
        CallOutcome(server="bench", tool=f"tool{i % 8}", outcome=kinds[i % len(kinds)], duration=v, at=0.0)
        for i, v in enumerate(values)
    ]
    results: dict[str, list[float]] = {"append": [], "sketch": [], "report": [], "handled": []}
    async with trio.open_nursery() as nursery:
        batch = 4000
        metrics = spawn_metrics(nursery, subscribe=False, size=batch + 16)
        await metrics.sync()
        for _ in range(rounds):
            kept: list[float] = []
            append = kept.append
            t0 = time.perf_counter_ns()
            for v in values:
                append(v)
            results["append"].append((time.perf_counter_ns() - t0) / n)

            sketch = LatencySketch()
            add = sketch.add
            t0 = time.perf_counter_ns()
            for v in values:
                add(v)
            results["sketch"].append((time.perf_counter_ns() - t0) / n)

            report = metrics.report
            caller = 0
            t0 = time.perf_counter_ns()
            for start in range(0, n, batch):
                t1 = time.perf_counter_ns()
                for outcome in outcomes[start : start + batch]:
                    report(outcome)
                caller += time.perf_counter_ns() - t1
                await metrics.sync(timeout=60)
            results["handled"].append((time.perf_counter_ns() - t0) / n)
            results["report"].append(caller / n)
        snapshot = await metrics.snapshot()
        nursery.cancel_scope.cancel()
    assert snapshot.dropped_reports == 0, snapshot.dropped_reports
    assert sum(t.calls for t in snapshot.tools) == n * rounds
    best = {name: min(samples) for name, samples in results.items()}
    base = best["append"]
    print(f"n={n} rounds={rounds} (best round)")
    print(f"baseline list.append:                   {base:8.1f} ns")
    print(f"LatencySketch.add:                      {best['sketch']:8.1f} ns   {best['sketch'] / base:6.1f}x append")
    print(f"MetricsRef.report (tell_nowait):        {best['report']:8.1f} ns   {best['report'] / base:6.1f}x append")
    print(f"report + handled by the actor:          {best['handled']:8.1f} ns   {best['handled'] / base:6.1f}x append")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    trio.run(main, args.n, args.rounds)
