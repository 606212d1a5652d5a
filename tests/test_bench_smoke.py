"""The benchmarks work: each new bench's ``run(...)`` with tiny parameters gives every figure,
positive and finite, leaves no server process behind, and the runner turns the figures into
table rows. No wall-time assertion: only that each bench measures something.

These are plain (sync) tests: each bench owns its event loop (``trio.run`` or asyncio).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``bench`` is a folder of the repo, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import codec, daemon, embedded, footprint, large_answer, recovery, scaling  # noqa: E402
from bench.__main__ import (  # noqa: E402
    actor_rows,
    codec_rows,
    daemon_rows,
    embedded_rows,
    footprint_rows,
    large_answer_rows,
    overhead_rows,
    recovery_rows,
    scaling_rows,
    table,
)


def live_children() -> set[int]:
    """This process's child processes that are alive (not zombies)."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            continue
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


def assert_figures(figures: dict[str, float], required: list[str]) -> None:
    missing = [key for key in required if key not in figures]
    assert not missing, f"missing figures: {missing}"
    for key, value in figures.items():
        assert isinstance(value, float), (key, value)
        assert math.isfinite(value), (key, value)
    for key in required:
        assert figures[key] > 0, (key, figures[key])


@pytest.fixture
def no_orphans():
    """No child of ours the bench started is still alive after it (they may take a moment
    to exit on a loaded machine: waited for up to 10 s, and named if they do not)."""
    before = live_children()
    yield
    deadline = time.monotonic() + 10
    while (left := live_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"the bench left processes behind: {sorted(left)}"


def test_codec_bench_gives_every_ratio():
    figures = codec.run(n=40, rounds=1)
    required = []
    for i in range(len(codec.MESSAGES)):
        required.append(f"bytes@{i}")
        for path in codec.PATHS:
            for op in ("decode", "encode", "roundtrip"):
                required += [f"{path}_{op}@{i}", f"{path}_{op}_ratio@{i}"]
        assert figures[f"json_roundtrip_ratio@{i}"] == 1.0
    assert_figures(figures, required)
    rows = codec_rows(figures, {})
    assert len(rows) == len(codec.MESSAGES) and all("FAILED" not in r[2] for r in rows)


def test_codec_check_refuses_a_path_that_reads_a_message_differently():
    wire = b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1}}'
    lossy = (lambda data: {"jsonrpc": "2.0", "id": 1, "method": "m"}, codec.json_codec()[1])
    with pytest.raises(AssertionError):
        codec.check("request", "json", lossy, wire, {"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"a": 1}})


def test_scaling_bench_measures_both_paths(no_orphans):
    figures = scaling.run([1], seconds=0.3, slice_seconds=0.3, in_flight=4)
    keys = ["direct_calls_per_s", "supervised_calls_per_s", "ratio", "direct_cpu_share", "supervised_cpu_share"]
    keys += ["direct_calls", "supervised_calls", "servers"]
    assert_figures(figures, [f"{k}@1" for k in keys] + ["in_flight"])
    assert scaling.counts_of(figures) == [1]
    assert len(scaling_rows(figures, {})) == 1


def test_daemon_bench_measures_both_paths(no_orphans):
    figures = daemon.run(calls=4, batch_size=2, seconds=0.3, slice_seconds=0.3, in_flight=4)
    required = ["calls", "in_flight", "ratio_p50", "ratio_p99", "throughput_ratio"]
    required += [f"{path}_{figure}" for path in ("direct", "daemon") for figure in ("p50", "p99", "rate", "cpu", "cpu_client")]
    required += ["direct_cpu_server", "daemon_cpu_daemon", "daemon_cpu_stdio server"]
    assert_figures(figures, required)
    assert "added_p50" in figures  # a difference: may be negative on a noisy machine
    assert "FAILED" not in daemon_rows(figures, {})[0][2]


def test_embedded_bench_measures_both_paths_and_the_crossing(no_orphans):
    figures = embedded.run(calls=4, batch_size=2)
    required = ["calls", "supervised_ratio_p50", "supervised_ratio_p99", "bridge_p50", "inside_p50", "bridge_ratio_p50"]
    figures_per_path = ("p50", "p99", "cpu_per_call", "before_sdk", "in_sdk", "after_sdk")
    required += [f"{path}_{figure}" for path in ("sdk", "supervised") for figure in figures_per_path]
    assert_figures(figures, required)
    assert len(embedded_rows(figures, {})) == 2


def test_recovery_bench_measures_a_kill_and_a_start(no_orphans):
    figures = recovery.run(kills=1)
    required = ["kills", "servers", "backoff_delay"]
    for q in ("p50", "p99"):
        required += [f"recovery_{q}", f"start_{q}", f"start_learned_{q}", f"ratio_{q}"]
    assert_figures(figures, required)
    # Differences may be negative on a noisy machine; they must still be there and finite.
    for key in ("overhead_p50", "overhead_p99", "overhead_vs_learned_p50", "own_p50"):
        assert key in figures
    assert figures["kills"] == 1.0 and figures["backoff_delay"] == recovery.BACKOFF.min
    assert "FAILED" not in recovery_rows(figures, {})[0][2]


def test_footprint_bench_measures_stdio_and_inproc(no_orphans):
    figures = footprint.run(stdio_counts=[1], inproc_count=5)
    required = ["stdio_baseline_mb@1", "inproc_baseline_mb", "inproc_servers"]
    assert_figures(figures, required)
    # RSS can shrink by a page or two between readings: present and finite is the check.
    for key in ("stdio_added_mb@1", "stdio_mb_per_server@1", "inproc_added_mb", "inproc_mb_per_server"):
        assert key in figures
    assert len(footprint_rows(figures, {})) == 2


def test_large_answer_bench_measures_both_paths(no_orphans):
    figures = large_answer.run(sizes=(1,), repeats=1)
    required = ["repeats", "ratio@1"]
    required += [f"{path}_{figure}@1" for path in ("direct", "supervised") for figure in ("s", "stall_s")]
    assert_figures(figures, required)
    assert large_answer.sizes_of(figures) == [1]
    assert "FAILED" not in large_answer_rows(figures, {})[0][2]


def test_overhead_bench_prints_every_figure_the_runner_reads():
    """overhead.py runs as a script (``python -m bench`` runs it as a subprocess too)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--calls", "20", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = overhead_rows(done.stdout, None)
    assert len(rows) == 3 and not any("unparsed" in row[2] for row in rows), done.stdout
    assert "A/A control, two direct paths: p50 ratio" in rows[0][2], done.stdout


def test_runner_reads_the_printed_ratios_and_builds_the_table():
    overhead_out = (
        "\nstdio echo server (a real subprocess each)\n"
        "  ratio b/a:   p50 1.060   p99 1.100   throughput 0.950\n"
        "  added per call (p50): +100.0 µs\n"
        "\nin-process server object\n"
        "  ratio b/a:   p50 1.500   p99 1.400   throughput 0.700\n"
        "  added per call (p50): +81.0 µs\n"
        "\nthe supervisor's layer alone (SDK call stubbed), added per call, median of paired differences\n"
        "  warm: +41.0 µs\n"
        "  cold: +150.5 µs\n"
    )
    rows = overhead_rows(overhead_out, None)
    assert "p50 ratio 1.060" in rows[0][2] and "+81.0 µs" in rows[1][2]
    assert rows[2][2] == "+41.0 µs / +150.5 µs"
    assert "unparsed" in actor_rows("nothing useful", None)[0][2]
    text = table(rows, "quick", 1.0)
    assert "| benchmark | what | result |" in text and "cores" in text and "-m bench --quick" in text
