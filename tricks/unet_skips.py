"""U-net skip connections across the stack of blocks.

With L blocks and n = L // 2: the outputs of the first n blocks are pushed on a stack; each of
the last n blocks pops one (last in, first out) and adds it, weighted, to its input:

    block i >= L - n:   x = x + skip_weights[i - (L - n)] * out[L - 1 - i]

so block L-1-j receives block j's output, and skip_weights (shape (n,), init 1, optimizer kind
'vector') are learned. For even L this is exactly record 11's encoder/decoder loop; for odd L
the middle block gets no skip. Replaces the ``blocks`` hook.
"""

import jax.numpy as jnp

from tricks import ANY, Trick


def apply(hooks, hp):
    prev_init = hooks.init

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        params["skip_weights"] = jnp.full((cfg.n_layer // 2,), hp.weight_init, jnp.float32)
        return params

    def blocks(x, ctx, run_block):
        L = ctx.cfg.n_layer
        n = L // 2
        weights = ctx.params["skip_weights"]
        stack = []
        for i in range(L):
            if i >= L - n:
                x = x + weights[i - (L - n)] * stack.pop()
            x = run_block(i, x)
            if i < n:
                stack.append(x)
        return x

    return hooks.replace(init=init, blocks=blocks)


TRICK = Trick(
    name="unet-skips",
    summary="U-net skips: first-half block outputs feed the mirrored second half, weights init 1",
    changes=("model",),
    params={"weight_init": 1.0},
    limits={"weight_init": ANY},
    apply=apply,
    replaces=("blocks",),
    source="modded-nanogpt record 11 (11/10/24, UNetDoubleLr, @brendanh0gan)",
)
