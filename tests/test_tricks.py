"""The first wave of tricks: registry, resolution, each trick's own claim, and that random
combinations of them train.

Models are tiny (d_model 32, 2-4 layers, vocab 256, 16 tokens) and every trained configuration
is compiled once, so the whole file runs in well under two minutes on a small CPU.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tricks
from speedrun.core import model
from speedrun.core import params as P
from speedrun.config import ModelConfig, OptimConfig, RunConfig, TrainConfig, apply_overrides
from speedrun.errors import SpeedrunError
from speedrun.core.hooks import Ctx
from speedrun.core.model import baseline_hooks
from tricks import muon as muon_mod
from tricks import value_embeds as ve_mod

VOCAB, SEQ, BATCH, CHUNK = 256, 16, 4, 64
FIRST_WAVE = {
    "rotary", "muon", "momentum-warmup", "relu2", "qknorm", "rmsnorm", "zero-init", "untie-head",
    "softcap", "embed-skip", "value-residual", "unet-skips", "value-embeds", "wsd-schedule",
    "bf16", "gqa",
}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def tiny_cfg(n_layer=2, n_head=4, d_model=32, steps=8) -> RunConfig:
    return RunConfig(
        track="wiki-bytes",  # a real track: its document separator (byte 0) is known
        model=ModelConfig(vocab_size=VOCAB, n_layer=n_layer, n_head=n_head, d_model=d_model,
                          seq_len=SEQ),
        optim=OptimConfig(lr=3e-3, warmup_steps=0, decay="constant", weight_decay=0.0),
        train=TrainConfig(batch_size=BATCH, steps=steps, loss_chunk=CHUNK),
    )


def setup(names=(), overrides=(), **cfg_kw):
    """(cfg, hooks, params) the way the harness builds them."""
    cfg = tricks.with_tricks(tiny_cfg(**cfg_kw), list(names))
    cfg = apply_overrides(cfg, list(overrides))
    cfg = tricks.configure(cfg)
    hooks = tricks.build_hooks(cfg)
    return cfg, hooks, hooks.init(jax.random.PRNGKey(0), cfg.model)


def tokens(seed=0, shape=(BATCH, SEQ)):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, VOCAB, shape), jnp.int32)


def loss_of(cfg, hooks, params, seed=0):
    x, y = tokens(seed), tokens(seed + 1)
    return float(jax.jit(lambda p: model.loss(p, x, y, cfg.model, hooks, CHUNK))(params))


def train_steps(cfg, hooks, params, steps):
    """(loss, params, optimizer state) after each of `steps` updates on one fixed batch of random
    tokens (each update's index of train.steps reaches the hooks, as in train.py)."""
    x, y = tokens(0), tokens(1)
    tx = hooks.optimizer(params, cfg, hooks)

    @jax.jit
    def step(params, state, i):
        loss, grads = jax.value_and_grad(model.loss)(params, x, y, cfg.model, hooks, CHUNK, i,
                                                     cfg.train.steps)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state, seen = tx.init(params), []
    for i in range(steps):
        params, state, loss = step(params, state, jnp.int32(i))
        seen.append((float(loss), params, state))
    return seen


def train(cfg, hooks, params, steps=6):
    """Losses of `steps` optimizer steps (see ``train_steps``)."""
    return [loss for loss, _, _ in train_steps(cfg, hooks, params, steps)]


def flat(params) -> dict:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {P.path_name(path): leaf for path, leaf in leaves}


def ctx(cfg, hooks, params, layer=0, toks=None):
    return Ctx(params=hooks.cast(params), tokens=tokens() if toks is None else toks,
               cfg=cfg.model, layer=layer)


def rms(x, axis=-1):
    return np.sqrt(np.mean(np.square(np.asarray(x, np.float32)), axis=axis))


def normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


# ----------------------------------------------------------------------------------------------
# registry and resolution
# ----------------------------------------------------------------------------------------------


def test_first_wave_is_registered_and_described():
    registry = tricks.available()
    assert FIRST_WAVE <= set(registry), FIRST_WAVE - set(registry)
    for name in FIRST_WAVE:
        t = registry[name]
        module = importlib.import_module("tricks." + name.replace("-", "_"))
        assert module.TRICK is t and t.name == name
        assert t.summary and "\n" not in t.summary, name
        assert t.changes and set(t.changes) <= set(tricks.CHANGES), name
        assert t.source, name
        for key, value in t.params.items():  # plain values: they go into records and --set
            assert isinstance(value, (bool, int, float, str)), (name, key, value)
        for other in t.requires + t.conflicts + t.after:
            assert other in registry, (name, other)


def test_no_tricks_is_the_baseline():
    cfg, hooks, params = setup([])
    base = baseline_hooks()
    assert hooks == base  # the very same functions at every hook point
    base_params = base.init(jax.random.PRNGKey(0), cfg.model)
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, base_params))
    assert loss_of(cfg, hooks, params) == loss_of(cfg, base, base_params)


