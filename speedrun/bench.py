"""`python -m speedrun bench`: train-step time, tokens/s and model FLOPs utilisation (MFU).

MFU is measured against this machine's own matmul peak, timed in the same process, so the
figure means the same thing on a laptop CPU and on an H100.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import tricks as trick_registry
from speedrun import distributed, params as P, train
from speedrun.hardware import matmul_peak  # noqa: F401  (bench.matmul_peak, as before)
from speedrun.config import RunConfig, apply_overrides
from speedrun import tracks


def flops_per_token(cfg: RunConfig, params) -> float:
    """Training FLOPs per token: 6 x (weights used in matmuls, incl. the output head)
    + 6 x L x T x D for causal attention scores and mixing (forward 2TD per layer, x3 train)."""
    m = cfg.model
    matmul_weights = sum(
        int(x.size)
        for name, x in _named(params)
        if P.kind(name, x) in ("matrix", "head") and name.startswith("blocks")
    )
    head = m.d_model * m.vocab_size
    return 6 * (matmul_weights + head) + 6 * m.n_layer * m.seq_len * m.d_model


def _named(params):
    return [(P.path_name(p), x) for p, x in jax.tree_util.tree_leaves_with_path(params)]


def measure_step(cfg: RunConfig, steps: int = 10, warmup: int = 2) -> dict:
    """Median wall time of the compiled train step on random tokens (state donated as in a run)."""
    hooks = trick_registry.build_hooks(cfg)
    m = distributed.mesh()
    rep, shard = distributed.replicated(m), distributed.batch_sharded(m)
    params = jax.device_put(hooks.init(jax.random.PRNGKey(0), cfg.model), rep)
    tx = hooks.optimizer(params, cfg, hooks)
    opt_state = jax.device_put(tx.init(params), rep)
    rng = np.random.default_rng(0)
    shape = (cfg.train.batch_size, cfg.model.seq_len)
    ids = min(50257, cfg.model.vocab_size)  # GPT-2 ids, or fewer for a smaller vocabulary
    x = distributed.put_batch(rng.integers(0, ids, shape, dtype=np.int32), shard)
    y = distributed.put_batch(rng.integers(0, ids, shape, dtype=np.int32), shard)
    step = jax.jit(train.make_step(cfg, hooks, tx), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    step = step.lower(params, opt_state, x, y).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, x, y)
        loss.block_until_ready()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    tokens = shape[0] * shape[1]
    fpt = flops_per_token(cfg, params)
    return {
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "flops_per_token": fpt,
        "achieved_flops": fpt * tokens / step_s,
        "compile_s": compile_s,
        "params": P.count(params),
    }


def main(args) -> int:
    track = tracks.get(args.track)
    cfg = trick_registry.with_tricks(track.config, trick_registry.parse_names(args.tricks))
    cfg = trick_registry.configure(apply_overrides(cfg, args.overrides))
    dev = jax.devices()[0]
    peak = matmul_peak() * jax.device_count()
    r = measure_step(cfg, steps=args.steps)
    m = cfg.model
    print(f"device: {jax.device_count()} x {dev.device_kind}")
    print(f"model: {m.n_layer}L d{m.d_model} h{m.n_head} seq{m.seq_len} vocab{m.vocab_size}, "
          f"{r['params'] / 1e6:.2f}M params, batch {cfg.train.batch_size}, tricks: "
          f"{','.join(cfg.trick_names) or 'baseline'}")
    print(f"matmul peak (measured, float32 2048^3): {peak / 1e9:.1f} GFLOP/s")
    print(f"step time: {r['step_s'] * 1e3:.1f} ms (median of {args.steps}), "
          f"compile {r['compile_s']:.1f}s")
    print(f"throughput: {r['tokens_per_s']:,.0f} tokens/s, "
          f"{r['flops_per_token'] / 1e6:.1f} MFLOP/token")
    print(f"MFU: {r['achieved_flops'] / peak:.1%} ({r['achieved_flops'] / 1e9:.1f} GFLOP/s)")
    return 0
