"""The significance test against reference values."""

import pytest
from scipy import stats as scipy_stats

from speedrun.records import stats


def test_matches_scipy_one_sided():
    losses = [3.275, 3.279, 3.281, 3.277, 3.276]
    expected = scipy_stats.ttest_1samp(losses, 3.28, alternative="less").pvalue
    assert stats.ttest_less(losses, 3.28) == pytest.approx(expected)
    # by hand: mean 3.2776, sample std 0.002408, t = -2.2283 with 4 dof -> p = 0.0449
    assert stats.ttest_less(losses, 3.28) == pytest.approx(0.0449, abs=5e-4)


def test_modded_nanogpt_softcap_reference():
    # records/track_1_short/2025-01-04_SoftCap: 80 runs, mean 3.2791, std 0.0019 -> p = 0.0001
    # The README rounds mean and std, so the published p must fall inside the band of p-values
    # the rounding allows (a wrong formula, e.g. two-sided or population std, falls outside).
    corners = [stats.t_pvalue_from_summary(m, s, 80, 3.28)
               for m in (3.27905, 3.27915) for s in (0.00185, 0.00195)]
    assert min(corners) <= 0.0001 <= max(corners)
    assert max(corners) < 0.01


def test_edge_cases():
    assert stats.ttest_less([3.0], 3.28) is None
    assert stats.ttest_less([3.3, 3.31, 3.29], 3.28) > 0.9


def test_zero_spread_is_no_evidence():
    # distinct seeds never end at exactly the same loss: identical losses are one run counted
    # several times, whatever the mean
    assert stats.ttest_less([3.0, 3.0], 3.28) is None
    assert stats.ttest_less([3.5, 3.5, 3.5], 3.28) is None
    runs = [{"seed": s, "steps": 10, "train_time_s": 1.0, "tokens": 10, "final_val_loss": 2.5}
            for s in range(3)]
    s = stats.summarize(runs, 3.0)
    assert not s["claim"] and s["p_value"] is None
    assert any("zero spread" in r for r in s["reasons"])


def test_time_ratio_interval():
    a, b = [10.0, 11.0, 12.0], [20.0, 22.0, 24.0]
    r, lo, hi = stats.time_ratio(a, b)
    assert r == pytest.approx(0.5) and lo < 0.5 < hi
    # identical spreads shrink the interval with more seeds
    r2, lo2, hi2 = stats.time_ratio(a * 3, b * 3)
    assert r2 == pytest.approx(0.5) and hi2 - lo2 < hi - lo
    assert stats.time_ratio([5.0, 5.0], [10.0, 10.0]) == (0.5, 0.5, 0.5)


def test_claim_needs_three_distinct_seeds_and_p_below_001():
    runs = lambda losses, seeds=None: [  # noqa: E731
        {"seed": s, "steps": 10, "train_time_s": 1.0, "tokens": 10, "final_val_loss": v}
        for s, v in zip(seeds or range(len(losses)), losses)]
    assert stats.summarize(runs([2.9, 2.91, 2.92]), 3.0)["claim"]
    assert not stats.summarize(runs([2.9, 2.91]), 3.0)["claim"]
    assert "duplicate seeds" in stats.summarize(runs([2.9, 2.91, 2.92], [0, 0, 1]), 3.0)["reasons"]
    weak = stats.summarize(runs([2.99, 2.995, 3.01]), 3.0)
    assert not weak["claim"] and weak["reasons"][0].startswith("p = ")
