"""Benchmarks of the default CPU track's train step: the baseline and the claimed stacks
(pytest-benchmark; not part of the unit suite; they report, they do not assert times).

    python -m pytest tests/benchmarks/bench_track_step.py --benchmark-only -s

Each configuration also runs with the dense layers as 3-D (B, T, D) @ (D, F) products, the
layout before the 2-D change, so the before/after ratio comes from one process on one machine.
Prints ms per step, tokens/s and MFU against the matmul peak measured in the same process.
"""

from __future__ import annotations

import jax
import pytest

import tricks
from speedrun import tracks
from speedrun.training import speed as bench
from speedrun.distributed import devices as distributed
from speedrun.core import model
from speedrun.training import train

TRACK = tracks.WIKI_BYTES
STACKS = {
    "baseline": [],
    "muon,rotary,wsd-schedule": ["muon", "rotary", "wsd-schedule"],
    # the fastest claim's tricks less batch-schedule (it changes the batch size by stage; this
    # times the step at the track's batch)
    "second-wave stack": ["muon", "rotary", "wsd-schedule", "polar-express", "normuon",
                          "window-attention", "key-offset"],
}


def dense_3d(x, w, b=None):
    """The layout before: XLA:CPU contracts two axes for the weight gradient (slower)."""
    y = x @ w
    return y if b is None else y + b


@pytest.fixture(scope="module")
def peak():
    return bench.matmul_peak()


@pytest.mark.parametrize("layout", ["2d", "3d-before"])
@pytest.mark.parametrize("stack", list(STACKS))
def test_track_step(benchmark, peak, monkeypatch, stack, layout):
    if layout == "3d-before":
        monkeypatch.setattr(model, "dense", dense_3d)
    cfg = tricks.configure(tricks.with_tricks(TRACK.config, STACKS[stack]))
    hooks, start, (x, y), shard = bench._setup(cfg)
    x, y = distributed.put_batch(x, shard), distributed.put_batch(y, shard)
    step = jax.jit(train.make_step(cfg, hooks, start.tx, start.layout), donate_argnums=(0, 1))
    step = step.lower(start.params, start.opt_state, x, y).compile()  # compile outside the measurement
    state = [start.params, start.opt_state]

    def one():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return jax.block_until_ready(loss)

    benchmark.pedantic(one, rounds=10, warmup_rounds=2)
    step_s = benchmark.stats.stats.median
    tokens = x.shape[0] * x.shape[1]
    mfu = bench.flops_per_token(cfg, state[0]) * tokens / step_s / peak
    benchmark.extra_info.update(mfu=mfu, peak_gflops=peak / 1e9, tokens_per_s=tokens / step_s)
    print(f"\n{stack} ({layout}): step {step_s * 1e3:.1f} ms, {tokens / step_s:,.0f} tokens/s, "
          f"MFU {mfu:.1%} of {peak / 1e9:.0f} GFLOP/s")
    assert step_s > 0
