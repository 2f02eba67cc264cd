"""Sparse attention output gate: each head's attention output is scaled by a sigmoid gate read
from the first 12 dimensions of the attention's (normalised) input u,

    g[t, h] = sigmoid(u[t, :12] @ W_g)[h],     y[t, h, :] *= g[t, h]       before the output proj

with W_g (12, n_head) zero-initialised per block, so every gate starts at 0.5 (the record's
init: the attention branch starts at half strength). The record's stated purpose: a
context-dependent no-op, removing the need for an attention sink. Stored as
``blocks.i.attn.gate`` (kind 'matrix': Muon under the muon trick, as record #28; from #56 the
speedrun used Adam for it). With fewer than 12 model dimensions the gate reads all of them.
"""

import jax
import jax.numpy as jnp

from tricks import Trick, at_least


def gate(y, u, w):
    """y (B, T, H, hd), u (B, T, D), w (k, H) -> gated y."""
    g = jax.nn.sigmoid(u[..., : w.shape[0]] @ w)  # (B, T, H)
    return y * g[..., None].astype(y.dtype)


def apply(hooks, hp):
    prev_init, prev_out = hooks.init, hooks.attn_output

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        k = min(hp.gate_dims, cfg.d_model)
        params["blocks"] = [
            {**b, "attn": {**b["attn"], "gate": jnp.zeros((k, cfg.n_head), jnp.float32)}}
            for b in params["blocks"]
        ]
        return params

    def attn_output(y, h, ctx):
        y = prev_out(y, h, ctx)
        return gate(y, h, ctx.params["blocks"][ctx.layer]["attn"]["gate"].astype(h.dtype))

    return hooks.replace(init=init, attn_output=attn_output)


TRICK = Trick(
    name="attn-gate",
    summary="per-head sigmoid gate on the attention output from the input's first 12 dims "
    "(zero-init: 0.5)",
    changes=("model",),
    params={"gate_dims": 12},
    limits={"gate_dims": at_least(1)},
    apply=apply,
    source="modded-nanogpt record #28 (08/23/25, SparseAttnGate, @classiclarryd)",
)
