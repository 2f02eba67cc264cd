"""`python -m speedrun run`: resolve the configuration, train every seed, write one record.

Each seed is a fixed-length run of ``train.steps`` steps. Before any data is built or anything
compiles, ``preflight`` checks the settings (``config.validate``), the records folder and the
data dir; ``prepare`` then checks the validation tokens' range. The record is written only after
every seed has finished; a divergence, a crash or Ctrl-C leaves no record behind, and a record
that cannot be written leaves a results file for ``speedrun recover`` instead of losing the run. ``prepare``,
``run_seed`` and ``save`` are the pieces `find-steps` and `compare` reuse.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

import tricks as trick_registry
from speedrun import compile_cache, distributed, evaluate, hardware, records, tracks, train
from speedrun import config as config_module
from speedrun.config import RunConfig, apply_overrides, config_hash
from speedrun.data import bytelevel, corpus, fingerprint, loader, paths
from speedrun.errors import SpeedrunError


def parse_seeds(seed: int | None, seeds: str | None) -> list[int]:
    if seeds is None:
        return [0 if seed is None else seed]
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise SpeedrunError(f"--seeds expects a count or a comma-separated list, got {seeds!r}")
    if len(values) == 1 and "," not in seeds:
        if values[0] < 1:
            raise SpeedrunError("--seeds count must be at least 1")
        return list(range(values[0]))
    if len(set(values)) != len(values):
        raise SpeedrunError(f"--seeds has duplicates: {seeds}")
    return values


def with_steps(cfg: RunConfig, steps: int | None) -> RunConfig:
    """``--steps N``: the run's length (and every schedule's horizon)."""
    if steps is None:
        return cfg
    if steps < 1:
        raise SpeedrunError(f"--steps must be at least 1, got {steps}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


def config_for(track: str, trick_names: str, overrides: list[str], steps: int | None = None):
    """A track's baseline + tricks (in their one application order) + overrides + --steps."""
    cfg = trick_registry.with_tricks(tracks.get(track).config, trick_registry.parse_names(trick_names))
    return with_steps(trick_registry.configure(apply_overrides(cfg, overrides)), steps)


def resolve(args) -> tuple[RunConfig, list[int], str | None]:
    """The exact configuration, seeds and record name a `run` invocation asks for."""
    if args.from_record:
        if args.tricks or args.overrides or args.steps is not None:
            raise SpeedrunError("--from-record re-runs a record exactly; drop --tricks/--set/--steps")
        rec = records.load_record(args.from_record)
        try:
            cfg = RunConfig.from_dict(rec["config"])
        except (KeyError, TypeError) as e:
            raise SpeedrunError(f"{args.from_record}: not a record this harness can re-run ({e})")
        if config_hash(cfg) != rec.get("config_hash"):
            raise SpeedrunError(f"{args.from_record}: config does not match its config_hash")
        cfg = trick_registry.canonical(cfg)  # the stored order is not trusted
        record_seeds = [r["seed"] for r in rec["runs"]]
        seeds = record_seeds if args.seed is None and args.seeds is None else parse_seeds(
            args.seed, args.seeds)
        return cfg, seeds, args.name or rec.get("name")
    cfg = config_for(args.track, args.tricks, args.overrides, args.steps)
    return cfg, parse_seeds(args.seed, args.seeds), args.name


# --- pre-flight: everything that can be known before data is built or anything compiles -------


