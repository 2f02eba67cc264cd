"""Command line: ``python -m speedrun <command>``.

The commands, in the order ``--help`` lists them: each is one module of speedrun/commands/
holding its parser and its ``main`` (imported lightly: JAX loads only when a command runs). Usage
errors exit 2 (argparse), user-fixable problems (``SpeedrunError``, and OS errors) exit 1 with
one line (``--debug`` adds the traceback), Ctrl-C exits 130; anything else is a bug and shows its
traceback. Every command begins a new sitting (speedrun/records/sittings.py): the seeds it times
share its id.

May import: speedrun.errors, speedrun.commands, speedrun.records (the sitting a command begins).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from speedrun.commands import (bench, chat, compare, data, export, find_steps, launch,
                               leaderboard, quantize, recover, rl, run, sample, sft, submit,
                               sweep, tasks, tracks, tricks, verify)
from speedrun.commands import eval as evaluate
from speedrun.errors import SpeedrunError
from speedrun.records import sittings

COMMANDS = (data, run, find_steps, compare, submit, sweep, tricks, tracks, leaderboard, verify,
            recover, bench, sample, evaluate, sft, rl, tasks, chat, quantize, export, launch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speedrun",
        description="Train a GPT to a fixed validation loss as fast as possible, with named tricks.")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of every error, not only one line "
                        "(anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(main=command.main)
    return parser


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    sittings.begin()
    try:
        return int(args.main(args) or 0)
    except SpeedrunError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        # A file-system problem no check foresaw (a disk filling up, a folder removed mid-run):
        # the user's to fix, so one line; --debug shows where it happened.
        if args.debug:
            traceback.print_exc()
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {one_line(e.strerror or e)}{where} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
