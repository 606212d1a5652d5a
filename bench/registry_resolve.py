"""µs per resolve+validate of a typical tool call, next to the naive way, with the ratio.

The registry path: ``registry.view.resolve(name)`` then ``entry.validate(arguments)`` (a
validator compiled once, when the tool list was published). The baseline, the naive way:
``dict.get(name)`` then ``jsonschema.validate(arguments, schema)``, which picks the draft,
checks the schema against its metaschema and builds a validator on every call.

Both run in the same process, interleaved over several rounds (best round wins), on a tool
with a three-property schema, among 50 published tools. Goal: the registry path far below
the baseline (ratio << 1).

    python bench/registry_resolve.py [--n 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import jsonschema
import trio

from actors._registry import Registry
from protocol import ToolSpec

SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "mode": {"enum": ["fast", "exact"]},
    },
    "required": ["query"],
    "additionalProperties": False,
}
ARGUMENTS = {"query": "text-to-image", "limit": 10, "mode": "fast"}
NAME = "comfy__search_nodes"


def registry_path(registry: Registry, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        registry.view.resolve(NAME).validate(ARGUMENTS)
    return (time.perf_counter() - t0) / n


def naive_path(table: dict[str, ToolSpec], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        spec = table.get(NAME)
        jsonschema.validate(ARGUMENTS, spec.inputSchema)
    return (time.perf_counter() - t0) / n


async def main(n: int, rounds: int) -> None:
    tools = [ToolSpec(name=f"tool_{i}", inputSchema=SCHEMA) for i in range(49)]
    tools.append(ToolSpec(name="search_nodes", inputSchema=SCHEMA))
    table = {f"comfy__{t.name}": t for t in tools}
    registry = Registry()
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await registry.publish_tools("comfy", 1, tools, namespace="prefix")
        naive_n = max(1, n // 20)  # the naive path is slow; fewer iterations, same per-call unit
        ours, naive = [], []
        for _ in range(rounds):
            ours.append(registry_path(registry, n))
            naive.append(naive_path(table, naive_n))
        registry.stop()
    best_ours, best_naive = min(ours), min(naive)
    print(f"dict.get + jsonschema.validate (naive):  {best_naive * 1e6:9.2f} µs")
    print(f"view.resolve + entry.validate (registry): {best_ours * 1e6:8.2f} µs")
    ratio = best_ours / best_naive
    print(f"ratio registry/naive:                    {ratio:9.4f}  ({1 / ratio:.0f}x faster)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.n, args.rounds)
