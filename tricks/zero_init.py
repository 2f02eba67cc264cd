"""Zero-initialise the two residual-branch output projections of every block: the attention
output ``wo`` and the MLP output ``wproj`` (``c_proj.weight.data.zero_()`` in modded-nanogpt).
Every block starts as the identity; their gradients are not zero, so they learn from step 1.
"""

import jax.numpy as jnp

from tricks import Trick


def apply(hooks, hp):
    prev_init = hooks.init

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        blocks = []
        for b in params["blocks"]:
            b = dict(b)
            b["attn"] = {**b["attn"], "wo": jnp.zeros_like(b["attn"]["wo"])}
            b["mlp"] = {**b["mlp"], "wproj": jnp.zeros_like(b["mlp"]["wproj"])}
            blocks.append(b)
        params["blocks"] = blocks
        return params

    return hooks.replace(init=init)


TRICK = Trick(
    name="zero-init",
    summary="zero-init the attention output and MLP output projections (wo, wproj)",
    changes=("model",),
    params={},
    apply=apply,
    source="modded-nanogpt record 5 (10/14/24, ModernArch, @Grad62304977)",
)
