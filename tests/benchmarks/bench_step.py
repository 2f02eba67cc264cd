"""Benchmarks of the `wiki` baseline train step (pytest-benchmark; not part of the unit suite).

    python -m pytest tests/benchmarks/bench_step.py --benchmark-only -s

Compares the harness's chunked head + cross-entropy with a naive step that materialises the
full float32 logits, on the same machine in the same run, and prints MFU against the matmul peak
measured here too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tricks
from speedrun import tracks
from speedrun.training import speed as bench
from speedrun.core import model

CFG = tracks.WIKI.config


def naive_loss(params, x, y, cfg, hooks, chunk):
    h, p = model.forward(params, x, cfg, hooks)
    z = hooks.logits((h @ hooks.head(p)).astype(jnp.float32))  # (B, T, V) all at once
    return jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, y[..., None], -1)[..., 0])


def make_step(loss_fn):
    hooks = tricks.build_hooks(CFG)
    params = hooks.init(jax.random.PRNGKey(0), CFG.model)
    tx = hooks.optimizer(params, CFG, hooks)
    state = (params, tx.init(params))
    rng = np.random.default_rng(0)
    shape = (CFG.train.batch_size, CFG.model.seq_len)
    x = jnp.asarray(rng.integers(0, 50257, shape, dtype=np.int32))
    y = jnp.asarray(rng.integers(0, 50257, shape, dtype=np.int32))

    @jax.jit
    def step(params, opt_state):
        loss, g = jax.value_and_grad(loss_fn)(params, x, y, CFG.model, hooks, CFG.train.loss_chunk)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jax.block_until_ready(step(*state))  # compile outside the measurement

    def run():
        return jax.block_until_ready(step(*state))

    return run, bench.flops_per_token(CFG, params) * shape[0] * shape[1]


@pytest.fixture(scope="module")
def peak():
    return bench.matmul_peak()


@pytest.mark.parametrize("variant", ["chunked", "naive"])
def test_train_step(benchmark, peak, variant):
    run, flops = make_step(model.loss if variant == "chunked" else naive_loss)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    step_s = benchmark.stats.stats.median
    benchmark.extra_info.update(mfu=flops / step_s / peak, peak_gflops=peak / 1e9,
                                tokens_per_s=CFG.train.batch_size * CFG.model.seq_len / step_s)
    print(f"\n{variant}: step {step_s * 1e3:.1f} ms, "
          f"{CFG.train.batch_size * CFG.model.seq_len / step_s:,.0f} tokens/s, "
          f"MFU {flops / step_s / peak:.1%} of {peak / 1e9:.0f} GFLOP/s")
    assert step_s > 0
