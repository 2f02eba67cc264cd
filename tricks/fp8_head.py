"""FP8 output head: while training, the head's product h @ W runs as a float8 matmul with fixed
scales, and so do the two products of its backward pass (record #19's ``lm_head_fp8``).

    forward:   z  = (q4(x_s h) @ q4(w_s W)) / (x_s w_s)              q4: round to float8 e4m3
    backward:  G  = q5(g_s dz)                                       q5: round to float8 e5m2
               dh = (G @ q4(w_s W)^T) / (g_s w_s),   dW = (q4(x_s h)^T @ G) / (x_s g_s)

Each operand is scaled, rounded to float8 (clipped to the format's largest finite value: 448
for e4m3, 57344 for e5m2) and handed to the product with its inverse scale; z and dh come out
in the compute dtype, dW accumulates in float32, as the record's ``torch._scaled_mm`` calls do
(bfloat16 out, bfloat16 grad_x, float32 grad_w). Only the matmuls change: the logits hook
(e.g. softcap) and the cross-entropy run on float32 logits as before.

Record #19's constants (01/13/25, 3.4 -> 3.142 min at 1390 -> 1395 steps: the gain is step
time): ``x_s = 2``, ``w_s = 32``, ``grad_s = 2**29``, multiplying. Later records retuned them
(#21: ``w_s = 2**9``, ``grad_s = 2**19``; the current code divides by 100/448, 1.6/448 and
0.75 grad_scale/448 inside a fused cross-entropy kernel); these are #19's.

Adapted:

* ``grad_scale`` is the record's 2**29 expressed per token. The record's ``grad_s`` multiplies
  dL/dz of a *mean* over the 2**16 tokens of each forward pass (64 x 1024 per GPU), at most
  2**-16 per logit. The chunked head here (``model.head_loss_sum``) differentiates the *summed*
  loss, whose per-token gradient (softmax - one-hot, times the logits hook's slope) is at most
  1, and divides by the token count afterwards. The same e5m2 values need 2**29 / 2**16 =
  2**13: the largest gradient lands at 8192, under e5m2's 57344 as in the record.
* Values are clipped to the float8 range; the record's plain cast would turn an overflow into
  NaN (and the run would diverge), so the two differ only where the record would fail.
* The record's head is untied (``lm_head``, its own matrix) and reads an RMS-normed x; here W
  is whatever the ``head`` hook returns (the tied embedding, or ``untie-head``'s matrix).
* No fused kernel: XLA compiles the product (see below) inside the harness's chunked head.

**Training only**, as the record (``lm_head_fp8(x) if self.training else self.lm_head(x)``): the
``loss`` hook runs only in the training loss, and falls back to the previous one when
``ctx.training`` is False. Validation, ``eval``, sampling and post-training compute the head
in the compute dtype, so KV-cache decoding is the full forward pass's, exactly.

**Where it is faster:** on GPUs with FP8 tensor cores (H100/H200 class: compute capability
8.9 and up), where XLA turns each product (float8 operands dequantised right before the dot,
``scaled_dot``) into one cuBLASLt FP8 matmul; `gpu_check.sh` measures whether it does.
Elsewhere (CPU, older GPUs) XLA converts the operands and multiplies in the compute dtype: the
same numbers, emulated, with the conversions on top of the baseline's matmuls, so no faster.

**Offset logits** (record #19 also replaced ``15 tanh(z/15)`` with ``30 sigmoid(z/7.5)``) are not
part of this trick, nor a setting: ``30 sigmoid(z/7.5) = 15 tanh(z/15) + 15``, and a constant
added to every logit leaves the softmax and the cross-entropy unchanged, so ``softcap`` at its
cap 15 trains the same model (tests/test_fp8_tricks.py checks the identity): the shift changes
rounding only. (Record #54's ``23 sigmoid((z+5)/7.5)`` is a real change, and would be another
trick.)

Replaces the ``loss`` hook while training, so it does not combine with ``mtp`` (which replaces
it too; the registry refuses the pair): the later records' fused FP8 head + MTP kernel has no
counterpart here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from speedrun.core import model
from tricks import POSITIVE, Trick

E4M3, E5M2 = jnp.float8_e4m3fn, jnp.float8_e5m2
_MATMUL = (((1,), (0,)), ((), ()))  # (M, K) x (K, N) -> (M, N)


def quantize(x, scale, dtype):
    """x * scale rounded to the float8 ``dtype``, clipped to its largest finite value (a plain
    cast would turn an overflow into NaN). The product is formed in float32, so a scale that is
    not a power of two costs no extra rounding."""
    big = float(jnp.finfo(dtype).max)
    return jnp.clip(x.astype(jnp.float32) * scale, -big, big).astype(dtype)


def dequantize(x8, inv_scale, dtype):
    return x8.astype(dtype) * jnp.asarray(inv_scale, dtype)


def scaled_dot(a8, a_inv, b8, b_inv, dtype, out=None):
    """(a8 * a_inv) @ (b8 * b_inv) for float8 a8 (M, K) and b8 (K, N), computed in ``dtype``, the
    result in ``out`` (default ``dtype``). Written as the pattern XLA's GPU compiler turns into
    one FP8 matmul (cuBLASLt, the inverse scales as its scale arguments): each float8 operand
    converted and rescaled right before the dot. Anywhere else it runs as written, and exactly:
    float8 values convert exactly to bfloat16 and float32, and the products accumulate in
    float32."""
    return jax.lax.dot_general(dequantize(a8, a_inv, dtype), dequantize(b8, b_inv, dtype),
                               _MATMUL, preferred_element_type=out or dtype)


def fp8_product(h, w, x_s: float, w_s: float, g_s: float):
    """h (M, D) @ w (D, V) in float8 as record #19 computes it: e4m3 operands at fixed scales
    forward, the gradient in e5m2 at ``g_s`` backward (see the module docstring)."""
    h_dtype, w_dtype = h.dtype, w.dtype

    def forward(h, w):
        h8, w8 = quantize(h, x_s, E4M3), quantize(w, w_s, E4M3)
        return scaled_dot(h8, 1 / x_s, w8, 1 / w_s, h_dtype), (h8, w8)

    @jax.custom_vjp
    def product(h, w):
        return forward(h, w)[0]

    def backward(saved, dz):
        h8, w8 = saved
        g8 = quantize(dz, g_s, E5M2)
        dh = scaled_dot(g8, 1 / g_s, w8.T, 1 / w_s, h_dtype)
        dw = scaled_dot(h8.T, 1 / x_s, g8, 1 / g_s, h_dtype, out=jnp.float32)
        return dh, dw.astype(w_dtype)

    product.defvjp(forward, backward)
    return product(h, w)


def apply(hooks, hp):
    prev = hooks.loss

    def chunk_loss(logits_fn, h, w, y):  # one chunk of model.head_loss_sum, h (B, c, D)
        z = fp8_product(h.reshape(-1, h.shape[-1]), w, hp.x_scale, hp.w_scale, hp.grad_scale)
        return model.token_ce_sum(logits_fn(z.reshape(*h.shape[:-1], -1).astype(jnp.float32)), y)

    def loss(h, w, targets, logits_fn, chunk_tokens, ctx):
        if not ctx.training:  # as the record evaluates: the head in the compute dtype
            return prev(h, w, targets, logits_fn, chunk_tokens, ctx)
        return model.head_loss_sum(h, w, targets, logits_fn, chunk_tokens, chunk_loss)

    return hooks.replace(loss=loss)


def fp8_device_note(cfg=None, hp=None) -> str:
    """Whether this machine's first device multiplies float8 natively (what the trick's speed
    depends on)."""
    d = jax.devices()[0]
    cc = getattr(d, "compute_capability", None)
    if d.platform == "gpu" and cc and tuple(map(int, str(cc).split(".")[:2])) >= (8, 9):
        return f"this device ({d.device_kind}) has FP8 tensor cores: the float8 matmuls use them"
    return (f"this device ({d.device_kind}) has no FP8 matmul, so XLA emulates the float8 "
            f"matmuls (the same numbers, the conversions on top): the speed gain needs an "
            f"FP8-capable GPU (H100/H200 class)")


TRICK = Trick(
    name="fp8-head",
    summary="the output head's matmuls in float8 while training (e4m3, e5m2 gradients, fixed "
    "scales): faster on FP8 GPUs (H100/H200 class) only",
    changes=("model",),
    params={"x_scale": 2.0, "w_scale": 32.0, "grad_scale": 2.0 ** 13},
    limits={"x_scale": POSITIVE, "w_scale": POSITIVE, "grad_scale": POSITIVE},
    apply=apply,
    replaces=("loss",),
    report=fp8_device_note,
    source="modded-nanogpt record #19 (01/13/25, Fp8LmHead, @YouJiacheng)",
)
