"""Records: what a run claims, stored so that it can be audited and reproduced.

A record is a folder ``records/<track>/<YYYY-MM-DD>_<slug>/`` holding ``record.yaml``, one log
per seed (``seed<N>.log``) and ``curve.png`` (val loss vs train time, every seed).

A record is a *claim*, as in modded-nanogpt: "this configuration reaches the target in S steps
and T seconds on this hardware". Every seed trains exactly ``train.steps`` steps; the claim holds
when a one-sided t-test of the seeds' final val losses against the track's target gives
p < 0.01 over at least 3 distinct seeds (``stats.summarize``).

record.yaml, schema version 3 (every field required unless marked optional):

    schema_version  3
    track           track name;  target: the track's target val loss
    name, slug      short name; folder slug;  date: YYYY-MM-DD (UTC), the first seed's start
    description     "baseline" or the tricks joined with " + " in their application order
    hardware_class  e.g. "cpu-2core", "8xH100" (records are ranked within a track and class),
                    derived from the device facts (hardware_class.py)
    sitting         id (drawn when the command started, shared by every seed it timed) and
                    host_id (the machine's fingerprint): what the logs say (sittings.py)
    tricks          {trick: {hyperparameter: resolved value}}, in application order
    config          the full RunConfig (speedrun.config.RunConfig.to_dict())
    config_hash     speedrun.config.config_hash(config): identical configs hash identically
    data            dataset, tokenizer, train_sha256, val_tokens (scored), val_sha256: measured
                    at run time, checked against the track's rules (speedrun.tracks.Rules);
                    val_bytes: UTF-8 bytes of the scored text (for bits per byte; optional)
    environment     devices, host and host_id, git commit + dirty flag, jax/jaxlib/optax
                    versions, date (the first seed's start), command
    runs            one per seed: seed, steps (= train.steps), train_time_s, tokens,
                    final_val_loss (after the last step), reached (final <= target),
                    first_reached ([step, time] of the first validation at or below the target,
                    or null; information only), compile_time_s, machine_gflops (the speed probe
                    taken before the seed), curve [[step, train_time_s, tokens, val_loss], ...],
                    log (file name), log_sha256
    summary         stats.summarize(runs, target): seeds, mean/std of time, loss, ..., p_value,
                    claim, reasons (why it is not a claim; empty for a claim), and
                    mean_val_bpb (bits per byte of the mean final loss; null without val_bytes)
    content_hash    sha256 of the canonical JSON of every other field (the logs' sha256 included)

    optional:
    history         lines saying how a committed record was changed after it was written
                    (e.g. the sittings a schema migration derived)
    untimed         why the seeds' train times are not each one seed's uninterrupted wall clock
                    (e.g. "resumed from step 400", seeds trained side by side): the record is listed, never
                    ranked, and its times feed no estimate
    hellaswag       information, never a rule: on the tracks that report it, each seed's
                    HellaSwag accuracy after the final validation (untimed):
                    examples, sha256 (of the examples file), seeds: [{seed, acc_norm,
                    acc_norm_se, acc, acc_se, truncated, examples}]
                    (speedrun/inference/hellaswag_score.py)
    untimed         why the train times are not one seed's uninterrupted, one-at-a-time wall
                    clock (e.g. "4 seeds trained side by side in one program"): the
                    leaderboard lists the record, never ranks it

The environment also stores ``sources`` (the sha256 of the code that ran) and ``packages``
(every installed distribution's version), so that ``verify`` and ``run --from-record`` can say
when today's differ (provenance.py).

What the hashes guard against: accidents and hand edits (a changed number in record.yaml, or in a
log whose sha256 was not updated). What they cannot: a determined forger can recompute every hash
after editing, which is why ``verify`` (verify.py) also re-derives every run's curve, steps, time and final
loss from its log, checks the track's rules, and why the real check is re-running the record
(``run --from-record``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from speedrun.config import RunConfig, config_hash
from speedrun.errors import SpeedrunError
from speedrun.data.bytelevel import bits_per_byte
from speedrun.records import stats

SCHEMA_VERSION = 3
LEGACY_SCHEMA = 2  # before sittings were logged: accepted only as committed (legacy.py)
RECORD_FILE = "record.yaml"


RUN_FIELDS = {"seed": int, "steps": int, "train_time_s": (int, float), "tokens": int,
              "final_val_loss": (int, float), "reached": bool, "first_reached": (list, type(None)),
              "compile_time_s": (int, float), "machine_gflops": (int, float, type(None)),
              "curve": list, "log": str, "log_sha256": str, "started": str, "ended": str}
LEGACY_RUN_FIELDS = {k: v for k, v in RUN_FIELDS.items() if k not in ("started", "ended")}
FIELDS = {"schema_version": int, "track": str, "target": (int, float), "name": str, "slug": str,
          "date": str, "description": str, "hardware_class": str, "sitting": dict,
          "tricks": dict, "config": dict, "config_hash": str, "data": dict, "environment": dict,
          "runs": list, "summary": dict, "content_hash": str}
SITTING_FIELDS = {"id": str, "host_id": str}
OPTIONAL_FIELDS = {"history": list, "hellaswag": dict, "untimed": str}
# What schema-2 records may also hold: their same-sitting links, from which the migration
# derived their sittings (read as history, never for ranking).
LEGACY_FIELDS = {"rerun_of": str, "reference": dict}
DATA_FIELDS = {"dataset": str, "tokenizer": (str, type(None)), "train_sha256": str,
               "val_tokens": int, "val_sha256": str}


SLUG_CHARS = 60


def slugify(text: str, limit: int | None = SLUG_CHARS) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "run"


def content_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "content_hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_dict(r) -> dict:
    """One seed's entry in ``runs``, from a finished seed (speedrun.training.train.RunResult:
    the outcome's fields and its log), rounded as the log shows them."""
    return {
        "seed": int(r.seed), "steps": int(r.steps),
        "train_time_s": round(float(r.train_time_s), 4), "tokens": int(r.tokens),
        "final_val_loss": round(float(r.final_val_loss), 6), "reached": bool(r.reached),
        "first_reached": None if r.first_reached is None
        else [int(r.first_reached[0]), round(float(r.first_reached[1]), 4)],
        "compile_time_s": round(float(r.compile_time_s), 3),
        "machine_gflops": None if r.machine_gflops is None else round(float(r.machine_gflops), 1),
        "curve": [[int(s), round(float(t), 4), int(n), round(float(v), 6)] for s, t, n, v in r.curve],
        "log": f"seed{r.seed}.log",
        "log_sha256": sha256_text(r.log),
        "started": r.started,
        "ended": r.ended,
    }


