"""Value residual: every attention layer mixes its values with the first block's values,

    v = (1 - l_i) * v + l_i * v1,     l_i learned per block, init 0.5

where v1 is block 0's value vectors (for block 0 itself the mix is the identity). As record 9
(``self.lamb = nn.Parameter(torch.tensor(0.5))``); stored as ``blocks.i.attn.v_lambda`` (a
scalar, optimizer kind 'vector'). The first block's values travel to later blocks in
``ctx.state``.
"""

import jax.numpy as jnp

from tricks import ANY, Trick

_V1 = "value_residual.v1"


def apply(hooks, hp):
    prev_init, prev_values = hooks.init, hooks.values

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        params["blocks"] = [  # a fresh scalar per block (shared buffers break donation)
            {**b, "attn": {**b["attn"], "v_lambda": jnp.array(hp.lambda_init, jnp.float32)}}
            for b in params["blocks"]
        ]
        return params

    def values(v, ctx):
        v = prev_values(v, ctx)
        if _V1 not in ctx.state:  # the first block traced: its values are v1
            ctx.state[_V1] = v
        lam = ctx.params["blocks"][ctx.layer]["attn"]["v_lambda"]
        return (1 - lam) * v + lam * ctx.state[_V1]

    return hooks.replace(init=init, values=values)


TRICK = Trick(
    name="value-residual",
    summary="mix each attention's values with the first block's: v = (1-l)*v + l*v1, l init 0.5",
    changes=("model",),
    params={"lambda_init": 0.5},
    limits={"lambda_init": ANY},
    apply=apply,
    source="modded-nanogpt record 9 (11/06/24, ShortcutsTweaks); "
    "Zhou et al. 2024 (value residual learning, arXiv:2410.17897)",
)
