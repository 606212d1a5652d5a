"""µs per actor ``ask`` round trip next to a raw trio memory-channel round trip.

Both are measured in the same run, interleaved over several rounds (best round wins), so the
ratio is meaningful on a noisy machine. Goal: ratio <= 1.5.

    python bench/actor_roundtrip.py [--n 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import trio

from actors import spawn


async def raw_channel(n: int) -> float:
    req_send, req_recv = trio.open_memory_channel(64)
    rep_send, rep_recv = trio.open_memory_channel(64)

    async def server() -> None:
        async for msg in req_recv:
            await rep_send.send(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        t0 = time.perf_counter()
        for i in range(n):
            await req_send.send(i)
            await rep_recv.receive()
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return elapsed / n


async def actor_ask(n: int) -> float:
    async def echo(mailbox) -> None:
        async for msg, reply in mailbox:
            reply.send(msg)

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, echo, name="echo")
        t0 = time.perf_counter()
        for i in range(n):
            await ref.ask(i, timeout=10)
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return elapsed / n


async def main(n: int, rounds: int) -> None:
    raw, ask = [], []
    for _ in range(rounds):
        raw.append(await raw_channel(n))
        ask.append(await actor_ask(n))
    best_raw, best_ask = min(raw), min(ask)
    print(f"raw memory-channel round trip: {best_raw * 1e6:7.2f} µs")
    print(f"actor ask round trip:          {best_ask * 1e6:7.2f} µs")
    print(f"ratio ask/raw:                 {best_ask / best_raw:7.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    trio.run(main, args.n, args.rounds)
