"""Backout: subtract a learned fraction of an intermediate residual stream before the final norm,

    x_L <- x_L - lambda * x_b,      lambda a learned scalar, init 0.5

where x_b is the residual stream after the first b = round(frac * L) blocks (frac 2/3: 8 of 12,
7 of 11 as in the speedrun's 11-layer model, 3 of 4 on the byte track). The record's reading:
early layers build context that is partly removed from what the head sees. Stored as
``backout_lambda`` (a scalar). Wraps the ``blocks`` hook (ordered after unet-skips, which
replaces it), so x_b is the stream as the block loop hands it on after block b - 1.

Record #40 also retuned the cool-down (0.45) and Adam beta1 (0.65); those are not part of this
trick. HEAD folded backout into its MUDD post-loop connection (mu1 init -0.5 on layer 7's output).
"""

import jax.numpy as jnp

from tricks import ANY, Trick, between


def saved_layer(n_layer: int, frac: float) -> int:
    """Index of the block whose output is backed out (the b-th block, b = round(frac * L))."""
    return max(1, min(n_layer, round(frac * n_layer))) - 1


def apply(hooks, hp):
    prev_init, prev_blocks = hooks.init, hooks.blocks

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        params["backout_lambda"] = jnp.array(hp.lambda_init, jnp.float32)
        return params

    def blocks(x, ctx, run_block):
        b = saved_layer(ctx.cfg.n_layer, hp.frac)
        saved = {}

        def run(i, x):
            x = run_block(i, x)
            if i == b:
                saved["x"] = x
            return x

        x = prev_blocks(x, ctx, run)
        return x - ctx.params["backout_lambda"].astype(x.dtype) * saved["x"]

    return hooks.replace(init=init, blocks=blocks)


TRICK = Trick(
    name="backout",
    summary="subtract lambda (init 0.5) x the residual after 2/3 of the blocks before the "
    "final norm",
    changes=("model",),
    params={"frac": 2 / 3, "lambda_init": 0.5},
    limits={"frac": between(0.0, 1.0, lo_open=True, hi_open=True), "lambda_init": ANY},
    apply=apply,
    after=("unet-skips",),
    source="modded-nanogpt record #40 (10/04/25, Backout, after @snimu)",
)
