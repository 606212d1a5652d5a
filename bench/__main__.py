"""Run every benchmark and print one results table: ``python -m bench`` from the repo root.

    .venv/bin/python -m bench [--quick | --full] [--write] [--only NAME ...]

``--quick`` (the default) runs each benchmark with small parameters (about 3 minutes on a
2-core machine); ``--full`` with each one's own defaults (the README's figures; 100 stdio
and 1,000 in-process servers, 64 servers under load, 50 kills: allow 15 minutes or more).
Each benchmark's own output is printed as it finishes; then one markdown table (benchmark |
what | result), headed by the machine (cores, CPU model, Python) and the date, and the
command that reruns it. ``--write`` also writes that to ``bench/RESULTS.md``.

Benchmarks with a ``run(...)`` function (scaling, recovery, footprint, codec, embedded, daemon,
large_answer) are
imported and run in this process; the others (overhead, actor_roundtrip, breaker_check,
registry_resolve, metrics_add) run as subprocesses and their printed ratios are read back.
Every result is a ratio against a baseline measured in the same run, or a count. A
benchmark that fails gets a FAILED row and the exit status is 1; the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SUBPROCESS_DEADLINE = 1800.0

Row = tuple[str, str, str]


@dataclass
class Bench:
    """One benchmark: how to run it in each profile and how to turn its figures into rows."""

    name: str
    quick: dict[str, Any]
    full: dict[str, Any] = field(default_factory=dict)
    rows: Callable[[Any, dict[str, Any]], list[Row]] = lambda figures, params: []
    #: For subprocess benches: the command-line flags per profile (``quick``/``full`` hold them).
    subprocess: bool = False


# -- rows of the benchmarks that have run(...) ----------------------------------------------


def scaling_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    from bench.scaling import counts_of

    rows = []
    for n in counts_of(f):
        rows.append(
            (
                "`scaling.py`",
                f"calls/s, {n} stdio echo server{'s' if n > 1 else ''}, {int(f['in_flight'])} in flight:"
                " supervised / direct SDK; this process's CPU time / wall time while supervised (direct)",
                f"ratio {f[f'ratio@{n}']:.2f}; CPU {f[f'supervised_cpu_share@{n}']:.2f} ({f[f'direct_cpu_share@{n}']:.2f})",
            )
        )
    return rows


def recovery_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    return [
        (
            "`recovery.py`",
            f"kill -9 of a stdio server -> replacement ready, vs the server's own start (direct Client to"
            f" initialized); {int(f['kills'])} kills, FAST_BACKOFF (restart after {f['backoff_delay'] * 1e3:.0f} ms)",
            f"ratio p50 {f['ratio_p50']:.2f}, p99 {f['ratio_p99']:.2f}"
            f" (+{f['overhead_p50'] * 1e3:.0f} ms / +{f['overhead_p99'] * 1e3:.0f} ms)",
        )
    ]


def footprint_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    from bench.footprint import stdio_counts_of

    rows = []
    counts = stdio_counts_of(f)
    if counts:
        hi = counts[-1]
        per = f.get("stdio_marginal_mb_per_server", f[f"stdio_mb_per_server@{hi}"])
        added = ", ".join(f"{n}: +{f[f'stdio_added_mb@{n}']:.1f} MB" for n in counts)
        rows.append(
            (
                "`footprint.py`",
                f"supervisor RSS per stdio server ({'/'.join(map(str, counts))} servers), vs the same process"
                f" before the supervisor ({f[f'stdio_baseline_mb@{hi}']:.0f} MB)",
                f"{per:.2f} MB per server ({added})",
            )
        )
    if "inproc_servers" in f:
        n = int(f["inproc_servers"])
        rows.append(
            (
                "`footprint.py`",
                f"supervisor RSS per in-process server ({n} servers), server objects not counted",
                f"{f['inproc_mb_per_server']:.3f} MB per server (+{f['inproc_added_mb']:.0f} MB,"
                f" {f['inproc_added_mb'] / f['inproc_baseline_mb']:.1f}x the baseline)",
            )
        )
    return rows


def codec_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    from bench.codec import MESSAGES

    rows = []
    for i, name in enumerate(MESSAGES):
        rows.append(
            (
                "`codec.py`",
                f"decode+encode, {name} ({int(f[f'bytes@{i}'])} B): msgspec / pydantic envelope"
                " / pydantic typed, each vs stdlib json",
                f"{f[f'msgspec_roundtrip_ratio@{i}']:.2f} / {f[f'pydantic_envelope_roundtrip_ratio@{i}']:.2f}"
                f" / {f[f'pydantic_typed_roundtrip_ratio@{i}']:.2f}",
            )
        )
    return rows


def embedded_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    return [
        (
            "`embedded.py`",
            "`SupervisedMCPServer.call_tool` via `embed` (trio guest run) vs openai-agents'"
            f" `MCPServerStdio.call_tool`, stdio echo server, {int(f['calls'])} calls each",
            f"p50 ratio {f['supervised_ratio_p50']:.2f}, p99 ratio {f['supervised_ratio_p99']:.2f} (goal <= 1.0)",
        ),
        (
            "`embedded.py`",
            "the same `Supervisor.call_tool` on an in-process server from asyncio through the handle vs"
            " from a trio task inside the guest run: the crossing",
            f"p50 ratio {f['bridge_ratio_p50']:.2f}",
        ),
    ]


def daemon_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    return [
        (
            "`daemon.py`",
            "the daemon (HTTP front, stdio back) vs the same echo server over streamable HTTP, no proxy;"
            f" {int(f['calls'])} serial calls each, then {int(f['in_flight'])} in flight",
            f"serial p50 {f['added_p50'] * 1e3:+.2f} ms (ratio {f['ratio_p50']:.2f}; goal <= +1.2 ms),"
            f" throughput ratio {f['throughput_ratio']:.2f}; CPU per call under load, every process on the path:"
            f" {f['direct_cpu'] * 1e6:.0f} / {f['daemon_cpu'] * 1e6:.0f} µs (the daemon {f['daemon_cpu_daemon'] * 1e6:.0f},"
            f" its stdio server {f['daemon_cpu_stdio server'] * 1e6:.0f})",
        )
    ]


def large_answer_rows(f: dict[str, float], params: dict[str, Any]) -> list[Row]:
    from bench.large_answer import sizes_of

    sizes = sizes_of(f)
    return [
        (
            "`large_answer.py`",
            f"one call answering {' / '.join(map(str, sizes))} MiB over stdio: supervised (our stdio wire) vs"
            " direct SDK (its stdio transport); longest event-loop stall meanwhile, supervised vs direct",
            " / ".join(f"{f[f'ratio@{n}']:.2f}" for n in sizes)
            + f"; stall at {sizes[-1]} MiB {f[f'supervised_stall_s@{sizes[-1]}'] * 1e3:.0f} ms vs"
            f" {f[f'direct_stall_s@{sizes[-1]}'] * 1e3:.0f} ms",
        )
    ]


# -- rows of the benchmarks read from their printed output ----------------------------------


def _find(pattern: str, text: str, flags: int = 0) -> list[str] | None:
    m = re.search(pattern, text, flags)
    return list(m.groups()) if m else None


def overhead_rows(out: str, params: Any) -> list[Row]:
    stdio, _, inproc = out.partition("in-process server object")
    rows = []
    ratios = r"ratio b/a:\s+p50 ([\d.]+)\s+p99 ([\d.]+)\s+throughput ([\d.]+)"
    added = r"added per call \(p50\):\s+([+-][\d.]+) µs"
    s = _find(ratios, stdio)
    control = _find(r"A/A control .*: p50 ratio ([\d.]+)", stdio)
    resolution = f"; A/A control, two direct paths: p50 ratio {control[0]}" if control else ""
    rows.append(
        (
            "`overhead.py`",
            "supervised call vs direct mcp SDK call, stdio echo server, full call path",
            f"p50 ratio {s[0]}, p99 ratio {s[1]}, throughput @50 ratio {s[2]} (goal p50 <= 1.03){resolution}"
            if s
            else "unparsed: see output",
        )
    )
    r, a = _find(ratios, inproc), _find(added, inproc)
    rows.append(
        (
            "`overhead.py`",
            "the same, in-process server",
            f"{a[0]} µs per call at p50 (p50 ratio {r[0]}, throughput ratio {r[2]}; goal <= 40 µs)" if r and a else "unparsed: see output",
        )
    )
    layer = _find(r"warm: ([+-][\d.]+) µs\s+cold: ([+-][\d.]+) µs", inproc)
    rows.append(
        (
            "`overhead.py`",
            "the supervisor's layer alone (SDK call stubbed): added per call, warm caches / cold caches",
            f"{layer[0]} µs / {layer[1]} µs" if layer else "unparsed: see output",
        )
    )
    return rows


def actor_rows(out: str, params: Any) -> list[Row]:
    m = _find(r"ratio ask/raw:\s+([\d.]+)", out)
    return [("`actor_roundtrip.py`", "actor `ask` vs a raw trio memory-channel request/reply", f"ratio {m[0]} (goal <= 1.5)" if m else "unparsed: see output")]


def breaker_rows(out: str, params: Any) -> list[Row]:
    m = _find(r"ratio ask / view\.admit\(\):\s+([\d.]+)x", out)
    return [("`breaker_check.py`", "asking the breaker actor vs the published view's permission check", f"{m[0]}x" if m else "unparsed: see output")]


def registry_rows(out: str, params: Any) -> list[Row]:
    m = _find(r"ratio registry/naive:\s+([\d.]+)\s+\((\d+)x faster\)", out)
    return [
        (
            "`registry_resolve.py`",
            "resolve + validate vs `dict.get` + uncached `jsonschema.validate`",
            f"ratio {m[0]} ({m[1]}x faster)" if m else "unparsed: see output",
        )
    ]


def metrics_rows(out: str, params: Any) -> list[Row]:
    sketch = _find(r"LatencySketch\.add:.*?([\d.]+)x append", out)
    report = _find(r"MetricsRef\.report \(tell_nowait\):.*?([\d.]+)x append", out)
    handled = _find(r"report \+ handled by the actor:.*?([\d.]+)x append", out)
    if not (sketch and report and handled):
        return [("`metrics_add.py`", "latency sketch add / outcome report vs `list.append`", "unparsed: see output")]
    return [
        (
            "`metrics_add.py`",
            "sketch add / outcome report (caller side) / report handled by the actor, each vs `list.append`",
            f"{sketch[0]}x / {report[0]}x / {handled[0]}x",
        )
    ]


BENCHES = [
    Bench("codec", quick={"n": 1000, "rounds": 3}, rows=codec_rows),
    Bench("actor_roundtrip", quick={"args": ["--n", "5000", "--rounds", "3"]}, full={"args": []}, rows=actor_rows, subprocess=True),
    Bench("breaker_check", quick={"args": ["--n", "50000", "--rounds", "3"]}, full={"args": []}, rows=breaker_rows, subprocess=True),
    Bench("registry_resolve", quick={"args": ["--n", "5000", "--rounds", "3"]}, full={"args": []}, rows=registry_rows, subprocess=True),
    Bench("metrics_add", quick={"args": ["--n", "50000", "--rounds", "3"]}, full={"args": []}, rows=metrics_rows, subprocess=True),
    Bench("overhead", quick={"args": ["--calls", "300", "--rounds", "2"]}, full={"args": []}, rows=overhead_rows, subprocess=True),
    Bench("embedded", quick={"calls": 500, "batch_size": 50}, rows=embedded_rows),
    Bench("daemon", quick={"calls": 300, "batch_size": 50, "seconds": 2.0}, rows=daemon_rows),
    Bench("scaling", quick={"server_counts": [1, 4, 16], "seconds": 2.0, "slice_seconds": 0.5}, rows=scaling_rows),
    Bench("recovery", quick={"kills": 8}, rows=recovery_rows),
    Bench("footprint", quick={"stdio_counts": [1, 10], "inproc_count": 200}, rows=footprint_rows),
    Bench("large_answer", quick={"sizes": (1, 4, 8), "repeats": 3}, rows=large_answer_rows),
]


def run_one(bench: Bench, profile: str) -> list[Row]:
    """Run ``bench``, print its output, return its table rows (a FAILED row on error)."""
    params = bench.quick if profile == "quick" else bench.full
    print(f"\n=== {bench.name}.py ({profile}) ===", flush=True)
    t0 = time.perf_counter()
    try:
        if bench.subprocess:
            command = [sys.executable, str(HERE / f"{bench.name}.py"), *params["args"]]
            done = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_DEADLINE, check=False)
            print(done.stdout, end="")
            if done.returncode != 0:
                print(done.stderr[-4000:], end="", file=sys.stderr)
                raise RuntimeError(f"exit status {done.returncode}")
            rows = bench.rows(done.stdout, params)
        else:
            module = __import__(f"bench.{bench.name}", fromlist=["run", "report"])
            figures = module.run(**params)
            module.report(figures)
            rows = bench.rows(figures, params)
    except Exception as exc:  # one failing benchmark must not hide the others' results
        traceback.print_exc()
        rows = [(f"`{bench.name}.py`", "(failed)", f"FAILED: {type(exc).__name__}: {exc}".replace("\n", " ")[:200])]
    print(f"--- {bench.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()} ({platform.system()} {platform.release()})"


def table(rows: list[Row], profile: str, elapsed: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"- machine: {machine()}",
        f"- date: {now}; profile: `--{profile}`; whole run: {elapsed:.0f} s",
        f"- rerun: `.venv/bin/python -m bench --{profile} --write` (from the repo root)",
        "",
        "Every result is a ratio against a baseline measured in the same run, or a count. Other",
        "work was running on this machine, so read the ratios, not absolute times.",
        "",
        "| benchmark | what | result |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {b} | {w} | {r} |" for b, w, r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick", help="small parameters (default)")
    profile.add_argument("--full", dest="profile", action="store_const", const="full", help="each benchmark's defaults")
    parser.add_argument("--write", action="store_true", help=f"also write the table to {RESULTS.relative_to(HERE.parent)}")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run only these")
    args = parser.parse_args()
    chosen = args.profile or "quick"
    t0 = time.perf_counter()
    rows: list[Row] = []
    for bench in BENCHES:
        if args.only is None or bench.name in args.only:
            rows += run_one(bench, chosen)
    text = table(rows, chosen, time.perf_counter() - t0)
    print("\n" + text, end="")
    if args.write:
        RESULTS.write_text(text)
        print(f"\nwritten to {RESULTS}")
    return 1 if any(r.startswith("FAILED") for _, _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
