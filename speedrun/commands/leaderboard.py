"""`python -m speedrun leaderboard`: leaderboard.md and its plots, regenerated from the records
alone (what it ranks and how: speedrun/records/leaderboard.py), every record verified as
`verify` does, each seed's step 0 re-scored in the records of every configuration that makes a
claim; ``--check`` says whether the file on disk is what the records make. A records folder that is missing, a file or empty is
refused, and so is a new file that would drop a record still on disk (unless ``--force``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    lb = sub.add_parser("leaderboard", help="regenerate leaderboard.md from records/",
                        description="Regenerate leaderboard.md (and its plots) from records/.")
    flags.records_dir(lb, "the records to rank")
    lb.add_argument("--output", default="leaderboard.md", metavar="FILE",
                    help="the file to write (default: ./leaderboard.md)")
    lb.add_argument("--check", action="store_true",
                    help="do not write; exit non-zero if the file on disk is stale")
    lb.add_argument("--force", action="store_true",
                    help="write even if the file lists records, still on disk, that the new one "
                    "would drop")
    flags.data_dir(lb)
    return lb


def main(args) -> int:
    from speedrun.audit.step0 import Checker
    from speedrun.data.shards import atomic_write
    from speedrun.records import leaderboard as L

    records_dir = Path(args.records_dir)
    L.check_records_dir(records_dir)
    board = L.load_all(records_dir)  # every record verified against its own files
    # Step 0 is re-scored (a model run per seed) where a rank is at stake: the records of every
    # configuration whose pooled seeds make a claim. The others cannot be placed, so committed
    # screening records cost nothing here (`verify` re-scores whatever it is given).
    at_stake = {rid for entries in board.entries.values() for e in entries
                if e.summary.get("claim") for rid in e.records}
    if at_stake:
        checker = Checker(args.data_dir)
        board = L.load_all(records_dir, lambda folder, rec: checker.problems(rec) if
                           f"{folder.parent.name}/{folder.name}" in at_stake else [])
    text = L.render(records_dir, board)
    out = Path(args.output)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is stale: run `python -m speedrun leaderboard` and commit it")
            return 1
        missing = [p for t, hw, ranked, _ in L.sections(board) if ranked
                   for p in L.plot_paths(records_dir, t, hw) if not p.exists()]
        if missing:
            print(f"missing plots {', '.join(map(str, missing))}: run `python -m speedrun leaderboard`")
            return 1
        print(f"{out} is up to date")
        return 0
    L.check_output(out, text, records_dir, args.force)
    atomic_write(out, [text.encode()])
    plots = L.write_plots(records_dir, board)
    print(f"wrote {out} and {len(plots)} plots")
    return 0
