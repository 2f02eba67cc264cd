"""Rotary position embeddings (RoPE) on queries and keys instead of learned absolute positions.

The init drops ``wpe``, so the baseline embedding is the token embedding alone. Each head vector is split
in halves (x1, x2) = (x[:hd/2], x[hd/2:]) and rotated by position t (modded-nanogpt's
``apply_rotary_emb``):

    theta_j = t * base**(-2j/hd),   j = 0 .. hd/2 - 1
    y1 = x1 * cos(theta) + x2 * sin(theta)
    y2 = -x1 * sin(theta) + x2 * cos(theta)

so q_s . k_t depends on s - t only. Computed in float32, returned in the input's dtype.
Applied after qknorm when both are on (the record normalises q and k, then rotates).
"""

import jax.numpy as jnp

from speedrun.errors import SpeedrunError
from tricks import Trick, above


def rotate(x, base: float, positions=None):
    """x (B, T, H, hd) -> x rotated by its position: its index along T, or ``positions``
    (B, T) when given (inference over a KV cache continues from the prompt's positions)."""
    T, hd = x.shape[1], x.shape[-1]
    half = hd // 2
    inv_freq = (1.0 / base) ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)
    if positions is None:
        theta = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # (T, hd/2)
        cos, sin = jnp.cos(theta)[None, :, None, :], jnp.sin(theta)[None, :, None, :]
    else:
        theta = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, hd/2)
        cos, sin = jnp.cos(theta)[:, :, None, :], jnp.sin(theta)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    y = jnp.concatenate([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], axis=-1)
    return y.astype(x.dtype)


def configure(cfg, hp):
    if cfg.model.head_dim % 2:
        raise SpeedrunError(f"rotary needs an even head dimension, got {cfg.model.head_dim}")
    return cfg


def apply(hooks, hp):
    prev_init, prev_qk = hooks.init, hooks.qk

    def init(key, cfg):
        return {k: v for k, v in prev_init(key, cfg).items() if k != "wpe"}

    def qk(q, k, ctx):
        q, k = prev_qk(q, k, ctx)
        positions = getattr(ctx, "positions", None)
        return rotate(q, hp.base, positions), rotate(k, hp.base, positions)

    return hooks.replace(init=init, qk=qk)


TRICK = Trick(
    name="rotary",
    summary="rotary position embeddings on q and k instead of learned absolute positions",
    changes=("model",),
    params={"base": 10000.0},
    limits={"base": above(1.0)},
    apply=apply,
    configure=configure,
    after=("qknorm",),
    source="modded-nanogpt record 2 (06/06/24, architectural modernizations); "
    "Su et al. 2021 (RoFormer)",
)
