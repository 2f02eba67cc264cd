"""Records: what a run claims, stored so that it can be audited and reproduced.

A record is a folder ``records/<track>/<YYYY-MM-DD>_<slug>/`` holding ``record.yaml``, one log
per seed (``seed<N>.log``) and ``curve.png`` (val loss vs train time, every seed).

A record is a *claim*, as in modded-nanogpt: "this configuration reaches the target in S steps
and T seconds on this hardware". Every seed trains exactly ``train.steps`` steps; the claim holds
when a one-sided t-test of the seeds' final val losses against the track's target gives
p < 0.01 over at least 3 distinct seeds (``stats.summarize``).

record.yaml, schema version 2 (every field required unless marked optional):

    schema_version  2
    track           track name;  target: the track's target val loss
    name, slug      short name; folder slug;  date: YYYY-MM-DD (UTC)
    description     "baseline" or the tricks joined with " + "
    hardware_class  e.g. "cpu-2core", "8xH100" (records are ranked within a track and class)
    tricks          {trick: {hyperparameter: resolved value}}, in application order
    config          the full RunConfig (speedrun.config.RunConfig.to_dict())
    config_hash     speedrun.config.config_hash(config): identical configs hash identically
    data            dataset, tokenizer, train_sha256, val_tokens (scored), val_sha256: measured
                    at run time, checked against the track's rules (speedrun.tracks.Rules);
                    val_bytes: UTF-8 bytes of the scored text (for bits per byte; optional)
    environment     devices, host, git commit + dirty flag, jax/jaxlib/optax versions, date, command
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

What the hashes guard against: accidents and hand edits (a changed number in record.yaml, or in a
log whose sha256 was not updated). What they cannot: a determined forger can recompute every hash
after editing, which is why ``verify`` also re-derives every run's curve, steps, time and final
loss from its log, checks the track's rules, and why the real check is re-running the record
(``run --from-record``).
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
from speedrun.config import RunConfig, config_hash, dict_hash
from speedrun.errors import SpeedrunError

SCHEMA_VERSION = 2
RECORD_FILE = "record.yaml"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one seed's fixed-length run measured (speedrun.train returns it)."""

    seed: int
    steps: int
    train_time_s: float  # of all ``steps`` steps, compilation and validation excluded
    tokens: int
    final_val_loss: float  # after the last step: the seed's result
    reached: bool  # final_val_loss <= target
    first_reached: tuple | None  # (step, train_time_s) of the first validation <= target
    compile_time_s: float
    machine_gflops: float | None  # machine-speed probe before the seed
    curve: tuple  # ((step, train_time_s, tokens, val_loss), ...) at each validation


@dataclasses.dataclass(frozen=True)
class RunResult(Outcome):
    log: str  # full text log of the seed


RUN_FIELDS = {"seed": int, "steps": int, "train_time_s": (int, float), "tokens": int,
              "final_val_loss": (int, float), "reached": bool, "first_reached": (list, type(None)),
              "compile_time_s": (int, float), "machine_gflops": (int, float, type(None)),
              "curve": list, "log": str, "log_sha256": str}
FIELDS = {"schema_version": int, "track": str, "target": (int, float), "name": str, "slug": str,
          "date": str, "description": str, "hardware_class": str, "tricks": dict,
          "config": dict, "config_hash": str, "data": dict, "environment": dict, "runs": list,
          "summary": dict, "content_hash": str}
DATA_FIELDS = {"dataset": str, "tokenizer": (str, type(None)), "train_sha256": str,
               "val_tokens": int, "val_sha256": str}


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "run"


def content_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "content_hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_dict(r: RunResult) -> dict:
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
    }


def summary(runs: list[dict], target: float, data: dict) -> dict:
    """stats.summarize plus the mean final loss in bits per byte, where the bytes are known."""
    from speedrun.data.bytelevel import bits_per_byte

    out = stats.summarize(runs, target)
    n_bytes = data.get("val_bytes")
    out["mean_val_bpb"] = round(bits_per_byte(out["mean_val_loss"], data["val_tokens"], n_bytes),
                                6) if n_bytes else None
    return out


def build_record(cfg: RunConfig, results: list[RunResult], env: dict, data: dict,
                 name: str | None = None, date: str | None = None) -> dict:
    runs = [run_dict(r) for r in results]
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
        "data": dict(data),
        "environment": dict(env),
        "runs": runs,
        "summary": summary(runs, cfg.train.target, data),
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


# --- fallback: a finished run's results when the record cannot be written ------------------------

FALLBACK_VERSION = 1


