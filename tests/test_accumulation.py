"""Gradient accumulation (train.grad_accum): microbatches take the optimizer step of the whole
batch (AdamW and Muon, tricks that read the batch, a batch-size schedule through the training
loop); bad counts are one line before compiling; the FineWeb tracks' count is chosen from a
device's memory."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import tricks
from helpers import (SEQ, flat, param_gaps, run_cli, setup, sweep, tiny_config, tokens, train_tiny,
                     one_line_error, record_dirs)
from speedrun import tracks
from speedrun.config import RunConfig, TrainConfig, identity_hash
from speedrun.core.batch_sizes import batch_sizes
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.records.record import load_record
from speedrun.training import accumulate
from speedrun.training import train as train_mod
from speedrun.training.state import init_state

ROWS, STEPS = 16, 20


def steps_of(names, count: int, rows=slice(None)) -> tuple[list[float], dict, dict]:
    """The harness's step, ``STEPS`` updates on a fresh batch of ``ROWS`` rows each (taken in
    the order ``rows`` says): losses, the first and the final parameters."""
    cfg, hooks, _ = setup(names, [f"train.batch_size={ROWS}", f"train.grad_accum={count}",
                                  f"train.steps={STEPS}"])
    mesh = devices.mesh()
    state, feed = init_state(cfg, hooks, 0, mesh), train_mod.Feed(mesh)
    step = jax.jit(train_mod.make_step(cfg, hooks, state.tx, state.layout))
    first = flat(jax.tree_util.tree_map(np.asarray, state.params))
    params, opt_state, losses = state.params, state.opt_state, []
    for i in range(STEPS):
        x, y = (np.asarray(tokens(100 * i + s, (ROWS, SEQ)))[rows] for s in (0, 1))
        params, opt_state, loss = step(params, opt_state, feed.batch(x), feed.batch(y),
                                       feed.step(i))
        losses.append(float(loss))
    return losses, first, flat(params)


@pytest.mark.parametrize("names", sweep([["muon"], [], ["bigram-hash"], ["mtp"]]),
                         ids=lambda n: "+".join(n) or "adamw")
def test_four_microbatches_of_four_take_the_step_of_one_batch_of_sixteen(names):
    """The same losses within 1e-5, and every parameter within 1e-5 or within twice what the
    batch's rows in reverse order already do to it: a sum in another order rounds otherwise,
    and Adam scales a gradient that is rounding noise (an embedding row that a batch's
    contributions all but cancel, like the key biases ``param_gaps`` leaves out) up to a step
    of its learning rate. Reversed, bigram-hash's table moves by ~1.5e-5 over the 20 steps."""
    whole, first, whole_params = steps_of(names, 1)
    micro, _, micro_params = steps_of(names, 4)
    _, _, reversed_params = steps_of(names, 1, rows=slice(None, None, -1))
    assert np.max(np.abs(np.subtract(whole, micro))) < 1e-5, (whole, micro)
    assert max(param_gaps(first, whole_params).values()) > 0.01  # the updates moved the model
    gaps, floor = param_gaps(whole_params, micro_params), param_gaps(whole_params, reversed_params)
    over = {k: (g, floor[k]) for k, g in gaps.items() if g > max(1e-5, 2 * floor[k])}
    assert not over, over
    assert sum(g > 1e-5 for g in gaps.values()) <= 1, gaps  # at most one table, as above


def test_the_microbatches_are_strided_rows_of_the_batch():
    x = np.arange(8 * 3).reshape(8, 3)
    parts = np.asarray(accumulate.microbatches(x, 4))
    assert parts.shape == (4, 2, 3)
    assert [row[0] // 3 for row in parts[1]] == [1, 5]  # rows 1 and 5 of the batch
    assert sorted(parts.reshape(-1, 3)[:, 0].tolist()) == x[:, 0].tolist()  # each row once


@pytest.mark.slow
def test_a_batch_size_schedule_trains_the_same_run_in_microbatches(tiny):
    """Through the training loop: batch-schedule's stages (4, 8, 12 sequences) each taken in 4
    microbatches give the curve and the model of the whole batches (at lr 3e-3, as the step's
    test: at the tiny track's 1e-2 rounding differences grow to ~3e-5 by step 20)."""
    def run(count):
        cfg = tiny_config(grad_accum=count)
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=3e-3))
        cfg = tricks.configure(tricks.with_tricks(cfg, ["batch-schedule"]))
        assert sorted(set(batch_sizes(cfg, tricks.build_hooks(cfg)))) == [4, 8, 12]
        kept = {}
        out = train_tiny(cfg, tiny / "data", finished=lambda p: kept.update(flat(p)))
        return out, kept

    (whole, whole_params), (micro, micro_params) = run(1), run(4)
    assert [s for s, *_ in micro.curve] == [s for s, *_ in whole.curve]
    assert np.max(np.abs([a[-1] - b[-1] for a, b in zip(whole.curve, micro.curve)])) < 1e-5
    assert micro.tokens == whole.tokens
    gaps = param_gaps(whole_params, micro_params)
    assert max(gaps.values()) < 1e-5, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]


# --- bad counts, refused before anything compiles ------------------------------------------------


