"""A finished run kept: its record, its models, and never lost.

``save`` writes a run's record (atomically, never over another). Whatever goes wrong there (a
full disk, a folder made read-only mid-run, Ctrl-C while it is written), ``write_fallback``
saves everything the record is built from (config, every seed's outcome and log, environment,
data fingerprints) as one JSON file and the error names it; ``recover`` (`python -m speedrun
recover FILE`) turns that file into the record later. ``save_together`` writes `submit`'s two
records together or neither. ``save_checkpoint`` writes a seed's final parameters for
`run --save`, after the clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from speedrun.config import RunConfig
from speedrun.data import paths
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.records.record import build_record, slugify, write_record
from speedrun.training.plan import Plan
from speedrun.training.train import RunResult

FALLBACK_VERSION = 2  # 2: each seed's wall-clock start and end, the sitting in the environment


# --- the record -------------------------------------------------------------------------------


def save(plan: Plan, results: list, records_dir: str, name: str | None,
         **optional) -> tuple[Path, dict]:
    """Write the record (``optional``: its optional fields). Whatever goes wrong here, the
    finished results are not lost: they go to a fallback file (``write_fallback``) that
    ``speedrun recover`` turns into the record later, and the error says where it is."""
    optional = {k: v for k, v in optional.items() if v is not None}
    try:
        rec = build_record(plan.cfg, results, plan.env, plan.data, name=name, **optional)
        return write_record(Path(records_dir), rec, results=results), rec
    except KeyboardInterrupt:
        saved = write_fallback(plan.cfg, results, plan.env, plan.data, name, records_dir,
                               optional)
        if saved is not None:
            print(f"interrupted while writing the record; the results are safe in {saved}: "
                  f"make the record with: python -m speedrun recover {shlex.quote(str(saved))}",
                  file=sys.stderr)
        raise
    except Exception as e:
        reason = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror else (
            str(e).splitlines()[0] if str(e) else type(e).__name__)
        saved = write_fallback(plan.cfg, results, plan.env, plan.data, name, records_dir,
                               optional)
        if saved is None:
            raise
        raise SpeedrunError(
            f"could not write the record to {records_dir} ({reason}); the results are safe in "
            f"{saved}: make the record with: python -m speedrun recover {shlex.quote(str(saved))}"
            f" --records-dir DIR") from e


def save_together(records_dir: str, plans: dict, results: dict,
                  names: dict) -> list[tuple[Path, dict]]:
    """Records of one sitting that belong together (`submit`'s re-run of the #1 and its
    candidate: neither places the other on the scale alone), all or nothing: [(folder,
    record), ...] in ``plans``' order, ``names`` by side."""
    written: list[tuple[Path, dict]] = []
    try:
        for side, plan in plans.items():
            rec = build_record(plan.cfg, results[side], plan.env, plan.data, name=names.get(side))
            written.append((write_record(Path(records_dir), rec, results=results[side]), rec))
        return written
    except BaseException as e:  # Ctrl-C included: never leave one record without the other
        for folder, _ in written:
            shutil.rmtree(folder, ignore_errors=True)
        saved = [write_fallback(p.cfg, results[s], p.env, p.data, names.get(s), records_dir)
                 for s, p in plans.items()]
        if isinstance(e, KeyboardInterrupt) or None in saved:
            raise
        files = " and ".join(shlex.quote(str(f)) for f in saved)
        raise SpeedrunError(f"could not write the records to {records_dir} ({e}); nothing was "
                            f"left there, and the results are safe in {files}: make the records "
                            f"with `python -m speedrun recover FILE` (each), or submit "
                            f"again") from e


# --- the results file, when the record cannot be written ----------------------------------------


def write_fallback(cfg: RunConfig, results: list[RunResult], env: dict, data: dict,
                   name: str | None, records_dir: Path | str | None = None,
                   optional: dict | None = None) -> Path | None:
    """Save everything a record is built from (config, every seed's outcome and log, the
    environment and data fingerprints, the optional fields) as one JSON file, in the first
    writable place of: the records folder, the current folder, the temp folder. ``recover``
    turns it into the record. Returns its path, or None if no place could be written."""
    body = {"speedrun_results": FALLBACK_VERSION, "config": cfg.to_dict(), "name": name,
            "environment": dict(env), "data": dict(data),
            "results": [dataclasses.asdict(r) for r in results], "optional": optional or {}}
    blob = json.dumps(body, indent=1, default=str)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = slugify(name or '-'.join(cfg.trick_names) or 'baseline')
    fname = f"speedrun-results-{cfg.track}-{slug}-{stamp}.json"
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
                           **(body.get("optional") or {}))
    except (KeyError, TypeError) as e:
        raise SpeedrunError(f"{path}: incomplete results file ({e})") from None
    try:
        return write_record(Path(records_dir), rec, results=results), rec
    except OSError as e:
        raise SpeedrunError(f"cannot write the record to {records_dir}: {e.strerror or e} "
                            f"({e.filename}); pass --records-dir DIR (a writable folder)") from None


# --- `--save`: each seed's trained model, written after the clock -------------------------------


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
    never fatal to the run (its record still gets written); the command exits non-zero at the
    end."""
    path = checkpoint_path(plan.cfg, seed, save_dir)
    try:
        checkpoint.save(path, params, plan.cfg, plan.data.get("tokenizer") or "gpt2", seed,
                        notes={"data": {k: plan.data.get(k) for k in ("dataset", "val_sha256",
                                                                       "train_sha256")},
                               "git_commit": plan.env.get("git_commit")})
    except OSError as e:
        return False, f"could NOT write the checkpoint {path} ({e.strerror or e})"
    return True, f"checkpoint written: {path}"
