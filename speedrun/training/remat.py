"""Activation checkpointing (``train.remat``): the backward pass recomputes each block's forward
pass (``jax.checkpoint``) instead of keeping all of its activations from the forward pass.

    off   keep every activation (the default)
    dots  keep each block's matmul outputs that have no batch dimension (the 2-D dense layers:
          q, k, v, the attention's output projection, the MLP's two), recompute the rest (norms,
          the activation function, attention)
    full  keep only each block's input; recompute the whole block

Memory for compute: ``full`` costs about one more forward pass of the blocks a step. The same
operations run either way, so losses and gradients agree to float rounding (XLA may fuse the
recomputation differently).

It wraps the ``blocks`` hook, so every way of chaining blocks (U-net skips, backout) checkpoints
one block at a time. What a block hands on through the ``Ctx`` (``ctx.state`` values later
blocks read, ``ctx.aux_loss`` terms, ``ctx.x0``) passes through the checkpoint as its inputs and
outputs, never as a value traced inside it.
"""

from __future__ import annotations

import jax

POLICIES = {"dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
            "full": jax.checkpoint_policies.nothing_saveable}


def with_remat(hooks, policy: str):
    """``hooks`` whose blocks are checkpointed under ``policy`` (one of POLICIES, or "off")."""
    if policy == "off":
        return hooks
    prev, saveable = hooks.blocks, POLICIES[policy]

    def blocks(x, ctx, run_block):
        return prev(x, ctx, checkpointed(run_block, ctx, saveable))

    return hooks.replace(blocks=blocks)


def checkpointed(run_block, ctx, saveable):
    """``run_block`` with each call one ``jax.checkpoint``: the Ctx fields a block reads or
    writes go in and come out as arrays."""

    def run(i, x):
        x0 = ctx.x0

        def block(x, x0, state):
            ctx.x0, ctx.state = x0, dict(state)
            before = len(ctx.aux_loss)
            y = run_block(i, x)
            aux = ctx.aux_loss[before:]
            del ctx.aux_loss[before:]
            return y, dict(ctx.state), aux

        y, state, aux = jax.checkpoint(block, policy=saveable)(x, x0, dict(ctx.state))
        ctx.x0, ctx.state = x0, state  # the values outside the checkpoint, not those inside
        ctx.aux_loss.extend(aux)
        return y

    return run


def kept_bytes(loss_fn, *args) -> int | None:
    """Bytes of the activations the backward pass of ``loss_fn(*args)`` keeps from its forward
    pass, as JAX traces it (its saved residuals, less the arguments themselves, which are live
    anyway): what ``train.remat`` trades for compute, on any backend. XLA's compiled program
    may keep somewhat more or less. None where this JAX does not say."""
    try:
        from jax._src.ad_checkpoint import saved_residuals  # no public form returns the shapes
    except ImportError:
        return None
    return sum(int(a.size) * a.dtype.itemsize for a, where in saved_residuals(loss_fn, *args)
               if not where.startswith("from the argument"))
