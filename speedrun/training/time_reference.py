"""The record a claim is timed against in `submit`: the track's current #1 on this hardware
class, or the ranked record ``--against`` names, refused with the reason when it cannot be one
(what the named record alone shows is said before every record is verified for the ranking).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from speedrun.errors import SpeedrunError
from speedrun.records import leaderboard, references
from speedrun.records.record import load_record


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
