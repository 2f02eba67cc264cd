"""Records: what a run claims, stored so that it can be audited and reproduced.

A record is a folder ``records/<track>/<YYYY-MM-DD>_<slug>/`` holding ``record.yaml``, one log
per seed (``seed<N>.log``) and ``curve.png`` (val loss vs train time, every seed).

record.yaml, schema version 1 (every field required unless marked optional):

    schema_version  1
    track           track name;  target: the track's target val loss for this run
    name, slug      short name; folder slug;  date: YYYY-MM-DD (UTC)
    description     "baseline" or the tricks joined with " + "
    hardware_class  e.g. "cpu-2core", "8xH100" (records are ranked within a track and class)
    tricks          {trick: {hyperparameter: resolved value}}, in application order
    config          the full RunConfig (speedrun.config.RunConfig.to_dict())
    config_hash     speedrun.config.config_hash(config): identical configs hash identically
    environment     devices, host, git commit + dirty flag, jax/jaxlib/optax versions, date, command
    runs            one per seed: seed, status (reached | budget), reached, train_time_s (at the
                    target, or at the end), steps, tokens, final_val_loss, compile_time_s,
                    curve [[step, train_time_s, tokens, val_loss], ...] (every validation), log
    summary         seeds, reached, all_reached, mean_/std_ of time_s, steps, tokens, val_loss,
                    p_value (one-sided t-test of mean final val loss <= target; null for 1 seed),
                    claim (all reached and p < 0.01)
    content_hash    sha256 of the canonical JSON of every other field: an edited number shows
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from speedrun import stats
from speedrun.config import RunConfig, config_hash
from speedrun.errors import SpeedrunError

SCHEMA_VERSION = 1
RECORD_FILE = "record.yaml"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one seed's run measured (speedrun.train returns it)."""

    seed: int
    status: str  # reached | budget (diverged or interrupted runs never become records)
    reached: bool
    train_time_s: float
    steps: int
    tokens: int
    final_val_loss: float
    compile_time_s: float
    curve: tuple  # ((step, train_time_s, tokens, val_loss), ...) at each validation


@dataclasses.dataclass(frozen=True)
class RunResult(Outcome):
    log: str  # full text log of the seed


RUN_FIELDS = {"seed": int, "status": str, "reached": bool, "train_time_s": (int, float),
              "steps": int, "tokens": int, "final_val_loss": (int, float),
              "compile_time_s": (int, float), "curve": list, "log": str}
FIELDS = {"schema_version": int, "track": str, "target": (int, float), "name": str, "slug": str,
          "date": str, "description": str, "hardware_class": str, "tricks": dict,
          "config": dict, "config_hash": str, "environment": dict, "runs": list,
          "summary": dict, "content_hash": str}


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "run"


def content_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "content_hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _run_dict(r: RunResult) -> dict:
    return {
        "seed": int(r.seed), "status": r.status, "reached": bool(r.reached),
        "train_time_s": round(float(r.train_time_s), 4), "steps": int(r.steps),
        "tokens": int(r.tokens), "final_val_loss": round(float(r.final_val_loss), 6),
        "compile_time_s": round(float(r.compile_time_s), 3),
        "curve": [[int(s), round(float(t), 4), int(n), round(float(v), 6)] for s, t, n, v in r.curve],
        "log": f"seed{r.seed}.log",
    }


def build_record(cfg: RunConfig, results: list[RunResult], env: dict, name: str | None = None,
                 date: str | None = None) -> dict:
    runs = [_run_dict(r) for r in results]
    description = " + ".join(cfg.trick_names) or "baseline"
    name = name or "-".join(cfg.trick_names) or "baseline"
    record = {
        "schema_version": SCHEMA_VERSION,
        "track": cfg.track,
        "target": cfg.train.target,
        "name": name,
        "slug": slugify(name),
        "date": date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "description": description,
        "hardware_class": env["hardware_class"],
        "tricks": {k: dict(v) for k, v in cfg.tricks.items()},
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "environment": dict(env),
        "runs": runs,
        "summary": stats.summarize(runs, cfg.train.target),
    }
    # YAML round trip so the hash covers exactly what load_record will read back.
    record = yaml.safe_load(yaml.safe_dump(record, sort_keys=False))
    record["content_hash"] = content_hash(record)
    return record


def write_record(records_dir: Path | str, record: dict, logs: dict[str, str] | None = None,
                 results: list[RunResult] | None = None) -> Path:
    """Write a new record folder atomically (built in a temp folder, then renamed into place).
    Never overwrites: an existing folder of the same name gets a -2, -3... sibling instead."""
    from speedrun import plots

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


