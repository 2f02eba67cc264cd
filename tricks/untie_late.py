"""Tied embedding/head for the first 2/3 of training, untied after.

Parameters: ``lm_head`` (D, V), initialised as the transpose of the baseline's tied ``wte`` (so at
init the model is exactly the tied baseline), and ``wte``. For updates s < S = round(frac * N)
(N = train.steps, frac = 2/3) the embedding lookup reads ``lm_head^T``: both uses train
lm_head (autodiff adds the embedding's gradient into the head's, as the record's
``transpose_add``) and wte's gradient is zero. The update S - 1 also sets wte to the updated
lm_head^T and copies lm_head's optimizer moments (every ``mu``/``nu`` buffer of the optimizer
state, transposed) into wte's, as the record's ``copy_lm_state_to_embed``; from update S on the
two are independent. Validation reads the embedding the step it follows used; a trained model
(``ctx.step`` None) is untied.

Adaptations: the record's split step is the start of its third stage rounded to an odd step
(Adam stepped on odd steps only), 847 of 1285; here S = round(2/3 * N). Its Adam used one lr for
both (0.008, betas (0.5, 0.95)); here each keeps the optimizer's own group: under the muon
trick lm_head trains at ``muon.head_lr`` from the start (tied or not) and wte at
``muon.embed_lr`` once untied. The record's embed init is a copy of an N(0, 0.005) head; here the
baseline's N(0, 0.02) embedding is the common start.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tricks import Trick, between


def split_step(steps: int, frac: float) -> int:
    return round(frac * steps)


def tied(ctx, frac: float):
    """Traced bool: whether this forward pass reads lm_head^T as its embedding."""
    if ctx.step is None or not ctx.steps:
        return jnp.bool_(False)
    return ctx.step < split_step(ctx.steps, frac)


class UntieState(NamedTuple):
    count: jax.Array
    inner: optax.OptState


def _key(entry):
    return getattr(entry, "key", getattr(entry, "name", None))


def copy_moments(state):
    """The optimizer state with every mu/nu buffer of wte replaced by lm_head's, transposed."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    sources = {}
    for path, leaf in leaves:
        names = [_key(e) for e in path]
        if names and names[-1] == "lm_head":
            moment = next((n for n in names if n in ("mu", "nu")), None)
            if moment is not None:
                sources[moment] = leaf
    out = []
    for path, leaf in leaves:
        names = [_key(e) for e in path]
        moment = next((n for n in names if n in ("mu", "nu")), None)
        if names and names[-1] == "wte" and moment in sources:
            leaf = sources[moment].T.astype(leaf.dtype)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def untie_at(inner: optax.GradientTransformation, last_tied: int):
    """Wraps the optimizer: at update ``last_tied`` wte becomes the updated lm_head^T and takes
    its moments."""

    def init(params):
        return UntieState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new, inner_state = inner.update(updates, state.inner, params)
        split = state.count == last_tied
        target = (params["lm_head"] + new["lm_head"]).T - params["wte"]
        new = {**new, "wte": jnp.where(split, target.astype(new["wte"].dtype), new["wte"])}
        copied = copy_moments(inner_state)
        inner_state = jax.tree_util.tree_map(lambda a, b: jnp.where(split, a, b), copied,
                                             inner_state)
        return new, UntieState(state.count + 1, inner_state)

    return optax.GradientTransformation(init, update)


def apply(hooks, hp):
    prev_init, prev_embed, prev_opt = hooks.init, hooks.embed, hooks.optimizer

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        params["lm_head"] = params["wte"].T + 0  # a copy: its own buffer
        return params

    def embed(params, tokens, ctx):
        table = jnp.where(tied(ctx, hp.frac), params["lm_head"].T, params["wte"])
        return prev_embed({**params, "wte": table}, tokens, ctx)

    def head(params):
        return params["lm_head"]

    def optimizer(params, cfg, hooks):
        S = split_step(cfg.train.steps, hp.frac)
        return untie_at(prev_opt(params, cfg, hooks), S - 1)

    return hooks.replace(init=init, embed=embed, head=head, optimizer=optimizer)


TRICK = Trick(
    name="untie-late",
    summary="embedding tied to the head until 2/3 of the run, then untied (weights and "
    "optimizer moments copied)",
    changes=("model", "optimizer", "schedule"),
    params={"frac": 2 / 3},
    limits={"frac": between(0.0, 1.0, lo_open=True)},
    apply=apply,
    replaces=("head",),
    conflicts=("untie-head",),
    after=("muon",),
    source="modded-nanogpt record #53 (12/22/25, MultiTokenPrediction: untie at 2/3), after the "
    "re-tie of #51 (12/19/25, RetieLMHead)",
)
