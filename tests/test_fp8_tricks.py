"""The FP8 tricks (fp8-head, fp8-mlp) on the CPU, where XLA emulates the float8 matmuls: their
products against a float64 reference within the error float8 implies, the same products
exactly as the rounded operands give them, training on the float8 path while validation and
inference stay in the compute dtype, 50 training steps against float32 and bfloat16, composition
with other tricks, and what `tricks NAME` says about speed.

The error bound. Round-to-nearest in a format with m mantissa bits moves a normal value by at
most half an ulp, a relative u = 2^-(m+1): e4m3 (m = 3) u = 2^-4, e5m2 (m = 2) u = 2^-3. A
subnormal moves by at most half the subnormal spacing, in the scaled units 2^-10 (e4m3) and
2^-17 (e5m2). So a value x quantised at scale s is off by at most e(x) = max(u |x|, half / s),
a product of two quantised values by e(a)|b| + |a|e(b) + e(a)e(b), and a dot product by the sum
of those over its terms: bound = E_a @ |B| + |A| @ E_b + E_a @ E_b. For normal values that is
(2u + u^2) = 12.9% of sum_i |a_i||b_i| forward (e4m3 x e4m3) and (2^-4 + 2^-3 + 2^-7) = 19.5%
for the head's gradients (e5m2 x e4m3), plus float32 accumulation (~K 2^-24, negligible here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import tricks
from helpers import CHUNK, setup, tokens, train
from speedrun import cli
from speedrun.core import model
from speedrun.core.hooks import Ctx
from speedrun.errors import SpeedrunError
from tricks.fp8_head import fp8_product, quantize
from tricks.fp8_mlp import amax_scale, fp8_linear

E4M3 = (ml_dtypes.float8_e4m3fn, 2.0 ** -4, 2.0 ** -10)  # (dtype, relative u, subnormal half-step)
E5M2 = (ml_dtypes.float8_e5m2, 2.0 ** -3, 2.0 ** -17)
F32_SLACK = 1e-6  # float32 accumulation over K <= 256 terms, relative to sum |a||b|


def rounded(x, scale, fmt):
    """x quantised at ``scale`` by numpy's own float8 cast (ml_dtypes, independent of XLA's),
    clipped as the tricks clip, back in x's units (float64)."""
    dtype = fmt[0]
    big = float(ml_dtypes.finfo(dtype).max)
    q = np.clip(np.asarray(x, np.float64) * scale, -big, big).astype(np.float32).astype(dtype)
    return q.astype(np.float64) / scale


def err(x, scale, fmt):
    """The most quantising x at ``scale`` can move each value (module docstring)."""
    return np.maximum(fmt[1] * np.abs(np.asarray(x, np.float64)), fmt[2] / scale)


def bound(a, ea, b, eb):
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    return ea @ b + a @ eb + ea @ eb + F32_SLACK * (a @ b)