def write_fallback(cfg: RunConfig, results: list[RunResult], env: dict, data: dict,
                   name: str | None, records_dir: Path | str | None = None) -> Path | None:
    """Save everything a record is built from (config, every seed's outcome and log, the
    environment and data fingerprints) as one JSON file, in the first writable place of: the
    records folder, the current folder, the temp folder. ``recover`` turns it into the record.
    Returns its path, or None if no place could be written."""
    body = {"speedrun_results": FALLBACK_VERSION, "config": cfg.to_dict(), "name": name,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "environment": dict(env), "data": dict(data),
            "results": [dataclasses.asdict(r) for r in results]}
    blob = json.dumps(body, indent=1, default=str)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    fname = f"speedrun-results-{cfg.track}-{slugify(name or '-'.join(cfg.trick_names) or 'baseline')}-{stamp}.json"
    places = [Path(records_dir)] if records_dir else []
    places += [Path.cwd(), Path(tempfile.gettempdir())]
    for folder in places:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / fname
            with open(path, "x") as f:
                f.write(blob)
            return path.resolve()
        except OSError:
            continue
    return None


def recover(path: Path | str, records_dir: Path | str) -> tuple[Path, dict]:
    """Build and write the record from a fallback file of ``write_fallback``."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except OSError as e:
        raise SpeedrunError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise SpeedrunError(f"{path}: not a results file (invalid JSON: {e})") from None
    if not isinstance(body, dict) or body.get("speedrun_results") != FALLBACK_VERSION:
        raise SpeedrunError(f"{path}: not a results file written by a speedrun run")
    try:
        cfg = RunConfig.from_dict(body["config"])
        results = [RunResult(**r) for r in body["results"]]
        rec = build_record(cfg, results, body["environment"], body["data"], name=body["name"],
                           date=body["date"])
    except (KeyError, TypeError) as e:
        raise SpeedrunError(f"{path}: incomplete results file ({e})") from None
    try:
        return write_record(Path(records_dir), rec, results=results), rec
    except OSError as e:
        raise SpeedrunError(f"cannot write the record to {records_dir}: {e.strerror or e} "
                            f"({e.filename}); pass --records-dir DIR (a writable folder)") from None


def recover_main(args) -> int:
    """`python -m speedrun recover FILE`: the record of a run whose record could not be written."""
    from speedrun.run import claim_line

    where, rec = recover(args.path, args.records_dir)
    print(f"record written: {where}")
    print(claim_line(rec))
    problems = verify(where)
    for p in problems:
        print(f"     {p}")
    return 1 if problems else 0


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
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        if version == 1:
            return [f"{where}: schema_version 1 was made under the old stop-at-target rules and is "
                    f"not a claim; re-run it with `python -m speedrun run --from-record`"]
        return [f"{where}: unsupported schema_version {version!r} (this harness reads "
                f"{SCHEMA_VERSION})"]
    problems = _type_problems(record, FIELDS, where)
    if isinstance(record.get("data"), dict):
        problems += _type_problems(record["data"], DATA_FIELDS, f"{where}: data")
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


# --- logs as evidence ----------------------------------------------------------------------------

_VAL_LINE = re.compile(r"^step:(\d+)/(\d+) val_loss:(\S+) train_time:([0-9.]+)ms\b")
_MACHINE_LINE = re.compile(r"^machine: float32 matmul ([0-9.]+) GFLOP/s")
_SEED_LINE = re.compile(r"^# seed: (\d+)$")


def machine_line(gflops: float | None) -> str:
    return f"machine: float32 matmul {gflops} GFLOP/s (speed probe before the seed, untimed)"


def parse_log(text: str) -> dict:
    """What a seed's log says: its seed, the machine probe and every validation
    (step, train_time_s, val_loss), at the precision the record stores."""
    out: dict[str, Any] = {"seed": None, "machine_gflops": None, "steps_total": None, "vals": []}
    for line in text.splitlines():
        if m := _SEED_LINE.match(line):
            out["seed"] = int(m.group(1))
        elif m := _MACHINE_LINE.match(line):
            out["machine_gflops"] = float(m.group(1))
        elif m := _VAL_LINE.match(line):
            out["steps_total"] = int(m.group(2))
            out["vals"].append((int(m.group(1)), float(m.group(4)) / 1e3, float(m.group(3))))
    return out


def _log_problems(run: dict, text: str, seen: list[int], where: str) -> list[str]:
    """Re-derive the run's numbers from its log; every disagreement is a problem."""
    log = parse_log(text)
    if log["seed"] != run["seed"]:
        return [f"{where}: the log is of seed {log['seed']}, the record says {run['seed']}"]
    if not log["vals"]:
        return [f"{where}: the log has no validation lines"]
    if any(s >= len(seen) for s, _, _ in log["vals"]):
        return [f"{where}: the log has steps beyond the config's train.steps"]
    curve = [(s, t, seen[s], v) for s, t, v in log["vals"]]
    rec_curve = run["curve"]
    if len(curve) != len(rec_curve) or any(
            a[0] != b[0] or a[2] != b[2] or abs(a[1] - b[1]) > 1.5e-4 or abs(a[3] - b[3]) > 1.5e-6
            for a, b in zip(curve, rec_curve)):
        return [f"{where}: the curve disagrees with its log"]
    # The curve equals the log, and _run_problems checks the run's final values against the
    # curve's last point: what remains is the log's own step total and machine probe.
    problems = []
    if log["steps_total"] != run["steps"]:
        problems.append(f"{where}: steps disagree with the log ({log['steps_total']})")
    if not _close(log["machine_gflops"], run["machine_gflops"], 1e-3):
        problems.append(f"{where}: machine_gflops disagrees with the log")
    return problems


