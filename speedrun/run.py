"""`python -m speedrun run`: resolve the configuration, train every seed, write one record.

The record is written only after every seed has finished (reached the target or ran out of
budget); a divergence, a crash or Ctrl-C leaves no record behind.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

import tricks as trick_registry
from speedrun import distributed, evaluate, hardware, records, tracks, train
from speedrun.config import RunConfig, apply_overrides, config_hash
from speedrun.data import corpus, loader, paths
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


def resolve(args) -> tuple[RunConfig, list[int]]:
    """The exact configuration and seeds a `run` invocation asks for."""
    if args.from_record:
        if args.tricks or args.overrides:
            raise SpeedrunError("--from-record re-runs a record exactly; drop --tricks/--set")
        rec = records.load_record(args.from_record)
        cfg = RunConfig.from_dict(rec["config"])
        if config_hash(cfg) != rec.get("config_hash"):
            raise SpeedrunError(f"{args.from_record}: config does not match its config_hash")
        record_seeds = [r["seed"] for r in rec["runs"]]
        seeds = record_seeds if args.seed is None and args.seeds is None else parse_seeds(
            args.seed, args.seeds)
        return cfg, seeds
    track = tracks.get(args.track)
    cfg = trick_registry.with_tricks(track.config, trick_registry.parse_names(args.tricks))
    cfg = trick_registry.configure(apply_overrides(cfg, args.overrides))
    return cfg, parse_seeds(args.seed, args.seeds)


def data_for(cfg: RunConfig, data_dir: str | None):
    track = tracks.get(cfg.track)
    folder = corpus.ensure_dataset(track.dataset, paths.data_dir(data_dir))
    train_files = paths.split_files(folder, track.dataset, "train")
    val_files = paths.split_files(folder, track.dataset, "val")
    if not train_files or not val_files:
        raise SpeedrunError(f"no {track.dataset} shards in {folder}; run: {track.data_command}")
    return train_files, val_files


def validation_set(cfg: RunConfig, val_files):
    t, T = cfg.train, cfg.model.seq_len
    n_seqs = loader.val_token_count(val_files, t.val_tokens, T) // T
    rows = evaluate.val_batch_rows(n_seqs, t.val_batch_size or t.batch_size, distributed.jax.device_count())
    return loader.val_batches(val_files, t.val_tokens, rows, T)


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
        self.bar.n = step
        shown = {k: f"{v:.3f}" if k in ("loss", "val") else f"{v:.0f}" for k, v in info.items()}
        self.bar.set_postfix(shown, refresh=True)

    def close(self) -> None:
        self.bar.close()


def log_header(cfg: RunConfig, seed: int, env: dict) -> list[str]:
    body = {"seed": seed, "command": env.get("command"), "config": cfg.to_dict(),
            "environment": {k: env.get(k) for k in ("hardware_class", "device_kind", "device_count",
                                                     "git_commit", "git_dirty", "jax_version")}}
    return ["# " + line for line in yaml.safe_dump(body, sort_keys=False).splitlines()]


def main(args) -> int:
    distributed.maybe_initialize()
    cfg, seeds = resolve(args)
    hooks = trick_registry.build_hooks(cfg)  # fails here, before data or compilation, if broken
    train_files, val_files = data_for(cfg, args.data_dir)
    val = validation_set(cfg, val_files)
    env = hardware.environment(command=shlex.join(["python", "-m", "speedrun", *sys.argv[1:]]))
    label = ",".join(cfg.trick_names) or "baseline"
    print(f"track {cfg.track}: target val loss {cfg.train.target}, tricks: {label}, "
          f"seeds: {seeds}, devices: {env['device_count']} x {env['device_kind']}")

    results = []
    for seed in seeds:
        console = Console(cfg.train.max_steps, args.quiet, f"seed {seed}")
        for line in log_header(cfg, seed, env):
            console.lines.append(line)
        batches = loader.TrainLoader(train_files, cfg.train.batch_size, cfg.model.seq_len, seed,
                                     align_docs=cfg.train.align_docs)
        try:
            out = train.train(cfg, seed, hooks, batches, val, console.log, console.progress)
        finally:
            console.close()
        verdict = "reached" if out.reached else "did NOT reach"
        summary = (f"seed {seed}: {verdict} {cfg.train.target} in {out.train_time_s:.1f}s "
                   f"train time, {out.steps} steps, {out.tokens:,} tokens, "
                   f"final val loss {out.final_val_loss:.4f} (compile {out.compile_time_s:.1f}s)")
        console.lines.append(summary)
        print(summary)
        results.append(records.RunResult(**vars(out), log="\n".join(console.lines) + "\n"))

    if not args.no_record and distributed.jax.process_index() == 0:
        rec = records.build_record(cfg, results, env, name=args.name)
        where = records.write_record(Path(args.records_dir), rec, results=results)
        s = rec["summary"]
        p = s.get("p_value")
        print(f"record written: {where}  (mean time {s['mean_time_s']:.1f}s over {len(results)} "
              f"seed(s), p-value {'n/a' if p is None else f'{p:.2g}'})")
    if not all(r.reached for r in results):
        print(f"target {cfg.train.target} not reached within the budget", file=sys.stderr)
        return 1
    return 0
