"""The hook points through which tricks change the baseline.

``Hooks`` is a frozen bundle of plain functions. ``baseline_hooks()`` returns the GPT-2 baseline
(the functions in model.py and optim.py); a trick returns a new bundle with some entries
replaced, usually wrapping the previous function (``dataclasses.replace``). Hooks are resolved
in Python before ``jax.jit`` traces the step, so they cost nothing at run time.

Forward-pass hooks receive a ``Ctx``: per-call scratch space (current layer, x0, the cast
params, the input tokens) that also lets hooks pass values between layers (e.g. the first
layer's attention values). It exists only while jit traces the function.

Inference (speedrun/generate.py) runs the same forward pass over a KV cache: ``ctx.positions``
holds each token's absolute position (None in training, where the tokens are positions
0..T-1), and ``ctx.cache`` the keys and values of earlier calls (speedrun/kvcache.py). A hook
that depends on where a token sits must read ``ctx.positions`` when it is set; ``attend`` then
receives the whole cache as k and v (see ``model.attention``). Tests compare cached decoding
with the full forward pass for every trick, and ``sample`` checks it again before generating.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Fn = Callable[..., Any]


@dataclass
class Ctx:
    """Trace-time context of one forward pass (mutable scratch, never a jit argument)."""

    params: Any  # parameters as cast for compute (hooks.cast)
    tokens: Any  # (B, T) input ids
    cfg: Any  # ModelConfig
    layer: int = -1  # index of the block being traced
    x0: Any = None  # output of the embedding hook
    state: dict = field(default_factory=dict)  # values hooks hand from one layer to another
    # --- inference only (None while training) -----------------------------------------------
    positions: Any = None  # (B, T) absolute position of every input token
    cache: Any = None  # kvcache.KVCache: keys/values of every layer, slot = position
    # Where training stands: ``step`` (traced int32: updates done before this forward pass) of
    # ``steps`` (train.steps, the horizon of every schedule). None outside training (a trained
    # model, inference): schedules then read the end of the run (see ``progress``).
    step: Any = None
    steps: int | None = None
    # Terms added to the mean training loss (e.g. a load-balancing loss); validation ignores them.
    aux_loss: list = field(default_factory=list)


def progress(ctx: Ctx):
    """Fraction f = step / steps of the run done (traced float32), 1.0 outside training."""
    import jax.numpy as jnp

    if ctx.step is None or not ctx.steps:
        return jnp.float32(1.0)
    return jnp.asarray(ctx.step, jnp.float32) / ctx.steps


@dataclass(frozen=True)
class Hooks:
    # --- parameters -------------------------------------------------------------------------
    init: Fn  # (key, ModelConfig) -> params
    cast: Fn  # (params) -> params used by the forward pass (e.g. bf16 copies)
    # --- forward pass, in the order model.py calls them --------------------------------------
    embed: Fn  # (params, tokens, ctx) -> x (B, T, D)
    blocks: Fn  # (x, ctx, run_block) -> x; run_block(i, x) runs block i
    block_input: Fn  # (x, ctx) -> x, at the start of each block
    norm: Fn  # (norm params or None, x) -> x
    qk: Fn  # (q, k, ctx) -> (q, k), per-head (B, T, H, hd)
    values: Fn  # (v, ctx) -> v, attention values (B, T, KV, hd)
    attend: Fn  # (q, k, v, ctx) -> y (B, T, H, hd), causal attention (with ctx.cache: k, v are
    #   the cache (B, S, KV, hd) and query t may read slots <= ctx.positions[:, t])
    attn_output: Fn  # (y, h, ctx) -> y (B, T, H, hd) before the output projection; h: the input
    mlp: Fn  # (mlp params, h, act, ctx) -> out (B, T, D); act is the mlp_act hook
    mlp_act: Fn  # (h) -> h
    head: Fn  # (params) -> output projection (D, V)
    logits: Fn  # (z) -> z, applied to float32 logits before the loss
    loss: Fn  # (h, w, targets, logits_fn, chunk_tokens, ctx) -> summed training loss
    # --- optimizer and schedules ---------------------------------------------------------------
    lr_schedule: Fn  # (RunConfig) -> step -> multiplier of each group's peak lr
    optimizer: Fn  # (params, RunConfig, hooks) -> optax.GradientTransformation
    # Hook points that tricks define for other tricks. Known names:
    #   'muon_momentum': RunConfig -> step -> Muon momentum (set by momentum-warmup, read by muon)
    #   'muon_orthogonalize', 'muon_precondition', 'muon_decay': see tricks/muon.py
    #   'batch_schedule': RunConfig -> step -> global batch size (read by train.py; one compiled
    #                     step per distinct size)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Hooks":
        return dataclasses.replace(self, **changes)

    def with_extra(self, name: str, value: Any) -> "Hooks":
        return self.replace(extras={**self.extras, name: value})


HOOK_POINTS = tuple(f.name for f in dataclasses.fields(Hooks))


def baseline_hooks(compute_dtype: str = "float32") -> Hooks:
    """The baseline's choice at every hook point; ``compute_dtype``: the model config's (the
    forward pass's dtype, over float32 master weights)."""
    from speedrun import model, optim

    return Hooks(
        init=model.init_params,
        cast=model.compute_cast(compute_dtype),
        embed=model.embed,
        blocks=model.sequential_blocks,
        block_input=model.block_input,
        norm=model.layer_norm,
        qk=model.qk,
        values=model.values,
        attend=model.causal_attention,
        attn_output=model.attn_output,
        mlp=model.mlp,
        mlp_act=model.gelu,
        head=model.tied_head,
        logits=model.identity,
        loss=model.next_token_loss,
        lr_schedule=optim.lr_schedule,
        optimizer=optim.adamw,
    )