# Parameters each trick deliberately changes; every other baseline parameter must stay identical.
CHANGED = {
    "untie-head": {"wte"},
    "zero-init": {f"blocks.{i}.{p}" for i in range(4) for p in ("attn.wo", "mlp.wproj")},
}


@pytest.mark.parametrize("name", ["embed-skip", "value-residual", "unet-skips", "value-embeds",
                                  "untie-head", "zero-init", "rotary", "rmsnorm"])
def test_tricks_leave_other_baseline_params_untouched(name):
    cfg, _, params = setup([name], n_layer=4)
    base = flat(baseline_hooks().init(jax.random.PRNGKey(0), cfg.model))
    mine = flat(params)
    for path, leaf in base.items():
        if path in mine and path not in CHANGED.get(name, ()):
            assert jnp.array_equal(mine[path], leaf), (name, path)


@pytest.mark.parametrize("names", [sorted(FIRST_WAVE - {"value-residual"}),
                                   sorted(FIRST_WAVE - {"value-embeds"})])
def test_no_two_parameters_share_a_buffer(names):
    # the train step donates the parameters: one buffer in two leaves would be donated twice
    _, _, params = setup(names, n_layer=4)
    leaves = jax.tree_util.tree_leaves(params)
    assert len({id(leaf) for leaf in leaves}) == len(leaves)


def test_resolution_is_order_independent():
    names = ["wsd-schedule", "momentum-warmup", "rotary", "qknorm", "muon", "embed-skip"]
    orders = {tricks.with_tricks(tiny_cfg(), list(p)).trick_names
              for p in itertools.permutations(names)}
    assert len(orders) == 1
    (order,) = orders
    assert order.index("muon") < order.index("momentum-warmup")  # requirement first
    assert order.index("qknorm") < order.index("rotary")  # after=
    losses = set()
    for perm in (names, names[::-1]):
        cfg, hooks, params = setup(perm)
        losses.add(loss_of(cfg, hooks, params))
    assert len(losses) == 1


def test_unknown_trick_suggests_close_names():
    with pytest.raises(SpeedrunError, match=r"unknown trick 'rotry'.*did you mean.*rotary"):
        tricks.with_tricks(tiny_cfg(), ["rotry"])
    with pytest.raises(SpeedrunError, match="value-embeds"):
        tricks.resolve(["value-embed"])


def test_missing_requirement_and_conflict_fail_before_compiling(monkeypatch):
    def no_compiling(*a, **k):
        raise AssertionError("resolution must fail before anything is compiled")

    monkeypatch.setattr(jax, "jit", no_compiling)
    with pytest.raises(SpeedrunError, match=r"'momentum-warmup' requires muon"):
        tricks.with_tricks(tiny_cfg(), ["momentum-warmup", "rotary"])
    with pytest.raises(SpeedrunError, match=r"'value-embeds' and 'value-residual' conflict"):
        tricks.with_tricks(tiny_cfg(), ["value-residual", "value-embeds", "muon"])


def test_set_overrides_reach_the_tricks():
    cfg, hooks, _ = setup(["softcap", "rotary", "muon"],
                          ["softcap.cap=5", "rotary.base=100", "muon.lr=3e-2"])
    assert cfg.tricks["softcap"]["cap"] == 5.0 and cfg.tricks["muon"]["lr"] == 0.03
    assert float(hooks.logits(jnp.float32(1e4))) == pytest.approx(5.0)
    q = normal(0, (1, SEQ, 4, 8))
    c = ctx(cfg, hooks, hooks.init(jax.random.PRNGKey(0), cfg.model))
    from tricks.rotary import rotate

    assert jnp.allclose(hooks.qk(q, q, c)[0], rotate(q, 100.0))
    assert not jnp.allclose(hooks.qk(q, q, c)[0], rotate(q, 10000.0))
    with pytest.raises(SpeedrunError, match="has no setting 'capp'"):
        apply_overrides(cfg, ["softcap.capp=3"])
    with pytest.raises(SpeedrunError, match="must be a number"):
        apply_overrides(cfg, ["muon.lr=fast"])


