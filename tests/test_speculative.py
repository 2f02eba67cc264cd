"""Speculative decoding: greedy output is the target's own greedy output whatever the draft,
a draft identical to the target has every proposal accepted, and sampling with the rejection
rule draws from the target's distribution, not the draft's. Tiny models (helpers.tiny_model, as
in test_generate)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import PROMPTS, sweep, tiny_model
from speedrun.errors import SpeedrunError
from speedrun.inference import generate as G

GREEDY = G.Sampling(temperature=0)


@pytest.fixture(scope="module")
def pair():
    target = tiny_model("rotary,qknorm,untie-head,value-residual,gqa", seed=0)
    draft = tiny_model("rotary", seed=7, n_layer=2)
    return target, draft


@pytest.mark.parametrize("K", sweep([4, 1]))
def test_greedy_speculative_equals_target_greedy(pair, K):
    target, draft = pair
    want = G.generate(target, PROMPTS, 12, GREEDY)
    got, stats = G.speculative(target, draft, PROMPTS, 12, K, GREEDY)
    assert got == want
    assert 0 <= stats.accepted <= stats.proposed and stats.rounds >= 1


@pytest.mark.slow
def test_draft_equal_to_target_accepts_everything(pair):
    target, _ = pair
    got, stats = G.speculative(target, target, PROMPTS, 12, 4, GREEDY)
    assert got == G.generate(target, PROMPTS, 12, GREEDY)
    assert stats.proposed > 0 and stats.acceptance == 1.0
    # sampling: p/q = 1 for every proposal, so the rejection rule accepts them all too
    _, stats = G.speculative(target, target, PROMPTS, 12, 4, G.Sampling(0.9), seed=3)
    assert stats.acceptance == 1.0


def marginal_second_token(m: G.Model, prompt: list[int], s: G.Sampling) -> np.ndarray:
    """Exact distribution of the 2nd generated token: sum over t1 of p(t1) p(t2 | t1)."""
    V = m.n_valid
    proc = jax.jit(lambda p, t: jax.nn.softmax(G.process(G.full_logits(m, p, t), s, V), -1))
    p1 = np.asarray(proc(m.params, jnp.asarray([prompt])))[0, -1].copy()
    p1[m.stop] = 0  # a row whose first token is the separator ends there: condition it away
    seqs = np.array([prompt + [t] for t in range(V)], np.int32)
    p2 = np.asarray(proc(m.params, jnp.asarray(seqs)))[:, -1]
    return (p1[:, None] * p2).sum(0)


def near_copy(m: G.Model, scale: float) -> G.Model:
    """The same model with its parameters nudged: a draft that agrees with the target often but
    not always (an unrelated tiny draft shares almost no top-k tokens with the target)."""
    leaves, tree = jax.tree_util.tree_flatten(m.params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    nudged = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return dataclasses.replace(m, params=jax.tree_util.tree_unflatten(tree, nudged))


@pytest.mark.slow
def test_sampling_follows_the_target_distribution(pair):
    target, _ = pair
    draft = near_copy(target, 0.02)  # accepts ~70% of proposals: both branches of the rule run
    s = G.Sampling(temperature=0.7, top_k=4)
    prompt = [0, 84, 104]
    want = marginal_second_token(target, prompt, s)
    draft_dist = marginal_second_token(draft, prompt, s)
    n = 3000
    rows, stats = G.speculative(target, draft, [prompt] * n, 2, 1, s, seed=11)
    second = [r[1] for r in rows if len(r) >= 2]  # rows that did not stop at the separator
    got = np.bincount(second, minlength=len(want)) / len(second)
    want[target.stop] = 0  # likewise a row whose second token is the separator
    want /= want.sum()
    tv = 0.5 * np.abs(got - want).sum()
    tv_draft = 0.5 * np.abs(draft_dist / draft_dist.sum() - want).sum()
    assert tv < 0.06, (tv, tv_draft)
    assert tv_draft > 0.3  # the test could tell the draft's distribution apart
    assert 0.3 < stats.acceptance < 0.95


def test_draft_must_share_the_tokenizer(pair):
    target, draft = pair
    other = G.Model(draft.params, draft.cfg, draft.hooks, "gpt2")
    with pytest.raises(SpeedrunError, match="same one"):
        G.speculative(target, other, PROMPTS, 4, 2, GREEDY)