def close(got, want, rel=1e-5):
    """Equal to float32 rounding: the same numbers, computed in another order."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want)) <= rel * (1 + np.max(np.abs(want)))


def inputs(m=64, d=32, v=256):
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    h = jax.random.normal(k[0], (m, d))  # a normed hidden state
    w = 0.02 * jax.random.normal(k[1], (d, v))  # GPT-2's init scale
    dz = jax.random.uniform(k[2], (m, v), minval=-1.0, maxval=1.0)  # softmax - one-hot, in [-1, 1]
    return h, w, dz


# ----------------------------------------------------------------------------------------------
# the products
# ----------------------------------------------------------------------------------------------


def test_float8_rounding_clips_instead_of_overflowing_to_nan():
    x = jnp.asarray([1e4, -1e4, 1.0, 0.3])
    q = np.asarray(quantize(x, 1.0, jnp.float8_e4m3fn), np.float32)
    assert list(q[:2]) == [448.0, -448.0] and q[2] == 1.0  # a plain cast would give NaN
    assert abs(q[3] - 0.3) <= 2 ** -4 * 0.3  # 3 mantissa bits: within half an ulp
    g = np.asarray(quantize(jnp.asarray([1e9, 0.3]), 1.0, jnp.float8_e5m2), np.float32)
    assert g[0] == 57344.0 and abs(g[1] - 0.3) <= 2 ** -3 * 0.3


def test_fp8_head_product_and_gradients_within_the_float8_bound():
    h, w, dz = inputs()
    x_s, w_s, g_s = 2.0, 32.0, 2.0 ** 13
    z, vjp = jax.vjp(lambda h, w: fp8_product(h, w, x_s, w_s, g_s), h, w)
    dh, dw = vjp(dz)
    H, W, G = (np.asarray(a, np.float64) for a in (h, w, dz))
    # exactly the product of the rounded operands (XLA's emulation is the float8 matmul)
    hq, wq, gq = rounded(H, x_s, E4M3), rounded(W, w_s, E4M3), rounded(G, g_s, E5M2)
    assert close(z, hq @ wq) and close(dh, gq @ wq.T) and close(dw, hq.T @ gq)
    # within the float8 bound of the unrounded float64 products ...
    eh, ew, eg = err(H, x_s, E4M3), err(W, w_s, E4M3), err(G, g_s, E5M2)
    for got, want, b in ((z, H @ W, bound(H, eh, W, ew)),
                         (dh, G @ W.T, bound(G, eg, W.T, ew.T)),
                         (dw, H.T @ G, bound(H.T, eh.T, G, eg))):
        off = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(off <= b), float(np.max(off / b))
        # ... and really rounded: float32 would be ~1e-7 off, float8 is percent-level
        assert np.max(off) > 1e-3 * np.max(np.abs(want))


def test_fp8_head_product_keeps_the_compute_dtype():
    """In bfloat16 (the GPU tracks) z and dh come out in bfloat16 and dW via float32, as the
    record's bf16 out and grad_x and fp32 grad_w: the float8 products, rounded once more."""
    hb, wb, gb = (a.astype(jnp.bfloat16) for a in inputs())
    z, vjp = jax.vjp(lambda h, w: fp8_product(h, w, 2.0, 32.0, 2.0 ** 13), hb, wb)
    dh, dw = vjp(gb)
    assert z.dtype == dh.dtype == dw.dtype == jnp.bfloat16
    hq, wq, gq = rounded(hb, 2.0, E4M3), rounded(wb, 32.0, E4M3), rounded(gb, 2.0 ** 13, E5M2)
    for got, a, b in ((z, hq, wq), (dh, gq, wq.T), (dw, hq.T, gq)):
        want = a @ b  # bfloat16 keeps 8 significant bits: within 2^-8 relative
        off = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(off <= 2 ** -8 * np.abs(want) + F32_SLACK * (np.abs(a) @ np.abs(b)))


def test_fp8_mlp_product_forward_within_the_bound_backward_exact():
    h, w, dz = inputs(v=128)
    x = jax.nn.relu(h) ** 2  # a ReLU² activation, as the down projection reads
    for x_head, w_head in ((1.0, 1.0), (1.80, 1.12)):  # record 84's up, record 89's down
        y, vjp = jax.vjp(lambda x, w: fp8_linear(x, w, x_head, w_head), x, w)
        X, W = np.asarray(x, np.float64), np.asarray(w, np.float64)
        sx, sw = np.float32(amax_scale(x, x_head)), np.float32(amax_scale(w, w_head))
        assert sx == pytest.approx(x_head * np.max(np.abs(X)) / 448, rel=1e-6)
        ix, iw = np.float32(1) / sx, np.float32(1) / sw  # the multipliers, as float32 forms them
        xq, wq = rounded(X, ix, E4M3), rounded(W, iw, E4M3)
        assert close(y, xq @ wq)
        off = np.abs(np.asarray(y, np.float64) - X @ W)
        b = bound(X, err(X, ix, E4M3), W, err(W, iw, E4M3))
        assert np.all(off <= b) and np.max(off) > 1e-3 * np.max(np.abs(X @ W))
        # the backward pass is the plain product's, from the unquantised operands (as #84/#89)
        plain = jax.vjp(lambda x, w: x @ w, x, w)[1](dz)
        for got, want in zip(vjp(dz), plain):
            assert np.array_equal(np.asarray(got), np.asarray(want))