def summary(runs: list[dict], target: float, data: dict) -> dict:
    """stats.summarize plus the mean final loss in bits per byte, where the bytes are known.
    A post-training record's data says ``metric: heldout_error``: its claim is tested on the
    held-out examples' accuracy (stats.binomial_greater)."""
    heldout = data["val_tokens"] if data.get("metric") == "heldout_error" else None
    out = stats.summarize(runs, target, heldout)
    n_bytes = data.get("val_bytes")
    out["mean_val_bpb"] = round(bits_per_byte(out["mean_val_loss"], data["val_tokens"], n_bytes),
                                6) if n_bytes else None
    return out


def description(cfg: RunConfig) -> str:
    """What the leaderboard shows of a configuration's tricks: derived, never typed."""
    return " + ".join(cfg.trick_names) or "baseline"


def build_record(cfg: RunConfig, results: list, env: dict, data: dict,
                 name: str | None = None, **optional) -> dict:
    """The record of a configuration's finished seeds (each with its wall-clock ``started``
    and ``ended``), timed in the sitting ``env["sitting"]`` on ``env["host_id"]``; its date is
    the first seed's start. ``optional``: any of OPTIONAL_FIELDS."""
    runs = [run_dict(r) for r in results]
    first = min(run["started"] for run in runs)  # one ISO format, UTC: sorts as time does
    sitting = env.get("sitting")
    env = {**{k: v for k, v in env.items() if k != "sitting"}, "date": first}
    name = name or "-".join(cfg.trick_names) or "baseline"
    record = {
        "schema_version": SCHEMA_VERSION,
        "track": cfg.track,
        "target": cfg.train.target,
        "name": name,
        "slug": slugify(name),
        "date": first[:10],
        "description": description(cfg),
        "hardware_class": env["hardware_class"],
        "sitting": {"id": sitting, "host_id": env.get("host_id")},
        "tricks": {k: dict(v) for k, v in cfg.tricks.items()},
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "data": dict(data),
        "environment": env,
        "runs": runs,
        "summary": summary(runs, cfg.train.target, data),
        **{k: v for k, v in optional.items() if v is not None},
    }
    return sealed(record)


