"""Embedding skip: every block starts from a learned mix of the residual stream and the
embedding,

    x = a_i * x + b_i * x0,     (a_i, b_i) init (1, 0), one learned pair per block

(``self.lambdas`` in record 9's Block, Adam at the scalar lr under muon). The record's x0 is the
RMS-normalised token embedding and its residual stream starts from that same normalised
embedding (``x = x0 = F.rms_norm(wte(idx))``): with ``norm_x0`` (default true) this trick
normalises the embedding hook's output accordingly, for every block and the stream alike.
The pair is stored per block as ``blocks.i.x0_lambdas`` (shape (2,), optimizer kind 'vector').
"""

import jax.numpy as jnp

from tricks import ANY, Trick, Tuned
from tricks.rmsnorm import rms_norm


def apply(hooks, hp):
    prev_init, prev_embed, prev_input = hooks.init, hooks.embed, hooks.block_input

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        # a fresh array per block: one shared buffer in two leaves breaks buffer donation
        params["blocks"] = [
            {**b, "x0_lambdas": jnp.array([1.0, 0.0], jnp.float32)} for b in params["blocks"]
        ]
        return params

    def embed(params, tokens, ctx):
        return rms_norm(prev_embed(params, tokens, ctx))

    def block_input(x, ctx):
        x = prev_input(x, ctx)
        lam = ctx.params["blocks"][ctx.layer]["x0_lambdas"]
        return lam[0] * x + lam[1] * ctx.x0

    changes = {"init": init, "block_input": block_input}
    if hp.norm_x0:
        changes["embed"] = embed
    return hooks.replace(**changes)


TRICK = Trick(
    name="embed-skip",
    summary="block input a*x + b*x0 with learned per-block (a, b) init (1, 0), x0 the normed embedding",
    changes=("model",),
    params={"norm_x0": True},
    limits={"norm_x0": ANY},
    # The byte model's blocks, initialised at std 0.02, are ~50x weaker against a stream that
    # starts at rms 1: unnormalised, the trick no longer hurts on muon,rotary (150 steps).
    tuned={"wiki-bytes": {"norm_x0": Tuned(
        False, "wiki-bytes/2026-11-27_sweep-embed-skip-embed-skip-norm-x0-false")}},
    apply=apply,
    after=("smear",),  # the record normalises the smeared embedding: x = x0 = norm(smear(e))
    source="modded-nanogpt record 9 (11/06/24, ShortcutsTweaks, @Grad62304977); "
    "embedding norm from record 8 (11/03/24, UntieEmbed)",
)
