"""How fast a configuration trains and decodes on this machine, as `bench` reports it: the
train step's time, tokens/s and model FLOPs utilisation (MFU), where the step's time goes, and
prefill and decode tokens/s.

MFU is measured on a CPU against this machine's own float32 matmul peak, timed in the same
process; on an accelerator computing in bfloat16, against its datasheet's dense bf16 peak (the
figure the speedrun and llm.c quote), with the measured bf16 matmul printed beside it
(``mfu_peak``).

The breakdown times pieces of the step compiled on their own, on the run's shapes: the
attention kernel (forward + backward, x layers), the output head + cross-entropy (forward +
backward, through the training loss's hook), the rest of the forward/backward pass (matmuls,
norms, MLP, embeddings: the whole gradient minus those two), the optimizer update (the step
minus the gradient: for Muon, its Newton-Schulz iterations), moving a batch to the device, and
the host's share (a step waited on one by one minus the same steps dispatched back to back).
XLA fuses across these boundaries in the real step, so the pieces need not sum exactly to it;
the table says by how much they differ.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import tricks as trick_registry
from speedrun.config import RunConfig
from speedrun.core import model
from speedrun.core import params as P
from speedrun.core.hooks import Ctx
from speedrun.distributed import devices, sharding
from speedrun.inference import generate as G
from speedrun.training import accumulate, environment, remat, train
from speedrun.training.environment import matmul_peak
from speedrun.training.state import init_state


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


def median_time(fn, *args, steps: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn(*args)`` waited on to completion (after ``warmup`` calls)."""
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _setup(cfg: RunConfig):
    """Hooks, initial state and a random batch (GPT-2 ids, or fewer for a smaller vocabulary)."""
    hooks = trick_registry.build_hooks(cfg)
    m = devices.mesh()
    shard = devices.batch_sharded(m)
    devices.check_batch(cfg.train.batch_size)
    state = init_state(cfg, hooks, 0, m)
    rng = np.random.default_rng(0)
    shape = (cfg.train.batch_size, cfg.model.seq_len)
    ids = min(50257, cfg.model.vocab_size)
    x, y = (rng.integers(0, ids, shape, dtype=np.int32) for _ in range(2))
    return hooks, state, (x, y), shard


