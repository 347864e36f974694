"""Smoke run of the scale benchmark (benches/scale/, docs/performance.md) at small N.

It runs `cargo bench --bench scale -- --quick`: 200 nodes x 50 images served by the
fake API server, the exporter in watch and in poll mode, and checks that the benchmark
exits 0 and prints its results and targets tables. It does not judge the figures: a
shared 2-core CI machine is no place for that.

By default it uses the dev profile (`cargo bench --profile dev`), which reuses the debug
build `cargo test` already made: about a minute. IMAGECAP_BENCH_PROFILE=bench runs the
release benchmark exactly as documented, which first builds the whole dependency tree
in release (about 4.5 minutes from scratch on 2 cores, 20 s when already built).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600

RESULT_ROWS = [
    "time to ready (s)",
    "decode floor (s)",
    "ready / floor",
    "steady RSS (MiB)",
    "peak RSS (MiB)",
    "/metrics p50 (ms)",
    "/metrics p99 (ms)",
    "/metrics first scrape (ms)",
    "/metrics body (KiB)",
    "wanted images",
    "update visible p50 (ms)",
    "API MB per hour",
]
TARGET_ROWS = [
    "initial sync <= 2x decode floor",
    "peak RSS <= 64 MiB",
    "steady RSS <= 32 MiB",
    "/metrics p50 <= 10 ms",
    "watch update visible < 1 s",
    "churn: update visible p99 < 1 s",
]


def row(lines: list[str], name: str) -> list[str]:
    """The cells after `name` on the first line starting with it."""
    for line in lines:
        if line.startswith(name):
            return line[len(name):].split()
    raise AssertionError(f"no row {name!r} in:\n" + "\n".join(lines))


def test_scale_benchmark_quick_run_prints_its_tables():
    profile = os.environ.get("IMAGECAP_BENCH_PROFILE", "dev")
    cmd = ["cargo", "bench", "--profile", profile, "--bench", "scale", "--", "--quick"]
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    out = proc.stdout
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode} after {elapsed:.0f} s\n"
        f"stdout:\n{out}\nstderr (end):\n{proc.stderr[-5000:]}"
    )
    lines = out.splitlines()
    assert "RESULTS" in lines and any(line.startswith("TARGETS") for line in lines), out

    header = row(lines, "metric")
    assert header == ["200x50", "watch", "200x50", "poll"], header
    for name in RESULT_ROWS:
        cells = row(lines, name)
        assert len(cells) == 2, (name, cells)
    # The config's 20 wanted images (14 exact, 6 found through patterns) are all seen.
    assert row(lines, "wanted images") == ["20", "20"]
    # Watch mode measured the update delay; poll mode has none.
    watch_delay, poll_delay = row(lines, "update visible p50 (ms)")
    assert watch_delay != "-" and float(watch_delay) > 0 and poll_delay == "-"
    for name in TARGET_ROWS:
        hits = [line for line in lines if line.startswith(name)]
        assert hits, f"no target row {name!r}:\n{out}"
        assert all(line.rstrip().endswith(("met", "MISSED")) for line in hits), hits


def test_the_names_knob_sets_how_many_names_nodes_share(tmp_path):
    """`--names shared|pool|distinct`: the same nodes and image counts, from nearly all
    names shared to nearly all of a node's own; the wanted images are in every setting."""
    profile = os.environ.get("IMAGECAP_BENCH_PROFILE", "dev")
    distinct, total, wanted = {}, {}, {}
    for names in ("shared", "pool", "distinct"):
        out = tmp_path / f"{names}.json"
        cfg = tmp_path / f"{names}.yaml"
        cmd = ["cargo", "bench", "--profile", profile, "--bench", "scale", "--",
               "--write-nodelist", str(out), "--write-config", str(cfg),
               "--nodes", "200", "--images", "100", "--names", names]
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, CARGO_TERM_COLOR="never"),
                              capture_output=True, text=True, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"{names} names" in proc.stdout, proc.stdout
        items = json.loads(out.read_text())["items"]
        assert len(items) == 200
        seen = [n for it in items for im in it["status"]["images"] for n in im["names"]]
        distinct[names], total[names] = len(set(seen)), len(seen)
        exact = [line.strip()[3:-1] for line in cfg.read_text().splitlines()
                 if line.strip().startswith("- '") and ":" in line and "^" not in line]
        wanted[names] = {e for e in exact if e in set(seen)}
    assert distinct["shared"] < distinct["pool"] < distinct["distinct"], distinct
    # With distinct names most of what nodes report is their own; shared or pooled,
    # nodes repeat each other's names.
    assert distinct["distinct"] > total["distinct"] / 2, (distinct, total)
    assert distinct["pool"] < total["pool"] / 10, (distinct, total)
    assert wanted["shared"] == wanted["pool"] == wanted["distinct"] and wanted["pool"], wanted


def test_agents_benchmark_quick_run_reads_unchanged_agents_as_304():
    """`cargo bench --bench agents -- --quick`: 200 agents on loopback, each serving
    500 runtime images with the agent's own code, read by the exporter. Every agent
    answers the first round whole and the unchanged round with `304`, on the
    connection of the first round; only the 1% changed agents answer the last round
    whole, and the real agent's memory is printed. Figures are not judged, only the shape of the traffic."""
    profile = os.environ.get("IMAGECAP_BENCH_PROFILE", "dev")
    cmd = ["cargo", "bench", "--profile", profile, "--bench", "agents", "--",
           "--quick", "--unchanged", "1"]
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{out}\n"
        f"stderr (end):\n{proc.stderr[-5000:]}"
    )
    rounds = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0] in ("first", "unchanged", "changed"):
            rounds[cells[0]] = cells
    assert set(rounds) == {"first", "unchanged", "changed"}, out
    statuses = {name: [int(n) for n in cells[2].split("/")] for name, cells in rounds.items()}
    assert statuses["first"] == [200, 0, 0], out
    assert statuses["unchanged"] == [0, 200, 0], out
    # 1% of 200 agents hold more images in the last round: 2 whole answers.
    assert statuses["changed"] == [2, 198, 0], out
    # A connection per agent, opened in the first round and kept for the next ones.
    connections = {name: int(cells[3]) for name, cells in rounds.items()}
    assert connections == {"first": 200, "unchanged": 0, "changed": 0}, out
    per_agent = {name: float(cells[5].split()[0]) for name, cells in rounds.items()}
    assert per_agent["unchanged"] * 20 < per_agent["first"], per_agent
    assert "real agent (" in out and "peak RSS" in out.split("real agent (")[1], out