# ----------------------------------------------------------------------------------------------
# each trick's claim
# ----------------------------------------------------------------------------------------------


def test_softcap_bounds_logits():
    cfg, hooks, _ = setup(["softcap"])
    z = jnp.linspace(-1e3, 1e3, 101)
    out = hooks.logits(z)
    assert float(jnp.max(jnp.abs(out))) <= 15.0
    assert jnp.allclose(out, 15.0 * jnp.tanh(z / 15.0))
    assert float(hooks.logits(jnp.float32(0.5))) == pytest.approx(0.5, abs=1e-3)  # ~identity near 0


def test_rotary_scores_depend_only_on_relative_position():
    cfg, hooks, params = setup(["rotary"])
    assert "wpe" not in params
    c = ctx(cfg, hooks, params)
    toks = tokens()
    assert jnp.array_equal(hooks.embed(params, toks, c), params["wte"][toks])  # no positions

    q, k = normal(1, (1, SEQ, 4, 8)), normal(2, (1, SEQ, 4, 8))

    def scores(q, k):
        rq, rk = hooks.qk(q, k, c)
        return jnp.einsum("bshd,bthd->bhst", rq, rk)

    shift = 5  # the same content placed 5 positions later: identical scores
    pad = jnp.zeros((1, shift, 4, 8))
    shifted = scores(jnp.concatenate([pad, q], 1), jnp.concatenate([pad, k], 1))
    assert jnp.allclose(scores(q, k), shifted[:, :, shift:, shift:], atol=1e-4)
    assert not jnp.allclose(scores(q, k), jnp.einsum("bshd,bthd->bhst", q, k), atol=1e-2)
    # a constant vector everywhere: scores are a function of s - t only (Toeplitz)
    a = jnp.broadcast_to(q[:, :1], q.shape)
    s = scores(a, a)[0, 0]
    assert jnp.allclose(s[1:, 1:], s[:-1, :-1], atol=1e-4)
    assert not jnp.allclose(s[0, 0], s[3, 0])


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


def test_wsd_schedule_is_a_trapezoid():
    cfg, hooks, _ = setup(["wsd-schedule"], steps=101)
    sched = hooks.lr_schedule(cfg)
    # 101 updates (0..100), the last 40 (61..100) cool down from 1 to exactly 0 at the last one
    values = {s: float(sched(s)) for s in (0, 30, 60, 61, 71, 81, 99, 100)}
    assert values == pytest.approx({0: 1, 30: 1, 60: 1, 61: 1, 71: 0.74358974, 81: 0.48717949,
                                    99: 0.02564103, 100: 0})
    cfg, hooks, _ = setup(["wsd-schedule"], ["wsd-schedule.warmup_steps=10",
                                             "wsd-schedule.cooldown_frac=0.5",
                                             "wsd-schedule.final=0.1"], steps=100)
    sched = hooks.lr_schedule(cfg)
    got = [float(sched(s)) for s in (0, 4, 9, 10, 49, 50, 99, 120)]
    assert got == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1])


# Every schedule's horizon is train.steps, the run's length: its end value falls on the last
# update (step steps - 1) whatever the length, and wsd's cool-down starts at its fraction of it.
SCHEDULES = [
    ((), ["optim.decay=cosine", "optim.warmup_steps=5", "optim.min_lr_frac=0.1"], 0.1),
    ((), ["optim.decay=linear", "optim.warmup_steps=5", "optim.min_lr_frac=0.0"], 0.0),
    ((), ["optim.decay=constant"], 1.0),
    (("wsd-schedule",), [], 0.0),
    (("wsd-schedule",), ["wsd-schedule.final=0.1"], 0.1),
]


@pytest.mark.parametrize("steps", [20, 75, 300])
@pytest.mark.parametrize("names, overrides, end", SCHEDULES)
def test_every_lr_schedule_ends_at_the_last_step(names, overrides, end, steps):
    cfg, hooks, _ = setup(names, overrides, steps=steps)
    sched = hooks.lr_schedule(cfg)
    assert float(sched(steps - 1)) == pytest.approx(end, abs=1e-6)
    assert float(sched(steps - 2)) != pytest.approx(end, abs=1e-6) or end == 1.0
    if names:  # the cool-down starts at 1 - cooldown_frac of the run, not of a budget
        start = steps - round(0.4 * steps)
        assert float(sched(start)) == 1.0 and float(sched(start + 1)) < 1.0