def sealed(record: dict) -> dict:
    """The record as load_record will read it back (a YAML round trip), under its content hash."""
    body = {k: v for k, v in record.items() if k != "content_hash"}
    record = yaml.safe_load(yaml.safe_dump(body, sort_keys=False))
    record["content_hash"] = content_hash(record)
    return record


def write_record(records_dir: Path | str, record: dict, logs: dict[str, str] | None = None,
                 results: list | None = None) -> Path:
    """Write a new record folder atomically (built in a temp folder, then renamed into place).
    Never overwrites: an existing folder of the same name gets a -2, -3... sibling instead."""
    from speedrun.records import plots  # matplotlib loads only when a record is written

    parent = Path(records_dir) / record["track"]
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{record['date']}_{record['slug']}"
    logs = dict(logs or {})
    for r in results or []:
        logs.setdefault(f"seed{r.seed}.log", r.log)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-record-", dir=parent))
    try:
        (tmp / RECORD_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
        for fname, text in logs.items():
            (tmp / fname).write_text(text)
        plots.record_curve(record, tmp / "curve.png")
        # mkdtemp (and atomic writes) make private files; a record is meant to be shared and
        # committed like the others (0755 folder, 0644 files, less the umask).
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
        for i in range(1, 1000):
            target = parent / (base if i == 1 else f"{base}-{i}")
            try:
                os.rename(tmp, target)  # atomic; fails if target exists and is non-empty
                return target
            except OSError:
                if not target.exists():
                    raise
        raise SpeedrunError(f"too many records named {base} in {parent}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def record_id(folder: Path | str) -> str:
    """A record's name relative to the records folder: '<track>/<folder name>'."""
    folder = Path(folder)
    return f"{folder.parent.name}/{folder.name}"


def record_file(path: Path | str) -> Path:
    path = Path(path)
    return path / RECORD_FILE if path.is_dir() else path


def load_record(path: Path | str) -> dict:
    f = record_file(path)
    if not f.exists():
        raise SpeedrunError(f"{f}: no such record")
    try:
        data = yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        raise SpeedrunError(f"{f}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise SpeedrunError(f"{f}: a record must be a mapping")
    return data


def first_crossing(curve, target: float):
    """(step, train time) of the first validation at or below the target, or None. Information
    only: the claim is about the final loss of a fixed-length run."""
    for step, t, *_, v in curve:
        if v <= target:
            return (step, t)
    return None


def claim_line(rec: dict) -> str:
    """One line saying what a record claims, and whether it is a claim (and if not, why)."""
    s = rec["summary"]
    p = s.get("p_value")
    verdict = "a claim" if s["claim"] else "NOT a claim (" + "; ".join(s["reasons"]) + ")"
    untimed = f"; untimed ({rec['untimed']}): not a timed claim" if rec.get("untimed") else ""
    return (f"{rec['description']}: {s['mean_steps']:.0f} steps, {s['mean_time_s']:.1f} ± "
            f"{s['std_time_s']:.1f}s, final val loss {s['mean_val_loss']:.4f} ± "
            f"{s['std_val_loss']:.4f} over {s['seeds']} seed(s), "
            f"p {'n/a' if p is None else f'{p:.2g}'}: {verdict}{untimed}")
