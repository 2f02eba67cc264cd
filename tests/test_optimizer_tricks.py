"""Optimizer tricks: Muon (orthogonalised updates, its parameter groups, momentum warm-up driving
it, training a tiny model) and its extensions polar-express, normuon and cautious-wd, each
against a small hand-written reference.

Models are tiny (helpers.setup: d_model 32, 2 layers, vocab 256, 16 tokens).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from helpers import flat, normal, setup, sweep, train
from speedrun.core import params as P
from speedrun.errors import SpeedrunError
from tricks import cautious_wd as cwd
from tricks import muon as muon_mod
from tricks import normuon as nm
from tricks import polar_express as pe


# ----------------------------------------------------------------------------------------------
# muon and momentum warm-up
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", sweep([(32, 64), (64, 32), (32, 128)]))
def test_muon_orthogonalises_updates(shape):
    g = normal(0, shape)
    s_raw = np.linalg.svd(np.asarray(g), compute_uv=False)
    assert s_raw.max() / s_raw.min() > 1.9  # a spread-out spectrum ...
    s = np.linalg.svd(np.asarray(muon_mod.orthogonalize(g)), compute_uv=False)
    assert s.min() > 0.6 and s.max() < 1.25, s  # ... lands in the quintic's band, ~[0.7, 1.2]
    s_bf16 = np.linalg.svd(np.asarray(muon_mod.orthogonalize(g, dtype=jnp.bfloat16)),
                           compute_uv=False)
    assert s_bf16.min() > 0.6 and s_bf16.max() < 1.25, s_bf16  # the record's bf16 iteration
    assert muon_mod.shape_scale((32, 128)) == 2.0 and muon_mod.shape_scale((128, 32)) == 1.0


def first_update(names, overrides=()):
    """One optimizer update from fresh state: (cfg, params, updates by dotted name, state)."""
    cfg, hooks, params = setup(names, overrides)
    # random signs: every coordinate has the same magnitude, so Adam's first step is exactly lr
    grads = jax.tree_util.tree_map(lambda p: jnp.sign(normal(1, p.shape)), params)
    tx = hooks.optimizer(params, cfg, hooks)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    return cfg, params, flat(updates), state


@pytest.mark.parametrize("untied", sweep([False, True]))
def test_muon_groups(untied):
    names = ["muon", "untie-head"] if untied else ["muon"]
    cfg, params, up, _ = first_update(names)
    hp = cfg.tricks["muon"]
    # Adam's first step moves every coordinate by lr (clipping does not change that)
    adam_lrs = {"blocks.0.attn.bq": hp["scalar_lr"], "blocks.1.ln2.scale": hp["scalar_lr"]}
    if untied:
        adam_lrs.update({"wte": hp["embed_lr"], "wpe": hp["embed_lr"], "lm_head": hp["head_lr"]})
    else:
        adam_lrs.update({"wte": hp["tied_lr"], "wpe": hp["tied_lr"]})
    for name, lr in adam_lrs.items():
        assert np.allclose(np.abs(up[name]), lr, rtol=1e-4), name
    for name in ("blocks.0.attn.wq", "blocks.1.mlp.wfc", "blocks.1.mlp.wproj"):
        u = np.asarray(up[name])
        s = np.linalg.svd(u / (hp["lr"] * muon_mod.shape_scale(u.shape)), compute_uv=False)
        assert s.max() < 1.25, (name, s)
        if u.shape[0] != u.shape[1]:  # a square random matrix can have a near-zero direction
            assert s.min() > 0.6, (name, s)
    assert muon_mod.shape_scale(up["blocks.1.mlp.wfc"].shape) == 2.0  # (32, 128): out/in = 4
    labels = flat(P.label_tree(params, muon_mod.labels(params)))
    assert labels["blocks.0.attn.wk"] == "muon" and labels["blocks.0.attn.bk"] == "scalar"
    assert labels["wte"] == ("embed" if untied else "tied")


def muon_states(state):
    leaves = jax.tree_util.tree_leaves(state, is_leaf=lambda s: isinstance(s, muon_mod.MuonState))
    return [s for s in leaves if isinstance(s, muon_mod.MuonState)]


def test_momentum_warmup_drives_muon():
    cfg, hooks, _ = setup(["muon", "momentum-warmup"], steps=1500)
    m = hooks.extras["muon_momentum"](cfg)
    assert [float(m(s)) for s in (0, 150, 300, 1000)] == pytest.approx([0.85, 0.90, 0.95, 0.95])
    *_, warm = first_update(["muon", "momentum-warmup"])
    *_, const = first_update(["muon"])
    (sw,), (sc,) = muon_states(warm), muon_states(const)
    assert int(sw.count) == int(sc.count) == 1
    # first step: buffer = (1 - m) * g, with m = 0.85 under warm-up and 0.95 without
    for bw, bc in zip(jax.tree_util.tree_leaves(sw.buf), jax.tree_util.tree_leaves(sc.buf)):
        assert np.allclose(np.asarray(bw), 3.0 * np.asarray(bc), rtol=1e-4)


def test_muon_trains_a_tiny_model():
    cfg, hooks, params = setup(["muon"])
    losses = train(cfg, hooks, params)
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0] - 0.3, losses


# ----------------------------------------------------------------------------------------------
# polar-express, normuon, cautious-wd (Muon extension points)
# ----------------------------------------------------------------------------------------------


def test_polar_express_coefficients_and_polynomial():
    assert pe.COEFFS[0] == (8.156554524902461, -22.48329292557795, 15.878769915207462)
    assert pe.COEFFS[-1] == (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)
    assert len(pe.COEFFS) == 5
    # a matrix with known singular values: the output is U p(S) V^T, p the composed quintics
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    v, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    s = np.logspace(0, -3, 12)
    g = u[:, :12] @ np.diag(s) @ v.T  # tall: iterated transposed
    x = s / (np.sqrt(np.sum(s ** 2)) * 1.02 + 1e-6)
    for a, b, c in pe.COEFFS:
        x = a * x + b * x ** 3 + c * x ** 5
    want = u[:, :12] @ np.diag(x) @ v.T
    got = np.asarray(pe.polar_express(jnp.asarray(g, jnp.float32)))
    assert np.allclose(got, want, atol=2e-4)
    # and the result is closer to orthogonal than Newton-Schulz's on a random matrix
    for shape in ((32, 64), (64, 32)):
        g = normal(0, shape)
        sv = np.linalg.svd(np.asarray(pe.polar_express(g)), compute_uv=False)
        assert sv.min() > 0.8 and sv.max() < 1.2, sv
        ns = np.linalg.svd(np.asarray(muon_mod.orthogonalize(g)), compute_uv=False)
        assert np.abs(sv - 1).max() < np.abs(ns - 1).max()


def test_polar_express_drives_muon():
    cfg, params, up, _ = first_update(["muon", "polar-express"])
    cfg0, _, up0, _ = first_update(["muon"])
    lr = cfg.tricks["muon"]["lr"]
    g = jnp.sign(normal(1, params["blocks"][0]["mlp"]["wfc"].shape))  # first_update's gradient
    want = -lr * muon_mod.shape_scale(g.shape) * pe.polar_express(g)
    assert np.allclose(np.asarray(up["blocks.0.mlp.wfc"]), np.asarray(want), atol=1e-5)
    assert not np.allclose(np.asarray(up0["blocks.0.mlp.wfc"]), np.asarray(want), atol=1e-3)
    assert np.allclose(np.asarray(up["wte"]), np.asarray(up0["wte"]))  # Adam groups unchanged
    with pytest.raises(SpeedrunError, match="requires muon"):
        tricks.with_tricks(cfg0, ["polar-express"])


def test_normuon_normalises_per_neuron_and_keeps_the_norm():
    rng = np.random.default_rng(1)
    for shape, axis in (((8, 16), 0), ((16, 8), 1)):
        o = rng.normal(size=shape).astype(np.float32) * np.linspace(0.1, 2, shape[1])
        buf = np.abs(rng.normal(size=[1 if a == axis else n for a, n in enumerate(shape)]))
        got, new_buf = nm.normalize(jnp.asarray(o), jnp.asarray(buf, jnp.float32), 0.95)
        want_buf = 0.95 * buf + 0.05 * np.mean(o ** 2, axis=axis, keepdims=True)
        o1 = o / np.sqrt(want_buf)
        want = o1 * np.linalg.norm(o) / np.linalg.norm(o1)
        assert nm.reduce_axis(shape) == axis
        assert np.allclose(np.asarray(new_buf), want_buf, rtol=1e-5)
        assert np.allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
        assert np.linalg.norm(np.asarray(got)) == pytest.approx(np.linalg.norm(o), rel=1e-5)
    # first step from a zero buffer: every neuron of the result has the same RMS
    got, _ = nm.normalize(jnp.asarray(o), jnp.zeros((16, 1)), 0.95)
    assert np.allclose(np.sqrt(np.mean(np.asarray(got) ** 2, axis=1)),
                       np.sqrt(np.mean(np.asarray(got) ** 2)), rtol=1e-4)


def test_normuon_drives_muon():
    cfg, params, up, state = first_update(["muon", "normuon"])
    lr = cfg.tricks["muon"]["lr"]
    g = jnp.sign(normal(1, params["blocks"][0]["mlp"]["wfc"].shape))
    o = muon_mod.shape_scale(g.shape) * muon_mod.orthogonalize(g)
    want, _ = nm.normalize(o, jnp.zeros((1, g.shape[1])), 0.95)
    assert np.allclose(np.asarray(up["blocks.0.mlp.wfc"]), -lr * np.asarray(want), atol=1e-5)
    bufs = [s for s in jax.tree_util.tree_leaves(
        state, is_leaf=lambda s: isinstance(s, nm.NorMuonState)) if isinstance(s, nm.NorMuonState)]
    assert len(bufs) == 1


def test_cautious_wd_decays_only_where_the_update_shrinks_the_weight():
    p = jnp.array([[1.0, -2.0, 3.0, -4.0]]).T  # (4, 1): shape scale 1
    u = jnp.array([[-0.1, -0.1, 0.2, 0.0]]).T  # final updates (p += u)
    tx = cwd.cautious_decay(lambda step: 0.5 / (step + 1), 1.2)
    state = tx.init(p)
    out, state = tx.update(u, state, p)
    # step 0: lr 0.5, decay 0.5 * 1.2 * 0.5 = 0.3 where u * p <= 0 (entries 0, 1? no: 0 and 3)
    mask = np.array([True, False, False, True])
    want = np.asarray(u)[:, 0] - 0.3 * mask * np.asarray(p)[:, 0]
    assert np.allclose(np.asarray(out)[:, 0], want)
    out, state = tx.update(u, state, p)  # step 1: lr 0.25 -> decay 0.075
    assert np.allclose(np.asarray(out)[:, 0], np.asarray(u)[:, 0] - 0.075 * mask * np.asarray(p)[:, 0])
    # a wide matrix: the step size includes Muon's shape scale
    pw, uw = jnp.ones((2, 8)), -jnp.ones((2, 8))
    out, _ = tx.update(uw, tx.init(pw), pw)
    assert np.allclose(np.asarray(out), -1 - 2.0 * 0.5 * 1.2 * 0.5)


def test_cautious_wd_drives_muon_and_leaves_adam_groups():
    cfg, params, up, _ = first_update(["muon", "cautious-wd"])
    _, _, up0, _ = first_update(["muon"])
    lr = cfg.tricks["muon"]["lr"]
    for name in ("blocks.0.mlp.wfc", "blocks.1.attn.wq"):
        p = np.asarray(flat(params)[name])
        u0 = np.asarray(up0[name])
        eff = lr * muon_mod.shape_scale(p.shape)
        want = u0 - eff * 1.2 * lr * (u0 * p <= 0) * p
        assert np.allclose(np.asarray(up[name]), want, atol=1e-7), name
    assert np.array_equal(np.asarray(up["wte"]), np.asarray(up0["wte"]))