def measure_step(cfg: RunConfig, steps: int = 10, warmup: int = 2,
                 profile_dir: Path | None = None, activations: bool = False) -> dict:
    """Median wall time of the compiled train step on random tokens (state donated as in a run);
    with ``profile_dir``, a jax.profiler trace of ``steps`` more steps is written there. Also
    the bytes of parameters and optimizer state one device holds (``train.sharding``); with
    ``activations``, those its backward pass keeps (``remat.kept_bytes``: a trace of the model,
    seconds at GPT-2 small's size)."""
    cfg = resolved(cfg)
    hooks, start, (x, y), shard = _setup(cfg)
    state_bytes = sharding.bytes_per_device((start.params, start.opt_state))
    kept = kept_activation_bytes(cfg, hooks, start.params, x, y) if activations else None
    x, y = devices.put_batch(x, shard), devices.put_batch(y, shard)
    step = jax.jit(train.make_step(cfg, hooks, start.tx, start.layout), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    step = step.lower(start.params, start.opt_state, x, y).compile()
    compile_s = time.perf_counter() - t0
    step_peak = program_peak_bytes(step)
    state = [start.params, start.opt_state]

    def one():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return loss

    step_s = median_time(one, steps=steps, warmup=warmup)
    # The same steps dispatched back to back, as the training loop does between log points: the
    # difference from step_s is what waiting on the host costs per step.
    t = time.perf_counter()
    for _ in range(steps):
        loss = one()
    jax.block_until_ready(loss)
    pipelined_s = (time.perf_counter() - t) / steps
    if profile_dir is not None:
        with jax.profiler.trace(str(profile_dir)):
            for _ in range(steps):
                loss = one()
            jax.block_until_ready(loss)
    tokens = x.shape[0] * x.shape[1]
    fpt = flops_per_token(cfg, state[0])
    return {
        "step_s": step_s,
        "pipelined_s": pipelined_s,
        "tokens_per_s": tokens / step_s,
        "flops_per_token": fpt,
        "achieved_flops": fpt * tokens / step_s,
        "compile_s": compile_s,
        "params": P.count(state[0]),
        "state_bytes_per_device": state_bytes,
        "peak_memory_bytes": peak_memory(),
        "step_peak_bytes": step_peak,
        "kept_activation_bytes": kept,
    }


def resolved(cfg: RunConfig) -> RunConfig:
    """The configuration with its microbatch count chosen for this machine, as a run would."""
    return accumulate.resolve(cfg, trick_registry.build_hooks(cfg))[0]


def kept_activation_bytes(cfg: RunConfig, hooks, params, x, y) -> int | None:
    """Activations one microbatch's backward pass keeps from its forward pass, under
    ``train.remat`` (traced, not compiled: remat.kept_bytes)."""
    rows = x.shape[0] // cfg.train.grad_accum
    step_hooks = remat.with_remat(hooks, cfg.train.remat)
    return remat.kept_bytes(
        lambda p: model.loss(p, x[:rows], y[:rows], cfg.model, step_hooks, cfg.train.loss_chunk),
        params)


def program_peak_bytes(compiled) -> int | None:
    """The peak bytes a compiled program holds at once as XLA planned its buffers (arguments,
    temporaries and outputs): the step's own figure, whatever ran before in the process (a
    process's peak only grows, so it cannot compare configurations measured one after another)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    peak = getattr(stats, "peak_memory_in_bytes", 0)
    return int(peak) if peak > 0 else int(stats.argument_size_in_bytes + stats.temp_size_in_bytes
                                          + stats.output_size_in_bytes - stats.alias_size_in_bytes)


def peak_memory() -> int | None:
    """Peak bytes in use on the first device where the backend reports it (GPU, TPU); on CPU the
    process's peak resident set size (which includes the Python heap)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def breakdown(cfg: RunConfig, steps: int = 10) -> dict:
    """Seconds per train step spent in each piece (see the module docstring for what each is)."""
    cfg = resolved(cfg)
    hooks, state, (x, y), _ = _setup(cfg)
    tx, params, opt_state = state.tx, state.params, state.opt_state
    m, chunk = cfg.model, cfg.train.loss_chunk
    B, T = x.shape
    x, y = jnp.asarray(x), jnp.asarray(y)
    step_hooks = remat.with_remat(hooks, cfg.train.remat)  # the gradient as the step takes it
    grad_fn = jax.jit(accumulate.value_and_grad(
        lambda p, x, y, i: model.loss(state.layout.gather(p), x, y, m, step_hooks, chunk),
        cfg.train.grad_accum))
    grad_s = median_time(grad_fn, params, x, y, None, steps=steps)
    step_fn = jax.jit(train.make_step(cfg, hooks, tx, state.layout))
    step_s = median_time(step_fn, params, opt_state, x, y, steps=steps)

    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    dtype = jnp.dtype(m.compute_dtype)  # what the real step feeds attention and the head
    q = jax.random.normal(keys[0], (B, T, m.n_head, m.head_dim), dtype)
    k, v = (jax.random.normal(kk, (B, T, m.kv_heads, m.head_dim), dtype) for kk in keys[1:3])

    def attend_sum(q, k, v):
        ctx = Ctx(params=params, tokens=x, cfg=m, layer=0)
        return jnp.sum(hooks.attend(q, k, v, ctx))

    attn = jax.jit(jax.value_and_grad(attend_sum, argnums=(0, 1, 2)))
    attn_s = median_time(attn, q, k, v, steps=steps) * m.n_layer

    h = jax.random.normal(keys[3], (B, T, m.d_model), dtype)
    w = hooks.head(hooks.cast(params))

    def head_loss(h, w):  # the training loss's head: the loss hook (e.g. fp8-head, mtp)
        ctx = Ctx(params=params, tokens=x, cfg=m, training=True)
        return hooks.loss(h, w, y, hooks.logits, chunk, ctx)

    head = jax.jit(jax.value_and_grad(head_loss, argnums=(0, 1)))
    head_s = median_time(head, h, w, steps=steps)

    shard = devices.batch_sharded(devices.mesh())
    host = np.asarray(x)
    data_s = median_time(lambda: (devices.put_batch(host, shard),
                                  devices.put_batch(host, shard)), steps=steps)
    return {
        "attention": attn_s,
        "head + loss": head_s,
        "rest of fwd/bwd": max(grad_s - attn_s - head_s, 0.0),
        "optimizer": max(step_s - grad_s, 0.0),
        "batch to device": data_s,
        "step (all of it)": step_s,
    }


def breakdown_table(parts: dict, host_s: float) -> str:
    """Rows of ms per step and share of the step; host = waited-on minus pipelined step."""
    step = parts["step (all of it)"]
    rows = [(k, v) for k, v in parts.items() if k != "step (all of it)"]
    rows.append(("host (sync per step)", max(host_s, 0.0)))
    lines = [f"{'piece':<22}{'ms/step':>10}{'share':>9}"]
    for name, s in rows:
        lines.append(f"{name:<22}{s * 1e3:>10.1f}{s / step:>9.0%}")
    total = sum(s for _, s in rows)
    lines.append(f"{'sum of pieces':<22}{total * 1e3:>10.1f}{total / step:>9.0%}"
                 "  (XLA fuses across pieces in the real step)")
    lines.append(f"{'step':<22}{step * 1e3:>10.1f}{1:>9.0%}")
    return "\n".join(lines)


def mfu_peak(dev, compute_dtype: str) -> tuple[float, str]:
    """The peak MFU is quoted against, for all devices together, and what it is: on a CPU the
    float32 2048^3 matmul measured now (the CPU tracks compute in float32); on an accelerator
    computing in bfloat16, its datasheet's dense bf16 peak (as llm.c and the speedrun quote MFU),
    with a bf16 8192^3 matmul measured now beside it; else the measured matmul."""
    n = jax.device_count()
    if dev.platform == "cpu":
        return matmul_peak() * n, "measured, float32 2048^3"
    dtype = jnp.dtype(compute_dtype)
    measured = matmul_peak(8192, dtype) * n
    sheet = environment.datasheet_peak(dev.device_kind) if dtype == jnp.bfloat16 else None
    if sheet is None:
        return measured, f"measured, {dtype.name} 8192^3"
    return sheet[0] * n, (f"datasheet dense bf16, {sheet[1]}; measured bf16 8192^3: "
                          f"{measured / 1e12:,.0f} TFLOP/s")


# ----------------------------------------------------------------------------------------------
# Inference: `bench --decode`
# ----------------------------------------------------------------------------------------------


def measure_decode(m, batch: int, prompt_len: int, new_tokens: int, repeats: int = 3) -> dict:
    """Prefill and decode throughput of a model (speedrun.generate.Model) at one batch size:
    prefill of ``prompt_len`` random tokens per row, then ``new_tokens`` greedy tokens per row
    (never stopping early), each timed after compilation (median of ``repeats``)."""
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
    prefill_s = median_time(lambda: prefill(m.params, tokens, lengths, key), steps=repeats, warmup=0)
    decode_s = median_time(lambda: decode(m.params, first, cache, lengths, key), steps=repeats, warmup=0)
    steps = new_tokens - 1  # the first new token comes out of the prefill
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "prefill_s": prefill_s, "prefill_tokens_per_s": batch * prompt_len / prefill_s,
            "decode_s": decode_s, "decode_tokens_per_s": batch * steps / decode_s,
            "ms_per_step": decode_s / steps * 1e3, "compile_s": compile_s}
