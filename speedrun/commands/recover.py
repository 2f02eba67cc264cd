"""`python -m speedrun recover FILE`: the record of a run whose record could not be written.

When writing a record fails after training, the run saves its results to a
speedrun-results-*.json file and prints its path (speedrun/training/saving.py); this turns
that file into the record and verifies it.
"""

from __future__ import annotations

import argparse

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    rec = sub.add_parser(
        "recover", help="make the record of a run whose record could not be written",
        description="When writing a record fails after training, the run saves its results to "
        "a speedrun-results-*.json file and prints its path. This turns that file into the "
        "record (and verifies it).")
    rec.add_argument("path", metavar="FILE", help="the speedrun-results-*.json file")
    flags.records_dir(rec, "where the record is written")
    return rec


def main(args) -> int:
    from speedrun.records.record import claim_line
    from speedrun.records.verify import verify
    from speedrun.training.saving import recover

    where, rec = recover(args.path, args.records_dir)
    print(f"record written: {where}")
    print(claim_line(rec))
    problems = verify(where)
    for p in problems:
        print(f"     {p}")
    return 1 if problems else 0