def _run_problems(run: dict, folder: Path, cfg: RunConfig, target: float, where: str) -> list[str]:
    from speedrun.train import first_crossing

    problems = []
    curve = run["curve"]
    if not curve or any(not isinstance(p, list) or len(p) != 4 for p in curve):
        return [f"{where}: curve must be [[step, time, tokens, loss], ...]"]
    for col, label in ((0, "steps"), (1, "times"), (2, "tokens")):
        if any(b[col] < a[col] for a, b in zip(curve, curve[1:])):
            problems.append(f"{where}: curve {label} are not monotone")
    last = curve[-1]
    if not _close(last[3], run["final_val_loss"]) or last[0] != run["steps"] \
            or not _close(last[1], run["train_time_s"]) or last[2] != run["tokens"]:
        problems.append(f"{where}: final values disagree with the last curve point")
    if run["steps"] != cfg.train.steps:
        problems.append(f"{where}: ran {run['steps']} steps, the config's train.steps is "
                        f"{cfg.train.steps} (a run is fixed-length)")
    if run["reached"] != (float(run["final_val_loss"]) <= target):
        problems.append(f"{where}: reached flag disagrees with final loss vs target")
    crossing = first_crossing(curve, target)
    if (None if crossing is None else [crossing[0], crossing[1]]) != run["first_reached"]:
        problems.append(f"{where}: first_reached disagrees with the curve")
    log_file = folder / run["log"]
    if not log_file.exists():
        return problems + [f"{where}: log file {run['log']} is missing"]
    text = log_file.read_text()
    if sha256_text(text) != run["log_sha256"]:
        return problems + [f"{where}: {run['log']} does not match its log_sha256 (edited log)"]
    return problems + _log_problems(run, text, _tokens_seen(cfg), where)


def _tokens_seen(cfg: RunConfig) -> list[int]:
    """Train tokens before each step (a batch-size schedule makes them uneven)."""
    import tricks
    from speedrun.train import tokens_seen

    try:
        hooks = tricks.build_hooks(cfg)
    except Exception:  # noqa: BLE001 - unknown tricks are reported by the trick checks
        from speedrun.hooks import baseline_hooks

        hooks = baseline_hooks()
    return tokens_seen(cfg, hooks)


def verify(path: Path | str) -> list[str]:
    """Every problem with a record: schema, hashes, track rules, tricks, consistency, logs.
    [] means OK (which says nothing about whether it is a claim: see summary.claim)."""
    import tricks as registry

    from speedrun import tracks

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
    except (SpeedrunError, TypeError) as e:
        return problems + [f"{f}: config: {e}"]
    # The canonical hash, or the hash of the config exactly as stored (records written while
    # a newer field was hashed at its default value)
    if rec["config_hash"] not in (config_hash(cfg), dict_hash(rec["config"])):
        problems.append(f"{f}: config_hash does not match config")
    if cfg.track != rec["track"] or not _close(cfg.train.target, rec["target"]):
        problems.append(f"{f}: track/target disagree with config")
    if {k: dict(v) for k, v in cfg.tricks.items()} != rec["tricks"]:
        problems.append(f"{f}: tricks disagree with config")
    try:  # never trust the stored order: the tricks must resolve as a run would resolve them
        cfg = registry.canonical(cfg)
    except SpeedrunError as e:
        problems.append(f"{f}: tricks: {e}")
    try:
        track = tracks.get(rec["track"])
    except SpeedrunError as e:
        problems.append(f"{f}: {e}")
    else:
        problems += [f"{f}: {p}" for p in track.rules.problems(cfg, rec["data"])]
    seeds = [run["seed"] for run in rec["runs"]]
    if len(set(seeds)) != len(seeds):
        problems.append(f"{f}: duplicate seeds {sorted(seeds)}: each seed may appear once")
    target = float(rec["target"])
    for i, run in enumerate(rec["runs"]):
        problems += _run_problems(run, f.parent, cfg, target, f"{f}: runs[{i}] (seed {run['seed']})")
    expected = summary(rec["runs"], target, rec["data"])
    for key, value in expected.items():
        got = rec["summary"].get(key)
        if isinstance(value, (bool, type(None), list, str)) or isinstance(got, (bool, list, str)):
            same = got == value
        else:
            same = _close(got, value)
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
