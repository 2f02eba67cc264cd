"""Schedules over the run: wsd-schedule, every learning-rate schedule ending at the last step,
momentum warm-up spanning its fraction of the run, and batch-schedule (its stages and learning
rate, the loader rows it reads, and a run through the command line that verifies).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import SEQ, record_dirs, run_cli, setup
from speedrun.core import batch_sizes as batches
from speedrun.data import loader as loader_mod
from speedrun.errors import SpeedrunError
from speedrun.records import record, verify


# ----------------------------------------------------------------------------------------------
# learning-rate and momentum schedules
# ----------------------------------------------------------------------------------------------


def test_wsd_schedule_is_a_trapezoid():
    cfg, hooks, _ = setup(["wsd-schedule"], steps=101)
    sched = hooks.lr_schedule(cfg)
    # 101 updates (0..100), the last 40 (61..100) cool down from 1 to exactly 0 at the last one
    values = {s: float(sched(s)) for s in (0, 30, 60, 61, 71, 81, 99, 100)}
    assert values == pytest.approx({0: 1, 30: 1, 60: 1, 61: 1, 71: 0.74358974, 81: 0.48717949,
                                    99: 0.02564103, 100: 0})
    cfg, hooks, _ = setup(["wsd-schedule"], ["wsd-schedule.warmup_steps=10",
                                             "wsd-schedule.cooldown_frac=0.5",
                                             "wsd-schedule.final=0.1"], steps=100)
    sched = hooks.lr_schedule(cfg)
    got = [float(sched(s)) for s in (0, 4, 9, 10, 49, 50, 99, 120)]
    assert got == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1])


# Every schedule's horizon is train.steps, the run's length: its end value falls on the last
# update (step steps - 1) whatever the length, and wsd's cool-down starts at its fraction of it.
SCHEDULES = [
    ((), ["optim.decay=cosine", "optim.warmup_steps=5", "optim.min_lr_frac=0.1"], 0.1),
    ((), ["optim.decay=linear", "optim.warmup_steps=5", "optim.min_lr_frac=0.0"], 0.0),
    ((), ["optim.decay=constant"], 1.0),
    (("wsd-schedule",), [], 0.0),
    (("wsd-schedule",), ["wsd-schedule.final=0.1"], 0.1),
]


@pytest.mark.parametrize("steps", [20, 75, 300])
@pytest.mark.parametrize("names, overrides, end", SCHEDULES)
def test_every_lr_schedule_ends_at_the_last_step(names, overrides, end, steps):
    cfg, hooks, _ = setup(names, overrides, steps=steps)
    sched = hooks.lr_schedule(cfg)
    assert float(sched(steps - 1)) == pytest.approx(end, abs=1e-6)
    assert float(sched(steps - 2)) != pytest.approx(end, abs=1e-6) or end == 1.0
    if names:  # the cool-down starts at 1 - cooldown_frac of the run, not of a budget
        start = steps - round(0.4 * steps)
        assert float(sched(start)) == 1.0 and float(sched(start + 1)) < 1.0


@pytest.mark.parametrize("steps", [20, 300])
def test_momentum_warmup_spans_its_fraction_of_the_run(steps):
    cfg, hooks, _ = setup(["muon", "momentum-warmup"], steps=steps)
    m = hooks.extras["muon_momentum"](cfg)
    w = round(0.2 * steps)
    assert float(m(0)) == pytest.approx(0.85)
    assert float(m(w // 2)) == pytest.approx(0.85 + 0.1 * (w // 2) / w)
    assert float(m(w)) == pytest.approx(0.95) and float(m(steps - 1)) == pytest.approx(0.95)


# ----------------------------------------------------------------------------------------------
# batch-schedule
# ----------------------------------------------------------------------------------------------


def test_batch_schedule_stages_and_lr():
    cfg, hooks, _ = setup(["batch-schedule"], steps=9)  # batch 4: stages of 2, 4, 6 sequences
    assert batches.batch_sizes(cfg, hooks) == [2, 2, 2, 4, 4, 4, 6, 6, 6]
    assert batches.tokens_seen(cfg, hooks)[-1] == 36 * SEQ
    base = setup([], steps=9)[1].lr_schedule(cfg)
    sched = hooks.lr_schedule(cfg)
    for s, m in ((0, 1.0), (2, 1.0), (3, 2 ** 0.6), (8, 3 ** 0.6)):
        assert float(sched(s)) == pytest.approx(float(base(s)) * m, rel=1e-6), s
    with pytest.raises(SpeedrunError, match="multipliers"):
        setup(["batch-schedule"], ["batch-schedule.multipliers=1,x"])


def test_loader_rows_continue_the_fixed_size_stream(tiny):
    folder = tiny / "data" / "tiny"
    files = sorted(folder.glob("*_train_*.bin"))
    fixed = loader_mod.TrainLoader(files, 4, 32, seed=1)
    whole = np.concatenate([fixed.batch(s)[0] for s in range(6)])  # 24 sequences
    parts = [fixed.rows(0, 2)[0], fixed.rows(2, 8)[0], fixed.rows(10, 14)[0]]
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.array_equal(fixed.rows(4, 4, 1, 2)[0], whole[[5, 7]])  # process 1 of 2


@pytest.mark.slow
def test_batch_schedule_trains_with_a_few_shapes_and_verifies(tiny, monkeypatch):
    asked = []
    real = loader_mod.TrainLoader.rows

    def spy(self, first, n, *rest):
        asked.append((first, n))
        return real(self, first, n, *rest)

    monkeypatch.setattr(loader_mod.TrainLoader, "rows", spy)
    assert run_cli(tiny, "--tricks", "batch-schedule", "--steps", "9",
                   "--set", "train.eval_every=3") == 0
    # batch 8: 4, 8, 12 sequences by thirds, taken back to back from the stream
    assert asked == [(0, 4), (4, 4), (8, 4), (12, 8), (20, 8), (28, 8), (36, 12), (48, 12),
                     (60, 12)]
    (folder,) = record_dirs(tiny)
    rec = record.load_record(folder)
    run = rec["runs"][0]
    assert run["tokens"] == 72 * 32
    assert [p[2] for p in run["curve"]] == [0, 12 * 32, 36 * 32, 72 * 32]
    assert verify.verify(folder) == []
