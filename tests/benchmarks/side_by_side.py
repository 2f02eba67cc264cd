"""Seeds per hour when screening a configuration: N seeds trained side by side in one program
(speedrun/training/side_by_side.py) against seeds trained one after another, as `run` trains
them, on this machine, in one process and one sitting.

A screening's wall clock is what a person waits for: building the program (compilation, warm-up)
and validations included, so seeds per hour = seeds / wall clock. Each measurement starts with an
empty compilation cache of its own, as the screening of a new configuration does (its second
seed one after another then loads the first's compiled step, as `run` does). One after another is measured
on --one-after-another seeds (default 2) first and again last (how far the machine drifted);
side by side for every count of --counts. The speed probe (float32 matmul GFLOP/s) is taken
before each measurement and printed beside it. The table says, for each count, seeds per hour,
its gain over one after another (the mean of the two measurements), and then the count with
the most seeds per hour and the largest that still gains.

    PYTHONPATH=. python tests/benchmarks/side_by_side.py                  # the docs' figures
    PYTHONPATH=. python tests/benchmarks/side_by_side.py --counts 1,2,4,8,16,32 --out DIR
    PYTHONPATH=. python tests/benchmarks/side_by_side.py --steps 2 --counts 1,2 \\
        --set model.n_layer=1 --set train.val_tokens=4096 --one-after-another 1   # smoke test

Defaults: the `wiki-bytes` track's best stack on record (muon,rotary,wsd-schedule) at its 130
steps. Nothing is written but --out's table (side-by-side.md and .json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from speedrun.data.shards import atomic_write
from speedrun.training import compile_cache, environment, side_by_side
from speedrun.training.plan import command_line, config_for, prepare
from speedrun.training.seed import run_seed


def timed(fn) -> tuple[float, list]:
    t = time.perf_counter()
    results = fn()
    return time.perf_counter() - t, results


def measure(plan, mode: str, n: int) -> dict:
    """One screening of ``n`` seeds (0..n-1): wall clock, train time, seeds per hour."""
    compile_cache.enable(Path(tempfile.mkdtemp(prefix="side-by-side-bench-")))  # cold, as new
    gflops = environment.machine_gflops()
    seeds = list(range(n))
    if mode == "one after another":
        wall, results = timed(lambda: [run_seed(plan, s, quiet=True) for s in seeds])
        train_s = sum(r.train_time_s for r in results)
    else:
        wall, results = timed(lambda: side_by_side.seeds_of(plan, seeds, quiet=True))
        train_s = results[0].train_time_s  # the program's: every seed's at once
    return {"mode": mode, "seeds": n, "wall_s": wall, "train_s": train_s,
            "compile_s": statistics.fmean(r.compile_time_s for r in results),
            "seeds_per_hour": n / wall * 3600, "probe_gflops": gflops,
            "final_val_loss": [r.final_val_loss for r in results]}


def table(rows: list[dict]) -> str:
    base = statistics.fmean(r["seeds_per_hour"] for r in rows if r["mode"] == "one after another")
    lines = ["| how | seeds | wall clock (s) | train time (s) | seeds per hour | gain | probe "
             "(GFLOP/s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['seeds']} | {r['wall_s']:.1f} | {r['train_s']:.1f} | "
                     f"{r['seeds_per_hour']:.0f} | {r['seeds_per_hour'] / base:.2f}x | "
                     f"{r['probe_gflops']:.0f} |")
    side = [r for r in rows if r["mode"] == "side by side"]
    best = max(side, key=lambda r: r["seeds_per_hour"])
    gaining = [r["seeds"] for r in side if r["seeds_per_hour"] > base]
    lines += ["", f"most seeds per hour: {best['seeds']} side by side "
              f"({best['seeds_per_hour'] / base:.2f}x one after another); largest count that "
              f"still gains: {max(gaining) if gaining else 'none'}"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--track", default="wiki-bytes")
    p.add_argument("--tricks", default="muon,rotary,wsd-schedule")
    p.add_argument("--steps", type=int, default=130)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--counts", default="1,2,4,8", help="seeds side by side, comma-separated")
    p.add_argument("--one-after-another", type=int, default=2, metavar="K",
                   help="seeds timed one after another, first and again last (default 2)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="folder for side-by-side.md and .json")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    cfg = config_for(args.track, args.tricks, args.overrides, args.steps)
    side_by_side.check_can(cfg)
    plan = prepare(cfg, args.data_dir, command_line())
    print(f"{args.track}: {args.tricks or 'baseline'}, {cfg.train.steps} steps; "
          f"{plan.env['device_count']} x {plan.env['device_kind']}", flush=True)
    rows = []
    for mode, n in [("one after another", args.one_after_another),
                    *(("side by side", c) for c in counts),
                    ("one after another", args.one_after_another)]:
        rows.append(measure(plan, mode, n))
        r = rows[-1]
        print(f"{mode}, {n} seed(s): {r['wall_s']:.1f}s wall, {r['seeds_per_hour']:.0f} seeds "
              f"per hour (probe {r['probe_gflops']:.0f} GFLOP/s)", flush=True)
    text = table(rows)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "side-by-side.md", [(text + "\n").encode()])
        atomic_write(out / "side-by-side.json", [(json.dumps(rows, indent=1) + "\n").encode()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
