"""The hook points through which tricks change the baseline.

``Hooks`` is a frozen bundle of plain functions, one per hook point, each typed below.
``model.baseline_hooks()`` returns the GPT-2 baseline (the functions in model.py and optim.py);
a trick returns a new bundle with some entries replaced, usually wrapping the previous function
(``hooks.replace``). Hooks are resolved in Python before ``jax.jit`` traces the step, so they
cost nothing at run time.

Forward-pass hooks receive a ``Ctx``: per-call scratch space (current layer, x0, the cast
params, the input tokens) that also lets hooks pass values between layers (e.g. the first
layer's attention values). It exists only while jit traces the function.

Inference (speedrun/inference/generate.py) runs the same forward pass over a KV cache:
``ctx.positions`` holds each token's absolute position (None in training, where the tokens are
positions 0..T-1), and ``ctx.cache`` the keys and values of earlier calls (kvcache.py). A hook
that depends on where a token sits must read ``ctx.positions`` when it is set; ``attend`` then
receives the whole cache as k and v (see ``model.attention``). Tests compare cached decoding
with the full forward pass for every trick, and ``sample`` checks it again before generating.

Tricks that extend *other tricks* do it through ``extras``, named points declared once in
``EXTRAS``: ``with_extra`` and ``extra`` refuse a name that is not declared, so a mistyped key
fails at once instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from speedrun.errors import SpeedrunError

Array = Any  # a jax.Array (traced inside jit)
Params = Any  # nested dicts/lists of arrays
RunConfig = Any  # speedrun.config.RunConfig
ModelConfig = Any  # speedrun.config.ModelConfig


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
    # True only in the training loss's forward pass (``model.loss``). Validation passes ``step``
    # too (for schedules) but not this: tricks that compute differently while training (e.g. in
    # float8, as the speedrun's records do) read this flag, never ``step``.
    training: bool = False
    # Terms added to the mean training loss (e.g. a load-balancing loss); validation ignores them.
    aux_loss: list = field(default_factory=list)


def progress(ctx: Ctx):
    """Fraction f = step / steps of the run done (traced float32), 1.0 outside training."""
    import jax.numpy as jnp

    if ctx.step is None or not ctx.steps:
        return jnp.float32(1.0)
    return jnp.asarray(ctx.step, jnp.float32) / ctx.steps


# --- the signature of every hook point, in the order model.py calls them --------------------
InitFn = Callable[[Any, ModelConfig], Params]  # (PRNG key, model config) -> params
CastFn = Callable[[Params], Params]  # master params -> params the forward pass uses
EmbedFn = Callable[[Params, Array, Ctx], Array]  # (params, tokens (B, T), ctx) -> x (B, T, D)
BlocksFn = Callable[[Array, Ctx, Callable[[int, Array], Array]], Array]  # (x, ctx, run_block)
BlockInputFn = Callable[[Array, Ctx], Array]  # (x, ctx) -> x at the start of each block
NormFn = Callable[[Any, Array], Array]  # (norm params or None, x) -> x
QKFn = Callable[[Array, Array, Ctx], tuple]  # (q, k, ctx) -> (q, k), (B, T, heads, hd)
ValuesFn = Callable[[Array, Ctx], Array]  # (v, ctx) -> v, (B, T, KV, hd)
AttendFn = Callable[[Array, Array, Array, Ctx], Array]  # (q, k, v, ctx) -> y (B, T, H, hd)
AttnOutputFn = Callable[[Array, Array, Ctx], Array]  # (y, h, ctx) -> y before the projection
MLPFn = Callable[[Any, Array, Callable, Ctx], Array]  # (mlp params, h, act, ctx) -> (B, T, D)
ActFn = Callable[[Array], Array]  # (h) -> h
HeadFn = Callable[[Params], Array]  # params -> output projection (D, V)
LogitsFn = Callable[[Array], Array]  # float32 logits -> logits the loss reads
LossFn = Callable[[Array, Array, Array, LogitsFn, int, Ctx], Array]  # summed training loss
LRScheduleFn = Callable[[RunConfig], Callable[[Any], Any]]  # cfg -> step -> multiplier
OptimizerFn = Callable[[Params, RunConfig, "Hooks"], Any]  # -> optax.GradientTransformation


@dataclass(frozen=True)
class Hooks:
    # --- parameters -------------------------------------------------------------------------
    init: InitFn
    cast: CastFn  # e.g. bf16 copies of the float32 master weights
    # --- forward pass, in the order model.py calls them --------------------------------------
    embed: EmbedFn
    blocks: BlocksFn  # run_block(i, x) runs block i
    block_input: BlockInputFn
    norm: NormFn
    qk: QKFn
    values: ValuesFn
    attend: AttendFn  # causal attention (with ctx.cache: k, v are the cache (B, S, KV, hd) and
    #   query t may read slots <= ctx.positions[:, t])
    attn_output: AttnOutputFn  # h: the attention's input
    mlp: MLPFn  # act is the mlp_act hook
    mlp_act: ActFn
    head: HeadFn
    logits: LogitsFn  # applied to float32 logits before the loss
    loss: LossFn  # (h, w, targets, logits_fn, chunk_tokens, ctx)
    # --- optimizer and schedules ---------------------------------------------------------------
    lr_schedule: LRScheduleFn  # multiplier of each group's peak lr
    optimizer: OptimizerFn
    # Points that tricks define for other tricks (``EXTRAS``); set with ``with_extra``.
    extras: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Hooks":
        return dataclasses.replace(self, **changes)

    def with_extra(self, name: str, value: Any) -> "Hooks":
        check_extra(name)
        return self.replace(extras={**self.extras, name: value})

    def extra(self, name: str) -> Any:
        """The value a trick set for the extra ``name``, or None."""
        check_extra(name)
        return self.extras.get(name)


HOOK_POINTS = tuple(f.name for f in dataclasses.fields(Hooks))

# Every extra: the one place a trick learns what another trick reads, and in what form.
EXTRAS: Mapping[str, str] = {
    "muon_momentum": "RunConfig -> step -> Muon momentum (set by momentum-warmup; read by muon)",
    "muon_orthogonalize": "(x, muon hp) -> x, in place of Newton-Schulz (polar-express; muon)",
    "muon_precondition": "RunConfig -> optax transform of the orthogonalised, shape-scaled "
                         "directions, before the lr (normuon; muon)",
    "muon_decay": "(RunConfig, lr(step)) -> optax transform of the final updates, with the "
                  "parameters (cautious-wd; muon)",
    "batch_schedule": "RunConfig -> step -> global batch size (batch-schedule; read by the "
                      "train loop, which compiles one step per distinct size)",
}


def check_extra(name: str) -> None:
    if name not in EXTRAS:
        raise SpeedrunError(f"unknown hooks extra {name!r}; the extras are: {', '.join(EXTRAS)} "
                            f"(declare a new one in speedrun/core/hooks.py EXTRAS)")
