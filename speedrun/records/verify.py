"""Every check a record must pass from its files alone (`python -m speedrun verify`).

The schema (record.py's), the content hash, the config hash, the track's rules, that the tricks
resolve (in their one canonical order, whatever the file's order), distinct seeds, that every
seed ran exactly ``train.steps`` steps, and that each run's curve, steps, train time, final loss,
first crossing, machine probe, sitting and wall-clock times are what its log says (the log must
also match its sha256). What a record states about itself is derived, not typed: its
description from its tricks, its hardware class from the device facts, its date, host and
command from its logs. ``verify_all`` adds the checks across records (``sittings``). Nothing here
runs a model: the checks that do (each seed's step-0 loss, a replay) live above training.
"""

from __future__ import annotations

import math
from pathlib import Path

import tricks as registry
from speedrun import tracks
from speedrun.config import RunConfig, config_hash
from speedrun.config import problems as config_problems
from speedrun.core.batch_sizes import tokens_seen
from speedrun.core.model import baseline_hooks
from speedrun.errors import SpeedrunError
from speedrun.records import hardware_class, legacy, provenance, sittings
from speedrun.records.logs import HEADER_REQUIRED, parse_header, parse_log
from speedrun.records.record import (DATA_FIELDS, FIELDS, LEGACY_FIELDS, LEGACY_RUN_FIELDS,
                                     LEGACY_SCHEMA, OPTIONAL_FIELDS, RECORD_FILE, RUN_FIELDS,
                                     SCHEMA_VERSION, SITTING_FIELDS, content_hash, description,
                                     first_crossing, load_record, record_file, record_id,
                                     sha256_text, summary)


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
    old = version == LEGACY_SCHEMA
    if old and not legacy.accepted(record):
        return [f"{where}: schema_version 2 predates logged sittings and is accepted only for "
                f"the records committed before them (speedrun/records/legacy.txt), exactly as "
                f"committed; re-run it with `python -m speedrun run --from-record`"]
    if version == 1:
        return [f"{where}: schema_version 1 was made under the old stop-at-target rules and is "
                f"not a claim; re-run it with `python -m speedrun run --from-record`"]
    if version not in (SCHEMA_VERSION, LEGACY_SCHEMA):
        return [f"{where}: unsupported schema_version {version!r} (this harness reads "
                f"{SCHEMA_VERSION})"]
    problems = _type_problems(record, FIELDS, where)
    if isinstance(record.get("data"), dict):
        problems += _type_problems(record["data"], DATA_FIELDS, f"{where}: data")
    if isinstance(record.get("sitting"), dict) and not old:
        problems += _type_problems(record["sitting"], SITTING_FIELDS, f"{where}: sitting")
    for i, run in enumerate(record.get("runs") or []):
        if not isinstance(run, dict):
            problems.append(f"{where}: runs[{i}] must be a mapping")
            continue
        problems += _type_problems(run, LEGACY_RUN_FIELDS if old else RUN_FIELDS,
                                   f"{where}: runs[{i}]")
    optional = {**OPTIONAL_FIELDS, **(LEGACY_FIELDS if old else {})}
    problems += [f"{where}: field '{k}' has the wrong type ({type(record[k]).__name__})"
                 for k, typ in optional.items() if k in record and not isinstance(record[k], typ)]
    extra = sorted(set(record) - set(FIELDS) - set(optional))
    if extra:
        problems.append(f"{where}: unknown field(s) {', '.join(extra)}")
    if isinstance(record.get("runs"), list) and not record["runs"]:
        problems.append(f"{where}: field 'runs' is empty")
    return problems


def _close(a, b, tol=1e-6) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)




