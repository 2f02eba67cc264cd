"""`python -m speedrun submit`: a claim made on any machine, timed beside the track's #1 there.

Machines of one hardware class differ ~3x in speed, so a time means something only beside a
configuration already on the track's time scale, timed on the same machine in the same sitting.
`submit` runs the candidate and a re-run of a ranked configuration (the current #1 of the track
on this hardware class, or ``--against RECORD``'s: speedrun/training/time_reference.py)
interleaved, A B A B, as `compare` does, in one sitting, then writes both records. The re-run
is one more measurement of the #1 (its entry pools it), and through the sitting they share it
places the candidate on the scale (speedrun/records/timescale.py): the command prints where.

Both records are written only after every seed has finished, and together: if the second cannot
be written, the first is removed again and both sides' results go to results files for
`recover`, so nothing half-written is left in the records folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    sm = sub.add_parser(
        "submit", help="time a claim beside the track's #1 on this machine; write both records",
        description="Run the candidate (--tricks/--set/--steps) and a re-run of the track's "
        "current #1 on this machine's hardware class (or of --against RECORD's configuration) "
        "interleaved, A B A B, in one sitting, then write both records. The leaderboard fits "
        "one time scale from every sitting: the sitting both share places the candidate on it "
        "at its time ratio to the #1, whatever this machine's speed.")
    flags.configuration(sm)
    flags.steps(sm)
    flags.seeds(sm, "3", "seeds, run by both (default 3: a claim needs 3+)")
    sm.add_argument("--against", metavar="RECORD", default=None,
                    help="a record of the ranked configuration to time against (default: the "
                    "track's #1 for this machine's hardware class)")
    sm.add_argument("--name", default=None, help="record name of the candidate")
    flags.records_dir(sm, "where the records are read and written")
    sm.add_argument("--side-by-side", action="store_true", help=argparse.SUPPRESS)  # refused
    flags.quiet(sm)
    flags.data_dir(sm)
    return sm


def main(args) -> int:
    import tricks as trick_registry
    from speedrun.config import RunConfig, identity_hash
    from speedrun.distributed import devices
    from speedrun.errors import SpeedrunError
    from speedrun.records.record import claim_line
    from speedrun.training import environment, saving
    from speedrun.training.interleave import interleave, ratio_line
    from speedrun.training.plan import (check_name, command_line, config_for, label,
                                        parse_seeds, preflight, prepare)
    from speedrun.training.time_reference import reference_for

    devices.maybe_initialize()
    if args.side_by_side:
        raise SpeedrunError("submit times a claim, one seed at a time: --side-by-side is for "
                            "untimed work (run, compare, sweep, find-steps); drop it")
    cand_cfg = config_for(args.track, args.tricks, args.overrides, args.steps)
    seeds = parse_seeds(None, args.seeds)
    check_name(args.name)
    preflight(cand_cfg, args.data_dir, args.records_dir, skippable=False)  # before the records
    hw = environment.describe()["hardware_class"]
    ref_id, ref, ref_time = reference_for(Path(args.records_dir), args.track, hw, args.against)
    try:
        ref_cfg = trick_registry.canonical(RunConfig.from_dict(ref["config"]))
    except (SpeedrunError, KeyError, TypeError) as e:
        raise SpeedrunError(f"{ref_id}: its configuration cannot be re-run here ({e})") from None
    if identity_hash(ref_cfg) == identity_hash(cand_cfg):
        raise SpeedrunError(f"the candidate is {ref_id}'s own configuration: submit a change "
                            f"(other tricks, settings or steps), or re-run it with `run "
                            f"--from-record`: a re-run adds a measurement to its entry")
    plans = {side: prepare(cfg, args.data_dir, command_line(), args.records_dir, skippable=False)
             for side, cfg in (("a", ref_cfg), ("b", cand_cfg))}
    print(f"submit on {args.track} ({hw}): B = {label(cand_cfg)} timed beside A = a re-run of "
          f"{ref_id} ({label(ref_cfg)}, {ref_time[0]:.1f} s on the scale)")
    results = interleave(plans, seeds, args.quiet)
    line = ratio_line(results["b"], results["a"])
    if not devices.is_main_process():
        return 0
    names = {"a": f"{ref_id.split('/')[-1].split('_', 1)[-1]}-rerun", "b": args.name}
    (rerun_folder, rerun), (cand_folder, cand) = saving.save_together(args.records_dir, plans,
                                                                      results, names)
    print(f"A record written: {rerun_folder} (a re-run of {ref_id}'s configuration)")
    print(f"A: {claim_line(rerun)}")
    print(f"B record written: {cand_folder}")
    print(f"B: {claim_line(cand)}")
    print(f"{line}; {placement(Path(args.records_dir), cand_folder, (args.track, hw))}")
    print("next: python -m speedrun leaderboard, then open a pull request with both record folders")
    return 0


def placement(records_dir: Path, folder: Path, section: tuple) -> str:
    """Where the candidate's configuration now stands on the track's scale."""
    from speedrun.records import leaderboard
    from speedrun.records.record import record_id

    board = leaderboard.load_all(records_dir)
    rid = record_id(folder)
    entries = board.entries.get(section, [])
    entry = next((e for e in entries if rid in e.records), None)
    if entry is None:
        return "B is not on the leaderboard (it fails verify: run `python -m speedrun verify`)"
    if entry.time is None:
        return f"B is not placed on the scale: {entry.note}"
    where = (f"#{[e for e in entries if e.ranked].index(entry) + 1}" if entry.ranked
             else f"not ranked: {entry.note}")
    return (f"on the leaderboard's time scale B is {entry.time[0]:.1f} s (95% interval "
            f"{entry.time[1]:.1f}-{entry.time[2]:.1f}): {where}")
