"""`python -m speedrun submit`: a claim made on any machine, timed against the track's #1 there.

Machines of one hardware class differ ~3x in speed, so a time means something only beside a
reference timed on the same machine in the same sitting. `submit` runs the candidate and a
re-run of a ranked record's exact configuration (the current #1 of the track on this hardware
class, or ``--against RECORD``) interleaved, A B A B, as `compare` does, then writes both
records, linked: the re-run says ``rerun_of`` the reference, the candidate names its
``reference`` with the time ratio and its 95% confidence interval. The leaderboard ranks the
candidate at that ratio times the reference's ranked time (speedrun/records/references.py).

Both records are written only after every seed has finished, and together: if the second cannot
be written, the first is removed again and both sides' results go to results files for
`recover`, so nothing half-written is left in the records folder.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pandas as pd

import tricks as trick_registry
from speedrun.config import RunConfig, config_hash
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.records import leaderboard, references
from speedrun.records.record import (build_record, claim_line, load_record, sealed,
                                     write_record)
from speedrun.training import fallback, hardware
from speedrun.training.compare import interleave, ratio_line
from speedrun.training.plan import (check_name, command_line, config_for, label, parse_seeds,
                                   preflight, prepare)


def reference_for(records_dir: Path, track: str, hardware_class: str,
                  against: str | None) -> tuple[str, dict, float]:
    """(id, record, ranked time) of the record to time against: ``against``, else the track's
    current #1 on this hardware class. Refuses one that is not a ranked claim of the track and
    class, naming why."""
    if against is not None:
        check_against(records_dir, track, hardware_class, against)
    df = leaderboard.load_all(records_dir)  # verifies every record: the ranking needs them all
    if against is None:
        entries = df[(df["track"] == track) & (df["hardware"] == hardware_class) & df["entry"]]
        if not len(entries):
            raise SpeedrunError(
                f"no ranked record of {track} on {hardware_class} in {records_dir} to time "
                f"against: make the first claim with `python -m speedrun run`, or name one with "
                f"--against RECORD")
        best = entries.sort_values(["ranked", "date", "folder"]).iloc[0]
        return best["id"], best["record"], float(best["ranked"])
    folder = against_folder(records_dir, against)
    rows = df[df["id"] == references.record_id(folder.resolve())] if len(df) else df
    if not len(rows):
        raise SpeedrunError(f"--against {against} is not under the records folder "
                            f"{records_dir}: a reference is ranked among its records")
    row = rows.iloc[0]
    if row["problem"]:
        raise SpeedrunError(f"--against {against} fails verify: {row['problem']}")
    if not row["claim"]:
        raise SpeedrunError(f"--against {against} is not a claim ({row['reasons']}): only a "
                            f"ranked claim can be a reference")
    if pd.isna(row["ranked"]):
        raise SpeedrunError(f"--against {against} is a claim but not ranked "
                            f"({row['standing'] or 'it is a re-run or a repeated configuration'}):"
                            f" time against a ranked entry")
    return row["id"], row["record"], float(row["ranked"])


def against_folder(records_dir: Path, against: str) -> Path:
    """``--against``: a record folder, as given or under the records folder."""
    return Path(against) if (Path(against) / "record.yaml").is_file() else \
        Path(records_dir) / against


def check_against(records_dir: Path, track: str, hardware_class: str, against: str) -> None:
    """What ``--against`` names, read from its record alone (before every record is verified
    for the ranking): a record, of this track and hardware class."""
    folder = against_folder(records_dir, against)
    if not (folder / "record.yaml").is_file():
        raise SpeedrunError(f"--against {against}: no such record in {records_dir} (give its "
                            f"folder, e.g. {Path(records_dir) / track / 'DATE_NAME'})")
    rec = load_record(folder)
    if rec.get("track") != track:
        raise SpeedrunError(f"--against {against} is on track {rec.get('track')}, the candidate "
                            f"on {track}: a reference must be on the same track")
    if rec.get("hardware_class") != hardware_class:
        raise SpeedrunError(f"--against {against} was made on {rec.get('hardware_class')}, this "
                            f"machine is {hardware_class}: a reference must be of the same "
                            f"hardware class")


def write_linked(records_dir: str, plans: dict, results: dict, reference_id: str,
                 name: str | None) -> tuple[Path, dict, Path, dict]:
    """Write the re-run, then the candidate linked to it; all or nothing."""
    rerun_plan, cand_plan = plans["a"], plans["b"]
    rerun = build_record(rerun_plan.cfg, results["a"], rerun_plan.env, rerun_plan.data,
                         name=f"{reference_id.split('/')[-1].split('_', 1)[-1]}-rerun",
                         rerun_of=reference_id)
    written: list[Path] = []
    try:
        rerun_folder = write_record(Path(records_dir), rerun, results=results["a"])
        written.append(rerun_folder)
        cand = build_record(cand_plan.cfg, results["b"], cand_plan.env, cand_plan.data, name=name)
        cand["reference"] = references.link(cand, reference_id,
                                            references.record_id(rerun_folder), rerun)
        cand = sealed(cand)
        cand_folder = write_record(Path(records_dir), cand, results=results["b"])
        return rerun_folder, rerun, cand_folder, cand
    except BaseException as e:  # Ctrl-C included: never leave one record without the other
        for folder in written:
            shutil.rmtree(folder, ignore_errors=True)
        saved = [fallback.write_fallback(p.cfg, results[s], p.env, p.data, None, records_dir)
                 for s, p in plans.items()]
        if isinstance(e, KeyboardInterrupt) or None in saved:
            raise
        files = " and ".join(shlex.quote(str(f)) for f in saved)
        raise SpeedrunError(f"could not write the two records to {records_dir} ({e}); nothing "
                            f"was left there, and the results are safe in {files}: make plain "
                            f"records of them with `python -m speedrun recover FILE`, or submit "
                            f"again") from e


def main(args) -> int:
    devices.maybe_initialize()
    cand_cfg = config_for(args.track, args.tricks, args.overrides, args.steps)
    seeds = parse_seeds(None, args.seeds)
    check_name(args.name)
    preflight(cand_cfg, args.data_dir, args.records_dir, skippable=False)  # before the records
    hw = hardware.describe()["hardware_class"]
    ref_id, ref, ref_time = reference_for(Path(args.records_dir), args.track, hw, args.against)
    try:
        ref_cfg = trick_registry.canonical(RunConfig.from_dict(ref["config"]))
    except (SpeedrunError, KeyError, TypeError) as e:
        raise SpeedrunError(f"{ref_id}: its configuration cannot be re-run here ({e})") from None
    if config_hash(ref_cfg) == config_hash(cand_cfg):
        raise SpeedrunError(f"the candidate is {ref_id}'s own configuration: submit a change "
                            f"(other tricks, settings or steps)")
    writes = devices.is_main_process()
    plans = {side: prepare(cfg, args.data_dir, command_line(), args.records_dir, skippable=False)
             for side, cfg in (("a", ref_cfg), ("b", cand_cfg))}
    print(f"submit on {args.track} ({hw}): B = {label(cand_cfg)} timed against A = a re-run of "
          f"{ref_id} ({label(ref_cfg)}, ranked {ref_time:.1f} s)")
    results = interleave(plans, seeds, args.quiet)
    line = ratio_line(results["b"], results["a"])
    if not writes:
        return 0
    rerun_folder, rerun, cand_folder, cand = write_linked(args.records_dir, plans, results,
                                                          ref_id, args.name)
    print(f"A record written: {rerun_folder} (a re-run of {ref_id}: a time reference)")
    print(f"A: {claim_line(rerun)}")
    print(f"B record written: {cand_folder}")
    print(f"B: {claim_line(cand)}")
    ratio = cand["reference"]["time_ratio"]
    print(f"{line}; on the leaderboard's time scale: {ratio:.3f} x {ref_time:.1f} s = "
          f"{ratio * ref_time:.1f} s (scaled)"
          + ("" if cand["summary"]["claim"] else "; B is not a claim, so it is not ranked"))
    print("next: python -m speedrun leaderboard, then open a pull request with both record folders")
    return 0
