"""Partial key offset: on the long-window layers, the slowest-rotating dimensions of each key at
position t are replaced by those of the key at t - 1 (position 0 keeps its own), after RoPE:

    k[:, t, :, D] <- k[:, t-1, :, D]   for t >= 1,   D = [hd/4, hd/2) U [3hd/4, hd)

A query can then match "previous token = X" through one key, which gives a one-layer induction
head. Record #49 applied it to the dims 32:64 and 96:128 of its 128-dim heads, the stationary
(zero-frequency) half of its half-truncated rotary in the half-rotate layout; our ``rotary``
trick uses the same layout (pairs (j, j + hd/2)), and D is the same slice of it. Adaptation:
our rotary rotates every pair (it is not half-truncated), so D holds its lowest-frequency pairs,
not stationary ones: they turn by at most base^-1/2 = 0.01 rad per position (up to ~2.6 rad
across a 256-token sequence), so the shifted dims still carry some position. A faithful port
needs a half-truncated rotary, which the registry does not have. Layers: the "long" layers of
window-attention's
long-short pattern (min(i, L-1-i) % 4 == 0: the first and last of 4), as the record applied it
to its long-window layers, whether or not window-attention is on. Document boundaries are not
masked, as in the record. Ordered after qknorm and rotary (it acts on the rotated keys).
"""

import jax.numpy as jnp

from speedrun.errors import SpeedrunError
from tricks import ANY, Trick
from tricks.window_attention import is_long


def offset_dims(hd: int):
    return list(range(hd // 4, hd // 2)) + list(range(3 * hd // 4, hd))


def offset_keys(k):
    """k (B, T, KV, hd) -> k with the offset dims taken from the previous position."""
    hd = k.shape[-1]
    dims = jnp.zeros((hd,), bool).at[jnp.array(offset_dims(hd))].set(True)
    prev = jnp.concatenate([k[:, :1], k[:, :-1]], axis=1)
    return jnp.where(dims, prev, k)


def configure(cfg, hp):
    if cfg.model.head_dim % 4:
        raise SpeedrunError(f"key-offset needs a head dimension divisible by 4, got "
                            f"{cfg.model.head_dim}")
    return cfg


def apply(hooks, hp):
    prev = hooks.qk

    def qk(q, k, ctx):
        q, k = prev(q, k, ctx)
        if hp.all_layers or is_long(ctx.layer, ctx.cfg.n_layer):
            k = offset_keys(k)
        return q, k

    return hooks.replace(qk=qk)


TRICK = Trick(
    name="key-offset",
    summary="keys' slowest rotary dims (a quarter + a quarter) taken from the previous position "
    "on the long layers",
    changes=("model",),
    params={"all_layers": False},
    limits={"all_layers": ANY},
    apply=apply,
    configure=configure,
    after=("qknorm", "rotary"),
    source="modded-nanogpt record #49 (12/14/25, PartialKeyOffset, @classiclarryd)",
    cached_decoding=False,
)