@pytest.mark.parametrize("steps", [20, 300])
def test_momentum_warmup_spans_its_fraction_of_the_run(steps):
    cfg, hooks, _ = setup(["muon", "momentum-warmup"], steps=steps)
    m = hooks.extras["muon_momentum"](cfg)
    w = round(0.2 * steps)
    assert float(m(0)) == pytest.approx(0.85)
    assert float(m(w // 2)) == pytest.approx(0.85 + 0.1 * (w // 2) / w)
    assert float(m(w)) == pytest.approx(0.95) and float(m(steps - 1)) == pytest.approx(0.95)


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


# ----------------------------------------------------------------------------------------------
# muon and momentum warm-up
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (32, 128)])
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


@pytest.mark.parametrize("untied", [False, True])
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
# combinations
# ----------------------------------------------------------------------------------------------


def valid(names, registry) -> bool:
    try:
        tricks.resolve(list(names), registry)
        return True
    except SpeedrunError:
        return False


SECOND_WAVE = {
    "window-attention", "polar-express", "normuon", "cautious-wd", "smear", "attn-gate",
    "bigram-hash", "untie-late", "mtp", "backout", "key-offset", "moe", "batch-schedule",
}
EVERY = FIRST_WAVE | SECOND_WAVE


def random_subsets(seed=3, count=10):
    registry = tricks.available()
    names = sorted(EVERY)
    rng, out = random.Random(seed), []
    while len(out) < count:
        pick = tuple(sorted(rng.sample(names, rng.randint(3, 6))))
        if valid(pick, registry) and pick not in out:
            out.append(pick)
    return out


# value-embeds replaces value-residual, untie-late untie-head
ALL = tuple(sorted(EVERY - {"value-residual", "untie-head"}))
COMBOS = random_subsets() + [ALL]


def test_combinations_cover_every_trick():
    assert set().union(*COMBOS) == EVERY


@pytest.mark.parametrize("names", COMBOS, ids=lambda n: "+".join(n) if len(n) < 16 else "all")
def test_trick_combinations_train(names):
    cfg, hooks, params = setup(names)
    losses = train(cfg, hooks, params)
    assert all(map(math.isfinite, losses)), losses
    assert losses[-1] < losses[0] - 0.05, losses
    # the same set in another order is the same run: identical loss
    shuffled = list(names)
    random.Random(len(names)).shuffle(shuffled)
    assert loss_of(*setup(shuffled)) == loss_of(cfg, hooks, params)


# ----------------------------------------------------------------------------------------------
# tricks that replace a hook
# ----------------------------------------------------------------------------------------------


def _fake(name, apply, **kw):
    return tricks.Trick(name=name, summary="test", changes=("model",), apply=apply, **kw)


def _act_wrapper(hooks, hp):
    prev = hooks.mlp_act
    return hooks.replace(mlp_act=lambda h: 2 * prev(h))


def _act_replacer(hooks, hp):
    return hooks.replace(mlp_act=jax.nn.relu)


def test_a_trick_replacing_a_hook_another_sets_needs_an_order():
    real = tricks.available()
    reg = {**real, "double-act": _fake("double-act", _act_wrapper),
           "other-act": _fake("other-act", _act_replacer, replaces=("mlp_act",))}
    # relu2 replaces mlp_act; double-act wraps it and nothing orders it after relu2
    with pytest.raises(SpeedrunError, match=r"'relu2' replaces the 'mlp_act' hook that "
                                            r"'double-act' also sets"):
        tricks.resolve(["relu2", "double-act"], reg)
    with pytest.raises(SpeedrunError, match=r"'other-act' and 'relu2' both replace the 'mlp_act'"):
        tricks.resolve(["relu2", "other-act"], reg)
    reg["double-act"] = _fake("double-act", _act_wrapper, after=("relu2",))
    order = [t.name for t in tricks.resolve(["double-act", "relu2"], reg)]
    assert order == ["relu2", "double-act"]  # the wrapper now wraps relu2, and both apply


def test_every_first_wave_trick_declares_the_hooks_it_replaces():
    """The first-wave tricks whose hook never calls the previous one declare it; wrappers don't."""
    reg = tricks.available()
    for name in ("relu2", "rmsnorm", "untie-head", "unet-skips", "wsd-schedule", "muon"):
        assert reg[name].replaces, name
    for name in ("softcap", "qknorm", "rotary", "bf16", "value-residual", "zero-init"):
        assert not reg[name].replaces, name


# ----------------------------------------------------------------------------------------------
# the chunked head loss
# ----------------------------------------------------------------------------------------------


def test_chunked_head_loss_and_gradients_equal_the_full_logits_reference():
    from speedrun.core import model

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
