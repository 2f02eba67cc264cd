"""`python -m speedrun run`: resolve the configuration, train every seed, write one record.

Each seed is a fixed-length run of ``train.steps`` steps. Before any data is built or anything
compiles, ``plan.prepare`` checks the settings, the records folder and the data dir, then the
validation tokens' range. The record is written only after every seed has finished; a
divergence, a crash or Ctrl-C leaves no record behind, and a record that cannot be written
leaves a results file for ``speedrun recover`` instead of losing the run. ``run_seed`` and
``save`` are the pieces `find-steps`, `compare`, `submit` and `sweep` reuse.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import tricks as trick_registry
from speedrun.config import RunConfig, config_hash
from speedrun.data import bytelevel, loader, paths
from speedrun.data import hellaswag as hellaswag_data
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint, hellaswag
from speedrun.inference import generate as G
from speedrun.records import logs, provenance
from speedrun.records.record import build_record, claim_line, load_record, write_record
from speedrun.training import fallback, hardware, train
from speedrun.training.console import Console
from speedrun.training.plan import (Plan, check_name, command_line, config_for, label, parse_seeds,
                                   prepare)


def resolve(args) -> tuple[RunConfig, list[int], str | None]:
    """The exact configuration, seeds and record name a `run` invocation asks for."""
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


def run_seed(plan: Plan, seed: int, quiet: bool, tag: str = "", save_dir: str | None = None,
             save_failures: list | None = None, after=None) -> train.RunResult:
    """One fixed-length run: the machine-speed probe (untimed), then training, then its log.
    ``save_dir``: write the final parameters there (``checkpoint_path``), after the clock; a
    checkpoint that cannot be written is reported and appended to ``save_failures``.
    ``after(seed, params)``: more work on the final parameters, also after the clock."""
    cfg = plan.cfg
    gflops = hardware.machine_gflops()
    # One progress bar: the other processes of a multi-process run show only validations.
    console = Console(cfg.train.steps, quiet or not devices.is_main_process(), f"{tag}seed {seed}")
    console.lines += logs.header(cfg, seed, plan.env)
    console.log(logs.machine_line(gflops))
    tokenizer = plan.data["tokenizer"] or "gpt2"
    batches = loader.TrainLoader(plan.train_files, cfg.train.batch_size, cfg.model.seq_len, seed,
                                 align_docs=cfg.train.align_docs,
                                 doc_sep=bytelevel.separator(tokenizer))
    n_bytes = plan.data.get("val_bytes")
    bpb_per_nat = bytelevel.bits_per_byte(1.0, plan.data["val_tokens"], n_bytes) if n_bytes else None
    saved: list[str] = []

    def finished(params):
        if save_dir is None and after is None:
            return
        params = checkpoint.to_host(params)  # in every process: gathering split ones is collective
        if save_dir is not None and devices.is_main_process():
            ok, line = save_checkpoint(plan, params, seed, save_dir)
            saved.append(line)
            if not ok and save_failures is not None:
                save_failures.append(line)
        if after is not None:
            after(seed, params)

    try:
        out = train.train(cfg, seed, plan.hooks, batches, plan.val, console.log, console.progress,
                          machine_gflops=gflops, bpb_per_nat=bpb_per_nat, finished=finished)
    finally:
        console.close()
    for line in saved:
        print(f"{tag}seed {seed}: {line}")
    crossed = ("never crossed the target" if out.first_reached is None else
               f"first at or below the target at step {out.first_reached[0]} "
               f"({out.first_reached[1]:.1f}s)")
    summary = (f"{tag}seed {seed}: {out.steps} steps in {out.train_time_s:.1f}s train time, "
               f"final val loss {out.final_val_loss:.4f} "
               f"({'below' if out.reached else 'NOT below'} the target {cfg.train.target}; "
               f"{crossed}; compile {out.compile_time_s:.1f}s; machine {gflops} GFLOP/s)")
    console.lines.append(summary)
    print(summary)
    return train.RunResult(**vars(out), log="\n".join(console.lines) + "\n")


# --- `run --save`: each seed's trained model, written after the clock ---------------------------


def checkpoint_path(cfg: RunConfig, seed: int, save_dir: str) -> Path:
    return Path(save_dir).expanduser() / checkpoint.file_name(cfg, seed)


def check_save_dir(save_dir: str, records_dir: str | None) -> None:
    """``--save DIR``: writable, and not inside records/ (model files stay out of git)."""
    folder = Path(save_dir).expanduser().resolve()
    if records_dir is not None:
        rec = Path(records_dir).expanduser().resolve()
        if folder == rec or rec in folder.parents:
            raise SpeedrunError(f"--save {save_dir} is inside the records folder {records_dir}: "
                                f"model files do not go into records/; save them elsewhere "
                                f"(e.g. --save checkpoints/)")
    paths.probe_writable(folder, "checkpoint folder", "pass --save DIR with a writable folder")


def save_checkpoint(plan: Plan, params, seed: int, save_dir: str) -> tuple[bool, str]:
    """Write one seed's final parameters: (written, what happened). A failure is reported,
    never fatal to the run (its record still gets written); main exits non-zero at the end."""
    path = checkpoint_path(plan.cfg, seed, save_dir)
    try:
        checkpoint.save(path, params, plan.cfg, plan.data.get("tokenizer") or "gpt2", seed,
                        notes={"data": {k: plan.data.get(k) for k in ("dataset", "val_sha256",
                                                                       "train_sha256")},
                               "git_commit": plan.env.get("git_commit")})
    except OSError as e:
        return False, f"could NOT write the checkpoint {path} ({e.strerror or e})"
    return True, f"checkpoint written: {path}"


# --- HellaSwag after the final validation, on the tracks that report it ---------------------------


def hellaswag_examples(plan: Plan, data_dir: str | None):
    """The HellaSwag examples a run scores after training: None where the track does not
    report it, or its data is not here (then a note says how to get it). A corrupt file fails
    here, before training."""
    if not plan.track.hellaswag:
        return None
    examples = hellaswag_data.find(paths.data_dir(data_dir))
    if examples is None:
        print(f"note: HellaSwag will not be scored after training: it is not in "
              f"{hellaswag_data.folder(paths.data_dir(data_dir))} (get it with: python -m "
              f"speedrun data hellaswag)")
    return examples


def hellaswag_after(plan: Plan, examples, quiet: bool, scores: dict):
    """``after`` for run_seed: each seed's HellaSwag score into ``scores`` (seed -> Score)."""
    def after(seed: int, params) -> None:
        m = G.Model(params, plan.cfg, plan.hooks, plan.data.get("tokenizer") or "gpt2")
        scores[seed] = hellaswag.score(hellaswag.on_device(m), examples.items, quiet)
        print(f"seed {seed}: HellaSwag (untimed, information) {scores[seed].line()}")

    return after


