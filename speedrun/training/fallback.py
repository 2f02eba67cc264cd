"""A finished run's results, when its record cannot be written: nothing is lost.

If writing the record fails (a full disk, a folder made read-only mid-run, Ctrl-C while it is
written), ``write_fallback`` saves everything the record is built from (config, every seed's
outcome and log, environment, data fingerprints) as one JSON file, and the error names it;
``python -m speedrun recover FILE`` turns it into the record later and verifies it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import tempfile
from pathlib import Path

from speedrun.config import RunConfig
from speedrun.errors import SpeedrunError
from speedrun.records.record import build_record, claim_line, slugify, write_record
from speedrun.records.verify import verify
from speedrun.training.train import RunResult

FALLBACK_VERSION = 1


def write_fallback(cfg: RunConfig, results: list[RunResult], env: dict, data: dict,
                   name: str | None, records_dir: Path | str | None = None,
                   optional: dict | None = None) -> Path | None:
    """Save everything a record is built from (config, every seed's outcome and log, the
    environment and data fingerprints, the optional fields) as one JSON file, in the first
    writable place of: the records folder, the current folder, the temp folder. ``recover``
    turns it into the record. Returns its path, or None if no place could be written."""
    body = {"speedrun_results": FALLBACK_VERSION, "config": cfg.to_dict(), "name": name,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "environment": dict(env), "data": dict(data),
            "results": [dataclasses.asdict(r) for r in results], "optional": optional or {}}
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
        if not results:
            raise SpeedrunError(f"{path}: holds no finished seed, so there is no record to make")
        rec = build_record(cfg, results, body["environment"], body["data"], name=body["name"],
                           date=body["date"], **(body.get("optional") or {}))
    except (KeyError, TypeError) as e:
        raise SpeedrunError(f"{path}: incomplete results file ({e})") from None
    try:
        return write_record(Path(records_dir), rec, results=results), rec
    except OSError as e:
        raise SpeedrunError(f"cannot write the record to {records_dir}: {e.strerror or e} "
                            f"({e.filename}); pass --records-dir DIR (a writable folder)") from None


def recover_main(args) -> int:
    """`python -m speedrun recover FILE`: the record of a run whose record could not be written."""
    where, rec = recover(args.path, args.records_dir)
    print(f"record written: {where}")
    print(claim_line(rec))
    problems = verify(where)
    for p in problems:
        print(f"     {p}")
    return 1 if problems else 0


