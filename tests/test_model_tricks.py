"""Tricks that change the model's forward pass or its parameters, each against its claim or a
small hand-written reference: softcap, qknorm, rmsnorm, relu2, zero-init, untie-head, untie-late,
embed-skip, value-residual, unet-skips, value-embeds, gqa, bf16, smear, attn-gate, bigram-hash,
mtp, backout and moe; and the chunked head loss the model computes its loss with.

Models are tiny (helpers.setup: d_model 32, 2-4 layers, vocab 256, 16 tokens); each test runs
in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from helpers import (BATCH, CHUNK, SEQ, VOCAB, ctx, flat, loss_of, normal, setup, tiny_cfg, tokens,
                     sweep, train, train_steps)
from speedrun.core import model
from speedrun.core import params as P
from speedrun.core.model import baseline_hooks
from speedrun.errors import SpeedrunError
from tricks import backout as bo
from tricks import bigram_hash as bh
from tricks import moe as moe_mod
from tricks import mtp as mtp_mod
from tricks import smear as sm
from tricks import untie_late as ul
from tricks import value_embeds as ve_mod


def rms(x, axis=-1):
    return np.sqrt(np.mean(np.square(np.asarray(x, np.float32)), axis=axis))


# ----------------------------------------------------------------------------------------------
# activations, norms and logits
# ----------------------------------------------------------------------------------------------


def test_softcap_bounds_logits():
    cfg, hooks, _ = setup(["softcap"])
    z = jnp.linspace(-1e3, 1e3, 101)
    out = hooks.logits(z)
    assert float(jnp.max(jnp.abs(out))) <= 15.0
    assert jnp.allclose(out, 15.0 * jnp.tanh(z / 15.0))
    assert float(hooks.logits(jnp.float32(0.5))) == pytest.approx(0.5, abs=1e-3)  # ~identity near 0


def test_qknorm_gives_unit_rms_queries_and_keys():
    cfg, hooks, params = setup(["qknorm"])
    q, k = 7 * normal(1, (2, SEQ, 4, 8)), 0.1 * normal(2, (2, SEQ, 2, 8))
    nq, nk = hooks.qk(q, k, ctx(cfg, hooks, params))
    assert np.allclose(rms(nq), 1, atol=1e-4) and np.allclose(rms(nk), 1, atol=1e-4)
    assert jnp.allclose(nq * jnp.sqrt(jnp.mean(q * q, -1, keepdims=True)), q, atol=1e-4)


def test_rmsnorm_is_parameter_free_with_unit_rms():
    cfg, hooks, params = setup(["rmsnorm"])
    norm_params = [n for n in flat(params) if {"ln1", "ln2", "ln_f"} & set(n.split("."))]
    assert not norm_params and "ln_f" not in params
    x = 3 * normal(0, (2, SEQ, 32)) + 1
    assert np.allclose(rms(hooks.norm(None, x)), 1, atol=1e-5)
    assert np.isfinite(loss_of(cfg, hooks, params))


def test_relu2_is_relu_squared():
    _, hooks, _ = setup(["relu2"])
    h = jnp.linspace(-3, 3, 61)
    assert jnp.allclose(hooks.mlp_act(h), jax.nn.relu(h) ** 2)


# ----------------------------------------------------------------------------------------------
# initialisation and the head
# ----------------------------------------------------------------------------------------------


def test_zero_init_zeroes_the_output_projections_only():
    cfg, hooks, params = setup(["zero-init"], n_layer=3)
    base = baseline_hooks().init(jax.random.PRNGKey(0), cfg.model)
    for b, bb in zip(params["blocks"], base["blocks"]):
        assert not jnp.any(b["attn"]["wo"]) and not jnp.any(b["mlp"]["wproj"])
        assert jnp.array_equal(b["attn"]["wq"], bb["attn"]["wq"])
        assert jnp.array_equal(b["mlp"]["wfc"], bb["mlp"]["wfc"])


def test_untie_head_adds_a_zero_head():
    cfg, hooks, params = setup(["untie-head"])
    D, V = cfg.model.d_model, cfg.model.vocab_size
    assert params["lm_head"].shape == (D, V) and not jnp.any(params["lm_head"])
    assert P.kind("lm_head", params["lm_head"]) == "head"
    assert hooks.head(params) is params["lm_head"]
    assert 0.9 < float(jnp.std(params["wte"])) < 1.1  # nn.Embedding's N(0, 1), as the record
    # with a zero head every prediction is uniform
    assert loss_of(cfg, hooks, params) == pytest.approx(math.log(V), abs=1e-4)
    cfg, hooks, params = setup(["untie-head"], ["untie-head.head_std=0.02",
                                                "untie-head.embed_std=0"])
    assert 0.015 < float(jnp.std(params["lm_head"])) < 0.025
    assert jnp.array_equal(params["wte"], baseline_hooks().init(jax.random.PRNGKey(0),
                                                               cfg.model)["wte"])


def moments(state, name):
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = [ul._key(e) for e in path]
        if keys[-1] == name and ("mu" in keys or "nu" in keys):
            found["mu" if "mu" in keys else "nu"] = leaf
    return found


@pytest.mark.parametrize("names", [["untie-late"], ["muon", "untie-late"]])
@pytest.mark.slow
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
# skips and values
# ----------------------------------------------------------------------------------------------


def test_embed_skip_mixes_the_normed_embedding_into_each_block():
    cfg, hooks, params = setup(["embed-skip"], n_layer=3)
    for b in params["blocks"]:
        assert jnp.array_equal(b["x0_lambdas"], jnp.array([1.0, 0.0]))
    assert P.kind("blocks.0.x0_lambdas", params["blocks"][0]["x0_lambdas"]) == "vector"
    c = ctx(cfg, hooks, params)
    x0 = hooks.embed(c.params, c.tokens, c)
    assert np.allclose(rms(x0), 1, atol=1e-3)  # x0 is the RMS-normed embedding
    c.x0, x = x0, normal(3, x0.shape)
    assert jnp.allclose(hooks.block_input(x, c), x)  # (1, 0): the identity at init
    params["blocks"][2]["x0_lambdas"] = jnp.array([0.5, 2.0])
    c = ctx(cfg, hooks, params, layer=2)
    c.x0 = x0
    assert jnp.allclose(hooks.block_input(x, c), 0.5 * x + 2.0 * x0, atol=1e-6)


def test_value_residual_mixes_first_block_values():
    cfg, hooks, params = setup(["value-residual"], n_layer=3)
    assert all(float(b["attn"]["v_lambda"]) == 0.5 for b in params["blocks"])
    c = ctx(cfg, hooks, params)
    v1, v2 = normal(1, (BATCH, SEQ, 4, 8)), normal(2, (BATCH, SEQ, 4, 8))
    assert jnp.allclose(hooks.values(v1, c), v1)  # block 0: its own values, unchanged
    c.layer = 1
    assert jnp.allclose(hooks.values(v2, c), 0.5 * v2 + 0.5 * v1)
    params["blocks"][2]["attn"]["v_lambda"] = jnp.float32(0.25)
    c2 = ctx(cfg, hooks, params)
    hooks.values(v1, c2)
    c2.layer = 2
    assert jnp.allclose(hooks.values(v2, c2), 0.75 * v2 + 0.25 * v1)


@pytest.mark.parametrize("n_layer", [4, 5])
def test_unet_skips_connect_mirrored_blocks(n_layer):
    cfg, hooks, params = setup(["unet-skips"], n_layer=n_layer)
    n = n_layer // 2
    assert jnp.array_equal(params["skip_weights"], jnp.ones(n))
    params["skip_weights"] = jnp.arange(1.0, n + 1)  # distinguishable weights
    c = ctx(cfg, hooks, params)
    seen = []

    def run_block(i, x):  # block i maps x -> 10 x + i and records its input
        seen.append(x)
        return 10 * x + i

    out = hooks.blocks(jnp.float32(1.0), c, run_block)
    expect, outs, inputs = 1.0, [], []
    for i in range(n_layer):
        if i >= n_layer - n:  # decoder block: + w[k] * output of block L-1-i
            expect = expect + (i - (n_layer - n) + 1) * outs[n_layer - 1 - i]
        inputs.append(expect)
        expect = 10 * expect + i
        outs.append(expect)
    assert [float(s) for s in seen] == inputs and float(out) == expect


def test_value_embeds_u_net_tables():
    cfg, hooks, params = setup(["value-embeds", "gqa"], n_layer=4)  # 2 kv heads of 8
    tables = params["value_embeds"]
    assert sorted(tables) == ["value_embed_0", "value_embed_1"]  # n_layer // 2
    for name, t in tables.items():
        assert t.shape == (VOCAB, 2 * 8)
        assert P.kind(f"value_embeds.{name}", t) == "embedding"
        assert 0.9 < float(jnp.std(t)) < 1.1
    assert [ve_mod.table_of(i, 4, 2) for i in range(4)] == [0, 1, 1, 0]
    for b in params["blocks"]:
        assert jnp.array_equal(b["attn"]["ve_lambdas"], jnp.array([0.5, 0.5]))
    toks = tokens()
    v = normal(1, (BATCH, SEQ, 2, 8))
    for layer, table in [(0, 0), (3, 0), (1, 1)]:
        c = ctx(cfg, hooks, params, layer=layer, toks=toks)
        ve = tables[f"value_embed_{table}"][toks].reshape(v.shape)
        assert jnp.allclose(hooks.values(v, c), 0.5 * v + 0.5 * ve)
    # fewer tables: only the outermost blocks get one; the middle ones keep their values
    cfg, hooks, params = setup(["value-embeds"], ["value-embeds.tables=1"], n_layer=4)
    assert list(params["value_embeds"]) == ["value_embed_0"]
    assert ["ve_lambdas" in b["attn"] for b in params["blocks"]] == [True, False, False, True]
    v = normal(1, (BATCH, SEQ, 4, 8))
    assert jnp.array_equal(hooks.values(v, ctx(cfg, hooks, params, layer=1)), v)
    with pytest.raises(SpeedrunError, match="value-embeds.tables"):
        setup(["value-embeds"], ["value-embeds.tables=3"], n_layer=4)


# ----------------------------------------------------------------------------------------------
# gqa and bf16
# ----------------------------------------------------------------------------------------------


def test_gqa_shrinks_key_value_heads():
    cfg, hooks, params = setup(["gqa"])  # 4 heads, group 2 -> 2 kv heads
    assert cfg.model.n_kv_head == 2
    assert tricks.configure(cfg) == cfg  # idempotent
    a = params["blocks"][0]["attn"]
    assert a["wq"].shape == (32, 32) and a["wk"].shape == (32, 16) and a["wv"].shape == (32, 16)
    assert a["wo"].shape == (32, 32)
    assert np.isfinite(loss_of(cfg, hooks, params))
    with pytest.raises(SpeedrunError, match="divisor of model.n_head=4"):
        setup(["gqa"], ["gqa.group_size=3"])
    with pytest.raises(SpeedrunError, match="already"):
        tricks.configure(tricks.with_tricks(
            dataclasses.replace(tiny_cfg(), model=dataclasses.replace(tiny_cfg().model,
                                                                      n_kv_head=1)), ["gqa"]))


def test_bf16_forward_with_float32_master_weights():
    cfg32, hooks32, params = setup([])
    cfg, hooks, params16 = setup(["bf16"])
    x, y = tokens(0), tokens(1)
    h, p = jax.eval_shape(lambda p: model.forward(p, x, cfg.model, hooks), params16)
    assert h.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree_util.tree_leaves(p))
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params16))

    def loss_and_grad(hooks):
        return jax.jit(jax.value_and_grad(
            lambda p: model.loss(p, x, y, cfg.model, hooks, CHUNK)))(params)

    (l16, g16), (l32, g32) = loss_and_grad(hooks), loss_and_grad(hooks32)
    assert l16.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(g16))
    assert float(l16) == pytest.approx(float(l32), rel=1e-2)
    gw16, gw32 = g16["blocks"][0]["mlp"]["wfc"], g32["blocks"][0]["mlp"]["wfc"]
    cos = jnp.vdot(gw16, gw32) / (jnp.linalg.norm(gw16) * jnp.linalg.norm(gw32))
    assert float(cos) > 0.95


# ----------------------------------------------------------------------------------------------
# smear, attn-gate, bigram-hash
# ----------------------------------------------------------------------------------------------


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
# mtp
# ----------------------------------------------------------------------------------------------


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
# backout
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# moe
# ----------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("k, factor", sweep([(1, 1.25), (1, 0.5), (2, 1.0)], unpack=True))
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


@pytest.mark.slow
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


def test_moe_reports_active_and_total_parameters():
    cfg, *_ = setup(["moe"], ["moe.top_k=2", "moe.hidden_frac=0.25"])
    (line,) = tricks.reports(cfg)
    dense = 2 * (2 * 32 * 128 + 128 + 32)  # 2 blocks of the dense 4x MLP
    per_expert = 2 * 32 * 32 + 32 + 32
    assert line == (f"moe: 4 experts of hidden width 32, top-2: {2 * (32 * 4 + 2 * per_expert):,} "
                    f"MLP parameters active per token, {2 * (32 * 4 + 4 * per_expert):,} in total "
                    f"(the dense MLPs: {dense:,})")
    assert tricks.reports(setup(["softcap"])[0]) == []


# ----------------------------------------------------------------------------------------------
# the chunked head loss
# ----------------------------------------------------------------------------------------------


def test_chunked_head_loss_and_gradients_equal_the_full_logits_reference():
    B, T, D, V = 2, 12, 8, 37
    key = jax.random.split(jax.random.PRNGKey(3), 3)
    h = jax.random.normal(key[0], (B, T, D))
    w = 0.5 * jax.random.normal(key[1], (D, V))
    y = jax.random.randint(key[2], (B, T), 0, V)
    cap = lambda z: 3.0 * jnp.tanh(z / 3.0)  # noqa: E731  (a logits hook, as softcap)

    def naive(h, w):
        z = cap((h @ w).astype(jnp.float32))
        return jnp.sum(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, y[..., None], -1)[..., 0])

    want, (dh_want, dw_want) = jax.value_and_grad(naive, (0, 1))(h, w)
    for chunk in (1, 5, 8, 24, 1000):  # 12 chunks of 2 tokens ... one chunk
        chunked = lambda h, w: model.head_loss_sum(h, w, y, cap, chunk)  # noqa: E731
        got, (dh, dw) = jax.value_and_grad(chunked, (0, 1))(h, w)
        assert float(got) == pytest.approx(float(want), rel=1e-5)
        assert np.allclose(dh, dh_want, atol=1e-5) and np.allclose(dw, dw_want, atol=1e-5)
        assert float(model._chunked_sum(h, w, y, cap, model._chunks(h.shape, chunk))) == \
            pytest.approx(float(want), rel=1e-5)
