"""The time scale fitted from sittings: configuration effects + sitting effects on log time,
the reference machine's sittings fixing the scale on average."""

from __future__ import annotations

import math
import random

import pytest

from speedrun.records import timescale as TS

SEC = ("wiki-bytes", "cpu-2core")


def obs(config, sitting, reference, times, section=SEC):
    return [TS.Observation(section, config, sitting, reference, t) for t in times]


def noisy(mean, n=3, spread=0.01, seed=0):
    rng = random.Random(seed)
    return [mean * (1 + spread * rng.uniform(-1, 1)) for _ in range(n)]


def test_two_reference_sittings_of_one_configuration_meet_in_the_middle():
    # A ran at 31.3 s in one sitting and 26.5 s in another (the committed #5's two sittings);
    # B ran only beside A in the second, 10% faster than A there.
    data = (obs("A", "s1", True, noisy(31.3, seed=1)) + obs("A", "s2", True, noisy(26.5, seed=2))
            + obs("B", "s2", True, noisy(26.5 * 0.9, seed=3))
            + obs("C", "s3", True, noisy(100.0, seed=4))
            + obs("C", "s4", True, noisy(90.0, seed=5)))
    fit = TS.fit(data)[SEC]
    a, b = fit.time("A")[0], fit.time("B")[0]
    assert 26.5 < a < 31.3  # pooled, not either sitting's alone
    assert b / a == pytest.approx(0.9, rel=0.02)  # B keeps its same-sitting ratio to A
    effects = {s: e for s, (e, ref) in fit.sittings.items()}
    assert effects["s1"] > 0 > effects["s2"]  # s1 was the slow sitting
    ratio, lo, hi = fit.difference("B", "A")
    assert ratio == pytest.approx(0.9, rel=0.02) and hi < 1  # side by side: B is surely faster
    _, a_lo, a_hi = fit.time("A")
    assert a_hi / a_lo > 1.05  # alone each estimate carries its sittings' uncertainty


def test_a_slow_machine_places_a_candidate_only_through_what_it_timed_beside_it():
    data = (obs("A", "ref", True, noisy(30.0)) + obs("A", "slow", False, noisy(60.0, seed=1))
            + obs("B", "slow", False, noisy(54.0, seed=2)))
    fit = TS.fit(data)[SEC]
    assert fit.time("B")[0] == pytest.approx(27.0, rel=0.03)  # 0.9 x A's 30 s
    assert fit.sittings["slow"] == (pytest.approx(math.log(2.0), abs=0.03), False)


def test_a_configuration_that_shares_no_sitting_with_the_reference_machine_is_not_placed():
    data = obs("A", "ref", True, noisy(30.0)) + obs("B", "slow", False, noisy(50.0))
    fit = TS.fit(data)[SEC]
    assert fit.time("B") is None and fit.unplaced == ("B",)
    assert fit.time("A") is not None


def test_the_estimates_depend_on_the_measurements_only():
    data = (obs("A", "s1", True, noisy(31.0, seed=1)) + obs("A", "s2", True, noisy(27.0, seed=2))
            + obs("B", "s2", True, noisy(25.0, seed=3)) + obs("B", "x", False, noisy(50.0, seed=4))
            + obs("C", "x", False, noisy(45.0, seed=5)))
    fit = TS.fit(data)[SEC]
    renamed = [TS.Observation(o.section, o.config, "id-" + o.sitting[::-1], o.reference,
                              o.time_s) for o in data]
    random.Random(0).shuffle(renamed)
    again = TS.fit(renamed)[SEC]
    for c in "ABC":
        assert again.time(c) == pytest.approx(fit.time(c), rel=1e-6)


def test_without_a_configuration_timed_in_two_reference_sittings_the_default_spread_stands_in():
    data = obs("A", "s1", True, noisy(30.0)) + obs("B", "s2", True, noisy(40.0))
    fit = TS.fit(data)[SEC]
    assert not fit.sd_sitting_fitted and fit.sd_sitting == TS.DEFAULT_SD_SITTING
    _, lo, hi = fit.time("A")
    assert math.log(hi / lo) > 2 * 1.9 * TS.DEFAULT_SD_SITTING  # the sitting's spread is in it


def test_sections_are_fitted_on_their_own_scales():
    other = ("wiki", "cpu-2core")
    data = obs("A", "s1", True, noisy(30.0)) + obs("A", "s1", True, noisy(300.0), section=other)
    fits = TS.fit(data)
    assert fits[SEC].time("A")[0] == pytest.approx(30.0, rel=0.02)
    assert fits[other].time("A")[0] == pytest.approx(300.0, rel=0.02)