def test_a_count_that_does_not_divide_the_batch_is_one_line(tiny, capsys, no_training):
    assert run_cli(tiny, "--set", "train.grad_accum=3") == 1
    one_line_error(capsys, "train.grad_accum=3 must divide each device's share of the batch",
                   "train.batch_size=8 on one device is 8 sequences a device", "1, 2, 4, 8")
    assert not record_dirs(tiny)


def test_a_count_that_does_not_divide_a_scheduled_batch_is_one_line(tiny, capsys, no_training):
    # the stages are 4, 8 and 12 sequences: 8 microbatches divide the batch, not the first stage
    assert run_cli(tiny, "--tricks", "batch-schedule", "--set", "train.grad_accum=8") == 1
    one_line_error(capsys, "the scheduled batch size 4 on one device is 4 sequences a device")


def test_a_whole_batch_trick_refuses_microbatches(tiny, capsys, no_training):
    assert run_cli(tiny, "--tricks", "moe", "--set", "train.grad_accum=2") == 1
    one_line_error(capsys, "train.grad_accum=2: moe computes over the whole batch's tokens")


def test_a_negative_count_is_an_invalid_setting(tiny, capsys, no_training):
    assert run_cli(tiny, "--set", "train.grad_accum=-1") == 1
    one_line_error(capsys, "train.grad_accum must be a positive count of microbatches, or 0")


# --- the count chosen from a device's memory ----------------------------------------------------


GB = 10**9


def fineweb(**train):
    cfg = tracks.FINEWEB10B.config
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def estimate(cfg: RunConfig, rows: int, n_devices: int = 1) -> float:
    return accumulate.state_bytes(accumulate.MEASURED_PARAMS, cfg.train.sharding, n_devices) + \
        rows * accumulate.per_sequence_bytes(cfg)


@pytest.mark.parametrize("limit_gb", [18, 60, 130])
def test_the_fewest_microbatches_that_fit_are_chosen(limit_gb):
    cfg = fineweb()
    count, line = accumulate.choose(cfg, [512], 1, accumulate.MEASURED_PARAMS, limit_gb * GB)
    assert 512 % count == 0
    assert estimate(cfg, 512 // count) <= accumulate.HEADROOM * limit_gb * GB
    fewer = [c for c in accumulate.divisors(512) if c < count]
    assert all(estimate(cfg, 512 // c) > accumulate.HEADROOM * limit_gb * GB for c in fewer)
    assert line.startswith(f"train.grad_accum=0: {count} microbatch")
    assert f"of {512 // count} sequences a device" in line and f"{limit_gb:.1f} GB" in line


def test_the_measured_figure_is_what_it_is_scaled_from():
    """GPT-2 small at 64 sequences is estimated at the peak measured for it on the H100; GPT-2
    medium needs more a sequence (twice the layers, 4/3 the width)."""
    small = fineweb()
    assert estimate(small, 64) == pytest.approx(accumulate.MEASURED_PEAK)
    medium = tracks.FINEWEB10B_MEDIUM.config
    assert accumulate.per_sequence_bytes(medium) == pytest.approx(
        accumulate.per_sequence_bytes(small) * 2 * 4 / 3)


def test_more_devices_need_fewer_microbatches():
    cfg = fineweb()
    one, _ = accumulate.choose(cfg, [512], 1, accumulate.MEASURED_PARAMS, 60 * GB)
    eight, _ = accumulate.choose(cfg, [512], 8, accumulate.MEASURED_PARAMS, 60 * GB)
    # an 80 GB H100 lets JAX allocate 75% of it: one takes 8 microbatches of 64 sequences (the
    # measured step), the 8-GPU reference its 64 sequences a GPU whole
    assert one == 8 and eight == 1


def test_a_device_too_small_for_one_sequence_is_one_line():
    with pytest.raises(SpeedrunError, match="even one sequence a microbatch needs an estimated"):
        accumulate.choose(fineweb(), [512], 1, accumulate.MEASURED_PARAMS, 2 * GB)


def test_a_device_without_a_memory_figure_takes_the_batch_whole():
    count, line = accumulate.choose(fineweb(), [512], 1, accumulate.MEASURED_PARAMS, None)
    assert count == 1 and "reports no memory limit" in line


@pytest.mark.slow
def test_a_run_here_chooses_one_and_its_record_says_so(tiny, capsys):
    assert run_cli(tiny, "--set", "train.grad_accum=0", "--steps", "2",
                   "--set", "train.eval_every=2") == 0
    assert "train.grad_accum=0: 1 microbatch (this device reports no memory limit" in \
        capsys.readouterr().out
    (folder,) = record_dirs(tiny)
    assert load_record(folder)["config"]["train"]["grad_accum"] == 1


def test_the_count_is_an_execution_setting_not_the_configurations_identity():
    cfg = RunConfig(train=TrainConfig(batch_size=64))
    for change in ({"grad_accum": 8}, {"remat": "full"}, {"grad_accum": 4, "remat": "dots"}):
        other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **change))
        assert identity_hash(other) == identity_hash(cfg)
    assert identity_hash(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, batch_size=32))) != identity_hash(cfg)