# --- the record ---------------------------------------------------------------------------------


def save(plan: Plan, results: list, records_dir: str, name: str | None,
         **optional) -> tuple[Path, dict]:
    """Write the record (``optional``: its optional fields). Whatever goes wrong here, the
    finished results are not lost: they go to a fallback file (``fallback.write_fallback``)
    that ``speedrun recover`` turns into the record later, and the error says where it is."""
    optional = {k: v for k, v in optional.items() if v is not None}
    try:
        rec = build_record(plan.cfg, results, plan.env, plan.data, name=name, **optional)
        return write_record(Path(records_dir), rec, results=results), rec
    except KeyboardInterrupt:
        saved = fallback.write_fallback(plan.cfg, results, plan.env, plan.data, name, records_dir,
                                        optional)
        if saved is not None:
            print(f"interrupted while writing the record; the results are safe in {saved}: "
                  f"make the record with: python -m speedrun recover {shlex.quote(str(saved))}",
                  file=sys.stderr)
        raise
    except Exception as e:
        reason = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror else (
            str(e).splitlines()[0] if str(e) else type(e).__name__)
        saved = fallback.write_fallback(plan.cfg, results, plan.env, plan.data, name, records_dir,
                                        optional)
        if saved is None:
            raise
        raise SpeedrunError(
            f"could not write the record to {records_dir} ({reason}); the results are safe in "
            f"{saved}: make the record with: python -m speedrun recover {shlex.quote(str(saved))}"
            f" --records-dir DIR") from e


def main(args) -> int:
    devices.maybe_initialize()
    check_name(args.name)
    cfg, seeds, name = resolve(args)
    writes = not args.no_record and devices.is_main_process()
    save_dir = getattr(args, "save", None)
    if save_dir is not None:  # before anything slow; process 0 saves, and checks for all
        devices.decided_by_main(lambda: check_save_dir(save_dir, args.records_dir))
    plan = prepare(cfg, args.data_dir, command_line(), None if args.no_record else args.records_dir)
    print(f"track {cfg.track}: {cfg.train.steps} steps, target val loss {cfg.train.target}, "
          f"tricks: {label(cfg)}, seeds: {seeds}, devices: {plan.env['device_count']} x "
          f"{plan.env['device_kind']}")
    for line in trick_registry.reports(cfg):
        print(line)
    failed: list[str] = []
    examples, scores = hellaswag_examples(plan, args.data_dir), {}
    after = None if examples is None else hellaswag_after(plan, examples, args.quiet, scores)
    results = [run_seed(plan, seed, args.quiet, save_dir=save_dir, save_failures=failed,
                        after=after) for seed in seeds]
    if writes:
        where, rec = save(plan, results, args.records_dir, name, hellaswag=hellaswag.record_field(
            examples, scores) if scores else None)
        print(f"record written: {where}")
        print(claim_line(rec))
    if failed:
        raise SpeedrunError(f"the run finished but {'; '.join(failed)}")
    return 0
