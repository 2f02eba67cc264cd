"""`python -m speedrun run`: resolve the configuration, train every seed, write one record.

Each seed is a fixed-length run of ``train.steps`` steps. Before any data is built or anything
compiles, ``plan.prepare`` checks the settings, the records folder and the data dir, then the
validation tokens' range. The record is written only after every seed has finished; a
divergence, a crash or Ctrl-C leaves no record behind, and a record that cannot be written
leaves a results file for `recover` instead of losing the run. On the tracks that report it,
each seed's model is scored on HellaSwag after its clock stops. `--save DIR --checkpoint-every
N` keeps the whole training state in DIR, and `--resume DIR` continues a stopped run from it
(an untimed record: speedrun/training/resume.py); `--log-to` shows the metrics in TensorBoard
or Weights & Biases as the run goes (speedrun/training/metrics.py).

A run is timed, one seed at a time. For screening, ``--side-by-side`` trains the seeds as one
vmapped program (speedrun/training/side_by_side.py): the same final losses, but each seed's time
is the program's, so the record says ``untimed`` and the leaderboard never ranks it.
"""

from __future__ import annotations

import argparse

from speedrun.commands import flags
from speedrun.tracks import DEFAULT as DEFAULT_TRACK


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
    run.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                     help="with --save DIR: also keep the whole training state there every N "
                     "steps (clock stopped), so that `run --resume DIR` can continue the run")
    run.add_argument("--resume", metavar="DIR", default=None,
                     help="continue the run kept in DIR (--save DIR --checkpoint-every N) from "
                     "its last checkpoint: its configuration and seeds; the record says it was "
                     "resumed (not a timed claim)")
    run.add_argument("--log-to", action="append", default=[], metavar="LOGGER",
                     help="also log the metrics (train loss, val loss and bits per byte, lr, "
                     "step time, tokens/s, MFU) as the run goes: tensorboard:DIR (event files, "
                     "needs tensorboardX) or wandb[:PROJECT] (needs wandb; WANDB_MODE=offline "
                     "keeps it local); repeatable")
    flags.side_by_side(run, "off: a run is timed, one seed at a time", " (screening: the "
                       "record is then untimed, listed but never ranked)")
    flags.output(run, "records are written")
    run.set_defaults(track=None)  # so that --resume can tell a track named from none
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
    cfg = config_for(args.track or DEFAULT_TRACK, args.tricks, args.overrides, args.steps)
    return cfg, parse_seeds(args.seed, args.seeds), args.name


def kept_run(args):
    """``--resume DIR``: (the kept run, its configuration, seeds and record name), checked
    against what the command names (a configuration or seeds, if any) before anything is built
    or compiled."""
    from pathlib import Path

    from speedrun.errors import SpeedrunError
    from speedrun.training import resume
    from speedrun.training.plan import config_for, parse_seeds

    if args.from_record or args.save or args.checkpoint_every is not None:
        raise SpeedrunError("--resume DIR continues the run kept there, keeping its state in "
                            "DIR as it goes: drop --from-record/--save/--checkpoint-every")
    named = args.track or args.tricks or args.overrides or args.steps is not None
    cfg = config_for(args.track or DEFAULT_TRACK, args.tricks, args.overrides, args.steps) \
        if named else None
    seeds = None if args.seed is None and args.seeds is None else parse_seeds(args.seed,
                                                                             args.seeds)
    folder = resume.open_folder(Path(args.resume).expanduser(), cfg, seeds)
    return folder, folder.cfg, folder.seeds, args.name or folder.manifest["name"]


def check_checkpoint_every(args) -> None:
    from speedrun.errors import SpeedrunError

    if args.checkpoint_every is None:
        return
    if args.save is None:
        raise SpeedrunError("--checkpoint-every N keeps the training state in the --save DIR "
                            "folder: give --save DIR too")
    if args.checkpoint_every < 1:
        raise SpeedrunError(f"--checkpoint-every must be at least 1, got "
                            f"{args.checkpoint_every}")


def check_side_by_side(args) -> None:
    """What a side-by-side run cannot do: it keeps no training state and logs to no watcher."""
    from speedrun.errors import SpeedrunError

    for flag, given in (("--resume", args.resume), ("--checkpoint-every", args.checkpoint_every),
                        ("--log-to", args.log_to)):
        if given:
            raise SpeedrunError(f"--side-by-side trains the seeds as one program: it cannot be "
                                f"combined with {flag} (run the seeds one at a time for that)")


