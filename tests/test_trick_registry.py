"""The trick registry and how tricks compose: every trick registered and described; resolution
(order independence, unknown names, missing requirements, conflicts, replaced hooks, `after`);
`--set` overrides reaching the tricks; baseline parameters left untouched and no two parameters
sharing a buffer; and random combinations of tricks that train, the same run in any order.

Models are tiny (helpers.setup: d_model 32, 2-4 layers, vocab 256, 16 tokens) and every trained
configuration is compiled once.
"""

from __future__ import annotations

import importlib
import itertools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from helpers import SEQ, ctx, flat, loss_of, normal, setup, tiny_cfg, train
from speedrun.config import apply_overrides
from speedrun.core.model import baseline_hooks
from speedrun.errors import SpeedrunError
from tricks.rotary import rotate

# every registered trick: a first wave, and a second from records 12-89 of the GPT-2 speedrun
FIRST_WAVE = {
    "rotary", "muon", "momentum-warmup", "relu2", "qknorm", "rmsnorm", "zero-init", "untie-head",
    "softcap", "embed-skip", "value-residual", "unet-skips", "value-embeds", "wsd-schedule",
    "bf16", "gqa", "fp8-head",
}
SECOND_WAVE = {
    "window-attention", "polar-express", "normuon", "cautious-wd", "smear", "attn-gate",
    "bigram-hash", "untie-late", "mtp", "backout", "key-offset", "moe", "batch-schedule",
    "fp8-mlp",
}
EVERY = FIRST_WAVE | SECOND_WAVE


# ----------------------------------------------------------------------------------------------
# registration
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
# parameters: the baseline's left alone, no shared buffers
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# resolution
# ----------------------------------------------------------------------------------------------


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
# --set overrides
# ----------------------------------------------------------------------------------------------


def test_set_overrides_reach_the_tricks():
    cfg, hooks, _ = setup(["softcap", "rotary", "muon"],
                          ["softcap.cap=5", "rotary.base=100", "muon.lr=3e-2"])
    assert cfg.tricks["softcap"]["cap"] == 5.0 and cfg.tricks["muon"]["lr"] == 0.03
    assert float(hooks.logits(jnp.float32(1e4))) == pytest.approx(5.0)
    q = normal(0, (1, SEQ, 4, 8))
    c = ctx(cfg, hooks, hooks.init(jax.random.PRNGKey(0), cfg.model))
    assert jnp.allclose(hooks.qk(q, q, c)[0], rotate(q, 100.0))
    assert not jnp.allclose(hooks.qk(q, q, c)[0], rotate(q, 10000.0))
    with pytest.raises(SpeedrunError, match="has no setting 'capp'"):
        apply_overrides(cfg, ["softcap.capp=3"])
    with pytest.raises(SpeedrunError, match="must be a number"):
        apply_overrides(cfg, ["muon.lr=fast"])


# ----------------------------------------------------------------------------------------------
# combinations
# ----------------------------------------------------------------------------------------------


def valid(names, registry) -> bool:
    try:
        tricks.resolve(list(names), registry)
        return True
    except SpeedrunError:
        return False


def random_subsets(seed=3, count=10):
    registry = tricks.available()
    names = sorted(EVERY)
    rng, out = random.Random(seed), []
    while len(out) < count:
        pick = tuple(sorted(rng.sample(names, rng.randint(3, 6))))
        if valid(pick, registry) and pick not in out:
            out.append(pick)
    return out


# value-embeds replaces value-residual, untie-late untie-head; fp8-head replaces the loss hook
# as mtp does, fp8-mlp the mlp hook as moe does: the second set holds the FP8 tricks
ALL = tuple(sorted(EVERY - {"value-residual", "untie-head", "fp8-head", "fp8-mlp"}))
ALL_FP8 = tuple(sorted(set(ALL) - {"mtp", "moe"} | {"fp8-head", "fp8-mlp"}))
QUICK_COMBO = ("bigram-hash", "mtp", "rmsnorm", "rotary")  # the quick tier's: one of the cheapest
COMBOS = random_subsets() + [QUICK_COMBO, ALL, ALL_FP8]


def test_combinations_cover_every_trick():
    assert QUICK_COMBO in COMBOS
    assert set().union(*COMBOS) == EVERY


@pytest.mark.parametrize("names", [
    pytest.param(n, id="+".join(n) if len(n) < 16 else "all-fp8" if "fp8-head" in n else "all",
                 marks=() if n == QUICK_COMBO else pytest.mark.slow) for n in COMBOS])
def test_trick_combinations_train(names):
    cfg, hooks, params = setup(names)
    losses = train(cfg, hooks, params)
    assert all(map(math.isfinite, losses)), losses
    assert losses[-1] < losses[0] - 0.05, losses
    # the same set in another order is the same run: identical loss
    shuffled = list(names)
    random.Random(len(names)).shuffle(shuffled)
    assert loss_of(*setup(shuffled)) == loss_of(cfg, hooks, params)
