"""`verify --replay`: a record's seeds trained again here, the curve compared with its log.

Every number a log states can be written by hand, hashes and all; only training again tells
whether the losses are what the configuration gives. A replay re-resolves the record's
configuration, trains the chosen seeds exactly as `run` would (nothing is written) and compares
every logged validation with the replay's at the same step. On one machine a CPU run repeats to
about 1e-5; across machines float rounding grows with the steps and with how abruptly the loss
moves: the committed 130-step `muon,rotary,wsd-schedule` and 110-step second-wave stack came back
within 2e-6 and 5e-4 on another machine, the 1000-step AdamW baseline's seed 0 within 0.022,
at step 500, where it leaves its bigram plateau and a small difference shifts the moment it
does (0.012 at the end). So a curve passes within ``TOLERANCE`` nats at every validation
(docs/records.md); a record whose every loss was lowered by 0.05 fails, naming the step and both
values. Times are not compared: they belong to the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import tricks as registry
from speedrun.config import RunConfig
from speedrun.errors import SpeedrunError
from speedrun.training.plan import command_line, prepare
from speedrun.training.seed import run_seed

TOLERANCE = 0.03  # nats, at every validation step: 1.4x the largest difference measured


@dataclass(frozen=True)
class Outcome:
    seed: int
    worst: float  # the largest |logged - replayed| over the curve
    problems: tuple  # one line per validation outside the tolerance (at most a few)


def seeds_to_replay(rec: dict, wanted: list[int] | None) -> list[int]:
    have = [int(r["seed"]) for r in rec["runs"]]
    if wanted is None:
        return have
    missing = [s for s in wanted if s not in have]
    if missing:
        raise SpeedrunError(f"--replay-seeds {','.join(map(str, missing))}: the record has seeds "
                            f"{','.join(map(str, have))} only")
    return wanted


def compare(seed: int, logged: list, replayed: list, tol: float = TOLERANCE) -> Outcome:
    """Each logged validation [step, time, tokens, loss] against the replay's at that step."""
    got = {int(p[0]): float(p[3]) for p in replayed}
    worst, lines = 0.0, []
    for step, _, _, loss in logged:
        if int(step) not in got:
            lines.append(f"seed {seed}: the replay has no validation at step {step}")
            continue
        d = abs(got[int(step)] - float(loss))
        worst = max(worst, d)
        if d > tol and len(lines) < 3:
            lines.append(f"seed {seed} step {step}: logged val loss {float(loss):.6f}, replayed "
                         f"{got[int(step)]:.6f} (|Δ| {d:.4f} > {tol:g})")
    return Outcome(seed, worst, tuple(lines))


def replay(rec: dict, seeds: list[int], data_dir: str | None, quiet: bool) -> list[Outcome]:
    """Train ``seeds`` of the record's configuration here and compare each curve."""
    cfg = RunConfig.from_dict(rec["config"])
    if cfg.post is not None:
        raise SpeedrunError("--replay re-trains pretraining records; a post-training record is "
                            "re-run with its track's command (sft/rl --track ... --seeds ...)")
    cfg = registry.canonical(cfg)
    plan = prepare(cfg, data_dir, command_line())  # pre-flight and data: before any training
    by_seed = {int(r["seed"]): r for r in rec["runs"]}
    out = []
    for seed in seeds:
        result = run_seed(plan, seed, quiet, tag="replay ")
        out.append(compare(seed, by_seed[seed]["curve"], [list(p) for p in result.curve]))
    return out