# ----------------------------------------------------------------------------------------------
# training only: the model's training loss runs them, validation and inference do not
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fp8-head", "fp8-mlp"])
def test_training_loss_uses_float8_validation_and_inference_do_not(name):
    cfg, hooks, params = setup([name])
    base_cfg, base_hooks, base_params = setup([])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, params, base_params))
    x, y = tokens(0), tokens(1)
    # validation (loss_sum, with or without the step a run passes) and inference: the baseline's
    for step in (None, jnp.int32(3)):
        mine = model.loss_sum(params, x, y, cfg.model, hooks, CHUNK, step, 8)
        theirs = model.loss_sum(params, x, y, base_cfg.model, base_hooks, CHUNK, step, 8)
        assert float(mine) == float(theirs)
    h, p = model.forward(params, x, cfg.model, hooks)
    h0, p0 = model.forward(params, x, base_cfg.model, base_hooks)
    assert np.array_equal(model.output_logits(h, p, hooks), model.output_logits(h0, p0, base_hooks))
    # the training loss: float8, so not the baseline's, but close to it
    train_loss = float(model.loss(params, x, y, cfg.model, hooks, CHUNK))
    base_loss = float(model.loss(params, x, y, base_cfg.model, base_hooks, CHUNK))
    assert train_loss != base_loss
    if name == "fp8-head":
        # |d CE_t| <= 2 max_v |d z_tv| (logsumexp and the picked logit move by at most that);
        # d z within the forward bound at this h and W
        H = np.asarray(h, np.float64).reshape(-1, h.shape[-1])
        W = np.asarray(hooks.head(p), np.float64)
        dz = bound(H, err(H, 2.0, E4M3), W, err(W, 32.0, E4M3))
        assert abs(train_loss - base_loss) <= np.mean(2 * np.max(dz, axis=-1))
    else:  # loosely: the MLP's error passes through the later layers (its product's bound
        assert abs(train_loss - base_loss) < 0.01 * base_loss  # is checked above)


def test_fp8_mlp_down_projection_alone_within_the_bound():
    """``up=false``: record 89's change alone. The MLP's output moves only by the down
    product's float8 error (the up product and activation are the baseline's)."""
    cfg, hooks, params = setup(["fp8-mlp"], ["fp8-mlp.up=false"])
    mp = params["blocks"][0]["mlp"]
    h = jax.random.normal(jax.random.PRNGKey(5), (2, 16, 32))
    ctx = Ctx(params=params, tokens=tokens(), cfg=cfg.model, training=True)
    got = hooks.mlp(mp, h, hooks.mlp_act, ctx)
    want = model.mlp(mp, h, hooks.mlp_act, ctx)
    a = np.asarray(hooks.mlp_act(model.dense(h, mp["wfc"], mp["bfc"])), np.float64).reshape(-1, 128)
    W = np.asarray(mp["wproj"], np.float64)
    sa, sw = float(amax_scale(a, 1.80)), float(amax_scale(W, 1.12))
    b = bound(a, err(a, 1 / sa, E4M3), W, err(W, 1 / sw, E4M3)) + 1e-6
    off = np.abs(np.asarray(got - want, np.float64)).reshape(-1, 32)
    assert np.all(off <= b) and np.max(off) > 1e-3 * np.max(np.abs(np.asarray(want)))
    ctx.training = False  # outside training: the baseline's MLP, exactly
    assert np.array_equal(hooks.mlp(mp, h, hooks.mlp_act, ctx), want)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------

