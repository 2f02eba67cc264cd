"""A run's configuration resolved, checked and prepared once, for every command that trains.

``config_for`` builds a configuration (track baseline + tricks + ``--set`` + ``--steps``);
``prepare`` turns it into a ``Plan``: before any data is built or anything compiles it checks
the settings, the records folder and the data dir (``preflight``), then builds the data, the
hooks, the validation set (checking every token's range) and the fingerprints and environment a
record stores. `run`, `find-steps`, `compare`, `submit` and `sweep` share it; `eval` and `bench`
use its pieces.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import tricks as trick_registry
from speedrun import config as config_module
from speedrun import tracks
from speedrun.config import RunConfig, apply_overrides
from speedrun.core import attention
from speedrun.data import corpus, fingerprint, loader, paths
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.records import provenance
from speedrun.training import accumulate, compile_cache, environment


def parse_seeds(seed: int | None, seeds: str | None) -> list[int]:
    if seeds is None:
        if seed is not None and seed < 0:
            raise SpeedrunError(f"--seed must be 0 or more, got {seed}")
        return [0 if seed is None else seed]
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise SpeedrunError(f"--seeds expects a count or a comma-separated list, got {seeds!r}")
    if not values:
        raise SpeedrunError(f"--seeds {seeds!r} names no seed: give a count (3) or a list (0,1,2)")
    if len(values) == 1 and "," not in seeds:
        if values[0] < 1:
            raise SpeedrunError("--seeds count must be at least 1")
        return list(range(values[0]))
    if len(set(values)) != len(values):
        raise SpeedrunError(f"--seeds has duplicates: {seeds}")
    if min(values) < 0:
        raise SpeedrunError(f"--seeds must be 0 or more, got {min(values)}")
    return values


def check_name(name: str | None, flag: str = "--name") -> None:
    """A record's name gives its folder's slug: it needs a letter or a digit."""
    if name is not None and not any(c.isascii() and c.isalnum() for c in name):
        raise SpeedrunError(f"{flag} {name!r} has no letter or digit to name the record's "
                            f"folder by")


def with_steps(cfg: RunConfig, steps: int | None) -> RunConfig:
    """``--steps N``: the run's length (and every schedule's horizon)."""
    if steps is None:
        return cfg
    if steps < 1:
        raise SpeedrunError(f"--steps must be at least 1, got {steps}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


def config_for(track: str, trick_names: str, overrides: list[str], steps: int | None = None,
               swept: list[str] = ()):
    """A track's baseline + tricks (in their one application order, at their defaults on the
    track) + overrides + a sweep point's settings (``swept``, from `sweep`) + --steps."""
    cfg = trick_registry.with_tricks(tracks.get(track).config,
                                     trick_registry.parse_names(trick_names))
    cfg = apply_overrides(apply_overrides(cfg, overrides), list(swept), flag="--sweep")
    return with_steps(trick_registry.configure(cfg), steps)


# --- pre-flight: everything that can be known before data is built or anything compiles -------


def check_data_dir(track: tracks.Track, data_dir: str | None) -> None:
    """The data dir is a folder, and writable unless it already holds the track's shards."""
    root = paths.data_dir(data_dir)
    fix = "pass --data-dir DIR or set SPEEDRUN_DATA_DIR to a writable folder"
    for p in (root, root / track.dataset):
        if p.exists() and not p.is_dir():
            raise SpeedrunError(f"data dir {p} is not a folder; {fix}")
    if all(paths.split_files(root / track.dataset, track.dataset, s) for s in corpus.SPLITS):
        return  # shards are there: a read-only data dir is fine unless they must be rebuilt
    paths.probe_writable(root, "data dir", fix)


def check_records_dir(records_dir: str, track: str, skippable: bool = True) -> None:
    """The records folder is writable, checked by process 0 (the one that writes records) for
    every process. ``skippable``: the command has --no-record (the fix names it)."""
    fix = "pass --records-dir DIR (a writable folder)" + (" or --no-record" if skippable else "")
    devices.decided_by_main(
        lambda: paths.probe_writable(Path(records_dir) / track, "records folder", fix))