def _type_problems(obj: dict, fields: dict, where: str) -> list[str]:
    problems = []
    for key, typ in fields.items():
        if key not in obj:
            problems.append(f"{where}: missing field '{key}'")
        elif not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            problems.append(f"{where}: field '{key}' has the wrong type ({type(obj[key]).__name__})")
    return problems


def validate(record: dict, where: str) -> list[str]:
    """Schema problems, each naming the file and the field."""
    problems = _type_problems(record, FIELDS, where)
    if record.get("schema_version") not in (None, SCHEMA_VERSION):
        problems.append(f"{where}: unsupported schema_version {record['schema_version']!r}")
    for i, run in enumerate(record.get("runs") or []):
        if not isinstance(run, dict):
            problems.append(f"{where}: runs[{i}] must be a mapping")
            continue
        problems += _type_problems(run, RUN_FIELDS, f"{where}: runs[{i}]")
    if isinstance(record.get("runs"), list) and not record["runs"]:
        problems.append(f"{where}: field 'runs' is empty")
    return problems


def _close(a, b, tol=1e-6) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def verify(path: Path | str) -> list[str]:
    """Every problem with a record: schema, hash, consistency, tricks, logs. [] means OK."""
    f = record_file(path)
    try:
        rec = load_record(f)
    except SpeedrunError as e:
        return [str(e)]
    problems = validate(rec, str(f))
    if problems:
        return problems
    if rec["content_hash"] != content_hash(rec):
        problems.append(f"{f}: content hash mismatch: the record was edited after it was written")
    try:
        cfg = RunConfig.from_dict(rec["config"])
        if config_hash(cfg) != rec["config_hash"]:
            problems.append(f"{f}: config_hash does not match config")
        if cfg.track != rec["track"] or not _close(cfg.train.target, rec["target"]):
            problems.append(f"{f}: track/target disagree with config")
        if {k: dict(v) for k, v in cfg.tricks.items()} != rec["tricks"]:
            problems.append(f"{f}: tricks disagree with config")
    except (SpeedrunError, TypeError) as e:
        problems.append(f"{f}: config: {e}")
    import tricks as registry

    known = registry.available()
    for name in rec["tricks"]:
        if name not in known:
            problems.append(f"{f}: unknown trick {name!r}")
    target = float(rec["target"])
    for i, run in enumerate(rec["runs"]):
        where = f"{f}: runs[{i}] (seed {run['seed']})"
        curve = run["curve"]
        if not curve or any(len(p) != 4 for p in curve):
            problems.append(f"{where}: curve must be [[step, time, tokens, loss], ...]")
            continue
        for col, label in ((0, "steps"), (1, "times"), (2, "tokens")):
            if any(b[col] < a[col] for a, b in zip(curve, curve[1:])):
                problems.append(f"{where}: curve {label} are not monotone")
        last = curve[-1]
        if not _close(last[3], run["final_val_loss"]) or last[0] != run["steps"] \
                or not _close(last[1], run["train_time_s"]) or last[2] != run["tokens"]:
            problems.append(f"{where}: final values disagree with the last curve point")
        reached = float(run["final_val_loss"]) <= target
        if run["reached"] != reached or (run["status"] == "reached") != reached:
            problems.append(f"{where}: reached flag disagrees with final loss vs target")
        if not (f.parent / run["log"]).exists():
            problems.append(f"{where}: log file {run['log']} is missing")
    expected = stats.summarize(rec["runs"], target)
    for key, value in expected.items():
        got = rec["summary"].get(key)
        same = got == value if isinstance(value, (bool, type(None))) or isinstance(got, bool) \
            else _close(got, value)
        if not same:
            problems.append(f"{f}: summary.{key} is {got!r}, runs give {value!r}")
    return problems


def find_records(paths) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p.parent if p.name == RECORD_FILE else p)
        elif (p / RECORD_FILE).exists():
            found.append(p)
        elif p.is_dir():
            found += sorted(q.parent for q in p.rglob(RECORD_FILE) if ".tmp-record-" not in str(q))
    return found


def main(args) -> int:
    """`python -m speedrun verify PATH...`."""
    found = find_records(args.paths)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise SpeedrunError(f"no such path: {', '.join(missing)}")
    if not found:
        print("no records found under " + ", ".join(args.paths))
        return 0
    failed = 0
    for folder in found:
        problems = verify(folder)
        if problems:
            failed += 1
            print(f"FAIL {folder}")
            for p in problems:
                print(f"     {p}")
        else:
            print(f"OK   {folder}")
    print(f"{len(found) - failed} ok, {failed} failed")
    return 1 if failed else 0
