"""The GPU tracks cannot rot unnoticed: on the CPU, the `fineweb10b` models are GPT-2 small
(124M parameters), and two real train steps of the best stack and post-training steps run at
its width and vocabulary (two of its layers) on one 1024-token sequence (the tracks' batch is
512; the shapes per sequence are the same)."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

import tricks
from speedrun import tracks
from speedrun.config import PostConfig, apply_overrides
from speedrun.core import model
from speedrun.inference import generate as G
from speedrun.posttraining import posttrain
from speedrun.posttraining import loop, rl, sft
from speedrun.posttraining import tasks as post_tasks
from speedrun.training import plan
from speedrun.training import train

STACK = ["muon", "momentum-warmup", "rotary", "value-residual"]


def gpt2_small(names):
    cfg = tracks.FINEWEB10B.config
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=1,
                                                             grad_accum=1))
    return tricks.configure(apply_overrides(tricks.with_tricks(cfg, names), []))


@pytest.mark.parametrize("names", [[], STACK], ids=["baseline", "best-stack"])
def test_the_fineweb_models_are_gpt2_small(names):
    cfg = gpt2_small(names)
    assert (cfg.model.n_layer, cfg.model.d_model, cfg.model.seq_len) == (12, 768, 1024)
    hooks = tricks.build_hooks(cfg)
    shapes = jax.eval_shape(lambda k: hooks.init(k, cfg.model), jax.random.PRNGKey(0))
    n_params = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
    assert 120e6 < n_params < 130e6  # GPT-2 small (rotary drops the 0.8M position table)


@pytest.mark.slow
def test_two_gpt2_small_steps_on_the_cpu():
    """The best stack at GPT-2 small's width, vocabulary and sequence length, two of its twelve
    layers (the layers are alike: more of them add compile time, not code)."""
    cfg = gpt2_small(STACK)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_layer=2))
    hooks = tricks.build_hooks(cfg)
    params = hooks.init(jax.random.PRNGKey(0), cfg.model)
    tx = hooks.optimizer(params, cfg, hooks)
    state = tx.init(params)
    step = jax.jit(train.make_step(cfg, hooks, tx), donate_argnums=(0, 1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, (1, 1025), dtype=np.int32)
    x, y = tokens[:, :-1], tokens[:, 1:]
    losses = []
    for _ in range(2):
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    assert abs(losses[0] - math.log(50304)) < 0.5  # an untrained model guesses uniformly
    assert losses[1] < losses[0]  # the same sequence again: one step learned something


@pytest.mark.parametrize("track", [tracks.FINEWEB10B, tracks.FINEWEB10B_MEDIUM], ids=lambda t: t.name)
@pytest.mark.slow
def test_gpu_tracks_compute_in_bfloat16_over_float32_master_weights(track):
    m = dataclasses.replace(track.config.model, n_layer=1, n_head=2, d_model=32, seq_len=16,
                            vocab_size=256)
    cfg = dataclasses.replace(track.config, model=m)
    hooks = tricks.build_hooks(cfg)
    params = hooks.init(jax.random.PRNGKey(0), cfg.model)
    dtypes = lambda tree: {x.dtype for x in jax.tree_util.tree_leaves(tree)}  # noqa: E731
    assert dtypes(params) == {np.dtype("float32")}  # master weights
    assert dtypes(hooks.cast(params)) == {np.dtype(jax.numpy.bfloat16)}  # what the forward pass computes in
    tokens = np.arange(32, dtype=np.int32).reshape(2, 16) % 256
    loss, grads = jax.value_and_grad(model.loss)(params, tokens, tokens, cfg.model, hooks, 16)
    assert loss.dtype == np.float32 and dtypes(grads) == {np.dtype("float32")}
    # the CPU tracks stay float32, where XLA:CPU's bf16 matmuls are slower
    assert tracks.WIKI_BYTES.config.model.compute_dtype == "float32"
    assert plan.attention_implementation(cfg) in ("blocked", "xla")  # cudnn only on a GPU


@pytest.mark.slow
def test_post_training_runs_at_gpt2_small_width():
    """The same post-training code at the fineweb tracks' configuration, two of its twelve layers
    (what post-training adds depends on the width, the vocabulary and the chat tokens in it, not
    on the depth): two SFT steps and one RL step, one short row (for RL one prompt, two answers)."""
    base = tracks.FINEWEB10B.config
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, n_layer=2))
    sft_cfg = dataclasses.replace(
        base, train=dataclasses.replace(base.train, batch_size=1, steps=2, eval_every=2,
                                        val_tokens=1),
        post=PostConfig(method="sft", task="addition", seq_len=32, heldout=1))
    rl_cfg = dataclasses.replace(
        sft_cfg, train=dataclasses.replace(sft_cfg.train, batch_size=2, steps=1, eval_every=1),
        post=dataclasses.replace(sft_cfg.post, method="rl", samples=2))
    task = post_tasks.get("addition")
    heldout = task.examples("heldout", 0, 1)
    hooks = posttrain.post_hooks(tricks.build_hooks(sft_cfg), sft_cfg)
    params = hooks.init(jax.random.PRNGKey(0), sft_cfg.model)
    out = loop.run(sft_cfg, 0, hooks, params, "gpt2", task, heldout,
                   sft.batches(task, 0, "gpt2", sft_cfg.model.vocab_size, 1, 32), log=lambda s: None)
    assert out.steps == 2 and all(math.isfinite(p[3]) for p in out.curve)
    params = hooks.init(jax.random.PRNGKey(0), rl_cfg.model)  # sft's step consumed (donated) its own
    model = G.Model(params, rl_cfg, hooks, "gpt2")
    lines = []
    out = loop.run(rl_cfg, 0, hooks, params, "gpt2", task, heldout,
                   rl.batches(task, 0, model, params, rl_cfg), log=lines.append)
    assert out.steps == 1 and any("mean_reward:" in line for line in lines)
