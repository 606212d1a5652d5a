"""ns per breaker permission check: the closed fast path (a view read) next to an actor ask.

Both are measured in the same run, interleaved over several rounds (best round wins), so the
ratio is meaningful on a noisy machine. The fast path is what the router does per call while
the breaker is closed: ``view.admit()``, no actor hop. The ask is what it would cost to ask
the breaker actor for a ``Permit`` per call instead.

    python bench/breaker_check.py [--n 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import trio

from actors._breaker import Permit, admit_call, spawn_breaker
from protocol import BreakerPolicy


async def main(n: int, rounds: int) -> None:
    async with trio.open_nursery() as nursery:
        ref, view = spawn_breaker(nursery, BreakerPolicy(), "bench")
        await ref.ask(Permit(), 10)  # the actor is up
        view_ns, helper_ns, ask_ns = [], [], []
        n_ask = max(1, n // 20)
        for _ in range(rounds):
            admit = view.admit
            t0 = time.perf_counter_ns()
            for _ in range(n):
                admit()
            view_ns.append((time.perf_counter_ns() - t0) / n)

            t0 = time.perf_counter_ns()
            for _ in range(n):
                await admit_call(view, ref)
            helper_ns.append((time.perf_counter_ns() - t0) / n)

            permit = Permit()
            t0 = time.perf_counter_ns()
            for _ in range(n_ask):
                await ref.ask(permit, 10)
            ask_ns.append((time.perf_counter_ns() - t0) / n_ask)
        nursery.cancel_scope.cancel()
    best_view, best_helper, best_ask = min(view_ns), min(helper_ns), min(ask_ns)
    print(f"closed fast path, view.admit():        {best_view:9.1f} ns")
    print(f"closed fast path, await admit_call():  {best_helper:9.1f} ns")
    print(f"ask the breaker actor for a Permit:    {best_ask:9.1f} ns")
    print(f"ratio ask / view.admit():              {best_ask / best_view:9.1f}x")
    print(f"ratio ask / admit_call():              {best_ask / best_helper:9.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    trio.run(main, args.n, args.rounds)
