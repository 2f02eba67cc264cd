"""`python -m speedrun submit`: a claim made on any machine, timed against the track's #1 there.

Machines of one hardware class differ ~3x in speed, so a time means something only beside a
reference timed on the same machine in the same sitting. `submit` runs the candidate and a
re-run of a ranked record's exact configuration (the current #1 of the track on this hardware
class, or ``--against RECORD``: speedrun/training/time_reference.py) interleaved, A B A B, as
`compare` does, then writes both records, linked: the re-run says ``rerun_of`` the reference,
the candidate names its ``reference`` with the time ratio and its 95% confidence interval. The
leaderboard ranks the candidate at that ratio times the reference's ranked time
(speedrun/records/references.py).

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
        "submit", help="time a claim against the track's #1 on this machine; write both, linked",
        description="Run the candidate (--tricks/--set/--steps) and a re-run of the track's "
        "current #1 on this machine's hardware class (or --against RECORD) interleaved, A B A B, "
        "then write both records linked: the re-run as a time reference, the candidate with its "
        "time ratio and 95%% confidence interval. The leaderboard ranks the candidate at that "
        "ratio times the reference's ranked time, whatever this machine's speed.")
    flags.configuration(sm)
    flags.steps(sm)
    flags.seeds(sm, "3", "seeds, run by both (default 3: a claim needs 3+)")
    sm.add_argument("--against", metavar="RECORD", default=None,
                    help="the ranked record to time against (default: the track's #1 for this "
                    "machine's hardware class)")
    sm.add_argument("--name", default=None, help="record name of the candidate")
    flags.records_dir(sm, "where the records are read and written")
    sm.add_argument("--side-by-side", action="store_true", help=argparse.SUPPRESS)  # refused
    flags.quiet(sm)
    flags.data_dir(sm)
    return sm


def main(args) -> int:
    import tricks as trick_registry
    from speedrun.config import RunConfig, config_hash
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
    if config_hash(ref_cfg) == config_hash(cand_cfg):
        raise SpeedrunError(f"the candidate is {ref_id}'s own configuration: submit a change "
                            f"(other tricks, settings or steps)")
    plans = {side: prepare(cfg, args.data_dir, command_line(), args.records_dir, skippable=False)
             for side, cfg in (("a", ref_cfg), ("b", cand_cfg))}
    print(f"submit on {args.track} ({hw}): B = {label(cand_cfg)} timed against A = a re-run of "
          f"{ref_id} ({label(ref_cfg)}, ranked {ref_time:.1f} s)")
    results = interleave(plans, seeds, args.quiet)
    line = ratio_line(results["b"], results["a"])
    if not devices.is_main_process():
        return 0
    rerun_folder, rerun, cand_folder, cand = saving.save_linked(args.records_dir, plans, results,
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