def check_save_folder(args, save_dir: str) -> None:
    """The --save folder can be written, and a new kept run would overwrite no other."""
    from pathlib import Path

    from speedrun.training import resume, saving

    saving.check_save_dir(save_dir, args.records_dir)
    if args.checkpoint_every is not None and not args.resume:
        resume.check_new(Path(save_dir).expanduser())


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
    from speedrun.training import metrics, saving, side_by_side
    from speedrun.training.plan import check_name, command_line, label, prepare

    devices.maybe_initialize()
    check_name(args.name)
    targets = metrics.parse(args.log_to)
    if args.side_by_side:
        check_side_by_side(args)
    if args.resume:
        folder, cfg, seeds, name = kept_run(args)
        save_dir = args.resume
    else:
        check_checkpoint_every(args)
        folder, (cfg, seeds, name), save_dir = None, resolve(args), args.save
    if args.side_by_side:
        side_by_side.check_can(cfg)
    writes = not args.no_record and devices.is_main_process()
    if save_dir is not None:  # before anything slow; process 0 saves, and checks for all
        devices.decided_by_main(lambda: check_save_folder(args, save_dir))
    plan = prepare(cfg, args.data_dir, command_line(), None if args.no_record else args.records_dir)
    folder = kept_folder(args, folder, plan, seeds, name)
    print(f"track {cfg.track}: {cfg.train.steps} steps, target val loss {cfg.train.target}, "
          f"tricks: {label(cfg)}, seeds: {seeds}, devices: {plan.env['device_count']} x "
          f"{plan.env['device_kind']}")
    for line in trick_registry.reports(cfg):
        print(line)
    failed: list[str] = []
    examples, scores = hellaswag_examples(plan, args.data_dir), {}
    after = None if examples is None else hellaswag_after(plan, examples, args.quiet, scores)
    log_to = (targets, run_name(folder, name or label(cfg))) if targets else None
    untimed = side_by_side.untimed_reason(len(seeds)) if args.side_by_side else None
    if untimed:
        results = side_by_side.seeds_of(plan, seeds, args.quiet, save_dir=save_dir,
                                        save_failures=failed, after=after)
    else:
        results = train_seeds(plan, seeds, args, save_dir, failed, after, folder, log_to)
        untimed = folder.untimed() if folder else None
    where = None
    if writes:
        where, rec = saving.save(plan, results, args.records_dir, name,
                                 hellaswag=hellaswag_score.record_field(examples, scores)
                                 if scores else None, untimed=untimed)
        print(f"record written: {where}")
        print(claim_line(rec))
        if untimed:
            print(f"untimed ({untimed}): the leaderboard lists it, never ranks it")
    if folder is not None:
        folder.done(None if where is None else str(where))
    if failed:
        raise SpeedrunError(f"the run finished but {'; '.join(failed)}")
    return 0


def kept_folder(args, folder, plan, seeds: list[int], name: str | None):
    """The resume.Folder the seeds keep their state in: the kept run's (checked against this
    machine, code and data), a new one (``--checkpoint-every``), or None."""
    from pathlib import Path

    from speedrun.training import resume

    if folder is not None:
        resume.check_same(folder, plan.data, plan.env)
        # The record and every log name the command that started the run (what it trains).
        plan.env["command"] = folder.manifest.get("command")
        print(f"resuming the run kept in {folder.path}")
    elif args.checkpoint_every is not None:
        folder = resume.start(Path(args.save).expanduser(), plan.cfg, seeds,
                              args.checkpoint_every, name, plan.data, plan.env)
        print(f"keeping the training state in {folder.path} every {folder.every} steps "
              f"(continue a stopped run with: python -m speedrun run --resume {args.save})")
    return folder


def run_name(folder, name: str) -> str:
    """The run's name in the metrics loggers: when it started (a resumed run's: when the
    stopped one started, so it writes on into the same run) and its name."""
    import datetime

    started = folder.manifest["started"] if folder is not None else \
        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"{started[:19].replace(':', '')}-{name}"


def train_seeds(plan, seeds, args, save_dir, failed, after, folder, log_to) -> list:
    """Every seed's result: trained now, or kept in ``folder`` by the run that was stopped."""
    from speedrun.training.seed import run_seed

    results = []
    for seed in seeds:
        done = folder.result(seed) if folder is not None else None
        if done is None:
            done = run_seed(plan, seed, args.quiet, save_dir=save_dir, save_failures=failed,
                            after=after, folder=folder, log_to=log_to)
            if folder is not None:
                folder.finish(done)
        else:
            print(f"seed {seed}: finished before the run was stopped; its result is kept in "
                  f"{folder.path}")
        results.append(done)
    return results
