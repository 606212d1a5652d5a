"""The supervisor process's memory (RSS) per supervised server, stdio and in-process.

Each point runs in a fresh Python process (memory a run frees is not always given back to
the OS, so points sharing a process would disturb each other). In that process, inside
``trio.run``, with everything imported:

- baseline: VmRSS (``/proc/self/status``, after ``gc.collect()``) before the supervisor
  starts;
- then ``Supervisor`` with N stdio echo servers (``tests/servers/echo.py``), every one
  connected and called once, and VmRSS again (after ``gc.collect()``). The servers' own
  memory is in their own processes and is not counted.
- in-process: N ``MCPServer`` objects are built first (RSS measured again: their own cost),
  then handed to ``Supervisor(specs, inproc=...)``.

Prints the RSS added per point, MB per server, and, for stdio, the marginal MB per server
between the smallest and largest counts (the supervisor's fixed cost taken out).

    python bench/footprint.py [--stdio 1 10 100] [--inproc 1000]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

ECHO = Path(__file__).resolve().parent.parent / "tests" / "servers" / "echo.py"
#: 100 Python servers starting at once on 2 cores take far longer than the default 30 s.
CONNECT_TIMEOUT = 900.0
POINT_DEADLINE = 1800.0
MB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident set size, after a full garbage collection."""
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def inproc_server(i: int):  # -> MCPServer
    from mcp.server.mcpserver import MCPServer

    app = MCPServer(f"inproc{i}", log_level="WARNING")

    @app.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    return app


async def measure_point(kind: str, n: int) -> dict[str, float]:
    """RSS before and with ``n`` servers of ``kind`` ("stdio" or "inproc"), in this process."""
    import trio

    from protocol import ServerSpec
    from supervisor import Supervisor

    figures: dict[str, float] = {"servers": float(n)}
    figures["baseline_rss"] = float(rss_bytes())
    inproc = None
    if kind == "inproc":
        inproc = {f"p{i}": inproc_server(i) for i in range(n)}
        specs = [ServerSpec(name=f"p{i}", namespace="prefix") for i in range(n)]
        figures["built_rss"] = float(rss_bytes())
    else:
        specs = [
            ServerSpec(
                name=f"p{i}", command=sys.executable, args=[str(ECHO)], namespace="prefix", connect_timeout=CONNECT_TIMEOUT
            )
            for i in range(n)
        ]
    with trio.fail_after(POINT_DEADLINE):
        async with Supervisor(specs, inproc=inproc) as sup:
            limit = trio.CapacityLimiter(16)

            async def call_once(name: str) -> None:
                async with limit:
                    await sup.wait_connected(name, timeout=CONNECT_TIMEOUT)
                    result = await sup.call_tool("echo", {"text": name}, server=name)
                    assert result.content[0].text == name, result

            async with trio.open_nursery() as nursery:
                for spec in specs:
                    nursery.start_soon(call_once, spec.name)
            figures["running_rss"] = float(rss_bytes())
    return figures


def point_main(kind: str, n: int) -> None:
    """Child side: measure one point and print its figures as one JSON line."""
    import trio

    print(json.dumps(trio.run(measure_point, kind, n)), flush=True)


def measure_in_child(kind: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--point", kind, str(n)],
        capture_output=True,
        text=True,
        timeout=POINT_DEADLINE + 60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"footprint point {kind} x{n} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(stdio_counts: list[int] = [1, 10, 100], inproc_count: int = 1000) -> dict[str, float]:  # noqa: B006
    """Measure each point in its own child process; sizes in bytes, per-server figures in MB.

    Keys: ``stdio_added_mb@N`` (RSS with N servers minus the baseline), ``stdio_mb_per_server@N``,
    ``stdio_baseline_mb@N``, ``stdio_marginal_mb_per_server`` (between the smallest and largest
    count, when there are two), and for ``inproc_count`` > 0: ``inproc_added_mb``,
    ``inproc_mb_per_server`` (the supervisor's share: RSS with the supervisor running minus
    RSS with the server objects built), ``inproc_objects_mb_per_server`` (the server objects'
    own), ``inproc_servers``. Every child (and every server it started) is gone when it
    returns; a child that fails raises ``RuntimeError`` with its stderr.
    """
    figures: dict[str, float] = {}
    counts = sorted(stdio_counts)
    for n in counts:
        point = measure_in_child("stdio", n)
        added = point["running_rss"] - point["baseline_rss"]
        figures[f"stdio_baseline_mb@{n}"] = point["baseline_rss"] / MB
        figures[f"stdio_added_mb@{n}"] = added / MB
        figures[f"stdio_mb_per_server@{n}"] = added / MB / n
    if len(counts) >= 2 and counts[-1] > counts[0]:
        lo, hi = counts[0], counts[-1]
        figures["stdio_marginal_mb_per_server"] = (
            figures[f"stdio_added_mb@{hi}"] - figures[f"stdio_added_mb@{lo}"]
        ) / (hi - lo)
    if inproc_count > 0:
        point = measure_in_child("inproc", inproc_count)
        figures["inproc_servers"] = float(inproc_count)
        figures["inproc_baseline_mb"] = point["baseline_rss"] / MB
        figures["inproc_added_mb"] = (point["running_rss"] - point["built_rss"]) / MB
        figures["inproc_mb_per_server"] = figures["inproc_added_mb"] / inproc_count
        figures["inproc_objects_mb_per_server"] = (point["built_rss"] - point["baseline_rss"]) / MB / inproc_count
    return figures


def stdio_counts_of(figures: dict[str, float]) -> list[int]:
    return sorted(int(k.split("@")[1]) for k in figures if k.startswith("stdio_added_mb@"))


def report(figures: dict[str, float]) -> None:
    print("supervisor process RSS (VmRSS after gc), baseline = same process before the supervisor starts")
    print(f"  {'':34} {'baseline MB':>12} {'added MB':>9} {'MB/server':>10}")
    for n in stdio_counts_of(figures):
        print(
            f"  {f'{n} stdio servers':34} {figures[f'stdio_baseline_mb@{n}']:12.1f}"
            f" {figures[f'stdio_added_mb@{n}']:9.1f} {figures[f'stdio_mb_per_server@{n}']:10.3f}"
        )
    if "stdio_marginal_mb_per_server" in figures:
        print(f"  stdio, marginal MB per server (largest - smallest count): {figures['stdio_marginal_mb_per_server']:.3f}")
    if "inproc_servers" in figures:
        n = int(figures["inproc_servers"])
        print(
            f"  {f'{n} in-process servers (supervisor)':34} {figures['inproc_baseline_mb']:12.1f}"
            f" {figures['inproc_added_mb']:9.1f} {figures['inproc_mb_per_server']:10.3f}"
        )
        print(f"  the {n} MCPServer objects themselves: {figures['inproc_objects_mb_per_server']:.3f} MB each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdio", type=int, nargs="*", default=[1, 10, 100], help="stdio server counts")
    parser.add_argument("--inproc", type=int, default=1000, help="in-process server count (0: skip)")
    parser.add_argument("--point", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        point_main(args.point[0], int(args.point[1]))
        return
    report(run(args.stdio, args.inproc))


if __name__ == "__main__":
    main()
