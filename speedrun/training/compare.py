"""`python -m speedrun compare`: two configurations timed side by side on one machine.

What the speedrun asks of a record PR: the baseline (or the previous record) re-timed on the
same hardware. Seeds run interleaved, A B A B ..., so a drift in the machine's speed falls on
both sides alike. Prints each side's mean time ± std, steps, final loss and p, the time ratio
B/A with a 95% confidence interval, and writes both records. `submit` (submit.py) runs the
same interleaving against the track's current #1 and links the two records.
"""

from __future__ import annotations

from speedrun.distributed import devices
from speedrun.records import stats
from speedrun.records.record import build_record, claim_line
from speedrun.training.plan import (Plan, check_name, command_line, config_for, label, parse_seeds,
                                   prepare)
from speedrun.training.run import run_seed, save


def interleave(sides: dict[str, Plan], seeds: list[int], quiet: bool) -> dict[str, list]:
    """Every seed of every side, A B A B ...: {side: [RunResult, ...]}."""
    first = next(iter(sides.values()))
    for side, plan in sides.items():
        print(f"{side.upper()}: {label(plan.cfg)}, {plan.cfg.train.steps} steps")
    print(f"seeds {seeds}, interleaved {' '.join(s.upper() for s in sides)} ... on "
          f"{first.env['device_count']} x {first.env['device_kind']}")
    results: dict[str, list] = {side: [] for side in sides}
    for seed in seeds:
        for side, plan in sides.items():
            results[side].append(run_seed(plan, seed, quiet, tag=f"{side.upper()} "))
    print()
    return results


def ratio_line(b: list, a: list, what: str = "B/A") -> str:
    """The time ratio of two sides' seeds, with its 95% confidence interval where it has one."""
    tb, ta = [r.train_time_s for r in b], [r.train_time_s for r in a]
    if len(tb) >= 2 and len(ta) >= 2:
        ratio, lo, hi = stats.time_ratio(tb, ta)
        return f"time ratio {what}: {ratio:.3f}x (95% CI {lo:.3f}-{hi:.3f})"
    return f"time ratio {what}: {sum(tb) / sum(ta) * len(ta) / len(tb):.3f}x (one seed: no interval)"


def main(args) -> int:
    devices.maybe_initialize()
    writes = not args.no_record and devices.is_main_process()
    seeds = parse_seeds(None, args.seeds)
    for side in ("a", "b"):
        check_name(getattr(args, f"name_{side}"), f"--name-{side}")
    sides = {}
    for side in ("a", "b"):
        cfg = config_for(args.track, getattr(args, side), getattr(args, f"set_{side}"),
                         getattr(args, f"steps_{side}"))
        sides[side] = prepare(cfg, args.data_dir, command_line(),
                              None if args.no_record else args.records_dir)
    results = interleave(sides, seeds, args.quiet)
    for side, plan in sides.items():
        name = getattr(args, f"name_{side}")
        if not writes:
            rec = build_record(plan.cfg, results[side], plan.env, plan.data, name)
        else:
            where, rec = save(plan, results[side], args.records_dir, name)
            print(f"{side.upper()} record written: {where}")
        print(f"{side.upper()}: {claim_line(rec)}")
    print(f"{ratio_line(results['b'], results['a'])}, steps {sides['b'].cfg.train.steps} vs "
          f"{sides['a'].cfg.train.steps}")
    return 0
