"""`python -m speedrun sweep`: tune settings on a track, one grid of fixed-length runs.

The speedrun retuned its constants with almost every record. A sweep runs every point of a grid
(speedrun/training/grid.py) one after another, never in parallel (each point's times go into its
record), every seed a full fixed-length run, and writes each point as a record (a screening
record, ``<date>_<prefix>-<settings>``) as soon as its seeds finish (a point that diverges
writes none, as with `run`: the table says where it diverged and the sweep goes on). Then a
table: each point's final val loss per seed and their mean, and its difference from a reference
point paired by seed: the first point, or the one ``--reference`` names (e.g. the record's
constants), and the best point with its margin.

Interrupted, the points finished are on record; the same command again resumes: a point on
record is read back into the table instead of being run. Every bad input fails before anything
runs.
"""

from __future__ import annotations

import argparse
import sys

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    sw = sub.add_parser(
        "sweep", help="tune settings: a grid of fixed-length runs, final losses paired by seed",
        description="Run every point of a grid of settings (several --sweep keys: every "
        "combination) one after another, every seed a full fixed-length run, and write each "
        "point as a record (records/<track>/<date>_<prefix>-<settings>/) when its seeds finish. "
        "Then a table: each point's final val loss per seed and their mean, its difference "
        "from the reference point paired by seed, and the best point with its margin. Run "
        "again with the same arguments it resumes: a point already on record (same "
        "configuration, seeds and hardware class, verified) is read back, not run again. "
        "Example: sweep --tricks softcap --sweep softcap.cap=10,15,30 --steps 300 --seeds 0,1.")
    flags.configuration(sw)
    sw.add_argument("--sweep", action="append", default=[], required=True,
                    metavar="KEY=V1,V2,...",
                    help="a setting and the values it takes, e.g. softcap.cap=10,15,30 (a config "
                    "setting or an enabled trick's); repeat for a grid of every combination")
    flags.steps(sw)
    flags.seeds(sw, "2", "seeds of every point: a count or a list (default 2: the paired "
                "differences need two to show whether seeds agree)")
    sw.add_argument("--reference", metavar="KEY=V,...", default=None,
                    help="the point the others are compared with, a value for every swept "
                    "setting, e.g. the record's constants: softcap.cap=15 (default: the first "
                    "point)")
    sw.add_argument("--yes", action="store_true", help="run a grid of more than 50 points")
    sw.add_argument("--name", default="sweep", metavar="PREFIX",
                    help="the records' name prefix (default: sweep)")
    flags.records_dir(sw, "where each point's record is written, and looked for to resume")
    flags.quiet(sw)
    flags.data_dir(sw)
    return sw


def checked_grid(args, seeds: list[int]):
    """(base configuration, points, reference point): every point's settings, limits and
    folders checked before anything runs."""
    import tricks as trick_registry
    from speedrun.config import validate
    from speedrun.errors import SpeedrunError
    from speedrun.training import grid as G
    from speedrun.training.plan import check_name, config_for, preflight

    check_name(args.name)
    base = config_for(args.track, args.tricks, args.overrides, args.steps)
    grid_axes = G.axes(base, args.sweep, args.overrides, args.steps)
    n = G.check_size(grid_axes, len(seeds), args.yes)
    points = G.grid(grid_axes, args.track, args.tricks, args.overrides, args.steps)
    ref = G.reference_of(points, base, grid_axes, args.reference)
    for p in points:
        try:
            validate(p.cfg, trick_registry.setting_problems(p.cfg), "--sweep or --set")
            preflight(p.cfg, args.data_dir, args.records_dir, skippable=False)
            trick_registry.build_hooks(p.cfg)
        except SpeedrunError as e:
            raise SpeedrunError(f"point {p.number}/{n} ({p.label()}): {e}") from None
    return base, points, ref


def run_point(args, point, n: int, seeds: list[int], writes: bool):
    """Every seed of one point, then its record (written before the next point starts): its
    ``grid.Outcome``."""
    from speedrun.records.record import run_dict
    from speedrun.records.record import record_id
    from speedrun.training import saving, train
    from speedrun.training.grid import Outcome, losses_of
    from speedrun.training.plan import command_line, prepare
    from speedrun.training.seed import run_seed

    plan = prepare(point.cfg, args.data_dir, command_line(), args.records_dir, skippable=False)
    results = []
    for s in seeds:
        try:
            results.append(run_seed(plan, s, args.quiet, tag=f"point {point.number}/{n} "))
        except train.Diverged as e:  # a sweep probes values that may be too far: go on
            print(f"point {point.number}/{n}: seed {s} {e}: no record; on to the next point")
            return Outcome(point, {}, None, diverged=f"seed {s} {e}")
    if not writes:
        return Outcome(point, losses_of([run_dict(r) for r in results]), None)
    where, rec = saving.save(plan, results, args.records_dir, point.name(args.name))
    print(f"point {point.number}/{n}: record written: {where}")
    return Outcome(point, losses_of(rec["runs"]), record_id(where))


def main(args) -> int:
    from speedrun.distributed import devices
    from speedrun.records.record import record_id
    from speedrun.training import environment
    from speedrun.training import grid as G
    from speedrun.training.plan import label, parse_seeds

    devices.maybe_initialize()
    seeds = parse_seeds(None, args.seeds)
    base, points, ref = checked_grid(args, seeds)
    n = len(points)
    hw = environment.describe()["hardware_class"]
    index = G.records_by_point(args.records_dir, args.track, points, args.name)
    steps = ", ".join(str(s) for s in sorted({p.cfg.train.steps for p in points}))
    print(f"sweep on {args.track}: {n} point(s) x {len(seeds)} seed(s) {seeds}, {steps} steps, "
          f"one point after another; tricks: {label(base)}; reference: #{ref.number} "
          f"({ref.label()})")
    outcomes: list = []
    try:
        for p in points:
            found = G.on_record(index, p.cfg, seeds, hw)
            if found is not None:
                folder, rec = found
                print(f"point {p.number}/{n}: {p.label()}: from record {record_id(folder)}")
                outcomes.append(G.Outcome(p, G.losses_of(rec["runs"]), record_id(folder),
                                          reused=True))
                continue
            print(f"point {p.number}/{n}: {p.label()}")
            outcomes.append(run_point(args, p, n, seeds, devices.is_main_process()))
    except KeyboardInterrupt:
        kept = sum(o.record is not None for o in outcomes)
        print(f"interrupted at point {len(outcomes) + 1}/{n}: {kept} point(s) finished before "
              f"it are on record; the same command again resumes from there", file=sys.stderr)
        raise
    reference = next(o for o in outcomes if o.point is ref)
    print()
    print(G.table(outcomes, reference, seeds))
    print(G.verdict(outcomes, reference))
    return 0
