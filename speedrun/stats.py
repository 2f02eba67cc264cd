"""Statistics for records: the one-sided t-test of modded-nanogpt's significance rule, and
per-seed summaries."""

from __future__ import annotations

import math
import statistics

from scipy import stats as _scipy


def ttest_less(losses, target: float) -> float | None:
    """p-value of a one-sided one-sample t-test that the mean loss is below ``target``
    (scipy.stats.ttest_1samp(losses, target, alternative='less')). None below two values;
    zero spread is decided by the mean alone instead of returning NaN."""
    values = [float(x) for x in losses]
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    if statistics.stdev(values) == 0:
        return 0.0 if mean < target else 1.0
    return float(_scipy.ttest_1samp(values, target, alternative="less").pvalue)


def t_pvalue_from_summary(mean: float, std: float, n: int, target: float) -> float:
    """The same test from published summary figures (mean, sample std, count)."""
    t = (mean - target) / (std / math.sqrt(n))
    return float(_scipy.t.cdf(t, df=n - 1))


def _mean_std(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict], target: float) -> dict:
    """Means and sample standard deviations over seeds, the p-value, and whether it is a claim."""
    out: dict = {"seeds": len(runs), "reached": sum(bool(r["reached"]) for r in runs)}
    out["all_reached"] = out["reached"] == len(runs)
    for key, name in (("train_time_s", "time_s"), ("steps", "steps"), ("tokens", "tokens"),
                      ("final_val_loss", "val_loss")):
        mean, std = _mean_std(r[key] for r in runs)
        out[f"mean_{name}"], out[f"std_{name}"] = round(mean, 6), round(std, 6)
    p = ttest_less([r["final_val_loss"] for r in runs], target)
    out["p_value"] = None if p is None else round(p, 8)
    out["claim"] = bool(out["all_reached"] and p is not None and p < 0.01)
    return out
