"""`python -m speedrun bench`: train-step time, tokens/s and model FLOPs utilisation (MFU);
with ``--decode``, inference: prefill and decode tokens/s at batch 1 and 8.

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
    if getattr(args, "decode", False):
        return decode_main(args)
    if getattr(args, "checkpoint", None):
        from speedrun.errors import SpeedrunError

        raise SpeedrunError("--checkpoint goes with --decode (the train step benchmark uses the "
                            "track's config)")
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


# ----------------------------------------------------------------------------------------------
# Inference: `bench --decode`
# ----------------------------------------------------------------------------------------------


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_decode(m, batch: int, prompt_len: int, new_tokens: int, repeats: int = 3) -> dict:
    """Prefill and decode throughput of a model (speedrun.generate.Model) at one batch size:
    prefill of ``prompt_len`` random tokens per row, then ``new_tokens`` greedy tokens per row
    (never stopping early), each timed after compilation (median of ``repeats``)."""
    from speedrun import generate as G

    s = G.Sampling(temperature=0)
    new_tokens = G.room(m, prompt_len, new_tokens)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, m.n_valid, (batch, prompt_len)), jnp.int32)
    lengths = jnp.full((batch,), prompt_len, jnp.int32)
    key = jax.random.PRNGKey(0)
    prefill = G.make_prefill(m, s, prompt_len + new_tokens)
    decode = G.make_decode(m, s, new_tokens, None)
    t0 = time.perf_counter()
    first, cache = jax.block_until_ready(prefill(m.params, tokens, lengths, key))
    jax.block_until_ready(decode(m.params, first, cache, lengths, key))
    compile_s = time.perf_counter() - t0
    prefill_s = _median_time(lambda: prefill(m.params, tokens, lengths, key), repeats)
    decode_s = _median_time(lambda: decode(m.params, first, cache, lengths, key), repeats)
    steps = new_tokens - 1  # the first new token comes out of the prefill
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "prefill_s": prefill_s, "prefill_tokens_per_s": batch * prompt_len / prefill_s,
            "decode_s": decode_s, "decode_tokens_per_s": batch * steps / decode_s,
            "ms_per_step": decode_s / steps * 1e3, "compile_s": compile_s}


def decode_main(args) -> int:
    from speedrun import checkpoint, generate as G

    if args.checkpoint:
        ck = checkpoint.load(args.checkpoint)
        m = ck.model()
        what = f"{ck.path.name}{' (int8)' if ck.quantization == 'int8' else ''}"
    else:
        cfg = trick_registry.with_tricks(tracks.get(args.track).config,
                                         trick_registry.parse_names(args.tricks))
        cfg = trick_registry.configure(apply_overrides(cfg, args.overrides))
        hooks = trick_registry.build_hooks(cfg)
        tokenizer = tracks.get(cfg.track).rules.tokenizer
        m = G.Model(hooks.init(jax.random.PRNGKey(0), cfg.model), cfg, hooks, tokenizer)
        what = f"{cfg.track} {','.join(cfg.trick_names) or 'baseline'} (random weights)"
    m = G.Model(jax.device_put(m.params), m.cfg, m.hooks, m.tokenizer)
    c = m.cfg.model
    prompt_len = args.prompt_len or max(1, c.seq_len // 4)
    new_tokens = args.new_tokens or max(2, c.seq_len // 2)
    print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind}")
    print(f"model: {what}, {c.n_layer}L d{c.d_model} h{c.n_head} kv{c.kv_heads} "
          f"seq{c.seq_len} vocab{c.vocab_size}, {P.count(m.params) / 1e6:.2f}M parameters")
    for batch in args.batch:
        r = measure_decode(m, batch, prompt_len, new_tokens)
        print(f"batch {batch}: prefill {r['prompt_len']} tokens/row {r['prefill_tokens_per_s']:,.0f} "
              f"tokens/s ({r['prefill_s'] * 1e3:.1f} ms); decode {r['new_tokens']} tokens/row "
              f"{r['decode_tokens_per_s']:,.0f} tokens/s ({r['ms_per_step']:.2f} ms/step); "
              f"compile {r['compile_s']:.1f}s")
    return 0