def preflight(cfg: RunConfig, data_dir: str | None, records_dir: str | None = None,
              skippable: bool = True) -> tracks.Track:
    """Every check that needs no data and no compilation: settings in range, the records folder
    writable, the data dir usable. Runs before anything slow, in every process of a
    multi-process run alike; returns the run's track. ``records_dir``: where records will be
    written (None: none will be); ``skippable``: whether the command has --no-record."""
    config_module.validate(cfg, trick_registry.setting_problems(cfg))
    track = tracks.get(cfg.track)
    if cfg.model.vocab_size < track.rules.vocab:  # else its tokens would read as corrupt data
        raise SpeedrunError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the "
                            f"{track.name} track's {track.rules.tokenizer} vocabulary "
                            f"({track.rules.vocab}): a model may pad the vocabulary, never cut "
                            f"it (track rule 'vocabulary'); raise it with --set "
                            f"model.vocab_size={track.rules.vocab} or more")
    devices.check_batch(cfg.train.batch_size)
    if records_dir is not None:
        check_records_dir(records_dir, cfg.track, skippable)
    check_data_dir(track, data_dir)
    return track


# --- the data a run reads ----------------------------------------------------------------------


def data_for(track: tracks.Track, data_dir: str | None) -> tuple[list[Path], list[Path]]:
    """The track's train and val shards, built first where the track's corpus ships offline
    (by process 0 of a multi-process run; the others then find them built)."""
    try:
        folder = devices.main_first(
            lambda: corpus.ensure_dataset(track.dataset, paths.data_dir(data_dir)))
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
    """The fixed validation batches: the first ``train.val_tokens`` tokens, split evenly."""
    t, T = cfg.train, cfg.model.seq_len
    n_seqs = loader.val_token_count(val_files, t.val_tokens, T) // T
    try:
        rows = val_batch_rows(n_seqs, t.val_batch_size or t.batch_size, devices.device_count())
    except ValueError as e:
        raise SpeedrunError(f"{e}; change train.val_tokens or train.val_batch_size") from None
    return loader.val_batches(val_files, t.val_tokens, rows, T)


def val_batch_rows(n_seqs: int, want: int, n_devices: int) -> int:
    """Largest batch <= want that divides the validation sequences evenly and splits over devices,
    so every validation token is scored exactly once with no padding."""
    for rows in range(min(want, n_seqs), 0, -1):
        if n_seqs % rows == 0 and rows % n_devices == 0:
            return rows
    raise ValueError(f"cannot split {n_seqs} validation sequences over {n_devices} devices")


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


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything a configuration's seeds share: built once, before any compilation."""

    cfg: RunConfig
    track: tracks.Track
    hooks: object
    train_files: list
    val: list  # validation batches
    data: dict  # the record's data section (fingerprints)
    env: dict

    def with_steps(self, steps: int) -> "Plan":
        """The same plan for a run of another length (find-steps' probes)."""
        return dataclasses.replace(self, cfg=with_steps(self.cfg, steps))


def prepare(cfg: RunConfig, data_dir: str | None, command: str,
            records_dir: str | None = None, skippable: bool = True) -> Plan:
    """Pre-flight checks, then the data, hooks, validation set and fingerprints. ``records_dir``:
    where records will be written (checked writable now), None when none will be (every
    process passes the same: process 0 checks it for all); ``skippable``: as for preflight."""
    track = preflight(cfg, data_dir, records_dir, skippable)
    hooks = trick_registry.build_hooks(cfg)  # fails here, before data or compilation, if broken
    cfg, chosen = accumulate.resolve(cfg, hooks)  # microbatches: checked, or chosen now
    if chosen:
        print(chosen)
    train_files, val_files = data_for(track, data_dir)
    val = validation_set(cfg, val_files)
    check_token_range(cfg, val, val_files, train_files[0].parent, track.dataset)
    data = fingerprint.describe(train_files[0].parent, track.dataset, train_files, val)
    env = environment.environment(command=command)
    env["attention"] = attention_implementation(cfg)
    env["sources"] = provenance.sources(cfg.trick_names)  # what code and packages ran: verify
    env["packages"] = provenance.packages()  # and --from-record say when today's differ
    compile_cache.enable(paths.data_dir(data_dir))
    return Plan(cfg, track, hooks, train_files, val, data, env)


def attention_implementation(cfg: RunConfig) -> str:
    """Which attention kernel this run's baseline `attend` uses here (chosen once per run, from
    the backend and the compute dtype; see speedrun/core/attention.py)."""
    dtype = (cfg.tricks.get("bf16") or {}).get("dtype", "bfloat16") if "bf16" in cfg.tricks \
        else cfg.model.compute_dtype
    return attention.implementation_name(dtype=dtype, head_dim=cfg.model.head_dim)


def command_line() -> str:
    return shlex.join(["python", "-m", "speedrun", *sys.argv[1:]])


def label(cfg: RunConfig) -> str:
    return ",".join(cfg.trick_names) or "baseline"
