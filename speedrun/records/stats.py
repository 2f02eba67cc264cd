"""Statistics for records: the one-sided t-test of modded-nanogpt's significance rule, and
per-seed summaries."""

from __future__ import annotations

import math
import statistics
from typing import Mapping


def _scipy():
    """scipy.stats, imported on first use: it takes ~1 s, which every process that only trains
    (each of a launch's processes, say) would otherwise pay at start."""
    from scipy import stats

    return stats


def ttest_less(losses, target: float) -> float | None:
    """p-value of a one-sided one-sample t-test that the mean loss is below ``target``
    (scipy.stats.ttest_1samp(losses, target, alternative='less')). None below two values, and
    None for zero spread: distinct seeds never end at exactly the same loss, so identical
    losses are one run counted more than once, which is no evidence at all."""
    values = [float(x) for x in losses]
    if len(values) < 2 or statistics.stdev(values) == 0:
        return None
    return float(_scipy().ttest_1samp(values, target, alternative="less").pvalue)


def t_pvalue_from_summary(mean: float, std: float, n: int, target: float) -> float:
    """The same test from published summary figures (mean, sample std, count)."""
    t = (mean - target) / (std / math.sqrt(n))
    return float(_scipy().t.cdf(t, df=n - 1))


def _mean_std(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


CLAIM_P = 0.01  # modded-nanogpt's significance rule
CLAIM_SEEDS = 3  # distinct seeds a claim needs at least


def binomial_greater(errors, target: float, n: int) -> float | None:
    """Post-training: each seed's held-out accuracy (1 - error, over ``n`` examples) against
    the target accuracy 1 - ``target`` by an exact one-sided binomial test; the claim's p is the
    largest of the seeds' p-values, so it holds only when every seed beats the target on its own
    (an intersection-union test: no assumption that seeds are independent, and identical
    accuracies, common on a small discrete held-out set, are evidence like any other)."""
    if not errors or n < 1:
        return None
    ps = [_scipy().binomtest(round((1 - float(e)) * n), n, 1 - target,
                           alternative="greater").pvalue for e in errors]
    return float(max(ps))


def summarize(runs: list[dict], target: float, heldout: int | None = None) -> dict:
    """Means and sample standard deviations over seeds, the p-value of the claim, whether it is
    one and, if not, why (``reasons``). ``heldout``: a post-training record's held-out examples
    (its "val loss" is the held-out error): the claim's test is then ``binomial_greater``."""
    seeds = [int(r["seed"]) for r in runs]
    out: dict = {"seeds": len(runs), "distinct_seeds": len(set(seeds)),
                 "reached": sum(float(r["final_val_loss"]) <= target for r in runs)}
    for key, name in (("train_time_s", "time_s"), ("steps", "steps"), ("tokens", "tokens"),
                      ("final_val_loss", "val_loss")):
        mean, std = _mean_std(r[key] for r in runs)
        out[f"mean_{name}"], out[f"std_{name}"] = round(mean, 6), round(std, 6)
    crossed = [r["first_reached"] for r in runs if r.get("first_reached")]
    out["first_reached_seeds"] = len(crossed)
    out["mean_first_reached_step"] = round(statistics.fmean(c[0] for c in crossed), 3) if crossed else None
    probes = [float(r["machine_gflops"]) for r in runs if r.get("machine_gflops") is not None]
    out["mean_machine_gflops"] = round(statistics.fmean(probes), 1) if probes else None
    losses = [float(r["final_val_loss"]) for r in runs]
    p = ttest_less(losses, target) if heldout is None else binomial_greater(losses, target, heldout)
    out["p_value"] = None if p is None else round(p, 8)
    reasons = []
    if out["distinct_seeds"] != len(seeds):
        reasons.append("duplicate seeds")
    if out["distinct_seeds"] < CLAIM_SEEDS:
        reasons.append(f"{out['distinct_seeds']} distinct seed(s); a claim needs {CLAIM_SEEDS}")
    if len({int(r["steps"]) for r in runs}) > 1:
        reasons.append("seeds ran different numbers of steps")
    if heldout is None and len(losses) > 1 and len(set(losses)) == 1:
        reasons.append("the seeds' final losses are identical (zero spread is no evidence: one "
                       "run counted more than once?)")
    elif p is None or p >= CLAIM_P:
        reasons.append("p not computable" if p is None else f"p = {p:.2g} >= {CLAIM_P}")
    out["reasons"] = reasons
    out["claim"] = not reasons
    return out


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> list[float]:
    """a - b seed by seed, over the seeds both ran (in seed order): a paired comparison, since
    the seed fixes the initialization and the data order, so most of the seed-to-seed spread
    cancels."""
    return [float(a[s]) - float(b[s]) for s in sorted(set(a) & set(b))]


def time_ratio(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) / mean(b) with a ``level`` confidence interval (delta method on the ratio of two
    independent means, Welch-Satterthwaite degrees of freedom). Needs >= 2 values on each side."""
    ma, sa, na = statistics.fmean(a), statistics.stdev(a), len(a)
    mb, sb, nb = statistics.fmean(b), statistics.stdev(b), len(b)
    r = ma / mb
    va, vb = (sa / ma) ** 2 / na, (sb / mb) ** 2 / nb  # squared relative standard errors
    se = r * math.sqrt(va + vb)
    if se == 0:
        return r, r, r
    dof = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = float(_scipy().t.ppf(0.5 + level / 2, dof))
    return r, r - t * se, r + t * se
