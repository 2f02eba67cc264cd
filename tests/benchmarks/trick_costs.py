"""What each trick costs per train step on this machine: every trick alone (with the tricks it
requires) against the baseline, in one process and one sitting, as `bench` measures a step
(median of --steps after one warm-up step, the state donated as in a run) and as XLA plans the
step program's peak memory; both as ratios to the baseline's.

Configurations run in this order: the baseline, the FP8 tricks, every other trick by name, then
the baseline again (how far the machine drifted over the table). With --budget-s, no
configuration starts once the next would likely end past the budget (the slowest so far is the
estimate); those left are listed as skipped. The table is rewritten after every configuration
(OUT/trick-costs.md, and .json), so a run cut short keeps what it measured. A configuration that
fails is a row with its error; the rest go on.

    PYTHONPATH=. python tests/benchmarks/trick_costs.py --track fineweb10b \\
        --set train.batch_size=64 --steps 5 --out gpu-check --budget-s 300
    PYTHONPATH=. python tests/benchmarks/trick_costs.py --track wiki-bytes --steps 1 --out /tmp/c

The step figures exclude compilation; each configuration's compile time is shown beside them
(most of the table's wall time).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import jax

import tricks as trick_registry
from speedrun.config import validate
from speedrun.data.shards import atomic_write
from speedrun.training import speed
from speedrun.training.plan import config_for

FIRST = ("fp8-head", "fp8-mlp")  # what the table is for first: the speed tricks of records 19, 89


def configurations(only: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """(label, trick names) in the order measured: baseline, FP8, the rest by name, baseline."""
    registry = trick_registry.available()
    names = only or [*[n for n in FIRST if n in registry],
                     *sorted(n for n in registry if n not in FIRST)]
    out = [("baseline", [])]
    for name in names:
        extra = list(registry[name].requires)
        out.append((name + (f" (+{','.join(extra)})" if extra else ""), [name, *extra]))
    return out + [("baseline, again", [])]


def measure(track: str, names: list[str], overrides: list[str], steps: int) -> dict:
    cfg = config_for(track, ",".join(names), overrides)
    validate(cfg, trick_registry.setting_problems(cfg))
    r = speed.measure_step(cfg, steps=steps, warmup=1)
    return {"step_ms": r["step_s"] * 1e3, "peak_mib": (r["step_peak_bytes"] or 0) / 2**20,
            "compile_s": r["compile_s"], "tokens_per_s": r["tokens_per_s"]}


def ratio(value, base) -> str:
    return f"{value / base:.2f}x" if base else "-"


def table(rows: list[dict], skipped: list[str], header: str) -> str:
    base = next((r for r in rows if r["label"] == "baseline" and "step_ms" in r), {})
    lines = [header, "",
             "| configuration | step | x baseline | step peak memory | x baseline | compile |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['label']} | {r['step_ms']:.1f} ms | "
                     f"{ratio(r['step_ms'], base.get('step_ms'))} | {r['peak_mib']:,.0f} MiB | "
                     f"{ratio(r['peak_mib'], base.get('peak_mib'))} | {r['compile_s']:.1f} s |")
    if skipped:
        lines += ["", f"Skipped (the time budget was spent): {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[dict], skipped: list[str], header: str) -> None:
    atomic_write(out / "trick-costs.md", [table(rows, skipped, header).encode()])
    data = {"header": header, "rows": rows, "skipped": skipped}
    atomic_write(out / "trick-costs.json", [(json.dumps(data, indent=1) + "\n").encode()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--track", default="fineweb10b")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--out", default="trick-costs", help="folder for trick-costs.md and .json")
    p.add_argument("--budget-s", type=float, default=0, help="start nothing past this (0: none)")
    p.add_argument("--only", default="", help="these tricks (comma-separated), not all")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = jax.devices()[0]
    header = (f"{jax.device_count()} x {dev.device_kind}, track {args.track}, "
              f"{' '.join(args.overrides) or 'its batch'}, median of {args.steps} steps, "
              f"jax {jax.__version__}")
    print(header, flush=True)
    todo = configurations([n for n in args.only.split(",") if n] or None)
    rows, skipped, start, slowest = [], [], time.perf_counter(), 0.0
    for i, (label, names) in enumerate(todo):
        elapsed = time.perf_counter() - start
        if args.budget_s and elapsed + slowest > args.budget_s:
            skipped = [lbl for lbl, _ in todo[i:]]
            break
        t0 = time.perf_counter()
        try:
            row = {"label": label, "tricks": names,
                   **measure(args.track, names, args.overrides, args.steps)}
        except Exception as e:  # one broken configuration must not cost the table
            traceback.print_exc()
            row = {"label": label, "tricks": names,
                   "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
        slowest = max(slowest, time.perf_counter() - t0)
        rows.append(row)
        write(out, rows, [], header)
        print(table([rows[0], row] if i else [row], [], "").splitlines()[-1], flush=True)
        jax.clear_caches()
        gc.collect()
    write(out, rows, skipped, header)
    print("\n" + table(rows, skipped, header), flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
