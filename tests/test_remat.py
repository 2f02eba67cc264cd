"""Activation checkpointing (train.remat): each block is one jax.checkpoint, the loss and
gradients are those without it (tricks that hand values between blocks through the Ctx
included), and the backward pass keeps fewer activations: dots fewer than off, full fewer
still. `bench` reports it."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import CHUNK, flat, setup, sweep, tokens
from speedrun import cli
from speedrun.core import model
from speedrun.training import remat

# Tricks that read or write the Ctx across blocks: value-residual (ctx.state, the first block's
# values), bigram-hash and window-attention (ctx.state, once per pass), embed-skip (ctx.x0),
# unet-skips and backout (the blocks hook itself), moe (ctx.aux_loss)
STACKS = [[], ["value-residual", "unet-skips", "backout", "embed-skip"],
          ["bigram-hash", "window-attention", "moe"]]


def loss_and_grads(names, policy: str):
    cfg, hooks, params = setup(names, n_layer=4)
    hooks = remat.with_remat(hooks, policy)
    x, y = tokens(0), tokens(1)
    fn = jax.jit(jax.value_and_grad(
        lambda p: model.loss(p, x, y, cfg.model, hooks, CHUNK, jnp.int32(3), 8)))
    return fn(params)


@pytest.mark.parametrize("names", sweep(STACKS, quick=2), ids=lambda n: "+".join(n) or "baseline")
@pytest.mark.parametrize("policy", ["dots", "full"])
def test_the_same_loss_and_gradients_as_without(names, policy):
    loss, grads = loss_and_grads(names, "off")
    loss_r, grads_r = loss_and_grads(names, policy)
    assert float(loss_r) == pytest.approx(float(loss), abs=1e-6)
    a, b = flat(grads), flat(grads_r)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-6, rtol=1e-5, err_msg=name)


def test_each_block_is_one_checkpoint():
    cfg, hooks, params = setup([], n_layer=3)
    x = tokens(0)

    def checkpoints(policy):  # the forward pass's checkpointed calls (jax.checkpoint's primitive)
        h = remat.with_remat(hooks, policy)
        jaxpr = jax.make_jaxpr(lambda p: model.loss(p, x, x, cfg.model, h, CHUNK))(params)
        return [e for e in jaxpr.jaxpr.eqns if e.primitive.name.startswith("remat")]

    assert len(checkpoints("full")) == len(checkpoints("dots")) == 3
    assert checkpoints("off") == []


@pytest.mark.parametrize("names", STACKS[:2], ids=lambda n: "+".join(n) or "baseline")
def test_the_backward_pass_keeps_fewer_activations(names):
    cfg, hooks, params = setup(names, ["model.seq_len=64"], n_layer=4, d_model=64)
    x = jnp.zeros((8, 64), jnp.int32)
    kept = {policy: remat.kept_bytes(lambda p, h=remat.with_remat(hooks, policy): model.loss(
        p, x, x, cfg.model, h, CHUNK), params) for policy in ("off", "dots", "full")}
    assert kept["off"] > 2 * kept["dots"] > 2 * kept["full"] > 0, kept
    # full keeps about each block's input: 4 blocks x 8 x 64 positions x 64 floats, and the
    # output head's stored gradient (model.head_loss_sum), whatever the policy
    assert kept["full"] < 4 * (4 * 8 * 64 * 64 * 4), kept


@pytest.mark.slow
def test_bench_reports_microbatches_and_remat(tiny, capsys):
    assert cli.main(["bench", "--track", "tiny", "--steps", "1", "--set", "train.remat=full",
                     "--set", "train.grad_accum=2"]) == 0
    out = capsys.readouterr().out
    assert "microbatches: 2 of 4 sequences a device (train.grad_accum); remat: full" in out
    kept = re.search(r"activations kept for the backward pass: ([\d.,]+) MiB a microbatch", out)
    assert kept and float(kept.group(1).replace(",", "")) > 0, out
    assert re.search(r"step time: [\d.]+ ms", out)
