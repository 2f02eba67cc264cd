"""The second wave of tricks (records 12-89 of the GPT-2 speedrun): each trick's exact
computation against a small hand-written reference. Random combinations of first- and
second-wave tricks train in tests/test_tricks.py.

Models are tiny (d_model 32, 2-4 layers, vocab 256, 16 tokens); each test runs in seconds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from speedrun.core import attention as A, model
from speedrun.errors import SpeedrunError
from speedrun.core.hooks import Ctx
from test_tricks import (BATCH, CHUNK, SEQ, VOCAB, ctx, flat, loss_of, normal, setup, tokens, train,
                         train_steps)

SECOND_WAVE = {"window-attention", "polar-express", "normuon", "cautious-wd", "smear",
               "attn-gate", "bigram-hash", "untie-late", "mtp", "backout",
               "key-offset", "moe", "batch-schedule"}


def test_second_wave_is_registered_and_described():
    registry = tricks.available()
    assert SECOND_WAVE <= set(registry), SECOND_WAVE - set(registry)
    for name in SECOND_WAVE:
        t = registry[name]
        assert t.summary and "\n" not in t.summary and t.source, name
        assert set(t.changes) <= set(tricks.CHANGES), name
        for key, value in t.params.items():
            assert isinstance(value, (bool, int, float, str)), (name, key, value)


# ----------------------------------------------------------------------------------------------
# window-attention
# ----------------------------------------------------------------------------------------------

from tricks import window_attention as wa  # noqa: E402


def reference_mask(toks, sep, w):
    toks = np.asarray(toks)
    B, T = toks.shape
    out = np.zeros((B, T, T), bool)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                # same document: no separator in (j, i]
                same = not np.any(toks[b, j + 1:i + 1] == sep)
                out[b, i, j] = j <= i and i - j < w and same
    return out


def reference_attention(q, k, v, allowed):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    s = np.where(allowed[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def doc_tokens():
    t = np.array(tokens(5, (2, SEQ)))
    t[t == 0] = 1
    t[0, [0, 5, 6, 11]] = 0  # documents start at 0, 5, 6 (one byte long) and 11
    t[1, [9]] = 0  # row 1: a document continued from before, then one starting at 9
    return jnp.asarray(t)


@pytest.mark.parametrize("w", [1, 3, 8, 64])
def test_window_attention_mask_and_output_match_a_dense_reference(w):
    toks = doc_tokens()
    got = np.asarray(wa.mask(toks, 0, w))
    want = reference_mask(toks, 0, w)
    assert np.array_equal(got, want)
    assert not got[0, 5, 4] and got[0, 4, 1] == (w > 3) and not got[0, 7, 6 - 1]
    q, k, v = normal(1, (2, SEQ, 4, 8)), normal(2, (2, SEQ, 4, 8)), normal(3, (2, SEQ, 4, 8))
    ref = reference_attention(q, k, v, want)
    for y in (A.blocked(q, k, v, block=4, allowed=got), A.blocked(q, k, v, allowed=got),
              jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(got)[:, None])):
        assert np.allclose(np.asarray(y), ref, atol=1e-5)
    # grouped-query: 2 kv heads serve 4 query heads
    k2, v2 = k[:, :, :2], v[:, :, :2]
    ref = reference_attention(q, jnp.repeat(k2, 2, 2), jnp.repeat(v2, 2, 2), want)
    assert np.allclose(np.asarray(A.blocked(q, k2, v2, allowed=got)), ref, atol=1e-5)


def test_window_attention_schedule_and_hook():
    assert [int(wa.window(f, 64, 1792, 64)) for f in (0.0, 0.5, 0.99, 1.0)] == [64, 896, 1728,
                                                                                 1792]
    assert [wa.is_long(i, 12) for i in range(12)] == [c == "L" for c in "LSSSLSSLSSSL"]
    assert [wa.is_long(i, 4) for i in range(4)] == [True, False, False, True]
    cfg, hooks, params = setup(["window-attention"],
                               ["window-attention.start=4", "window-attention.end=20",
                                "window-attention.multiple=2", "window-attention.long_short=true"],
                               n_layer=4, steps=10)
    assert cfg.tricks["window-attention"]["separator"] == 0  # wiki-bytes: byte 0
    toks = doc_tokens()
    q, k, v = normal(1, (2, SEQ, 4, 8)), normal(2, (2, SEQ, 4, 8)), normal(3, (2, SEQ, 4, 8))
    # step 5 of 10: W = 2 * floor((0.5 * 16 + 4) / 2) = 12 on long layers, 6 on short ones
    for layer, w in ((0, 12), (1, 6), (3, 12)):
        c = Ctx(params=params, tokens=toks, cfg=cfg.model, layer=layer, step=jnp.int32(5),
                steps=10)
        y = hooks.attend(q, k, v, c)
        assert np.allclose(np.asarray(y), reference_attention(q, k, v, reference_mask(toks, 0, w)),
                           atol=1e-5), layer
    # no step (a trained model): the final window, which covers the 16-token sequence
    c = Ctx(params=params, tokens=toks, cfg=cfg.model, layer=1)
    y = hooks.attend(q, k, v, c)
    assert np.allclose(np.asarray(y), reference_attention(q, k, v, reference_mask(toks, 0, 10)),
                       atol=1e-5)


def test_window_attention_separator_comes_from_the_track():
    cfg, *_ = setup(["window-attention"])
    assert cfg.tricks["window-attention"]["separator"] == 0
    import dataclasses

    from speedrun import tracks

    wiki = tricks.configure(tricks.with_tricks(tracks.get("wiki").config, ["window-attention"]))
    assert wiki.tricks["window-attention"]["separator"] == 50256
    assert tricks.configure(wiki) == wiki  # idempotent
    other = dataclasses.replace(tricks.with_tricks(tracks.get("wiki").config,
                                                   ["window-attention"]), track="nowhere")
    with pytest.raises(SpeedrunError, match="separator"):
        tricks.configure(other)


def test_window_attention_blocks_attention_across_documents():
    cfg, hooks, params = setup(["window-attention"], n_layer=2)
    x = np.array(tokens(0))
    x[x == 0] = 1
    x[:, 8] = 0  # a new document at position 8
    y = x.copy()
    y[:, :8] = (y[:, :8] + 7) % 255 + 1  # change the first document only
    h1, _ = model.forward(params, jnp.asarray(x), cfg.model, hooks)
    h2, _ = model.forward(params, jnp.asarray(y), cfg.model, hooks)
    # learned positions are absolute, so the second document's states depend only on itself
    assert np.allclose(np.asarray(h1[:, 8:]), np.asarray(h2[:, 8:]), atol=1e-5)
    assert not np.allclose(np.asarray(h1[:, :8]), np.asarray(h2[:, :8]), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# polar-express, normuon, cautious-wd (Muon extension points)
# ----------------------------------------------------------------------------------------------

from test_tricks import first_update  # noqa: E402
from tricks import cautious_wd as cwd  # noqa: E402
from tricks import muon as muon_mod  # noqa: E402
from tricks import normuon as nm  # noqa: E402
from tricks import polar_express as pe  # noqa: E402


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


# ----------------------------------------------------------------------------------------------
# smear, attn-gate, bigram-hash
# ----------------------------------------------------------------------------------------------

from tricks import attn_gate as ag  # noqa: E402
from tricks import bigram_hash as bh  # noqa: E402
from tricks import smear as sm  # noqa: E402


def test_smear_starts_off_and_mixes_the_previous_token():
    cfg, hooks, params = setup(["smear"])
    base_cfg, base_hooks, base_params = setup([])
    assert params["smear"]["gate"].shape == (12, 1) and float(params["smear"]["lambda"]) == 0
    assert loss_of(cfg, hooks, params) == pytest.approx(loss_of(base_cfg, base_hooks, base_params),
                                                        abs=1e-6)  # lambda 0: the baseline
    e = np.asarray(normal(4, (2, 5, 32)))
    w = np.asarray(normal(5, (12, 1)))
    got = np.asarray(sm.smear(jnp.asarray(e), jnp.asarray(w), 0.7))
    want = e.copy()
    for t in range(1, 5):
        g = 1 / (1 + np.exp(-(e[:, t, :12] @ w)))  # (2, 1)
        want[:, t] = e[:, t] + 0.7 * g * e[:, t - 1]
    assert np.allclose(got, want, atol=1e-5)
    # at init (w = 0) the gate is 0.5; with embed-skip the smeared embedding is normalised
    cfg, hooks, params = setup(["smear", "embed-skip"])
    assert list(cfg.tricks) == ["smear", "embed-skip"]
    params["smear"]["lambda"] = jnp.float32(1.0)
    c = ctx(cfg, hooks, params)
    x0 = hooks.embed(c.params, c.tokens, c)
    raw = params["wte"][c.tokens] + params["wpe"][:SEQ]
    smeared = np.asarray(raw).copy()
    smeared[:, 1:] += 0.5 * np.asarray(raw)[:, :-1]
    ref = smeared / np.sqrt(np.mean(smeared ** 2, -1, keepdims=True) + np.finfo(np.float32).eps)
    assert np.allclose(np.asarray(x0), ref, atol=1e-4)


def test_attn_gate_is_half_at_init_and_reads_the_input():
    cfg, hooks, params = setup(["attn-gate"])
    assert params["blocks"][1]["attn"]["gate"].shape == (12, 4)
    y, u = normal(1, (BATCH, SEQ, 4, 8)), normal(2, (BATCH, SEQ, 32))
    c = ctx(cfg, hooks, params, layer=1)
    assert np.allclose(np.asarray(hooks.attn_output(y, u, c)), 0.5 * np.asarray(y))
    w = np.asarray(normal(3, (12, 4)))
    params["blocks"][1]["attn"]["gate"] = jnp.asarray(w)
    c = ctx(cfg, hooks, params, layer=1)
    g = 1 / (1 + np.exp(-(np.asarray(u)[..., :12] @ w)))
    assert np.allclose(np.asarray(hooks.attn_output(y, u, c)), np.asarray(y) * g[..., None],
                       atol=1e-6)
    c0 = ctx(cfg, hooks, params, layer=0)  # block 0's gate is still zero
    assert np.allclose(np.asarray(hooks.attn_output(y, u, c0)), 0.5 * np.asarray(y))


def test_bigram_hash_index_formula_and_injection():
    toks = jnp.asarray([[5, 255, 0, 17], [1, 2, 3, 4]])
    rows = 5 * 256
    got = np.asarray(bh.bigram_hash(toks, rows))
    m = rows - 1
    want = [[m] + [((36313 * int(a)) ^ (27191 * int(b))) % m for b, a in zip(r[:-1], r[1:])]
            for r in np.asarray(toks)]
    assert got.tolist() == want and got.max() < rows
    # GPT-2's largest id stays within int32, as the record's arithmetic
    big = np.asarray(bh.bigram_hash(jnp.asarray([[50303, 50303]]), 5 * 50304))
    assert big[0, 1] == ((36313 * 50303) ^ (27191 * 50303)) % (5 * 50304 - 1)
    cfg, hooks, params = setup(["bigram-hash"], n_layer=3)
    assert params["bigram_embed"].shape == (rows, 32) and not np.any(params["bigram_embed"])
    assert all(float(b["bigram_lambda"]) == pytest.approx(0.1) for b in params["blocks"])
    table = normal(6, (rows, 32))
    params["bigram_embed"] = table
    params["blocks"][2]["bigram_lambda"] = jnp.float32(0.3)
    c = ctx(cfg, hooks, params, layer=2)
    x = normal(7, (BATCH, SEQ, 32))
    expect = x + 0.3 * table[bh.bigram_hash(c.tokens, rows)]
    assert np.allclose(np.asarray(hooks.block_input(x, c)), np.asarray(expect), atol=1e-6)
    order = tricks.with_tricks(setup([])[0], ["embed-skip", "bigram-hash"]).trick_names
    assert order == ("embed-skip", "bigram-hash")  # x <- a x + b x0 + lambda E[h]


# ----------------------------------------------------------------------------------------------
# untie-late
# ----------------------------------------------------------------------------------------------


from tricks import untie_late as ul  # noqa: E402


def moments(state, name):
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = [ul._key(e) for e in path]
        if keys[-1] == name and ("mu" in keys or "nu" in keys):
            found["mu" if "mu" in keys else "nu"] = leaf
    return found


@pytest.mark.parametrize("names", [["untie-late"], ["muon", "untie-late"]])
def test_untie_late_ties_then_copies_weights_and_moments(names):
    cfg, hooks, params = setup(names, steps=6)  # split at round(2/3 * 6) = 4
    assert ul.split_step(6, 2 / 3) == 4
    assert np.array_equal(np.asarray(params["lm_head"]), np.asarray(params["wte"]).T)
    base_cfg, base_hooks, base_params = setup([x for x in names if x != "untie-late"], steps=6)
    x, y = tokens(0), tokens(1)

    def grads(cfg, hooks, params, i):
        return jax.grad(model.loss)(params, x, y, cfg.model, hooks, CHUNK, jnp.int32(i), 6)

    g, gb = grads(cfg, hooks, params, 0), grads(base_cfg, base_hooks, base_params, 0)
    assert not np.any(np.asarray(g["wte"]))  # tied: the embedding reads lm_head^T
    assert np.allclose(np.asarray(g["lm_head"]), np.asarray(gb["wte"]).T, atol=1e-6)
    assert loss_of(cfg, hooks, params) == pytest.approx(loss_of(base_cfg, base_hooks, base_params),
                                                        abs=1e-5)  # step None: untied, same init
    g4 = grads(cfg, hooks, params, 4)  # untied: both get their own gradients
    assert np.any(np.asarray(g4["wte"]))
    seen = train_steps(cfg, hooks, params, 6)
    for i, (_, p, state) in enumerate(seen):  # after update i
        same = np.array_equal(np.asarray(p["wte"]), np.asarray(p["lm_head"]).T)
        if i < 3:
            assert np.array_equal(np.asarray(p["wte"]), np.asarray(params["wte"]))  # untouched
        if i == 3:  # the last tied update (index S - 1) copies weights and moments
            assert np.allclose(np.asarray(p["wte"]), np.asarray(p["lm_head"]).T, atol=1e-7)
            mw, mh = moments(state, "wte"), moments(state, "lm_head")
            assert set(mw) == {"mu", "nu"}
            for k in mw:
                assert np.array_equal(np.asarray(mw[k]), np.asarray(mh[k]).T), k
        if i > 3:
            assert not same


# ----------------------------------------------------------------------------------------------
# mtp
# ----------------------------------------------------------------------------------------------

from tricks import mtp as mtp_mod  # noqa: E402


def test_mtp_weights_follow_the_stages():
    got = {f: np.asarray(mtp_mod.weights(f)).tolist() for f in (0.0, 0.2, 1 / 3, 0.5, 0.7, 1.0)}
    want = {0.0: [1, 0.5, 0.25], 0.2: [1, 0.5, 0.25 * 0.4], 1 / 3: [1, 0.5, 0],
            0.5: [1, 0.25, 0], 0.7: [1, 0, 0], 1.0: [1, 0, 0]}
    for f in want:
        assert got[f] == pytest.approx(want[f], abs=1e-6), f


def test_mtp_loss_terms_match_a_hand_written_sum():
    cfg, hooks, params = setup(["mtp", "softcap"], steps=10)
    x, y = tokens(0), tokens(1)
    h, p = model.forward(params, x, cfg.model, hooks)
    z = np.asarray(hooks.logits((h @ hooks.head(p)).astype(jnp.float32)), np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    yn = np.asarray(y)

    def reference(w):
        total = 0.0
        for b in range(BATCH):
            for t in range(SEQ):
                for k in range(3):
                    if t + k < SEQ:
                        total += w[k] * (lse[b, t] - z[b, t, yn[b, t + k]])
        return total / y.size

    for step, w in ((0, [1, 0.5, 0.25]), (5, [1, 0.25, 0]), (8, [1, 0, 0])):
        got = float(jax.jit(lambda p, i: model.loss(p, x, y, cfg.model, hooks, 8, i, 10))(
            params, jnp.int32(step)))  # 8-token chunks: the sum crosses chunk boundaries
        assert got == pytest.approx(reference(w), rel=1e-5), step
    # late in the run (and in validation) it is the plain next-token loss
    base_cfg, base_hooks, _ = setup(["softcap"], steps=10)
    plain = float(model.loss(params, x, y, base_cfg.model, base_hooks, CHUNK))
    assert float(model.loss(params, x, y, cfg.model, hooks, CHUNK, jnp.int32(9), 10)) == \
        pytest.approx(plain, rel=1e-6)
    assert float(model.loss_sum(params, x, y, cfg.model, hooks, CHUNK, jnp.int32(0), 10)) / \
        y.size == pytest.approx(plain, rel=1e-6)
    # the gradient flows through the chunked custom VJP like the reference's
    g = jax.grad(lambda p: model.loss(p, x, y, cfg.model, hooks, 8, jnp.int32(0), 10))(params)
    g_ref = jax.grad(lambda p: model.loss(p, x, y, cfg.model, hooks, 10 ** 6, jnp.int32(0),
                                          10))(params)
    assert np.allclose(np.asarray(g["wte"]), np.asarray(g_ref["wte"]), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# backout, key-offset
# ----------------------------------------------------------------------------------------------

from tricks import backout as bo  # noqa: E402
from tricks import key_offset as ko  # noqa: E402


@pytest.mark.parametrize("skips", [False, True])
def test_backout_subtracts_the_saved_residual(skips):
    assert [bo.saved_layer(n, 2 / 3) for n in (4, 11, 12)] == [2, 6, 7]  # 3 of 4, 7 of 11, 8 of 12
    names = ["backout", "unet-skips"] if skips else ["backout"]
    cfg, hooks, params = setup(names, n_layer=4)
    assert float(params["backout_lambda"]) == 0.5
    params["backout_lambda"] = jnp.float32(0.3)
    if skips:
        params["skip_weights"] = jnp.zeros(2)  # plain chaining, to write the reference simply
    c = ctx(cfg, hooks, params)
    outs = []

    def run_block(i, x):
        outs.append(10 * x + i)
        return outs[-1]

    got = float(hooks.blocks(jnp.float32(1.0), c, run_block))
    assert got == pytest.approx(outs[-1] - 0.3 * outs[2])


def test_key_offset_shifts_the_slow_dims_on_long_layers():
    assert ko.offset_dims(8) == [2, 3, 6, 7]
    cfg, hooks, params = setup(["key-offset", "rotary", "qknorm"], n_layer=4)
    assert list(cfg.tricks)[-1] == "key-offset"
    q, k = normal(1, (BATCH, SEQ, 4, 8)), normal(2, (BATCH, SEQ, 4, 8))
    c = ctx(cfg, hooks, params, layer=0)
    _, ref_k = tricks.build_hooks(tricks.with_tricks(cfg, ["rotary", "qknorm"])).qk(q, k, c)
    _, got = hooks.qk(q, k, c)
    rk, gk = np.asarray(ref_k), np.asarray(got)
    for d in range(8):
        if d in (2, 3, 6, 7):
            assert np.array_equal(gk[:, 1:, :, d], rk[:, :-1, :, d])
            assert np.array_equal(gk[:, 0, :, d], rk[:, 0, :, d])
        else:
            assert np.array_equal(gk[..., d], rk[..., d])
    _, k1 = hooks.qk(q, k, ctx(cfg, hooks, params, layer=1))  # a short layer: unchanged
    assert np.array_equal(np.asarray(k1), rk)


# ----------------------------------------------------------------------------------------------
# moe
# ----------------------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from tricks import moe as moe_mod  # noqa: E402


def reference_moe(x, router, experts, k, cap, act):
    """Token-by-token loops: choice-major queues, first `cap` kept per expert."""
    x = np.asarray(x, np.float64)
    logits = x @ np.asarray(router, np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    N, E = p.shape
    order = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    y, used = np.zeros_like(x), [0] * E
    for j in range(k):
        for n in range(N):
            e = order[n, j]
            if used[e] >= cap:
                continue
            used[e] += 1
            g = p[n, e] if k == 1 else p[n, e] / p[n, order[n]].sum()
            w = {name: np.asarray(a, np.float64) for name, a in experts[e].items()}
            hid = np.asarray(act(jnp.asarray(x[n] @ w["wfc"] + w["bfc"], jnp.float32)), np.float64)
            y[n] += g * (hid @ w["wproj"] + w["bproj"])
    f = np.bincount(order[:, 0], minlength=E) / N
    return y, f, p.mean(0)


@pytest.mark.parametrize("k, factor", [(1, 1.25), (1, 0.5), (2, 1.0)])
def test_moe_routing_capacity_and_aux_loss_match_a_loop(k, factor):
    hp = SimpleNamespace(experts=4, top_k=k, capacity_factor=factor, aux_alpha=0.01,
                         hidden_frac=0.25)
    D, F = 8, 8
    keys = jax.random.split(jax.random.PRNGKey(0), 10)
    experts = [{"wfc": jax.random.normal(keys[2 * e], (D, F)), "bfc": 0.1 * jnp.ones(F),
                "wproj": jax.random.normal(keys[2 * e + 1], (F, D)), "bproj": jnp.full(D, e * 1.0)}
               for e in range(4)]
    router = 2 * jax.random.normal(keys[9], (D, 4))
    h = normal(3, (2, 10, D))
    act = jax.nn.relu
    y, aux = moe_mod.moe_mlp({"router": router, "experts": experts}, h, act, hp)
    cap = moe_mod.capacity(20, hp)
    assert cap == math.ceil(factor * k * 20 / 4)
    want, f, P = reference_moe(h.reshape(20, D), router, experts, k, cap, act)
    assert np.allclose(np.asarray(y).reshape(20, D), want, atol=1e-4)
    assert float(aux) == pytest.approx(0.01 * 4 * float(np.sum(f * P)), rel=1e-5)
    if factor == 0.5:  # some tokens were dropped: their output is zero
        assert np.any(np.all(want == 0, axis=-1))


def test_moe_with_one_expert_is_the_dense_mlp_and_counts_parameters():
    cfg, hooks, params = setup(["moe"], ["moe.experts=1", "moe.capacity_factor=1.0"])
    base_cfg, base_hooks, base_params = setup([])
    x, y = tokens(0), tokens(1)
    got = float(model.loss(params, x, y, cfg.model, hooks, CHUNK))
    want = float(model.loss(base_params, x, y, base_cfg.model, base_hooks, CHUNK))
    assert got == pytest.approx(want + 0.01 * cfg.model.n_layer, abs=1e-5)  # aux = alpha at E=1
    assert float(model.loss_sum(params, x, y, cfg.model, hooks, CHUNK)) / y.size == \
        pytest.approx(want, abs=1e-5)  # validation: no aux term
    cfg, hooks, params = setup(["moe", "zero-init"], n_layer=2)
    assert list(cfg.tricks) == ["zero-init", "moe"]
    mlp = params["blocks"][0]["mlp"]
    assert mlp["router"].shape == (32, 4) and len(mlp["experts"]) == 4
    assert all(not np.any(np.asarray(e["wproj"])) for e in mlp["experts"])  # zero-init holds
    assert float(jnp.std(mlp["experts"][2]["wfc"])) == pytest.approx(0.02, rel=0.2)
    m = cfg.model
    hp = SimpleNamespace(**cfg.tricks["moe"])
    dense = 2 * 32 * 128 + 128 + 32
    assert moe_mod.param_counts(m, hp) == (2 * (32 * 4 + dense), 2 * (32 * 4 + 4 * dense))
    n_mlp = sum(int(a.size) for b in params["blocks"] for a in jax.tree_util.tree_leaves(b["mlp"]))
    assert n_mlp == moe_mod.param_counts(m, hp)[1]
    hp.hidden_frac, hp.top_k = 0.25, 2  # equal total parameters: 4 experts of a quarter width
    assert moe_mod.param_counts(m, hp)[1] - 2 * 32 * 4 == 2 * (2 * 32 * 128 + 4 * 32 + 4 * 32)
    losses = train(*setup(["moe", "muon"]))
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0] - 0.3


# ----------------------------------------------------------------------------------------------
# batch-schedule
# ----------------------------------------------------------------------------------------------

from test_train import record_dirs, run_cli  # noqa: E402

from speedrun.records import record, verify  # noqa: E402
from speedrun.data import loader as loader_mod  # noqa: E402
from speedrun.core import batches  # noqa: E402
from tricks import batch_schedule as bs  # noqa: E402


def test_batch_schedule_stages_and_lr():
    cfg, hooks, _ = setup(["batch-schedule"], steps=9)  # batch 4: stages of 2, 4, 6 sequences
    assert batches.batch_sizes(cfg, hooks) == [2, 2, 2, 4, 4, 4, 6, 6, 6]
    assert batches.tokens_seen(cfg, hooks)[-1] == 36 * SEQ
    base = setup([], steps=9)[1].lr_schedule(cfg)
    sched = hooks.lr_schedule(cfg)
    for s, m in ((0, 1.0), (2, 1.0), (3, 2 ** 0.6), (8, 3 ** 0.6)):
        assert float(sched(s)) == pytest.approx(float(base(s)) * m, rel=1e-6), s
    with pytest.raises(SpeedrunError, match="multipliers"):
        setup(["batch-schedule"], ["batch-schedule.multipliers=1,x"])


def test_loader_rows_continue_the_fixed_size_stream(tiny):
    folder = tiny / "data" / "tiny"
    files = sorted(folder.glob("*_train_*.bin"))
    fixed = loader_mod.TrainLoader(files, 4, 32, seed=1)
    whole = np.concatenate([fixed.batch(s)[0] for s in range(6)])  # 24 sequences
    parts = [fixed.rows(0, 2)[0], fixed.rows(2, 8)[0], fixed.rows(10, 14)[0]]
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.array_equal(fixed.rows(4, 4, 1, 2)[0], whole[[5, 7]])  # process 1 of 2


def test_batch_schedule_trains_with_a_few_shapes_and_verifies(tiny, monkeypatch):
    asked = []
    real = loader_mod.TrainLoader.rows

    def spy(self, first, n, *rest):
        asked.append((first, n))
        return real(self, first, n, *rest)

    monkeypatch.setattr(loader_mod.TrainLoader, "rows", spy)
    assert run_cli(tiny, "--tricks", "batch-schedule", "--steps", "9",
                   "--set", "train.eval_every=3") == 0
    # batch 8: 4, 8, 12 sequences by thirds, taken back to back from the stream
    assert asked == [(0, 4), (4, 4), (8, 4), (12, 8), (20, 8), (28, 8), (36, 12), (48, 12),
                     (60, 12)]
    (folder,) = record_dirs(tiny)
    rec = record.load_record(folder)
    run = rec["runs"][0]
    assert run["tokens"] == 72 * 32
    assert [p[2] for p in run["curve"]] == [0, 12 * 32, 36 * 32, 72 * 32]
    assert verify.verify(folder) == []


def test_moe_reports_active_and_total_parameters():
    cfg, *_ = setup(["moe"], ["moe.top_k=2", "moe.hidden_frac=0.25"])
    (line,) = tricks.reports(cfg)
    dense = 2 * (2 * 32 * 128 + 128 + 32)  # 2 blocks of the dense 4x MLP
    per_expert = 2 * 32 * 32 + 32 + 32
    assert line == (f"moe: 4 experts of hidden width 32, top-2: {2 * (32 * 4 + 2 * per_expert):,} "
                    f"MLP parameters active per token, {2 * (32 * 4 + 4 * per_expert):,} in total "
                    f"(the dense MLPs: {dense:,})")
    assert tricks.reports(setup(["softcap"])[0]) == []


def test_second_wave_parameters_are_distinct_buffers_and_leave_the_baseline_alone():
    # the train step donates the parameters: one buffer in two leaves would be donated twice
    names = ["smear", "attn-gate", "bigram-hash", "untie-late", "backout", "moe", "zero-init"]
    cfg, _, params = setup(names, n_layer=4)
    leaves = jax.tree_util.tree_leaves(params)
    assert len({id(leaf) for leaf in leaves}) == len(leaves)
    base = flat(setup([], n_layer=4)[2])
    for name in ["smear", "attn-gate", "bigram-hash", "untie-late", "backout"]:
        mine = flat(setup([name], n_layer=4)[2])
        for path, leaf in base.items():
            assert np.array_equal(np.asarray(mine[path]), np.asarray(leaf)), (name, path)