def first_difference(a, b, path: str = "") -> str | None:
    """The dotted path of the first field where two nested mappings differ (None if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}{key}"
            found = first_difference(a[key], b[key], f"{path}{key}.")
            if found is not None:
                return found
        return None
    if isinstance(a, float) or isinstance(b, float):
        return None if _close(a, b, 1e-12) else path.rstrip(".")
    return None if a == b else path.rstrip(".")


def _as_read(config: dict) -> dict:
    try:
        return RunConfig.from_dict(config).to_dict()
    except (SpeedrunError, KeyError, TypeError):
        return config


def _get(d: dict, dotted: str):
    for key in dotted.split("."):
        d = d.get(key) if isinstance(d, dict) else None
    return d


def header_problems(header: dict | None, rec: dict, cfg: RunConfig, seed: int,
                    where: str) -> list[str]:
    """The log's header must state what the record says ran: the seed, the resolved config
    with its tricks in their one application order, and every environment field it carries
    (hardware class, devices, library versions, the code's sha256, the package list)."""
    if header is None:
        return [f"{where}: the log has no header stating what ran"]
    missing = [k for k in HEADER_REQUIRED if _get(header, k) is None]
    if missing:
        return [f"{where}: the log's header lacks {', '.join(missing)}"]
    if header["seed"] != seed:
        return [f"{where}: the log's header is of seed {header['seed']}, the record says {seed}"]
    if header.get("command") != rec["environment"].get("command"):
        return [f"{where}: the log's header says the command was {header.get('command')!r}, the "
                f"record says {rec['environment'].get('command')!r}"]
    stated = header["config"]
    if not isinstance(stated, dict):
        return [f"{where}: the log's header has no config mapping"]
    # as this version reads both (a field added later takes the value older runs ran with)
    stated_full, recorded = _as_read(stated), _as_read(rec["config"])
    diff = first_difference(stated_full, recorded)
    if diff is not None:
        return [f"{where}: the log's header says config.{diff} is {_get(stated_full, diff)!r}, "
                f"the record says {_get(recorded, diff)!r}"]
    if list(stated.get("tricks") or {}) != list(cfg.tricks):
        return [f"{where}: the log's header lists the tricks as {list(stated.get('tricks') or {})},"
                f" not in their application order {list(cfg.tricks)}"]
    env, record_env = header.get("environment") or {}, rec["environment"]
    for key, value in env.items():
        if key == "packages_sha256":
            theirs = record_env.get("packages")
            if not isinstance(theirs, dict) or provenance.digest(theirs) != value:
                return [f"{where}: the log's header has another package list than the record"]
        elif first_difference({key: value}, {key: record_env.get(key)}) is not None:
            return [f"{where}: the log's header says environment.{key} is {value!r}, the record "
                    f"says {record_env.get(key)!r}"]
    if env.get("hardware_class") != rec["hardware_class"]:
        return [f"{where}: the log's header says hardware_class {env.get('hardware_class')!r}, "
                f"the record says {rec['hardware_class']!r}"]
    return []


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


def _run_problems(run: dict, folder: Path, cfg: RunConfig, rec: dict, where: str) -> list[str]:
    target = float(rec["target"])
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
    header = parse_header(text)
    problems += header_problems(header, rec, cfg, run["seed"], where)
    if rec["schema_version"] != LEGACY_SCHEMA:
        problems += sitting_problems(header, parse_log(text), run, rec, where)
    return problems + _log_problems(run, text, _tokens_seen(cfg), where)


def sitting_problems(header: dict | None, log: dict, run: dict, rec: dict,
                     where: str) -> list[str]:
    """The log vouches for the seed's sitting and wall-clock times: its header names the
    record's sitting and the seed's start, its last lines the seed's end."""
    if header is None:
        return []  # reported by header_problems
    sid = (rec.get("sitting") or {}).get("id")
    # A resumed seed's log began in an earlier sitting (its record, untimed, names the last).
    if header.get("sitting") != sid and not rec.get("untimed"):
        return [f"{where}: the log's header says sitting {header.get('sitting')!r}, the record "
                f"says {sid!r}"]
    out = []
    for key, logged in (("started", header.get("started")), ("ended", log["ended"])):
        if logged != run[key] or sittings.parse_time(logged) is None:
            out.append(f"{where}: the log says the seed {key} at {logged!r}, the record says "
                       f"{run[key]!r}")
    if not out and run["ended"] < run["started"]:
        out.append(f"{where}: the seed ended before it started")
    return out


def stated_problems(rec: dict, cfg: RunConfig) -> list[str]:
    """What a record says about itself must follow from its facts: the description from the
    tricks, the hardware class from the device facts, the date from the first seed's start and
    the host from the sitting (the logs vouch for those, run by run)."""
    out = []
    if rec["description"] != description(cfg):
        out.append(f"description {rec['description']!r} is not the tricks' "
                   f"{description(cfg)!r} (it is derived, never typed)")
    env = rec["environment"]
    derived = hardware_class.of_environment(env)
    if derived != rec["hardware_class"]:
        facts = ", ".join(f"{k} {env.get(k)!r}" for k in hardware_class.FACTS)
        out.append(f"hardware_class {rec['hardware_class']!r} is not what the device facts give "
                   f"({facts}: {derived!r})")
    if rec["schema_version"] == LEGACY_SCHEMA:
        return out
    first = min((str(r["started"]) for r in rec["runs"]), default=None)
    if env.get("date") != first or rec["date"] != str(first)[:10]:
        out.append(f"date {rec['date']!r} (environment.date {env.get('date')!r}) is not the "
                   f"first seed's start {first!r}")
    if rec["sitting"]["host_id"] != env.get("host_id"):
        out.append(f"sitting.host_id {rec['sitting']['host_id']!r} is not "
                   f"environment.host_id {env.get('host_id')!r}")
    return out


def repeated_runs(runs: list[dict], folder: Path) -> list[str]:
    """Two seeds with the same validation curve and the same logged train losses are one run
    counted twice. (The train losses matter where validation is coarse: a post-training
    record's held-out errors can coincide across seeds; their train losses never do.)"""
    out, seen = [], {}
    for run in runs:
        curve = tuple(round(float(p[3]), 6) for p in run["curve"]
                      if isinstance(p, list) and len(p) == 4)
        log = folder / str(run.get("log"))
        train = tuple(parse_log(log.read_text())["train"]) if log.is_file() else ()
        key = (curve, train)
        if key in seen and len(curve) > 1:
            out.append(f"seeds {seen[key]} and {run['seed']} have identical curves: one run "
                       f"counted twice")
        seen.setdefault(key, run["seed"])
    return out


def hellaswag_problems(rec: dict) -> list[str]:
    """The optional ``hellaswag`` field is information, but it must speak of the record's own
    seeds, with accuracies that are fractions."""
    hs = rec.get("hellaswag")
    if hs is None:
        return []
    seeds = {run["seed"] for run in rec["runs"]}
    entries = hs.get("seeds")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return ["hellaswag.seeds must be a list of mappings"]
    out = []
    for e in entries:
        if e.get("seed") not in seeds:
            out.append(f"hellaswag names seed {e.get('seed')!r}, which is not one of the runs")
        for key in ("acc", "acc_norm"):
            if not isinstance(e.get(key), (int, float)) or not 0 <= e[key] <= 1:
                out.append(f"hellaswag seed {e.get('seed')!r}: {key} must be in [0, 1], "
                           f"got {e.get(key)!r}")
    return out


def _tokens_seen(cfg: RunConfig) -> list[int]:
    """Train tokens before each step (a batch-size schedule makes them uneven)."""
    try:
        hooks = registry.build_hooks(cfg)
    except Exception:  # noqa: BLE001 - unknown tricks are reported by the trick checks
        hooks = baseline_hooks()
    return tokens_seen(cfg, hooks)


def verify(path: Path | str) -> list[str]:
    """Every problem with a record: schema, hashes, track rules, tricks, consistency, logs.
    [] means OK (which says nothing about whether it is a claim: see summary.claim)."""
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
    if rec["config_hash"] != config_hash(cfg):
        problems.append(f"{f}: config_hash does not match config (it is "
                        f"speedrun.config.config_hash of the config: {config_hash(cfg)})")
    if cfg.track != rec["track"] or not _close(cfg.train.target, rec["target"]):
        problems.append(f"{f}: track/target disagree with config")
    if {k: dict(v) for k, v in cfg.tricks.items()} != rec["tricks"]:
        problems.append(f"{f}: tricks disagree with config")
    try:  # never trust the stored order: the tricks must resolve as a run would resolve them
        cfg = registry.canonical(cfg)
    except SpeedrunError as e:
        problems.append(f"{f}: tricks: {e}")
    problems += [f"{f}: {p}" for p in stated_problems(rec, cfg)]
    try:
        track = tracks.get(rec["track"])
    except SpeedrunError as e:
        problems.append(f"{f}: {e}")
    else:
        problems += [f"{f}: {p}" for p in track.rules.problems(cfg, rec["data"])]
    seeds = [run["seed"] for run in rec["runs"]]
    if len(set(seeds)) != len(seeds):
        problems.append(f"{f}: duplicate seeds {sorted(seeds)}: each seed may appear once")
    problems += [f"{f}: {p}" for p in config_problems(cfg) + registry.setting_problems(cfg)]
    target = float(rec["target"])
    for i, run in enumerate(rec["runs"]):
        problems += _run_problems(run, f.parent, cfg, rec, f"{f}: runs[{i}] (seed {run['seed']})")
    problems += [f"{f}: {p}" for p in repeated_runs(rec["runs"], f.parent)]
    problems += [f"{f}: {p}" for p in hellaswag_problems(rec)]
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


def verify_all(folders: list[Path], check=None) -> dict[Path, list[str]]:
    """{folder: problems} for every record, alone (``verify``, plus ``check(folder, rec)``'s
    problems where given: the checks that run a model) and across records: the records that
    share a sitting must have been one (``sittings.problems``)."""
    out, ok = {}, {}
    for folder in folders:
        problems = verify(folder)
        if not problems and check is not None:
            problems = list(check(folder, load_record(folder)))
        out[folder] = problems
        if not problems:
            ok[folder] = load_record(folder)
    ids = {record_id(folder): folder for folder in ok}
    for rid, found in sittings.problems({rid: ok[f] for rid, f in ids.items()}).items():
        out[ids[rid]] += [f"{record_file(ids[rid])}: {p}" for p in found]
    return out


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
