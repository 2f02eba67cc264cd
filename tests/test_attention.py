"""speedrun/core/attention.py: the CPU formulation equals jax.nn.dot_product_attention (values and
gradients), the chooser picks per backend, and a tiny model with the attention-related tricks
gives the same loss and gradients with either implementation behind the `attend` hook."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from helpers import sweep
from speedrun.core import attention, model
from speedrun.config import ModelConfig, OptimConfig, RunConfig, TrainConfig


def qkv(B, T, H, hd, KV=None, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    KV = KV or H
    q = jax.random.normal(ks[0], (B, T, H, hd), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (B, T, KV, hd), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (B, T, KV, hd), jnp.float32).astype(dtype)
    g = jax.random.normal(ks[3], (B, T, H, hd), jnp.float32)  # cotangent for the gradients
    return q, k, v, g


def run_jit(f, *args):
    """jit f and run it, compiled at LLVM -O0: half the compile time, same HLO (and results)."""
    return jax.jit(f).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


def value_and_grads(fn, q, k, v, g):
    """fn's output and the gradients of <fn(q, k, v), g> w.r.t. q, k, v (all float32)."""

    def f(q, k, v):
        y = fn(q, k, v)
        return jnp.sum(y.astype(jnp.float32) * g), y

    (_, y), grads = run_jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True), q, k, v)
    return [np.asarray(a, np.float32) for a in (y, *grads)]


def assert_close(got, want, rtol):
    for name, a, b in zip(("y", "dq", "dk", "dv"), got, want):
        err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
        assert err <= rtol, f"{name}: max error {err:.2e} (relative to max |ref|) > {rtol}"


# (B, T, H, hd, KV), block, scale: several blocks with a short last one (50 = 3 x 16 + 2) and
# 2 query heads per kv head; one (masked) block below the default block size; multi-query
CASES = [
    ((2, 50, 4, 8, 2), 16, None),
    ((1, 7, 3, 4, 3), None, None),
    ((1, 33, 6, 8, 1), 8, 0.3),
]


@pytest.mark.parametrize("shape,block,scale", CASES, ids=[str(c[0]) for c in CASES])
def test_blocked_equals_reference(shape, block, scale):
    B, T, H, hd, KV = shape
    q, k, v, g = qkv(B, T, H, hd, KV)
    got = value_and_grads(functools.partial(attention.blocked, block=block, scale=scale),
                          q, k, v, g)
    want = value_and_grads(functools.partial(attention.reference, scale=scale), q, k, v, g)
    assert got[0].shape == (B, T, H, hd)
    assert_close(got, want, 1e-5)


def test_blocked_bfloat16_inputs():
    """bfloat16 in, bfloat16 out, computed in float32: close to the float32 reference on the
    same (rounded) inputs (the XLA reference in bfloat16 is off by about the same)."""
    q, k, v, g = qkv(2, 48, 4, 16, KV=2, dtype=jnp.bfloat16)
    assert attention.blocked(q, k, v, block=16).dtype == jnp.bfloat16
    want = value_and_grads(attention.reference, *(x.astype(jnp.float32) for x in (q, k, v)), g)
    got = value_and_grads(functools.partial(attention.blocked, block=16), q, k, v, g)
    assert_close(got, want, 1e-2)


def test_chooser(monkeypatch):
    monkeypatch.delenv(attention.ENV, raising=False)
    choose = attention.choose
    assert choose("cpu", jnp.float32, 32) == "blocked"
    assert choose("cpu", jnp.bfloat16, 64) == "blocked"
    assert choose("gpu", jnp.bfloat16, 64) == "cudnn"
    assert choose("gpu", jnp.float16, 128) == "cudnn"
    assert choose("gpu", jnp.float32, 64) == "xla"  # cuDNN attention is bf16/fp16 only
    assert choose("gpu", jnp.bfloat16, 12) == "xla"  # head_dim not a multiple of 8
    assert choose("gpu", jnp.bfloat16, 256) == "xla"  # head_dim over 128
    assert choose("tpu", jnp.bfloat16, 64) == "xla"
    assert attention.implementation_name(jnp.bfloat16, 64, "gpu") == "cudnn"
    monkeypatch.setenv(attention.ENV, "xla")
    assert choose("cpu", jnp.float32, 32) == "xla"
    monkeypatch.setenv(attention.ENV, "flash")
    with pytest.raises(ValueError, match=attention.ENV):
        choose("cpu", jnp.float32, 32)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU choice")