def probe_writable(folder: Path, what: str, fix: str) -> None:
    """Fail unless ``folder`` (or, where it does not exist yet, its nearest existing parent, in
    which it would be created) is a folder we can create and remove a file in."""
    folder = Path(folder).expanduser()
    existing = paths.nearest_existing(folder)
    if not existing.is_dir():
        raise SpeedrunError(f"{what} {folder} cannot be used: {existing} is not a folder; {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".speedrun-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SpeedrunError(f"{what} {folder} is not writable ({e.strerror or e} in {existing}); "
                            f"{fix}") from None


def check_data_dir(cfg: RunConfig, data_dir: str | None) -> None:
    """The data dir is a folder, and writable unless it already holds the track's shards."""
    root = paths.data_dir(data_dir)
    dataset = tracks.get(cfg.track).dataset
    fix = "pass --data-dir DIR or set SPEEDRUN_DATA_DIR to a writable folder"
    for p in (root, root / dataset):
        if p.exists() and not p.is_dir():
            raise SpeedrunError(f"data dir {p} is not a folder; {fix}")
    if all(paths.split_files(root / dataset, dataset, s) for s in corpus.SPLITS):
        return  # shards are there: a read-only data dir is fine unless they must be rebuilt
    probe_writable(root, "data dir", fix)


def preflight(cfg: RunConfig, data_dir: str | None, records_dir: str | None = None) -> RunConfig:
    """Every check that needs no data and no compilation: settings in range, the records folder
    writable, the data dir usable. Runs before anything slow."""
    config_module.validate(cfg)
    distributed.check_batch(cfg.train.batch_size)
    if records_dir is not None:
        probe_writable(Path(records_dir) / cfg.track, "records folder",
                       "pass --records-dir DIR (a writable folder) or --no-record")
    check_data_dir(cfg, data_dir)
    return cfg


def data_for(cfg: RunConfig, data_dir: str | None):
    track = tracks.get(cfg.track)
    try:
        folder = corpus.ensure_dataset(track.dataset, paths.data_dir(data_dir))
    except OSError as e:
        raise SpeedrunError(f"cannot build the {track.dataset} data in {paths.data_dir(data_dir)}: "
                            f"{e.strerror or e} ({e.filename}); pass --data-dir DIR or set "
                            f"SPEEDRUN_DATA_DIR to a writable folder") from None
    train_files = paths.split_files(folder, track.dataset, "train")
    val_files = paths.split_files(folder, track.dataset, "val")
    if not train_files or not val_files:
        raise SpeedrunError(f"no {track.dataset} shards in {folder}; run: {track.data_command}")
    return train_files, val_files


def validation_set(cfg: RunConfig, val_files):
    t, T = cfg.train, cfg.model.seq_len
    n_seqs = loader.val_token_count(val_files, t.val_tokens, T) // T
    devices = distributed.jax.device_count()
    try:
        rows = evaluate.val_batch_rows(n_seqs, t.val_batch_size or t.batch_size, devices)
    except ValueError as e:
        raise SpeedrunError(f"{e}; change train.val_tokens or train.val_batch_size") from None
    return loader.val_batches(val_files, t.val_tokens, rows, T)


def check_token_range(cfg: RunConfig, val, val_files, folder, dataset: str) -> None:
    """Every validation token must be a valid id: in the model's vocabulary and the tokenizer's.
    A token outside would be scored as garbage (NaN or a clamped lookup): a data problem that
    would otherwise look like a divergence."""
    tokenizer = fingerprint.tokenizer_of(folder, dataset)
    limit = min(cfg.model.vocab_size, corpus.VOCAB.get(tokenizer, cfg.model.vocab_size))
    for x, y in val:
        top = max(int(x.max()), int(y.max()))
        if top >= limit or min(int(x.min()), int(y.min())) < 0:
            names = ", ".join(f.name for f in val_files)
            raise SpeedrunError(
                f"the validation tokens ({names} in {folder}) hold token id {top}, outside the "
                f"vocabulary (0..{limit - 1}): the shard is corrupt; rebuild it (for a built "
                f"corpus: python -m speedrun data ... --force) or check it with: python -m "
                f"speedrun data check {folder}")


class Console:
    """Progress bar on a terminal; plain lines otherwise. Every log line also goes to the log."""

    def __init__(self, total: int, quiet: bool, label: str):
        from tqdm import tqdm

        self.lines: list[str] = []
        self.quiet = quiet
        interactive = sys.stderr.isatty() and not quiet
        self.bar = tqdm(total=total, desc=label, unit="step", dynamic_ncols=True,
                        disable=not interactive, leave=True)
        self.plain = not interactive and not quiet

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self.bar.disable:
            if self.plain or "val_loss" in line:
                print(line, flush=True)
        elif "val_loss" in line or not line.startswith("step:"):
            self.bar.write(line)

    def progress(self, step: int, info: dict) -> None:
        if "compiled" in info:  # the rate counts train steps, not the compile wait
            self.bar.reset(total=self.bar.total)
            return
        self.bar.n = step
        shown = {k: f"{v:.3f}" if k in ("loss", "val") else f"{v:.0f}" for k, v in info.items()}
        self.bar.set_postfix(shown, refresh=True)

    def close(self) -> None:
        self.bar.close()


def log_header(cfg: RunConfig, seed: int, env: dict) -> list[str]:
    body = {"seed": seed, "command": env.get("command"), "config": cfg.to_dict(),
            "environment": {k: env.get(k) for k in ("hardware_class", "device_kind", "device_count",
                                                     "git_commit", "git_dirty", "jax_version",
                                                     "attention")}}
    return ["# " + line for line in yaml.safe_dump(body, sort_keys=False).splitlines()]


@dataclass(frozen=True)
class Plan:
    """Everything a configuration's seeds share: built once, before any compilation."""

    cfg: RunConfig
    hooks: object
    train_files: list
    val: list  # validation batches
    data: dict  # the record's data section (fingerprints)
    env: dict


def prepare(cfg: RunConfig, data_dir: str | None, command: str,
            records_dir: str | None = None) -> Plan:
    """Pre-flight checks, then the data, hooks, validation set and fingerprints. ``records_dir``:
    where records will be written (checked writable now), None when none will be."""
    preflight(cfg, data_dir, records_dir)
    hooks = trick_registry.build_hooks(cfg)  # fails here, before data or compilation, if broken
    train_files, val_files = data_for(cfg, data_dir)
    val = validation_set(cfg, val_files)
    dataset = tracks.get(cfg.track).dataset
    check_token_range(cfg, val, val_files, train_files[0].parent, dataset)
    data = fingerprint.describe(train_files[0].parent, dataset, train_files, val)
    env = hardware.environment(command=command)
    env["attention"] = attention_implementation(cfg)
    compile_cache.enable(paths.data_dir(data_dir))
    return Plan(cfg, hooks, train_files, val, data, env)


def attention_implementation(cfg: RunConfig) -> str:
    """Which attention kernel this run's baseline `attend` uses here (chosen once per run, from
    the backend and the compute dtype; see speedrun/attention.py)."""
    from speedrun import attention

    dtype = (cfg.tricks.get("bf16") or {}).get("dtype", "bfloat16") if "bf16" in cfg.tricks \
        else cfg.model.compute_dtype
    return attention.implementation_name(dtype=dtype, head_dim=cfg.model.head_dim)


def command_line() -> str:
    return shlex.join(["python", "-m", "speedrun", *sys.argv[1:]])


def label(cfg: RunConfig) -> str:
    return ",".join(cfg.trick_names) or "baseline"


def run_seed(plan: Plan, seed: int, quiet: bool, tag: str = "", save_dir: str | None = None,
             save_failures: list | None = None) -> records.RunResult:
    """One fixed-length run: the machine-speed probe (untimed), then training, then its log.
    ``save_dir``: write the final parameters there (``checkpoint_path``), after the clock; a
    checkpoint that cannot be written is reported and appended to ``save_failures``."""
    cfg = plan.cfg
    gflops = hardware.machine_gflops()
    console = Console(cfg.train.steps, quiet, f"{tag}seed {seed}")
    console.lines += log_header(cfg, seed, plan.env)
    console.log(records.machine_line(gflops))
    tokenizer = plan.data["tokenizer"] or "gpt2"
    batches = loader.TrainLoader(plan.train_files, cfg.train.batch_size, cfg.model.seq_len, seed,
                                 align_docs=cfg.train.align_docs,
                                 doc_sep=bytelevel.separator(tokenizer))
    n_bytes = plan.data.get("val_bytes")
    bpb_per_nat = bytelevel.bits_per_byte(1.0, plan.data["val_tokens"], n_bytes) if n_bytes else None
    saved: list[str] = []

    def finished(params):
        if save_dir is not None and distributed.jax.process_index() == 0:
            ok, line = save_checkpoint(plan, params, seed, save_dir)
            saved.append(line)
            if not ok and save_failures is not None:
                save_failures.append(line)

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
    return records.RunResult(**vars(out), log="\n".join(console.lines) + "\n")


def checkpoint_path(cfg: RunConfig, seed: int, save_dir: str) -> Path:
    from speedrun import checkpoint

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
    probe_writable(folder, "checkpoint folder", "pass --save DIR with a writable folder")


def save_checkpoint(plan: Plan, params, seed: int, save_dir: str) -> tuple[bool, str]:
    """Write one seed's final parameters: (written, what happened). A failure is reported,
    never fatal to the run (its record still gets written); main exits non-zero at the end."""
    from speedrun import checkpoint

    path = checkpoint_path(plan.cfg, seed, save_dir)
    try:
        checkpoint.save(path, params, plan.cfg, plan.data.get("tokenizer") or "gpt2", seed,
                        notes={"data": {k: plan.data.get(k) for k in ("dataset", "val_sha256",
                                                                       "train_sha256")},
                               "git_commit": plan.env.get("git_commit")})
    except OSError as e:
        return False, f"could NOT write the checkpoint {path} ({e.strerror or e})"
    return True, f"checkpoint written: {path}"


def save(plan: Plan, results: list, records_dir: str, name: str | None) -> tuple[Path, dict]:
    """Write the record. Whatever goes wrong here, the finished results are not lost: they go
    to a fallback file (``records.write_fallback``) that ``speedrun recover`` turns into the
    record later, and the error says where it is."""
    try:
        rec = records.build_record(plan.cfg, results, plan.env, plan.data, name=name)
        return records.write_record(Path(records_dir), rec, results=results), rec
    except KeyboardInterrupt:
        fallback = records.write_fallback(plan.cfg, results, plan.env, plan.data, name,
                                          records_dir)
        if fallback is not None:
            print(f"interrupted while writing the record; the results are safe in {fallback}: "
                  f"make the record with: python -m speedrun recover {shlex.quote(str(fallback))}",
                  file=sys.stderr)
        raise
    except Exception as e:
        reason = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror else (
            str(e).splitlines()[0] if str(e) else type(e).__name__)
        fallback = records.write_fallback(plan.cfg, results, plan.env, plan.data, name,
                                          records_dir)
        if fallback is None:
            raise
        raise SpeedrunError(
            f"could not write the record to {records_dir} ({reason}); the results are safe in "
            f"{fallback}: make the record with: python -m speedrun recover {shlex.quote(str(fallback))}"
            f" --records-dir DIR") from e


def claim_line(rec: dict) -> str:
    s = rec["summary"]
    p = s.get("p_value")
    verdict = "a claim" if s["claim"] else "NOT a claim (" + "; ".join(s["reasons"]) + ")"
    return (f"{rec['description']}: {s['mean_steps']:.0f} steps, {s['mean_time_s']:.1f} ± "
            f"{s['std_time_s']:.1f}s, final val loss {s['mean_val_loss']:.4f} ± "
            f"{s['std_val_loss']:.4f} over {s['seeds']} seed(s), "
            f"p {'n/a' if p is None else f'{p:.2g}'}: {verdict}")


def main(args) -> int:
    distributed.maybe_initialize()
    cfg, seeds, name = resolve(args)
    writes = not args.no_record and distributed.jax.process_index() == 0
    save_dir = getattr(args, "save", None)
    if save_dir is not None:  # before anything slow
        check_save_dir(save_dir, args.records_dir)
    plan = prepare(cfg, args.data_dir, command_line(), args.records_dir if writes else None)
    print(f"track {cfg.track}: {cfg.train.steps} steps, target val loss {cfg.train.target}, "
          f"tricks: {label(cfg)}, seeds: {seeds}, devices: {plan.env['device_count']} x "
          f"{plan.env['device_kind']}")
    for line in trick_registry.reports(cfg):
        print(line)
    failed: list[str] = []
    results = [run_seed(plan, seed, args.quiet, save_dir=save_dir, save_failures=failed)
               for seed in seeds]
    if not args.no_record and distributed.jax.process_index() == 0:
        where, rec = save(plan, results, args.records_dir, name)
        print(f"record written: {where}")
        print(claim_line(rec))
    if failed:
        raise SpeedrunError(f"the run finished but {'; '.join(failed)}")
    return 0
