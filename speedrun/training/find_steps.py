"""`python -m speedrun find-steps`: the fewest steps at which a configuration makes its claim.

This is the tuning speedrunners do by hand. Every probe is a full fixed-length run of its step
count (the schedule's horizon is the run's length, so a 200-step run is not the first 200 steps
of a 300-step run), over the same seeds. A probe *passes* when its seeds make the claim (final
val losses below the target with p < 0.01, at least 3 seeds); with fewer seeds, when every
seed's final loss is below the target (a weaker test: say so, and claim with more seeds).

The search assumes that more steps never hurt (final loss falls with the run's length): it
brackets the answer by doubling or halving from the start, then bisects to a multiple of
``--multiple`` steps, with at most ``--max-probes`` probes. Probes write no records; the end is
the exact `run` command that makes the claim. With ``--record``, the passing probe with the
fewest steps is itself written as a record (it is a complete set of fixed-length runs at that
length), which saves running the claim again.
"""

from __future__ import annotations

import math
from typing import Callable

from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.records import stats
from speedrun.records.record import claim_line, run_dict
from speedrun.training.plan import (check_name, command_line, config_for, label, parse_seeds,
                                   prepare)
from speedrun.training.run import run_seed, save


def search(passes: Callable[[int], bool], start: int, multiple: int, max_probes: int,
           log: Callable[[str], None] = print) -> tuple[int | None, dict[int, bool]]:
    """(fewest passing step count found, {steps: passed}) for a monotone ``passes``.

    Step counts are multiples of ``multiple`` (at least ``multiple``). Returns None when no
    probe passed within ``max_probes``."""
    if multiple < 1 or max_probes < 1 or start < 1:
        raise SpeedrunError("find-steps needs --start, --multiple and --max-probes >= 1")
    snap = lambda s: max(multiple, int(round(s / multiple)) * multiple)  # noqa: E731
    seen: dict[int, bool] = {}

    def probe(s: int) -> bool:
        if s not in seen:
            if len(seen) >= max_probes:
                raise _OutOfProbes
            seen[s] = passes(s)
        return seen[s]

    try:
        s = snap(start)
        if probe(s):  # bracket downwards
            hi, lo = s, 0
            while lo == 0 and hi > multiple:
                s = snap(hi / 2) if snap(hi / 2) < hi else hi - multiple
                if probe(s):
                    hi = s
                else:
                    lo = s
        else:  # bracket upwards
            lo, hi = s, None
            while hi is None:
                s = snap(lo * 2)
                if probe(s):
                    hi = s
                else:
                    lo = s
        while hi - lo > multiple:  # bisect (lo fails or is 0, hi passes)
            s = snap((lo + hi) / 2)
            if s in (lo, hi):
                s = lo + multiple
            if probe(s):
                hi = s
            else:
                lo = s
    except _OutOfProbes:
        log(f"stopped after {max_probes} probes (--max-probes)")
    passing = [s for s, ok in seen.items() if ok]
    return (min(passing) if passing else None), seen


class _OutOfProbes(Exception):
    pass


def probe_passes(results: list, target: float) -> tuple[bool, str]:
    """Whether one probe's seeds pass, and a line saying why."""
    s = stats.summarize([run_dict(r) for r in results], target)
    losses = ", ".join(f"{r.final_val_loss:.4f}" for r in results)
    if len(results) >= stats.CLAIM_SEEDS:
        ok = s["claim"]
        why = f"p = {s['p_value']:.2g}" if s["p_value"] is not None else "p n/a"
    else:
        ok = all(r.final_val_loss <= target for r in results)
        why = "every seed below the target" if ok else "not every seed below the target"
    return ok, (f"final val loss {losses} (mean {s['mean_val_loss']:.4f}), {why}, "
                f"{s['mean_time_s']:.1f}s mean train time")


def run_command(args, steps: int, seeds: int) -> str:
    parts = ["python", "-m", "speedrun", "run", "--track", args.track]
    if args.tricks:
        parts += ["--tricks", args.tricks]
    for o in args.overrides:
        parts += ["--set", o]
    parts += ["--steps", str(steps), "--seeds", str(seeds)]
    return " ".join(parts)


def main(args) -> int:
    devices.maybe_initialize()
    writes = args.record and devices.is_main_process()
    cfg = config_for(args.track, args.tricks, args.overrides)
    seeds = parse_seeds(None, args.seeds)
    check_name(args.name)
    start = cfg.train.steps if args.start is None else args.start
    multiple = max(1, math.ceil(start / 50)) if args.multiple is None else args.multiple
    if min(start, multiple, args.max_probes) < 1:  # before anything is built
        raise SpeedrunError("find-steps needs --start, --multiple and --max-probes >= 1")
    plan = prepare(cfg, args.data_dir, command_line(), args.records_dir if args.record else None,
                   skippable=False)
    target = cfg.train.target
    print(f"find-steps on {cfg.track}: {label(cfg)}, target {target}, seeds {seeds}, "
          f"start {start}, multiple of {multiple}, at most {args.max_probes} probes")
    if len(seeds) < stats.CLAIM_SEEDS:
        print(f"note: with {len(seeds)} seed(s) a probe passes when every seed ends below the "
              f"target; a claim needs {stats.CLAIM_SEEDS}+ seeds and p < {stats.CLAIM_P}, so "
              f"the step count found may need raising")

    def passes(steps: int) -> bool:
        n = len(probes) + 1
        print(f"probe {n}/{args.max_probes}: {steps} steps x {len(seeds)} seed(s)")
        probe_plan = plan.with_steps(steps)
        results = [run_seed(probe_plan, seed, quiet=True, tag=f"[{steps} steps] ")
                   for seed in seeds]
        ok, why = probe_passes(results, target)
        probes[steps] = why
        outcomes[steps] = (probe_plan, results)
        print(f"probe {n}: {steps} steps {'PASS' if ok else 'fail'}: {why}")
        return ok

    probes: dict[int, str] = {}
    outcomes: dict[int, tuple] = {}
    best, seen = search(passes, start, multiple, args.max_probes)
    print("\nprobes:")
    for steps in sorted(seen):
        print(f"  {steps:>7} steps  {'pass' if seen[steps] else 'fail'}  {probes[steps]}")
    if best is None:
        print("no probe passed: try a larger --start or more --max-probes")
        return 1
    print(f"\nfewest steps found: {best}. Make the claim with:\n  "
          f"{run_command(args, best, max(len(seeds), stats.CLAIM_SEEDS))}")
    if writes:
        where, rec = save(*outcomes[best], args.records_dir, args.name)
        print(f"record of the {best}-step probe written: {where}\n{claim_line(rec)}")
    return 0
