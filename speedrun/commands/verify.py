"""`python -m speedrun verify PATH...`: check record folders (or record.yaml files; folders are
searched) with every check a record must pass (speedrun/records/verify.py), and say where the
code or packages moved on since a record ran. Exits non-zero if any fails or none is found:
what CI runs on a pull request's records."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    ver = sub.add_parser("verify", help="check records: schema, hashes, logs, track rules, tricks",
                         description="Verify record folders or record.yaml files (folders are "
                         "searched); exit non-zero if any fails or none is found.")
    ver.add_argument("paths", nargs="+", metavar="PATH")
    return ver


def main(args) -> int:
    from speedrun.errors import SpeedrunError
    from speedrun.records import provenance
    from speedrun.records.record import load_record
    from speedrun.records.verify import RECORD_FILE, find_records, verify

    found = find_records(args.paths)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise SpeedrunError(f"no such path: {', '.join(missing)}")
    if not found:  # a mistyped path must not pass a CI check
        raise SpeedrunError("no records under " + ", ".join(args.paths)
                            + f" (a record is a folder holding {RECORD_FILE})")
    failed = old = 0
    for folder in found:
        problems = verify(folder)
        if problems:
            failed += 1
            print(f"FAIL {folder}")
            for p in problems:
                print(f"     {p}")
            continue
        print(f"OK   {folder}")
        env = load_record(folder).get("environment") or {}
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
