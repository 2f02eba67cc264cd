"""`python -m speedrun run`: resolve the configuration, train every seed, write one record.

Each seed is a fixed-length run of ``train.steps`` steps. Before any data is built or anything
compiles, ``plan.prepare`` checks the settings, the records folder and the data dir, then the
validation tokens' range. The record is written only after every seed has finished; a
divergence, a crash or Ctrl-C leaves no record behind, and a record that cannot be written
leaves a results file for `recover` instead of losing the run. On the tracks that report it,
each seed's model is scored on HellaSwag after its clock stops.

A run is timed, one seed at a time. For screening, ``--side-by-side`` trains the seeds as one
vmapped program (speedrun/training/side_by_side.py): the same final losses, but each seed's time
is the program's, so the record says ``untimed`` and the leaderboard never ranks it.
"""

from __future__ import annotations

import argparse

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    run = sub.add_parser(
        "run", help="timed fixed-length training run; writes a record (a claim)",
        description="Train the baseline GPT (plus --tricks) for exactly train.steps steps (the "
        "horizon of every schedule) and record the final val loss of each seed. Compilation and "
        "validation are not timed. A record is a claim when the seeds' final losses are below "
        "the track's target with p < 0.01 over >= 3 seeds. Writes "
        "records/<track>/<date>_<slug>/.")
    flags.configuration(run)
    flags.steps(run)
    flags.seed_or_seeds(run, "run several seeds: a count (3 -> 0,1,2) or a list (1,5,9)")
    run.add_argument("--from-record", metavar="PATH", default=None,
                     help="re-run the exact configuration (and seeds) of an existing record")
    run.add_argument("--name", default=None, help="short name for the record folder slug")
    run.add_argument("--save", metavar="DIR", default=None,
                     help="write each seed's final parameters (with the resolved config and the "
                     "tokenizer) to DIR/<track>-<config hash>-seed<N>.safetensors, after the "
                     "clock stops; use them with `sample`, `eval`, `quantize`")
    flags.side_by_side(run, "off: a run is timed, one seed at a time", " (screening: the "
                       "record is then untimed, listed but never ranked)")
    flags.output(run, "records are written")
    return run


def resolve(args):
    """(configuration, seeds, record name) of a `run` invocation."""
    import tricks as trick_registry
    from speedrun.config import RunConfig, config_hash
    from speedrun.errors import SpeedrunError
    from speedrun.records import provenance
    from speedrun.records.record import load_record
    from speedrun.training.plan import config_for, parse_seeds

    if args.from_record:
        if args.tricks or args.overrides or args.steps is not None:
            raise SpeedrunError("--from-record re-runs a record exactly; drop --tricks/--set/--steps")
        rec = load_record(args.from_record)
        try:
            cfg = RunConfig.from_dict(rec["config"])
        except (KeyError, TypeError) as e:
            raise SpeedrunError(f"{args.from_record}: not a record this harness can re-run ({e})")
        if config_hash(cfg) != rec.get("config_hash"):
            raise SpeedrunError(f"{args.from_record}: config does not match its config_hash")
        cfg = trick_registry.canonical(cfg)  # the stored order is not trusted
        for line in provenance.drift(rec.get("environment") or {}):
            print(f"note: {line}")  # the record stays valid; a re-run may differ, and here is why
        record_seeds = [r["seed"] for r in rec["runs"]]
        seeds = record_seeds if args.seed is None and args.seeds is None else parse_seeds(
            args.seed, args.seeds)
        return cfg, seeds, args.name or rec.get("name")
    cfg = config_for(args.track, args.tricks, args.overrides, args.steps)
    return cfg, parse_seeds(args.seed, args.seeds), args.name


def hellaswag_examples(plan, data_dir: str | None):
    """The HellaSwag examples a run scores after training: None where the track does not
    report it, or its data is not here (then a note says how to get it). A corrupt file fails
    here, before training."""
    from speedrun.data import hellaswag as hellaswag_data
    from speedrun.data import paths

    if not plan.track.hellaswag:
        return None
    examples = hellaswag_data.find(paths.data_dir(data_dir))
    if examples is None:
        print(f"note: HellaSwag will not be scored after training: it is not in "
              f"{hellaswag_data.folder(paths.data_dir(data_dir))} (get it with: python -m "
              f"speedrun data hellaswag)")
    return examples


def hellaswag_after(plan, examples, quiet: bool, scores: dict):
    """``after`` for run_seed: each seed's HellaSwag score into ``scores`` (seed -> Score)."""
    from speedrun.inference import generate as G
    from speedrun.inference import hellaswag_score

    def after(seed: int, params) -> None:
        m = G.Model(params, plan.cfg, plan.hooks, plan.data.get("tokenizer") or "gpt2")
        scores[seed] = hellaswag_score.score(hellaswag_score.on_device(m), examples.items, quiet)
        print(f"seed {seed}: HellaSwag (untimed, information) {scores[seed].line()}")

    return after


def main(args) -> int:
    import tricks as trick_registry
    from speedrun.distributed import devices
    from speedrun.errors import SpeedrunError
    from speedrun.inference import hellaswag_score
    from speedrun.records.record import claim_line
    from speedrun.training import saving, side_by_side
    from speedrun.training.plan import check_name, command_line, label, prepare
    from speedrun.training.seed import run_seed

    devices.maybe_initialize()
    check_name(args.name)
    cfg, seeds, name = resolve(args)
    if args.side_by_side:
        side_by_side.check_can(cfg)
    writes = not args.no_record and devices.is_main_process()
    save_dir = getattr(args, "save", None)
    if save_dir is not None:  # before anything slow; process 0 saves, and checks for all
        devices.decided_by_main(lambda: saving.check_save_dir(save_dir, args.records_dir))
    plan = prepare(cfg, args.data_dir, command_line(), None if args.no_record else args.records_dir)
    print(f"track {cfg.track}: {cfg.train.steps} steps, target val loss {cfg.train.target}, "
          f"tricks: {label(cfg)}, seeds: {seeds}, devices: {plan.env['device_count']} x "
          f"{plan.env['device_kind']}")
    for line in trick_registry.reports(cfg):
        print(line)
    failed: list[str] = []
    examples, scores = hellaswag_examples(plan, args.data_dir), {}
    after = None if examples is None else hellaswag_after(plan, examples, args.quiet, scores)
    untimed = side_by_side.untimed_reason(len(seeds)) if args.side_by_side else None
    if untimed:
        results = side_by_side.seeds_of(plan, seeds, args.quiet, save_dir=save_dir,
                                        save_failures=failed, after=after)
    else:
        results = [run_seed(plan, seed, args.quiet, save_dir=save_dir, save_failures=failed,
                            after=after) for seed in seeds]
    if writes:
        where, rec = saving.save(plan, results, args.records_dir, name,
                                 hellaswag=hellaswag_score.record_field(examples, scores)
                                 if scores else None, untimed=untimed)
        print(f"record written: {where}")
        print(claim_line(rec))
        if untimed:
            print(f"untimed ({untimed}): the leaderboard lists it, never ranks it")
    if failed:
        raise SpeedrunError(f"the run finished but {'; '.join(failed)}")
    return 0
