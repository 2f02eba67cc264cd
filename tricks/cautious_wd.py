"""Cautious weight decay on Muon's matrices, scheduled with the learning rate.

With O the direction Muon subtracts, eff_lr = lr(t) * sqrt(max(1, fan_out / fan_in)) (Muon's
step size, lr(t) its scheduled lr) and the record's NorMuon form:

    mask = (O * p) >= 0                          decay only where the update already shrinks |p|
    p   <- p - eff_lr * O - eff_lr * (wd * lr(t)) * mask * p,       wd = 1.2

so the decay's strength is proportional to lr(t)^2 and follows the lr schedule (the record's
"effective_weight_decay = lr * wd", applied with the step's lr again).

Adaptations: record #43 ran it on NorMuon with lr 0.03 (0.036 effective decay); here it decays
whatever Muon's lr is (0.02 by default, with or without normuon). Record #50's extension to Adam
parameters (wd 0.005 x per-parameter multipliers 150/5/0, sized for its Adam lr of 0.008) is not
ported: at this harness's Muon-trick Adam lrs (embeddings 0.3) those multipliers would decay
the embeddings by ~7% a step. Provided as muon's ``muon_decay`` extension point, so it requires
muon.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tricks import Trick, at_least
from tricks.muon import shape_scale


class CountState(NamedTuple):
    count: jax.Array


def cautious_decay(lr, wd: float) -> optax.GradientTransformation:
    """On final updates u = -eff_lr * O: add -eff_lr * wd * lr(t) * mask * p, mask = O p >= 0."""

    def init(params):
        return CountState(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("cautious weight decay needs the parameters")
        rate = lr(state.count)

        def one(u, p):
            eff_lr = rate * shape_scale(p.shape)
            mask = (u * p) <= 0  # u = -eff_lr * O, so O * p >= 0
            return u - (eff_lr * wd * rate * mask * p).astype(u.dtype)

        return jax.tree_util.tree_map(one, updates, params), CountState(state.count + 1)

    return optax.GradientTransformation(init, update)


def apply(hooks, hp):
    return hooks.with_extra("muon_decay", lambda cfg, lr: cautious_decay(lr, hp.wd))


TRICK = Trick(
    name="cautious-wd",
    summary="cautious weight decay (only where the update shrinks |p|) on Muon matrices, "
    "wd 1.2 x the scheduled lr",
    changes=("optimizer",),
    params={"wd": 1.2},
    limits={"wd": at_least(0.0)},
    apply=apply,
    requires=("muon",),
    source="modded-nanogpt record #43 (11/10/25, CautiousWD, @varunneal); Chen et al. 2025 "
    "(arXiv:2510.12402)",
)
