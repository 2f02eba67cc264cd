"""The baseline GPT-2, as llm.c trains it, in plain JAX.

Learned absolute position embeddings, pre-LayerNorm blocks, causal multi-head attention, GELU MLP
(4x), output head tied to the token embedding, vocabulary padded to 50304. Parameters are a
nested dict; every function is pure. Read top to bottom: ``forward`` and ``loss`` show where each
hook point is called (``hooks.<name>``, see hooks.py); the functions below them are the
baseline's choice for each hook, gathered by ``baseline_hooks`` at the end. No trick logic lives
here. Inference (speedrun/inference/generate.py) calls the same ``forward`` with the tokens'
positions and a KV cache; nothing else changes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from speedrun.config import ModelConfig
from speedrun.core import attention as attn  # (model.attention is the layer below)
from speedrun.core import optim
from speedrun.core.hooks import Ctx, Hooks

# ----------------------------------------------------------------------------------------------
# The model: parameters -> hidden states -> loss
# ----------------------------------------------------------------------------------------------


def forward(params, tokens, cfg: ModelConfig, hooks: Hooks, step=None, steps=None,
            positions=None, cache=None):
    """tokens (B, T) -> (final hidden states (B, T, D), params as cast for compute).

    Inference passes each token's absolute ``positions`` (B, T) and a KV ``cache``
    (speedrun/inference/kvcache.py) that this call reads and extends; training passes neither."""
    h, p, _ = forward_ctx(params, tokens, cfg, hooks, step, steps, positions, cache)
    return h, p


def forward_ctx(params, tokens, cfg: ModelConfig, hooks: Hooks, step=None, steps=None,
                positions=None, cache=None, training: bool = False):
    """``forward`` that also returns its Ctx (for what hooks left there, e.g. aux losses).
    ``step`` (traced) of ``steps``: where training stands, for hooks with schedules;
    ``training``: the training loss's pass (``ctx.training``), not validation's or inference's."""
    p = hooks.cast(params)  # hook: e.g. bfloat16 copies of the float32 master weights
    ctx = Ctx(params=p, tokens=tokens, cfg=cfg, step=step, steps=steps, positions=positions,
              cache=cache, training=training)
    x = hooks.embed(p, tokens, ctx)  # hook: token (+ position) embedding
    ctx.x0 = x

    def run_block(i, x):
        ctx.layer = i
        return block(p["blocks"][i], x, ctx, hooks)

    x = hooks.blocks(x, ctx, run_block)  # hook: how blocks are chained (e.g. U-net skips)
    return hooks.norm(p.get("ln_f"), x), p, ctx


def block(bp, x, ctx: Ctx, hooks: Hooks):
    x = hooks.block_input(x, ctx)  # hook: e.g. mix in the embedding x0
    x = x + attention(bp["attn"], hooks.norm(bp.get("ln1"), x), ctx, hooks)
    x = x + hooks.mlp(bp["mlp"], hooks.norm(bp.get("ln2"), x), hooks.mlp_act, ctx)  # hook
    return x


def attention(ap, h, ctx: Ctx, hooks: Hooks):
    cfg = ctx.cfg
    B, T, _ = h.shape
    q = dense(h, ap["wq"], ap.get("bq")).reshape(B, T, cfg.n_head, cfg.head_dim)
    k = dense(h, ap["wk"], ap.get("bk")).reshape(B, T, cfg.kv_heads, cfg.head_dim)
    v = dense(h, ap["wv"], ap.get("bv")).reshape(B, T, cfg.kv_heads, cfg.head_dim)
    q, k = hooks.qk(q, k, ctx)  # hook: e.g. QK-norm, rotary embeddings
    v = hooks.values(v, ctx)  # hook: e.g. value residual, value embeddings
    if ctx.cache is not None:  # inference: store this call's keys/values, attend over them all
        k, v = ctx.cache.update(ctx.layer, k, v, ctx.positions)
    y = hooks.attend(q, k, v, ctx)  # hook: the attention kernel
    y = hooks.attn_output(y, h, ctx)  # hook: e.g. a per-head output gate
    return dense(y.reshape(B, T, cfg.n_head * cfg.head_dim), ap["wo"], ap.get("bo"))


def mlp(mp, h, act, ctx: Ctx):
    h = act(dense(h, mp["wfc"], mp.get("bfc")))  # act: the mlp_act hook
    return dense(h, mp["wproj"], mp.get("bproj"))


def dense(x, w, b=None):
    """x (..., D) @ w (D, F) as one 2-D (tokens, D) matmul: XLA:CPU runs the weight gradient of a
    3-D (B, T, D) product, which contracts two axes, ~3x slower than the 2-D one."""
    y = (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])
    return y if b is None else y + b