def test_causal_on_cpu_uses_blocked(monkeypatch):
    monkeypatch.delenv(attention.ENV, raising=False)
    q, k, v, _ = qkv(1, 16, 2, 8)
    np.testing.assert_array_equal(jax.jit(attention.causal)(q, k, v),
                                  jax.jit(attention.blocked)(q, k, v))
    assert attention.implementation_name() == "blocked"
    np.testing.assert_allclose(model.causal_attention(q, k, v, None),
                               attention.reference(q, k, v), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# A tiny model with the tricks that feed or replace the attention hook
# ----------------------------------------------------------------------------------------------

VOCAB, SEQ, BATCH, CHUNK = 256, 16, 2, 32


def tiny_cfg(names) -> RunConfig:
    cfg = RunConfig(
        track="wiki-bytes",  # a real track: window-attention reads its separator (byte 0)
        model=ModelConfig(vocab_size=VOCAB, n_layer=2, n_head=4, d_model=32, seq_len=SEQ),
        optim=OptimConfig(lr=3e-3, warmup_steps=0, decay="constant", weight_decay=0.0),
        train=TrainConfig(batch_size=BATCH, loss_chunk=CHUNK),
    )
    return tricks.configure(tricks.with_tricks(cfg, list(names)))


def _attention_tricks() -> list[str]:
    """Tricks that replace `attend` or change what it receives (q/k, values)."""
    return [name for name, t in sorted(tricks.available().items())
            if tricks.touched_hooks(t) & {"attend", "qk", "values"}]


ATTENTION_TRICKS = _attention_tricks()
# value-embeds replaces value-residual's v1 (they conflict), so it joins the bfloat16 stack;
# every other such trick runs in one float32 stack; both with gqa (KV < H reaches the hook)
COMBOS = [
    ("gqa", *(n for n in ATTENTION_TRICKS if n != "value-embeds")),
    ("bf16", "gqa", "qknorm", "rotary", "value-embeds"),
]


def test_attention_tricks_found():
    assert {"qknorm", "rotary", "value-residual", "value-embeds"} <= set(ATTENTION_TRICKS)


@pytest.mark.parametrize("names", sweep(COMBOS, ids=lambda c: "+".join(c) or "baseline"))
def test_model_loss_and_grads_match_reference(names, monkeypatch):
    monkeypatch.setenv(attention.ENV, "blocked")  # on any backend; the reference replaces it below
    monkeypatch.setattr(attention, "default_block", lambda T: 8)  # SEQ 16: two query blocks
    cfg = tiny_cfg(names)
    hooks = tricks.build_hooks(cfg)
    params = hooks.init(jax.random.PRNGKey(0), cfg.model)
    rng = np.random.default_rng(0)
    x, y = (jnp.asarray(rng.integers(0, VOCAB, (BATCH, SEQ)), jnp.int32) for _ in range(2))

    def loss_and_grads(impl):
        monkeypatch.setitem(attention._IMPLS, "blocked", impl)
        return run_jit(jax.value_and_grad(
            lambda p: model.loss(p, x, y, cfg.model, hooks, CHUNK)), params)

    l_new, g_new = loss_and_grads(attention.blocked)
    assert attention.implementation_name() == "blocked"
    l_ref, g_ref = loss_and_grads(attention.reference)
    low = "bf16" in names
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-2 if low else 1e-5)
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(g_ref))
    for a, b in zip(jax.tree_util.tree_leaves(g_new), jax.tree_util.tree_leaves(g_ref)):
        err = float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
        assert err <= (5e-2 if low else 1e-5) * scale, (names, err, scale)
