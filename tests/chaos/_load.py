"""The chaos suite's load and ledger: calls at a steady concurrency, each recorded by id.

`Ledger` keeps, for every call id issued, the list of answers it got (exactly one is the
invariant), the calls that took longer than their deadline + 1 s, and the latencies.
`run_load` keeps ``in_flight`` workers calling until a deadline; `summary` is the one line
per fault the suite prints.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
from collections.abc import Callable
from typing import Any

import trio
from mcp import MCPError

from protocol import Failure

GRACE = 1.0  # an answer may come this long after the call's deadline


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class LoopLag:
    """How late this process's trio loop ran: a task that sleeps ``TICK`` s records every
    oversleep. A call can be late by as much as the loop was starved of CPU (on a 2-core
    machine, by the servers a fault restarts at once), which says nothing of the
    supervisor's logic; `during` sums the starvation within a call's window."""

    TICK = 0.05

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []  # (when it woke, how late)

    async def run(self) -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(self.TICK)
            woke = trio.current_time()
            late = woke - before - self.TICK
            if late > 0.02:
                self.stalls.append((woke, late))

    def during(self, start: float, end: float) -> float:
        return sum(late for woke, late in self.stalls if start <= woke <= end + self.TICK)

    def worst(self) -> float:
        return max((late for _, late in self.stalls), default=0.0)


class Ledger:
    """Every call of one fault's run, by id: what answered it and how long it took.

    A call is late when it took longer than its deadline + ``GRACE`` + the time this
    process's loop was starved during it (`LoopLag`); calls excused that way are counted
    in ``starved``.
    """

    def __init__(self, fault: str, lag: LoopLag | None = None) -> None:
        self.fault = fault
        self.lag = lag or LoopLag()
        self.outcomes: dict[int, list[str]] = {}
        self.late: list[tuple[int, str, str, float]] = []  # id, tool, answer, seconds
        self.starved = 0
        self.latencies: list[float] = []
        self._ids = itertools.count()

    async def call(self, sup: Any, tool: str, args: dict[str, Any], timeout: float) -> str:
        call_id = next(self._ids)
        answers = self.outcomes[call_id] = []
        started = trio.current_time()
        try:
            result = await sup.call_tool(tool, args, timeout=timeout)
            answers.append("tool_error" if result.is_error else "result")
        except Failure as failure:
            answers.append(failure.kind)
        except MCPError as exc:
            answers.append(f"mcp:{exc.error.code}")
        ended = trio.current_time()
        took = ended - started
        self.latencies.append(took)
        if took > timeout + GRACE:
            if took <= timeout + GRACE + self.lag.during(started, ended):
                self.starved += 1
            else:
                self.late.append((call_id, tool, answers[-1], round(took, 2)))
        return answers[-1]

    @property
    def lost(self) -> list[int]:
        return [i for i, answers in self.outcomes.items() if not answers]

    @property
    def duplicated(self) -> list[int]:
        return [i for i, answers in self.outcomes.items() if len(answers) > 1]

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for answers in self.outcomes.values():
            for kind in answers:
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def summary(self, **figures: Any) -> str:
        answered = sum(1 for answers in self.outcomes.values() if len(answers) == 1)
        ordered = sorted(self.latencies) or [0.0]
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        extra = " ".join(f"{key}={value}" for key, value in figures.items())
        return (
            f"{self.fault}: calls={len(self.outcomes)} answered={answered} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} late={len(self.late)} late_but_starved={self.starved} "
            f"loop_lag_max={self.lag.worst() * 1e3:.0f}ms p50={p50 * 1e3:.0f}ms "
            f"p99={p99 * 1e3:.0f}ms {extra} outcomes={self.kinds()}"
        )

    def assert_every_call_answered_once(self) -> None:
        assert not self.lost, f"{self.fault}: calls never answered: {self.lost[:10]}"
        assert not self.duplicated, f"{self.fault}: calls answered twice: {self.duplicated[:10]}"
        assert not self.late, f"{self.fault}: answers later than deadline + {GRACE} s (id, tool, answer, seconds): {self.late[:10]}"


Pick = Callable[[random.Random, int], tuple[str, dict[str, Any]]]


async def run_load(
    sup: Any, ledger: Ledger, pick: Pick, *, until: float, in_flight: int, timeout: float, seed: int = 1
) -> None:
    """``in_flight`` workers, each calling ``pick``'s tool in turn, until ``until`` (trio
    time); returns once every call started has been answered."""
    rng = random.Random(seed)
    serial = itertools.count()

    async def worker() -> None:
        while trio.current_time() < until:
            tool, args = pick(rng, next(serial))
            await ledger.call(sup, tool, args, timeout)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
