"""How well a machine-speed probe, and a same-sitting ratio, predict a run's time on a slower
machine: the measurements behind the leaderboard's speed tolerance (docs/records.md).

The same pair of configurations (A: the reference's, B: a candidate) runs interleaved, A B A B,
with `compare` under deliberate slowdowns of this machine: none, a competing busy process, one
core only (taskset), and both. Each condition stands for a contributor's slower machine; the
unslowed one is the track's reference machine. For each it prints the machine probe, each side's
mean train time and the ratio B/A, and how far two estimates of B's time *on the reference
machine* miss the time B really took there: the probe alone (B's time x this probe / the
reference probe) and the same-sitting ratio (B/A here x A's time on the reference machine), the
leaderboard's scaled time. Run it alone on the machine:

    python tests/benchmarks/machine_speed.py [--seeds 2] [--steps-a 130 --steps-b 120]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from contextlib import contextmanager

LINE = re.compile(r"^([AB]) seed (\d+): \d+ steps in ([0-9.]+)s train time.*machine ([0-9.]+) GFLOP/s")


@contextmanager
def busy_process(on: bool):
    """A competing process spinning on the CPU (what another user's job does to a shared VM)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def run_pair(args, one_core: bool, load: bool) -> dict:
    cmd = [sys.executable, "-m", "speedrun", "compare", "--a", args.a, "--steps-a", str(args.steps_a),
           "--b", args.b, "--steps-b", str(args.steps_b), "--seeds", str(args.seeds), "--quiet",
           "--no-record"]
    if one_core:
        cmd = ["taskset", "-c", "0", *cmd]
    with busy_process(load):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "SPEEDRUN_NO_COMPILATION_CACHE": "1"}).stdout
    times, probes = {"A": [], "B": []}, []
    for line in out.splitlines():
        if m := LINE.match(line):
            times[m.group(1)].append(float(m.group(3)))
            probes.append(float(m.group(4)))
    return {"A": statistics.fmean(times["A"]), "B": statistics.fmean(times["B"]),
            "probe": statistics.fmean(probes), "probes": probes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", default="muon,rotary,wsd-schedule")
    p.add_argument("--steps-a", type=int, default=130)
    p.add_argument("--b", default="muon,rotary,wsd-schedule,normuon")
    p.add_argument("--steps-b", type=int, default=120)
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()
    conditions = [("unslowed", False, False), ("competing busy process", False, True)]
    if shutil.which("taskset"):
        conditions += [("one core (taskset)", True, False), ("one core + busy process", True, True)]
    rows = []
    for name, one_core, load in conditions:
        r = run_pair(args, one_core, load)
        rows.append((name, r))
        print(f"{name}: probe {r['probe']:.0f} GFLOP/s ({', '.join(f'{x:.0f}' for x in r['probes'])}), "
              f"A {r['A']:.1f} s, B {r['B']:.1f} s, B/A {r['B'] / r['A']:.3f}", flush=True)
    base = rows[0][1]
    print(f"\nA = {args.a} at {args.steps_a} steps, B = {args.b} at {args.steps_b} steps, "
          f"{args.seeds} seeds each, interleaved")
    print(f"{'condition':<26}{'probe':>7}{'A s':>8}{'B s':>8}{'B/A':>7}{'slower':>8}"
          f"{'B by probe':>12}{'miss':>7}{'B by ratio':>12}{'miss':>7}")
    for name, r in rows:
        by_probe = r["B"] * r["probe"] / base["probe"]
        by_ratio = r["B"] / r["A"] * base["A"]
        print(f"{name:<26}{r['probe']:>7.0f}{r['A']:>8.1f}{r['B']:>8.1f}{r['B'] / r['A']:>7.3f}"
              f"{r['A'] / base['A']:>7.2f}x{by_probe:>11.1f}s{by_probe / base['B'] - 1:>+7.1%}"
              f"{by_ratio:>11.1f}s{by_ratio / base['B'] - 1:>+7.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
