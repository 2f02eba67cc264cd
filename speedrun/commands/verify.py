"""`python -m speedrun verify PATH...`: check record folders (or record.yaml files; folders are
searched) with every check a record must pass: from its files (speedrun/records/verify.py),
across the records that share a sitting (speedrun/records/sittings.py), and each seed's step-0
loss against its model re-initialised here (speedrun/audit/step0.py); say where the code or
packages moved on since a record ran. ``--replay`` also trains the records' seeds again and
compares the curves (speedrun/audit/replay.py). Exits non-zero if any fails or none is found:
what CI runs on a pull request's records."""

from __future__ import annotations

import argparse
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    ver = sub.add_parser(
        "verify", help="check records: schema, hashes, logs, sittings, track rules, step 0",
        description="Verify record folders or record.yaml files (folders are searched): every "
        "number against its log, the records of one sitting against each other, each seed's "
        "step-0 loss against its model re-initialised here; with --replay, train the seeds "
        "again and compare the curves. Exits non-zero if any fails or none is found.")
    ver.add_argument("paths", nargs="+", metavar="PATH")
    ver.add_argument("--replay", action="store_true",
                     help="also re-train each record's seeds on this machine and compare every "
                     "logged validation with the replay's (writes nothing)")
    ver.add_argument("--replay-seeds", default=None, metavar="A,B,...",
                     help="with --replay: only these seeds of each record (default: all)")
    ver.add_argument("--no-step0", action="store_true",
                     help="skip the step-0 re-initialisation check (the file checks only)")
    flags.quiet(ver)
    flags.data_dir(ver)
    return ver


def main(args) -> int:
    from speedrun.errors import SpeedrunError
    from speedrun.records import provenance
    from speedrun.records.record import RECORD_FILE, load_record
    from speedrun.records.verify import find_records, verify_all

    if args.replay_seeds is not None and not args.replay:
        raise SpeedrunError("--replay-seeds chooses the seeds of --replay: add --replay")
    wanted = _seeds(args.replay_seeds)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise SpeedrunError(f"no such path: {', '.join(missing)}")
    found = find_records(args.paths)
    if not found:  # a mistyped path must not pass a CI check
        raise SpeedrunError("no records under " + ", ".join(args.paths)
                            + f" (a record is a folder holding {RECORD_FILE})")
    check = checker = None
    if not args.no_step0:
        from speedrun.audit.step0 import Checker

        checker = Checker(args.data_dir)
        check = lambda folder, rec: checker.problems(rec)  # noqa: E731
    results = verify_all(found, check)
    failed = old = 0
    for folder in found:
        problems = results[folder]
        if not problems and args.replay:
            problems = replay(folder, wanted, args)
        if problems:
            failed += 1
            print(f"FAIL {folder}")
            for p in problems:
                print(f"     {p}")
            continue
        print(f"OK   {folder}")
        rec = load_record(folder)
        if checker is not None and rec["content_hash"] in checker.unchecked:
            print(f"     note: step 0 not checked: {checker.unchecked[rec['content_hash']]}")
        env = rec.get("environment") or {}
        if "sources" not in env:
            old += 1
            continue
        for line in provenance.drift(env):  # a note, not a failure: records outlive the code
            print(f"     note: {line}")
    print(f"{len(found) - failed} ok, {failed} failed")
    if old:
        print(f"{old} record(s) predate source hashes: whether today's code differs from what "
              f"they ran is not known")
    return 1 if failed else 0


def _seeds(text: str | None) -> list[int] | None:
    from speedrun.errors import SpeedrunError

    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SpeedrunError(f"--replay-seeds expects seeds like 0 or 0,2, got {text!r}") from None
    if not seeds:
        raise SpeedrunError(f"--replay-seeds {text!r} names no seed")
    return seeds


def replay(folder: Path, wanted: list[int] | None, args) -> list[str]:
    """The record's seeds trained again here: one line per validation outside the tolerance."""
    from speedrun.audit import replay as R
    from speedrun.records.record import load_record

    rec = load_record(folder)
    seeds = R.seeds_to_replay(rec, wanted)
    print(f"replaying {folder}: seed(s) {','.join(map(str, seeds))}, "
          f"{rec['summary']['mean_steps']:.0f} steps each (tolerance {R.TOLERANCE:g} nats at every validation)")
    out = []
    for outcome in R.replay(rec, seeds, args.data_dir, args.quiet):
        print(f"     seed {outcome.seed}: largest |logged - replayed| {outcome.worst:.2g}")
        out += outcome.problems
    return out
