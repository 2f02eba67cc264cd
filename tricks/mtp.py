"""Multi-token prediction without extra parameters: the one head's logits at position t are also
trained to predict the tokens 2 and 3 ahead, with weights that fade over the run.

    loss = sum_t sum_k w_k(f) * (logsumexp(z_t) - z_t[y_{t+k}]),   k = 0..2,  y_{t+k} = x_{t+k+1}

(y the next-token targets) divided, like the baseline's loss, by the number of positions. Terms
past the end of the sequence are zero; nothing masks terms that cross a document boundary (as
in the record). With f = step / N (N = train.steps), record #53's stages:

    f < 1/3:         w = [1, 0.5, 0.25 * (1 - 3f)]
    1/3 <= f < 2/3:  w = [1, 0.5 * (1 - (3f - 1)), 0]
    f >= 2/3:        w = [1, 0, 0]                      (the plain next-token loss)

Validation always scores the plain next-token loss. Replaces the ``loss`` hook (the logits hook,
e.g. softcap, still applies to every term).

Adaptations: the record summed over its packed stream (and divided by grad_accum); here the
sum is divided by B*T as the baseline's mean loss, so at f >= 2/3 the loss is the baseline's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from speedrun.core import model
from speedrun.core.hooks import progress
from tricks import Trick

K = 3


def weights(f):
    """(3,) float32 MTP weights at progress f (record #53's stages)."""
    f = jnp.asarray(f, jnp.float32)
    w1 = jnp.where(f < 1 / 3, 0.5, jnp.where(f < 2 / 3, 0.5 * (1 - (3 * f - 1)), 0.0))
    w2 = jnp.where(f < 1 / 3, 0.25 * (1 - 3 * f), 0.0)
    return jnp.stack([jnp.float32(1.0), w1, w2]).astype(jnp.float32)


def shifted_targets(targets, w):
    """(B, T) targets, (K,) weights -> ((B, T, K) targets y_{t+k}, (B, T, K) weights, zero past
    the end)."""
    B, T = targets.shape
    padded = jnp.pad(targets, ((0, 0), (0, K - 1)))
    ys = jnp.stack([padded[:, k:k + T] for k in range(K)], axis=-1)
    valid = (jnp.arange(T)[:, None] + jnp.arange(K)[None, :]) < T  # (T, K)
    ws = jnp.broadcast_to(jnp.where(valid, w[None, :], 0.0), (B, T, K))
    return ys, ws


def mtp_chunk_loss(logits_fn, h, w, yw):
    ys, ws = yw
    z = logits_fn((h @ w).astype(jnp.float32))
    picked = jnp.take_along_axis(z, ys, axis=-1)  # (b, c, K)
    lse = jax.nn.logsumexp(z, axis=-1)[..., None]
    return jnp.sum(ws * (lse - picked))


def apply(hooks, hp):
    def loss(h, w, targets, logits_fn, chunk_tokens, ctx):
        yw = shifted_targets(targets, weights(progress(ctx)))
        return model.head_loss_sum(h, w, yw, logits_fn, chunk_tokens, mtp_chunk_loss)

    return hooks.replace(loss=loss)


TRICK = Trick(
    name="mtp",
    summary="multi-token prediction from the one head: targets t+1..t+3 weighted "
    "[1, .5, .25] fading to [1] by 2/3 of the run",
    changes=("model", "schedule"),
    params={},
    apply=apply,
    replaces=("loss",),
    source="modded-nanogpt record #53 (12/22/25, MultiTokenPrediction, @varunneal)",
)
