"""`python -m speedrun find-steps`: the fewest steps at which a configuration makes its claim.

This is the tuning speedrunners do by hand. Every probe is a full fixed-length run of its step
count (the schedule's horizon is the run's length, so a 200-step run is not the first 200 steps
of a 300-step run), over the same seeds; the search (speedrun/training/step_search.py) brackets
the answer, then bisects. Probes write no records; the end is the exact `run` command that
makes the claim. With ``--record``, the passing probe with the fewest steps is itself written
as a record (it is a complete set of fixed-length runs at that length), which saves running the
claim again.

A probe times nothing: where side by side measured faster than one seed after another
(speedrun/training/side_by_side.py, ``by_default``), its seeds train as one program unless
``--no-side-by-side``; with ``--record`` they run one at a time, so that the record is timed,
unless ``--side-by-side`` asks otherwise (the record is then untimed).
"""

from __future__ import annotations

import argparse
import math

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    fs = sub.add_parser(
        "find-steps", help="find the fewest steps at which a configuration makes its claim",
        description="Search over --steps: every probe is a full fixed-length run over the same "
        "seeds; a probe passes when its seeds make the claim (p < 0.01, >= 3 seeds) or, with "
        "fewer seeds, when every seed ends below the target. Brackets by doubling/halving, then "
        "bisects; prints the exact `run` command that makes the claim. Writes no records, "
        "unless --record: then the passing probe with the fewest steps becomes one.")
    flags.configuration(fs)
    flags.seeds(fs, "3", "seeds of every probe: a count or a list (default 3)")
    fs.add_argument("--start", type=int, default=None, metavar="N",
                    help="first probe's steps (default: the track's baseline steps)")
    fs.add_argument("--multiple", type=int, default=None, metavar="M",
                    help="probe only multiples of M steps (default: 2%% of --start)")
    fs.add_argument("--max-probes", type=int, default=8, metavar="K",
                    help="at most K probes (default 8)")
    fs.add_argument("--record", action="store_true",
                    help="write the passing probe with the fewest steps as a record")
    flags.side_by_side(fs, "on where it measured faster on this kind of device, unless "
                       "--record")
    flags.records_dir(fs, "where --record writes")
    fs.add_argument("--name", default=None, help="record name for --record")
    flags.data_dir(fs)
    return fs


def run_command(args, steps: int, seeds: int) -> str:
    parts = ["python", "-m", "speedrun", "run", "--track", args.track]
    if args.tricks:
        parts += ["--tricks", args.tricks]
    for o in args.overrides:
        parts += ["--set", o]
    parts += ["--steps", str(steps), "--seeds", str(seeds)]
    return " ".join(parts)


def main(args) -> int:
    from speedrun.distributed import devices
    from speedrun.errors import SpeedrunError
    from speedrun.records import stats
    from speedrun.records.record import claim_line
    from speedrun.training import saving, side_by_side
    from speedrun.training.plan import (check_name, command_line, config_for, label,
                                        parse_seeds, prepare)
    from speedrun.training.seed import run_seed
    from speedrun.training.step_search import probe_passes, search

    devices.maybe_initialize()
    writes = args.record and devices.is_main_process()
    cfg = config_for(args.track, args.tricks, args.overrides)
    seeds = parse_seeds(None, args.seeds)
    check_name(args.name)
    start = cfg.train.steps if args.start is None else args.start
    multiple = max(1, math.ceil(start / 50)) if args.multiple is None else args.multiple
    if min(start, multiple, args.max_probes) < 1:  # before anything is built
        raise SpeedrunError("find-steps needs --start, --multiple and --max-probes >= 1")
    together = args.side_by_side if args.side_by_side is not None else (
        not args.record and side_by_side.by_default())
    if together:
        side_by_side.check_can(cfg)
    plan = prepare(cfg, args.data_dir, command_line(), args.records_dir if args.record else None,
                   skippable=False)
    target = cfg.train.target
    print(f"find-steps on {cfg.track}: {label(cfg)}, target {target}, seeds {seeds}"
          f"{' side by side' if together else ''}, start {start}, multiple of {multiple}, at "
          f"most {args.max_probes} probes")
    if len(seeds) < stats.CLAIM_SEEDS:
        print(f"note: with {len(seeds)} seed(s) a probe passes when every seed ends below the "
              f"target; a claim needs {stats.CLAIM_SEEDS}+ seeds and p < {stats.CLAIM_P}, so "
              f"the step count found may need raising")

    def passes(steps: int) -> bool:
        n = len(probes) + 1
        print(f"probe {n}/{args.max_probes}: {steps} steps x {len(seeds)} seed(s)")
        probe_plan, tag = plan.with_steps(steps), f"[{steps} steps] "
        results = side_by_side.seeds_of(probe_plan, seeds, True, tag) if together else [
            run_seed(probe_plan, seed, quiet=True, tag=tag) for seed in seeds]
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
        untimed = side_by_side.untimed_reason(len(seeds)) if together else None
        where, rec = saving.save(*outcomes[best], args.records_dir, args.name, untimed=untimed)
        print(f"record of the {best}-step probe written: {where}\n{claim_line(rec)}")
    return 0
