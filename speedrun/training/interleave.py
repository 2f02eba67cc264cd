"""Configurations timed side by side on one machine, seed by seed, A B A B ...: a drift in the
machine's speed falls on every side alike. `compare` and `submit` time their two sides so."""

from __future__ import annotations

from speedrun.records import stats
from speedrun.training.plan import Plan, label
from speedrun.training.seed import run_seed


def interleave(sides: dict[str, Plan], seeds: list[int], quiet: bool) -> dict[str, list]:
    """Every seed of every side, A B A B ...: {side: [RunResult, ...]}."""
    first = next(iter(sides.values()))
    for side, plan in sides.items():
        print(f"{side.upper()}: {label(plan.cfg)}, {plan.cfg.train.steps} steps")
    print(f"seeds {seeds}, interleaved {' '.join(s.upper() for s in sides)} ... on "
          f"{first.env['device_count']} x {first.env['device_kind']}")
    results: dict[str, list] = {side: [] for side in sides}
    for seed in seeds:
        for side, plan in sides.items():
            results[side].append(run_seed(plan, seed, quiet, tag=f"{side.upper()} "))
    print()
    return results


def loss_line(b: list, a: list) -> str:
    """B - A in final val loss, paired by seed (the seed fixes the initialization and the data
    order, so most of the seed-to-seed spread cancels)."""
    diffs = stats.paired_differences({r.seed: r.final_val_loss for r in b},
                                     {r.seed: r.final_val_loss for r in a})
    lower = sum(d < 0 for d in diffs)
    return (f"final val loss B - A, paired by seed: {sum(diffs) / len(diffs):+.4f} "
            f"(B lower on {lower} of {len(diffs)} seeds)")


def ratio_line(b: list, a: list, what: str = "B/A") -> str:
    """The time ratio of two sides' seeds, with its 95% confidence interval where it has one."""
    tb, ta = [r.train_time_s for r in b], [r.train_time_s for r in a]
    if len(tb) >= 2 and len(ta) >= 2:
        ratio, lo, hi = stats.time_ratio(tb, ta)
        return f"time ratio {what}: {ratio:.3f}x (95% CI {lo:.3f}-{hi:.3f})"
    return f"time ratio {what}: {sum(tb) / sum(ta) * len(ta) / len(tb):.3f}x (one seed: no interval)"
