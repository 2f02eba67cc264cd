"""`python -m speedrun compare`: two configurations timed side by side on one machine.

What the speedrun asks of a record PR: the baseline (or the previous record) re-timed on the
same hardware. Seeds run interleaved, A B A B ..., so a drift in the machine's speed falls on
both sides alike. Prints each side's mean time ± std, steps, final loss and p, the time ratio
B/A with a 95% confidence interval, and writes both records.
"""

from __future__ import annotations

from speedrun.records import stats
from speedrun.records.record import build_record, claim_line
from speedrun.training.plan import command_line, config_for, label, parse_seeds, prepare
from speedrun.training.run import run_seed, save


def main(args) -> int:
    seeds = parse_seeds(None, args.seeds)
    sides = {}
    for side in ("a", "b"):
        cfg = config_for(args.track, getattr(args, side), getattr(args, f"set_{side}"),
                           getattr(args, f"steps_{side}"))
        sides[side] = prepare(cfg, args.data_dir, command_line(),
                                None if args.no_record else args.records_dir)
    for side, plan in sides.items():
        print(f"{side.upper()}: {label(plan.cfg)}, {plan.cfg.train.steps} steps")
    print(f"seeds {seeds}, interleaved A B A B ... on {sides['a'].env['device_count']} x "
          f"{sides['a'].env['device_kind']}")
    results = {"a": [], "b": []}
    for seed in seeds:
        for side in ("a", "b"):
            results[side].append(run_seed(sides[side], seed, args.quiet, tag=f"{side.upper()} "))
    print()
    recs = {}
    for side in ("a", "b"):
        plan = sides[side]
        name = getattr(args, f"name_{side}")
        if args.no_record:
            recs[side] = build_record(plan.cfg, results[side], plan.env, plan.data, name)
        else:
            where, recs[side] = save(plan, results[side], args.records_dir, name)
            print(f"{side.upper()} record written: {where}")
        print(f"{side.upper()}: {claim_line(recs[side])}")
    times = {side: [r.train_time_s for r in results[side]] for side in results}
    if len(seeds) >= 2:
        ratio, lo, hi = stats.time_ratio(times["b"], times["a"])
        print(f"time ratio B/A: {ratio:.3f}x (95% CI {lo:.3f}-{hi:.3f}), "
              f"steps {sides['b'].cfg.train.steps} vs {sides['a'].cfg.train.steps}")
    else:
        print(f"time ratio B/A: {times['b'][0] / times['a'][0]:.3f}x (one seed: no interval)")
    return 0
