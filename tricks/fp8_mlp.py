"""FP8 MLP: while training, the MLP's forward matmuls run in float8 e4m3 at per-tensor scales
from each operand's largest value; the backward pass stays in the compute dtype (records #84
and #89).

    s(x, r) = r * max|x| / 448                             (per tensor, not differentiated)
    up:    u   = (q4(h / s(h, 1)) @ q4(W1 / s(W1, 1))) s(h, 1) s(W1, 1)
    down:  out = (q4(a / s(a, r_a)) @ q4(W2 / s(W2, r_w))) s(a, r_a) s(W2, r_w),   a = act(u + b1)

q4 rounds to float8 e4m3 (clipped to +-448), h is the MLP's normed input, ``act`` the
``mlp_act`` hook (GELU, or relu2's ReLU²), biases are added in the compute dtype after each
product. The backward pass is the plain one in the compute dtype, from the unquantised h, a,
W1 and W2, as in the records ("Backward stays BF16: it consumes `post` (and W2), not their
FP8 copies"): no float8 gradients.

The records (the speedrun's latest, #89, runs both projections this way):

* **#84** (05/21/26, 1.320 min, FP8MLPUpProj: -0.5 s): the up projection. Input
  ``rmsnorm(x) * (448 / amax)`` in e4m3 with its current per-tensor amax, the weight per
  matrix ``W / (amax / 448)`` in e4m3, requantised after every optimizer step: headroom 1 on
  both, the current amax. ``up=True`` (default) covers it exactly, up to the adaptations below.
* **#89** (07/17/26, 1.23 min, FP8DownProjection: -1.04 s, 80.73 -> 79.68 s): the down
  projection. The ReLU² output is emitted in e4m3 at a *delayed* scale, the previous forward
  pass's amax x 1.80 / 448 (``act_headroom``), and W2 at a delayed scale with headroom 1.12
  (``weight_headroom``). ``--set fp8-mlp.up=false`` gives #89's change alone.

Adapted:

* **Current, not delayed, amax.** Hooks keep no state from one step to the next, so each
  scale comes from the tensor being quantised, with the record's headroom kept: with the
  current amax a headroom only leaves the top of e4m3's range unused (the values keep their 3
  mantissa bits), where the record's covered the amax's growth between steps. The cost: one
  more pass over the activation to find its amax, which the record's delayed scale avoids.
* The records' MLP has no biases and a fused Triton ReLU² kernel; here the baseline's biases
  and any ``mlp_act`` run around the two products, which XLA compiles (``scaled_dot``: FP8
  tensor cores on H100/H200-class GPUs, emulated elsewhere; see fp8_head.py).

**Training only**, as the records (``use_mlp_fp8 = self.training``): when ``ctx.training`` is
False (validation, ``eval``, sampling, post-training) the previous ``mlp`` hook runs, so
KV-cache decoding is the full forward pass's exactly. Replaces the ``mlp`` hook while training,
so it does not combine with ``moe``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tricks import ANY, Trick, at_least
from tricks.fp8_head import E4M3, fp8_device_note, quantize, scaled_dot

E4M3_MAX = float(jnp.finfo(E4M3).max)  # 448


def amax_scale(x, headroom: float):
    """Per-tensor scale s = headroom * max|x| / 448, so that x / s fits e4m3; float32, outside
    the gradient (the records detach it)."""
    amax = jnp.max(jnp.abs(jax.lax.stop_gradient(x))).astype(jnp.float32)
    return jnp.maximum(amax, 1e-12) * (headroom / E4M3_MAX)


def fp8_linear(x, w, x_headroom: float, w_headroom: float):
    """x (M, K) @ w (K, N): forward in e4m3 at amax scales, backward the plain product's in x's
    dtype from the unquantised x and w."""

    def fp8(x, w):
        sx, sw = amax_scale(x, x_headroom), amax_scale(w, w_headroom)
        return scaled_dot(quantize(x, 1 / sx, E4M3), sx, quantize(w, 1 / sw, E4M3), sw, x.dtype)

    @jax.custom_vjp
    def product(x, w):
        return fp8(x, w)

    def forward(x, w):
        return fp8(x, w), (x, w)

    def backward(saved, g):
        x, w = saved
        return (g @ w.T).astype(x.dtype), (x.T @ g).astype(w.dtype)

    product.defvjp(forward, backward)
    return product(x, w)


def _bias(y, b):
    return y if b is None else y + b


def apply(hooks, hp):
    prev = hooks.mlp

    def mlp(mp, h, act, ctx):
        if not ctx.training:  # as the records evaluate: the compute dtype
            return prev(mp, h, act, ctx)
        x = h.reshape(-1, h.shape[-1])  # 2-D products, as model.dense
        up = fp8_linear(x, mp["wfc"], 1.0, 1.0) if hp.up else x @ mp["wfc"]
        a = act(_bias(up, mp.get("bfc")))
        out = _bias(fp8_linear(a, mp["wproj"], hp.act_headroom, hp.weight_headroom),
                    mp.get("bproj"))
        return out.reshape(*h.shape[:-1], out.shape[-1])

    return hooks.replace(mlp=mlp)


TRICK = Trick(
    name="fp8-mlp",
    summary="the MLP's forward matmuls in float8 e4m3 while training (amax scales, backward in "
    "the compute dtype): faster on FP8 GPUs (H100/H200 class) only",
    changes=("model",),
    params={"up": True, "act_headroom": 1.80, "weight_headroom": 1.12},
    limits={"up": ANY, "act_headroom": at_least(1.0), "weight_headroom": at_least(1.0)},
    apply=apply,
    replaces=("mlp",),
    report=fp8_device_note,
    source="modded-nanogpt records #84 (05/21/26, FP8MLPUpProj) and #89 (07/17/26, "
    "FP8DownProjection)",
)