def output_logits(h, p, hooks: Hooks):
    """Inference: float32 logits of hidden states h (B, T, D), as the loss computes them."""
    return hooks.logits((h @ hooks.head(p)).astype(jnp.float32))


def loss(params, inputs, targets, cfg: ModelConfig, hooks: Hooks, chunk_tokens: int,
         step=None, steps=None):
    """The training loss: mean next-token cross-entropy (the ``loss`` hook's sum over the
    batch, divided by the number of targets) plus any auxiliary terms hooks added to
    ``ctx.aux_loss``; its forward pass is the one with ``ctx.training`` set. The logits are never materialised for the whole batch: see
    ``head_loss_sum``."""
    h, p, ctx = forward_ctx(params, inputs, cfg, hooks, step, steps, training=True)
    w = hooks.head(p)  # hook: output projection (tied or untied)
    total = hooks.loss(h, w, targets, hooks.logits, chunk_tokens, ctx)  # hook: e.g. MTP
    return total / targets.size + sum(ctx.aux_loss, jnp.float32(0))


def loss_sum(params, inputs, targets, cfg: ModelConfig, hooks: Hooks, chunk_tokens: int,
             step=None, steps=None):
    """Summed next-token cross-entropy without the gradient machinery (validation: always the
    plain next-token loss, whatever the ``loss`` hook trains on)."""
    h, p, _ = forward_ctx(params, inputs, cfg, hooks, step, steps)
    return _chunked_sum(h, hooks.head(p), targets, hooks.logits, _chunks(h.shape, chunk_tokens))


# ----------------------------------------------------------------------------------------------
# Output head + cross-entropy, chunked along the sequence.
#
# At 50K vocabulary the logits dominate a small model's step: a (tokens, 50304) float32 array is
# hundreds of MB, so writing it out and reading it back for the backward pass costs more than the
# matmuls. We split the sequence into chunks (keeping the batch axis whole, so data-parallel
# sharding is untouched), and in the forward pass compute each chunk's loss *and* its gradients
# with respect to the hidden states and the head, so no logits outlive their chunk and nothing is
# recomputed. The backward pass just scales the stored gradients.
# ----------------------------------------------------------------------------------------------


