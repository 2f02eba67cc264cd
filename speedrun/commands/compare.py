"""`python -m speedrun compare`: two configurations timed side by side on one machine.

What the speedrun asks of a record PR: the baseline (or the previous record) re-timed on the
same hardware. Seeds run interleaved, A B A B ... (speedrun/training/interleave.py), so a drift
in the machine's speed falls on both sides alike. Prints each side's mean time ± std, steps,
final loss and p, the time ratio B/A with a 95% confidence interval, and writes both records.
`submit` runs the same interleaving against the track's current #1 and links the two records.

Its times are its purpose, so seeds run one at a time by default. ``--side-by-side`` keeps only
its loss side: each configuration's seeds train as one program (A's, then B's), and it prints
each side's final losses and p, and B - A paired by seed, but no time ratio (the records say
they are untimed).
"""

from __future__ import annotations

import argparse

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    cmp_ = sub.add_parser(
        "compare", help="time two configurations side by side (A B A B ...) and write both records",
        description="Run configurations A and B interleaved on this machine, seed by seed, and "
        "report each mean time ± std, the time ratio B/A with a 95%% confidence interval and "
        "each claim's p. Writes both records. Example: compare --b muon --steps-b 150.")
    flags.track(cmp_)
    for side in ("a", "b"):
        cmp_.add_argument(f"--{side}", default="", metavar="A,B,...",
                          help=f"tricks of configuration {side.upper()} (default: the baseline)")
        cmp_.add_argument(f"--set-{side}", action="append", default=[], metavar="KEY=VALUE",
                          help=f"a setting of configuration {side.upper()} (repeatable)")
        cmp_.add_argument(f"--steps-{side}", type=int, default=None, metavar="N",
                          help=f"steps of configuration {side.upper()} (default: the track's)")
        cmp_.add_argument(f"--name-{side}", default=None,
                          help=f"record name of configuration {side.upper()}")
    flags.seeds(cmp_, "3", "seeds, run by both (default 3)")
    flags.side_by_side(cmp_, "off: compare times the two", " (only the losses are compared: "
                       "no time ratio)")
    flags.output(cmp_, "the two records are written")
    return cmp_


def main(args) -> int:
    from speedrun.distributed import devices
    from speedrun.records.record import build_record, claim_line
    from speedrun.training import saving, side_by_side
    from speedrun.training.interleave import interleave, loss_line, ratio_line
    from speedrun.training.plan import check_name, command_line, config_for, parse_seeds, prepare

    devices.maybe_initialize()
    writes = not args.no_record and devices.is_main_process()
    seeds = parse_seeds(None, args.seeds)
    for side in ("a", "b"):
        check_name(getattr(args, f"name_{side}"), f"--name-{side}")
    sides = {}
    for side in ("a", "b"):
        cfg = config_for(args.track, getattr(args, side), getattr(args, f"set_{side}"),
                         getattr(args, f"steps_{side}"))
        if args.side_by_side:
            side_by_side.check_can(cfg)
        sides[side] = prepare(cfg, args.data_dir, command_line(),
                              None if args.no_record else args.records_dir)
    untimed = side_by_side.untimed_reason(len(seeds)) if args.side_by_side else None
    if untimed:  # the loss side only: each side's seeds in one program, A then B
        results = {side: side_by_side.seeds_of(plan, seeds, args.quiet, tag=f"{side.upper()} ")
                   for side, plan in sides.items()}
    else:
        results = interleave(sides, seeds, args.quiet)
    for side, plan in sides.items():
        name = getattr(args, f"name_{side}")
        if not writes:
            rec = build_record(plan.cfg, results[side], plan.env, plan.data, name,
                               untimed=untimed)
        else:
            where, rec = saving.save(plan, results[side], args.records_dir, name,
                                     untimed=untimed)
            print(f"{side.upper()} record written: {where}")
        print(f"{side.upper()}: {claim_line(rec)}")
    steps = f"steps {sides['b'].cfg.train.steps} vs {sides['a'].cfg.train.steps}"
    print(f"{loss_line(results['b'], results['a'])}, {steps}")
    if untimed:
        print(f"times not compared: {untimed} per side (untimed records)")
    else:
        print(f"{ratio_line(results['b'], results['a'])}, {steps}")
    return 0
