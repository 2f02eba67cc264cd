"""The configuration a claim is timed against in `submit`: the track's current #1 on this
hardware class, or the ranked configuration of the record ``--against`` names, refused with the
reason when it cannot be one (what the named record alone shows is said before every record is
verified for the ranking).
"""

from __future__ import annotations

from pathlib import Path

from speedrun.errors import SpeedrunError
from speedrun.records import leaderboard
from speedrun.records.record import load_record, record_id


def reference_for(records_dir: Path, track: str, hardware_class: str,
                  against: str | None) -> tuple[str, dict, tuple]:
    """(record id, record, its entry's (estimate, low, high) seconds on the scale) of the
    configuration to time against: ``against``'s, else the track's current #1 on this hardware
    class. Refuses one that is not a ranked configuration of the track and class, naming why."""
    if against is not None:
        check_against(records_dir, track, hardware_class, against)
    board = leaderboard.load_all(records_dir)  # verifies every record: the ranking needs them all
    entries = board.entries.get((track, hardware_class), [])
    if against is None:
        ranked = [e for e in entries if e.ranked]
        if not ranked:
            raise SpeedrunError(
                f"no ranked record of {track} on {hardware_class} in {records_dir} to time "
                f"against: make the first claim with `python -m speedrun run`, or name one with "
                f"--against RECORD")
        rid = ranked[0].records[0]
        return rid, board.record(rid), ranked[0].time
    rid = record_id(against_folder(records_dir, against).resolve())
    row = board.row(rid)
    if row is None:
        raise SpeedrunError(f"--against {against} is not under the records folder "
                            f"{records_dir}: a reference is ranked among its records")
    if row["problem"]:
        raise SpeedrunError(f"--against {against} fails verify: {row['problem']}")
    entry = next((e for e in entries if rid in e.records), None)
    if entry is None or not entry.ranked:
        why = entry.note if entry is not None else "it is marked untimed"
        raise SpeedrunError(f"--against {against}: its configuration is not ranked ({why}): "
                            f"time against a ranked entry")
    return rid, row["record"], entry.time


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