# On one fixed batch the tiny model's loss falls from 5.54 to ~0.80 in 50 steps; bfloat16 alone
# ends 0.009 from float32, the FP8 tricks 0.005-0.021 from their reference (measured).
FP8_TRAINS_WITHIN = 0.05


@pytest.mark.slow
@pytest.mark.parametrize("reference", [[], ["bf16"]], ids=["float32", "bfloat16"])
def test_fifty_steps_in_float8_end_within_a_stated_loss_of_the_reference(reference):
    runs = {}
    for names in (reference, reference + ["fp8-head", "fp8-mlp"]):
        cfg, hooks, params = setup(names, steps=50)
        runs[len(names)] = train(cfg, hooks, params, 50)
    ref, fp8 = runs[len(reference)], runs[len(reference) + 2]
    assert ref[-1] < ref[0] - 4 and fp8[-1] < fp8[0] - 4  # both learned the batch
    assert abs(fp8[-1] - ref[-1]) <= FP8_TRAINS_WITHIN, (fp8[-1], ref[-1])
    assert fp8 != ref  # the float8 path ran


STACK = ["muon", "softcap", "relu2", "untie-head", "rotary"]


def test_fp8_tricks_compose_with_muon_softcap_relu2_untie_head():
    over = ["untie-head.head_std=0.02"]  # a zero head would make the head's product trivially 0
    plain = setup(STACK, over)
    fp8 = setup(STACK + ["fp8-head", "fp8-mlp"], over)
    a, b = train(*plain, steps=8), train(*fp8, steps=8)
    assert all(np.isfinite(b)) and b[-1] < b[0] - 0.5, b
    assert a[0] != b[0] and abs(a[0] - b[0]) < 0.01 * a[0]  # the float8 path, softcapped, ReLU²
    assert abs(a[-1] - b[-1]) < FP8_TRAINS_WITHIN, (a, b)
    # any order of the same tricks is the same run
    again = setup(list(reversed(STACK + ["fp8-head", "fp8-mlp"])), over)
    assert train(*again, steps=2) == b[:2]


@pytest.mark.parametrize("pair, hook", [(("fp8-head", "mtp"), "loss"), (("fp8-mlp", "moe"), "mlp")])
def test_tricks_replacing_the_same_hook_are_refused_before_compiling(pair, hook):
    with pytest.raises(SpeedrunError, match=f"both replace the '{hook}' hook"):
        tricks.resolve(list(pair))


# ----------------------------------------------------------------------------------------------
# record 19's offset logits, and what `tricks` says
# ----------------------------------------------------------------------------------------------


def test_record_19_offset_logits_train_what_softcap_15_trains():
    """30 sigmoid(z / 7.5) = 15 tanh(z / 15) + 15: a constant on every logit, which the softmax
    ignores, so the cross-entropy is softcap's at cap 15 (fp8-head leaves it to softcap)."""
    z = 40 * jax.random.normal(jax.random.PRNGKey(2), (8, 256))
    y = jax.random.randint(jax.random.PRNGKey(3), (8,), 0, 256)
    _, hooks, _ = setup(["softcap"])
    offset = model.token_ce_sum(30 * jax.nn.sigmoid(z / 7.5), y)
    assert float(offset) == pytest.approx(float(model.token_ce_sum(hooks.logits(z), y)), rel=1e-5)


@pytest.mark.parametrize("name", ["fp8-head", "fp8-mlp"])
def test_tricks_command_says_the_speed_gain_needs_an_fp8_gpu(name, capsys):
    assert cli.main(["tricks", name]) == 0
    out = capsys.readouterr().out
    assert "FP8 GPUs (H100/H200 class) only" in out  # the summary
    # this machine's line: the CPU emulates float8; the gain needs an FP8-capable GPU
    assert "no FP8 matmul, so XLA emulates" in out and "needs an FP8-capable GPU" in out