def _chunks(shape, chunk_tokens: int) -> int:
    """Number of chunks along T: the most that keeps about chunk_tokens tokens per chunk."""
    B, T = shape[0], shape[1]
    want = max(1, (B * T) // max(1, chunk_tokens))
    return max(d for d in range(1, T + 1) if T % d == 0 and d <= want)


def _split(a, n):  # (B, T, ...) -> (n, B, T/n, ...)
    B, T = a.shape[:2]
    return jnp.moveaxis(a.reshape(B, n, T // n, *a.shape[2:]), 1, 0)


def _unsplit(a):  # (n, B, T/n, ...) -> (B, T, ...)
    n, B, c = a.shape[:3]
    return jnp.moveaxis(a, 0, 1).reshape(B, n * c, *a.shape[3:])


def token_ce_sum(z, y):
    """Summed cross-entropy of float32 logits z (..., V) against target ids y (...)."""
    picked = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    return jnp.sum(jax.nn.logsumexp(z, axis=-1) - picked)


def _chunk_loss(logits_fn, h, w, y):
    return token_ce_sum(logits_fn((h @ w).astype(jnp.float32)), y)


def _chunked_sum(h, w, y, logits_fn, n, chunk_loss=_chunk_loss):
    def body(total, hy):
        return total + chunk_loss(logits_fn, hy[0], w, hy[1]), None

    ys = jax.tree_util.tree_map(lambda a: _split(a, n), y)
    return jax.lax.scan(body, jnp.float32(0), (_split(h, n), ys))[0]


def head_loss_sum(h, w, y, logits_fn, chunk_tokens: int, chunk_loss=_chunk_loss):
    """Summed loss of the head over all positions, chunked. ``y``: the targets, or any pytree of
    (B, T, ...) arrays that ``chunk_loss(logits_fn, h_chunk, w, y_chunk)`` reads (e.g. MTP's
    shifted targets and weights)."""
    n = _chunks(h.shape, chunk_tokens)
    ys = jax.tree_util.tree_map(lambda a: _split(a, n), y)

    @jax.custom_vjp
    def f(h, w):
        return _chunked_sum(h, w, y, logits_fn, n, chunk_loss)

    def f_fwd(h, w):
        grad = jax.value_and_grad(lambda hc, w, yc: chunk_loss(logits_fn, hc, w, yc), (0, 1))

        def body(carry, hy):
            total, dw = carry
            l, (dh, dwc) = grad(hy[0], w, hy[1])
            return (total + l, dw + dwc.astype(jnp.float32)), dh

        init = (jnp.float32(0), jnp.zeros(w.shape, jnp.float32))
        (total, dw), dh = jax.lax.scan(body, init, (_split(h, n), ys))
        return total, (_unsplit(dh), dw.astype(w.dtype))

    def f_bwd(res, g):
        dh, dw = res
        return (dh * g).astype(dh.dtype), (dw * g).astype(dw.dtype)

    f.defvjp(f_fwd, f_bwd)
    return f(h, w)


# ----------------------------------------------------------------------------------------------
# Baseline choices for each hook point
# ----------------------------------------------------------------------------------------------


def init_params(key, cfg: ModelConfig):
    """GPT-2 init: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 * n_layer)."""
    D, H, KV, hd = cfg.d_model, cfg.n_head, cfg.kv_heads, cfg.head_dim
    F = cfg.mlp_ratio * D
    std, proj_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layer)
    keys = iter(jax.random.split(key, 2 + 6 * cfg.n_layer))

    def normal(shape, s=std):
        return s * jax.random.normal(next(keys), shape, jnp.float32)

    def norm_params():
        return {"scale": jnp.ones((D,), jnp.float32), "bias": jnp.zeros((D,), jnp.float32)}

    zeros = lambda n: jnp.zeros((n,), jnp.float32)  # noqa: E731
    blocks = [
        {
            "ln1": norm_params(),
            "attn": {
                "wq": normal((D, H * hd)), "bq": zeros(H * hd),
                "wk": normal((D, KV * hd)), "bk": zeros(KV * hd),
                "wv": normal((D, KV * hd)), "bv": zeros(KV * hd),
                "wo": normal((H * hd, D), proj_std), "bo": zeros(D),
            },
            "ln2": norm_params(),
            "mlp": {
                "wfc": normal((D, F)), "bfc": zeros(F),
                "wproj": normal((F, D), proj_std), "bproj": zeros(D),
            },
        }
        for _ in range(cfg.n_layer)
    ]
    return {
        "wte": normal((cfg.vocab_size, D)),
        "wpe": normal((cfg.seq_len, D)),
        "blocks": blocks,
        "ln_f": norm_params(),
    }


def identity(x):
    return x


def compute_cast(dtype_name: str):
    """The baseline's cast hook for ``model.compute_dtype``: identity for float32, else copies of
    the floating parameters in that dtype (their gradients come back as float32)."""
    if dtype_name == "float32":
        return identity
    dtype = jnp.dtype(dtype_name)

    def cast(params):
        return jax.tree_util.tree_map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)

    return cast


def embed(params, tokens, ctx: Ctx):
    x = params["wte"][tokens]
    wpe = params.get("wpe")  # absent when a trick moves positions elsewhere (e.g. rotary)
    if wpe is None:
        return x
    positions = None if ctx is None else ctx.positions
    return x + (wpe[: tokens.shape[1]] if positions is None else wpe[positions])


def sequential_blocks(x, ctx: Ctx, run_block):
    for i in range(ctx.cfg.n_layer):
        x = run_block(i, x)
    return x


def block_input(x, ctx: Ctx):
    return x


def layer_norm(p, x, eps: float = 1e-5):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)
    return y if p is None else y * p["scale"] + p["bias"]


def qk(q, k, ctx: Ctx):
    return q, k


def values(v, ctx: Ctx):
    return v


def causal_attention(q, k, v, ctx: Ctx):
    if ctx is not None and ctx.cache is not None:  # inference: k, v are the cache, by position
        return attn.cached(q, k, v, ctx.positions)
    return attn.causal(q, k, v)  # per backend: blocked matmuls on CPU, cuDNN on GPU


def attn_output(y, h, ctx: Ctx):
    return y


def next_token_loss(h, w, targets, logits_fn, chunk_tokens: int, ctx: Ctx):
    return head_loss_sum(h, w, targets, logits_fn, chunk_tokens)


def gelu(h):
    return jax.nn.gelu(h, approximate=True)  # GPT-2's tanh approximation


def tied_head(params):
    return params["wte"].T


def baseline_hooks(compute_dtype: str = "float32") -> Hooks:
    """The baseline's choice at every hook point; ``compute_dtype``: the model config's (the
    forward pass's dtype, over float32 master weights)."""
    return Hooks(
        init=init_params,
        cast=compute_cast(compute_dtype),
        embed=embed,
        blocks=sequential_blocks,
        block_input=block_input,
        norm=layer_norm,
        qk=qk,
        values=values,
        attend=causal_attention,
        attn_output=attn_output,
        mlp=mlp,
        mlp_act=gelu,
        head=tied_head,
        logits=identity,
        loss=next_token_loss,
        lr_schedule=optim.lr_schedule,
        optimizer=optim.adamw,
    )
