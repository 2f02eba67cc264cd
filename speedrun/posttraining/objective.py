"""The post-training losses: next-token cross-entropy with a weight on every target token.

    loss = sum_t w_t * CE_t / norm + auxiliary terms of the hooks (e.g. moe's balance loss)

SFT weights the assistant tokens 1 and the rest 0, normalised by their count (the mean loss over
assistant tokens). RL weights each sampled answer token by its answer's advantage, normalised by
the answer tokens in the batch (token-level, as DAPO and nanochat), and optionally adds a KL
penalty to the start model. The forward pass is the model's own (``model.forward_ctx``, every
trick's hooks applied) and the head runs chunked (``model.head_loss_sum``), so no full logits
tensor is ever held; the model's ``loss`` hook (e.g. mtp) is not used: post-training trains the
plain next-token likelihood of the tokens it weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from speedrun.core import model


def _weighted_ce(logits_fn, h, w_head, y):
    targets, weights = y
    z = logits_fn((h @ w_head).astype(jnp.float32))
    picked = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(weights * (jax.nn.logsumexp(z, axis=-1) - picked))


def weighted_nll(params, x, targets, weights, norm, cfg, hooks, chunk_tokens: int):
    """sum(weights * CE) / norm plus the hooks' auxiliary losses; x, targets, weights (B, T)."""
    h, p, ctx = model.forward_ctx(params, x, cfg.model, hooks)
    total = model.head_loss_sum(h, hooks.head(p), (targets, weights.astype(jnp.float32)),
                                hooks.logits, chunk_tokens, chunk_loss=_weighted_ce)
    return total / norm + sum(ctx.aux_loss, jnp.float32(0))


def token_logprobs(params, x, targets, cfg, hooks):
    """log p(target_t | x_<=t) of every position (B, T), float32 (RL's KL and diagnostics;
    the sequences are short, so the logits are formed in full)."""
    h, p = model.forward(params, x, cfg.model, hooks)
    z = model.output_logits(h, p, hooks)
    return jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), targets[..., None], axis=-1)[..., 0]
