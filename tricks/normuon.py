"""NorMuon: after Muon's orthogonalisation, normalise each row (or column) of the update by a
running second moment, then restore the update's Frobenius norm.

For every Muon matrix, with O the orthogonalised, shape-scaled direction of this step:

    v     = mean(O**2, over the reduce axis)                 a vector, one entry per neuron
    buf  <- buf + (1 - beta2) * (v - buf)                     float32, initialised at 0
    O'    = O / sqrt(max(buf, 1e-10))
    O''   = O' * ||O||_F / max(||O'||_F, 1e-10)               same norm as O

then Muon's lr step as before. The reduce axis is the record's: in PyTorch's (out, in) layout the
last dim when rows >= cols, else dim -2; our weights are (in, out), so the mean runs over the
input axis (one entry per output unit) when fan_out >= fan_in, else over the output axis.
beta2 = 0.95 as record #41 (HEAD later used 0.9).

Adaptations: #42 halved Muon's lr (0.05 -> 0.03) and split the merged QKV weight per Q/K/V/O;
this trick changes only the normalisation (our Q, K, V, O are separate matrices already; set
``--set muon.lr=...`` separately). Provided as muon's ``muon_precondition`` extension point, so
it requires muon.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tricks import BETA, Trick

FLOOR = 1e-10


def reduce_axis(shape) -> int:
    """Axis the second moment averages over, for an (in, out) matrix."""
    return 0 if shape[1] >= shape[0] else 1


def normalize(o, buf, beta2: float):
    """One NorMuon step for one matrix: (normalised update, new buffer)."""
    o32 = o.astype(jnp.float32)
    v = jnp.mean(jnp.square(o32), axis=reduce_axis(o.shape), keepdims=True)
    buf = buf + (1 - beta2) * (v - buf)
    o1 = o32 * jax.lax.rsqrt(jnp.maximum(buf, FLOOR))
    o2 = o1 * (jnp.linalg.norm(o32) / jnp.maximum(jnp.linalg.norm(o1), FLOOR))
    return o2.astype(o.dtype), buf


class NorMuonState(NamedTuple):
    buf: Any  # per matrix: (1, out) or (in, 1) float32 second moments


def scale_by_normuon(beta2: float) -> optax.GradientTransformation:
    def init(params):
        def zeros(p):
            shape = list(p.shape)
            shape[reduce_axis(p.shape)] = 1
            return jnp.zeros(shape, jnp.float32)

        return NorMuonState(jax.tree_util.tree_map(zeros, params))

    def update(updates, state, params=None):
        del params
        pairs = jax.tree_util.tree_map(lambda o, b: normalize(o, b, beta2), updates, state.buf)
        out = jax.tree_util.tree_map(lambda _, pair: pair[0], updates, pairs)
        buf = jax.tree_util.tree_map(lambda _, pair: pair[1], updates, pairs)
        return out, NorMuonState(buf)

    return optax.GradientTransformation(init, update)


def apply(hooks, hp):
    return hooks.with_extra("muon_precondition", lambda cfg: scale_by_normuon(hp.beta2))


TRICK = Trick(
    name="normuon",
    summary="NorMuon: per-neuron second-moment normalisation of Muon's orthogonalised update",
    changes=("optimizer",),
    params={"beta2": 0.95},
    limits={"beta2": BETA},
    apply=apply,
    requires=("muon",),
    source="modded-nanogpt record #41 (10/24/25, NorMuon, @li_zichong); Li et al. 2025 "
    "(arXiv:2510.05491)",
)
