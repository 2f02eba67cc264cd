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

A sweep times nothing, so it may train side by side (speedrun/training/side_by_side.py): each
point's seeds as one program, and points that differ only in settings the step takes as inputs
(learning rates, betas, weight decay, a trick's scale: speedrun/training/step_inputs.py) in the
same program, at most ``--max-side-by-side`` models to a program. ``--side-by-side points``
asks for that and refuses a swept setting that cannot be an input; ``--side-by-side seeds``
keeps points apart; ``--no-side-by-side`` trains one seed at a time, as a timed run. Without
either, a sweep trains side by side where that measured faster (``side_by_side.by_default``),
points apart where a swept setting cannot be an input (a note says which and why). Records of
models trained side by side say so (``untimed``).
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
    sw.add_argument("--side-by-side", nargs="?", const="points", default=None,
                    choices=("points", "seeds"), metavar="points|seeds",
                    help="train side by side in one vmapped program (untimed): each point's "
                    "seeds and the points that differ only in settings the step takes as inputs "
                    "(points, the default; a swept setting that cannot be is an error), or only "
                    "each point's seeds (seeds); default: as measured faster on this kind of "
                    "device, points apart where a setting cannot be an input")
    sw.add_argument("--no-side-by-side", dest="side_by_side", action="store_const", const="off",
                    help="train one seed at a time (each point's record is timed)")
    sw.add_argument("--max-side-by-side", type=int, default=8, metavar="N",
                    help="at most N models (points x seeds) in one program (default 8; a "
                    "point's seeds always share one)")
    flags.records_dir(sw, "where each point's record is written, and looked for to resume")
    flags.quiet(sw)
    flags.data_dir(sw)
    return sw


def checked_grid(args, seeds: list[int]):
    """(base configuration, points, reference point, the programs the points train in): every
    point's settings, limits and folders checked before anything runs."""
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
    hooks = []
    for p in points:
        try:
            validate(p.cfg, trick_registry.setting_problems(p.cfg), "--sweep or --set")
            preflight(p.cfg, args.data_dir, args.records_dir, skippable=False)
            hooks.append(trick_registry.build_hooks(p.cfg))
        except SpeedrunError as e:
            raise SpeedrunError(f"point {p.number}/{n} ({p.label()}): {e}") from None
    return base, points, ref, programs(args, points, hooks, len(seeds))


def mode_of(args) -> str:
    """How the points train: off (one seed at a time), seeds, points, or auto (points where the
    swept settings allow it) where side by side measured faster and no flag says otherwise."""
    from speedrun.training import side_by_side

    return args.side_by_side or ("auto" if side_by_side.by_default() else "off")


def programs(args, points: list, hooks: list, n_seeds: int) -> list[list]:
    """The points in the programs they train in, each a list of points: one point each when
    they train one seed at a time or only their seeds side by side, else the points alike in
    every swept setting the step cannot take as an input, together (``--side-by-side``)."""
    from speedrun.errors import SpeedrunError
    from speedrun.training import grid as G
    from speedrun.training import side_by_side, step_inputs

    mode = mode_of(args)
    if mode == "off":
        return [[p] for p in points]
    side_by_side.check_can(points[0].cfg)
    if args.max_side_by_side < 1:
        raise SpeedrunError(f"--max-side-by-side must be at least 1, got {args.max_side_by_side}")
    if mode == "seeds":
        return [[p] for p in points]
    why = {k: step_inputs.problem(points[0].cfg, hooks[0], k) for k, _ in points[0].settings}
    fixed = {k for k, w in why.items() if w is not None}
    for key in (k for k, _ in points[0].settings if k in fixed):
        if mode == "points":
            raise SpeedrunError(f"--side-by-side points: {key} cannot be an input of the step: "
                                f"{why[key]}; sweep it with --side-by-side seeds (each point's "
                                f"seeds side by side, the points one after another)")
        print(f"note: {key} cannot be an input of the step ({why[key]}): its points train in "
              f"separate programs")
    out = []
    for prog in G.programs(points, fixed, args.max_side_by_side // n_seeds):
        try:  # settings a trick derives from a swept one, batch sizes
            step_inputs.check([p.cfg for p in prog], [hooks[p.number - 1] for p in prog], why)
            out.append(prog)
        except SpeedrunError as e:
            if mode == "points":
                raise SpeedrunError(f"--side-by-side points: points {prog[0].number}-"
                                    f"{prog[-1].number}: {e}") from None
            print(f"note: points {', '.join(str(p.number) for p in prog)} train in separate "
                  f"programs: {e}")
            out += [[p] for p in prog]
    return out


def run_point(args, point, n: int, seeds: list[int], writes: bool):
    """Every seed of one point, one at a time, then its record (written before the next point
    starts): its ``grid.Outcome``."""
    from speedrun.training import train
    from speedrun.training.grid import Outcome
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
    return keep_point(args, point, n, plan, results, writes)


def run_together(args, points: list, n: int, seeds: list[int], writes: bool) -> list:
    """Every seed of ``points`` side by side in one program, then each point's record (a point
    where a seed diverged gets none): their ``grid.Outcome``s."""
    from speedrun.training import side_by_side, train
    from speedrun.training.grid import Outcome
    from speedrun.training.plan import command_line, prepare

    plans = [prepare(p.cfg, args.data_dir, command_line(), args.records_dir, skippable=False)
             for p in points]
    lanes = [side_by_side.Lane(plan, s, f"point {p.number}/{n} ")
             for p, plan in zip(points, plans) for s in seeds]
    print(f"point{'s' if len(points) > 1 else ''} {', '.join(str(p.number) for p in points)}: "
          f"{len(lanes)} models side by side in one program")
    results = side_by_side.train_side_by_side(lanes, args.quiet, stop_on_divergence=False)
    untimed = side_by_side.untimed_reason(len(lanes), len(seeds))
    out = []
    for k, (point, plan) in enumerate(zip(points, plans)):
        mine = results[k * len(seeds):(k + 1) * len(seeds)]
        bad = [(s, r) for s, r in zip(seeds, mine) if isinstance(r, train.Diverged)]
        if bad:
            print(f"point {point.number}/{n}: seed {bad[0][0]} {bad[0][1]}: no record")
            out.append(Outcome(point, {}, None, diverged=f"seed {bad[0][0]} {bad[0][1]}"))
        else:
            out.append(keep_point(args, point, n, plan, mine, writes, untimed))
    return out


def keep_point(args, point, n: int, plan, results: list, writes: bool, untimed=None):
    """A finished point's record (where this process writes): its ``grid.Outcome``."""
    from speedrun.records.record import record_id, run_dict
    from speedrun.training import saving
    from speedrun.training.grid import Outcome, losses_of

    if not writes:
        return Outcome(point, losses_of([run_dict(r) for r in results]), None)
    where, rec = saving.save(plan, results, args.records_dir, point.name(args.name),
                             untimed=untimed)
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
    base, points, ref, progs = checked_grid(args, seeds)
    n = len(points)
    hw = environment.describe()["hardware_class"]
    index = G.records_by_point(args.records_dir, args.track, points, args.name)
    steps = ", ".join(str(s) for s in sorted({p.cfg.train.steps for p in points}))
    together = mode_of(args) != "off"
    how = f"side by side in {len(progs)} program(s)" if together else "one point after another"
    print(f"sweep on {args.track}: {n} point(s) x {len(seeds)} seed(s) {seeds}, {steps} steps, "
          f"{how}; tricks: {label(base)}; reference: #{ref.number} ({ref.label()})")
    outcomes: dict = {}
    try:
        for prog in progs:
            todo = []
            for p in prog:
                found = G.on_record(index, p.cfg, seeds, hw)
                if found is None:
                    todo.append(p)
                    continue
                folder, rec = found
                print(f"point {p.number}/{n}: {p.label()}: from record {record_id(folder)}")
                outcomes[p.number] = G.Outcome(p, G.losses_of(rec["runs"]), record_id(folder),
                                               reused=True)
            for p in todo:
                print(f"point {p.number}/{n}: {p.label()}")
            if todo and together:
                outcomes.update((o.point.number, o) for o in run_together(
                    args, todo, n, seeds, devices.is_main_process()))
            elif todo:
                outcomes[todo[0].number] = run_point(args, todo[0], n, seeds,
                                                     devices.is_main_process())
    except KeyboardInterrupt:
        kept = sum(o.record is not None for o in outcomes.values())
        at = next(p.number for p in points if p.number not in outcomes)
        print(f"interrupted at point {at}/{n}: {kept} point(s) finished before it are on "
              f"record; the same command again resumes from there", file=sys.stderr)
        raise
    done = [outcomes[p.number] for p in points]
    reference = outcomes[ref.number]
    print()
    print(G.table(done, reference, seeds))
    print(G.verdict(done, reference))
    return 0
