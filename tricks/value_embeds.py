"""Value embeddings: extra token-embedding tables mixed into the attention values, shared in a
U-net pattern.

With L blocks and k tables (``tables``; 0 means L // 2, record 15's count: 6 tables for 12
layers, so every block of an even-depth stack gets one), table j is looked up by the input
tokens and used by block j and by its mirror, block L-1-j; blocks k .. L-1-k get none. In a
block with a table,

    v = l0 * v + l1 * ve,     (l0, l1) learned per block, init (0.5, 0.5)

as record 15 (12/08/24) wrote it (record 14 had one table per block and v = (1-l)*v + l*ve).
Later records used 3 tables for 12 layers (``--set value-embeds.tables=3``; they ordered them
0 1 2 ... 0 1 2 where this trick mirrors them, 0 1 2 ... 2 1 0, as record 15 did).
Tables are (vocab, n_kv_head * head_dim), drawn N(0, init_std) with init_std = 1 as PyTorch's
nn.Embedding (the record's init); named ``value_embeds.value_embed_j`` so the optimizer treats
them as embeddings, the mixing pairs ``blocks.i.attn.ve_lambdas`` as vectors.

The speedrun replaced the value residual's v1 with these embeddings, so the two conflict.
"""

import jax
import jax.numpy as jnp

from speedrun.errors import SpeedrunError
from tricks import ANY, Trick, at_least

_KEY = 0x7A1E  # fold_in constant: new randomness, the baseline's parameters stay identical


def n_tables(hp, n_layer: int) -> int:
    return hp.tables or n_layer // 2


def table_of(i: int, n_layer: int, k: int):
    """Index of the table block i uses, or None."""
    if i < k:
        return i
    if i >= n_layer - k:
        return n_layer - 1 - i
    return None


def configure(cfg, hp):
    L = cfg.model.n_layer
    if hp.tables < 0 or n_tables(hp, L) > L // 2 or n_tables(hp, L) < 1:
        raise SpeedrunError(
            f"value-embeds.tables must be between 1 and n_layer // 2 = {L // 2} "
            f"(0 means n_layer // 2), got {hp.tables}")
    return cfg


def apply(hooks, hp):
    prev_init, prev_values = hooks.init, hooks.values

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        L, k = cfg.n_layer, n_tables(hp, cfg.n_layer)
        shape = (cfg.vocab_size, cfg.kv_heads * cfg.head_dim)
        keys = jax.random.split(jax.random.fold_in(key, _KEY), k)
        params["value_embeds"] = {
            f"value_embed_{j}": hp.init_std * jax.random.normal(keys[j], shape, jnp.float32)
            for j in range(k)
        }
        blocks = []
        for i, b in enumerate(params["blocks"]):
            if table_of(i, L, k) is not None:  # a fresh pair per block (no shared buffers)
                lam = jnp.full((2,), hp.lambda_init, jnp.float32)
                b = {**b, "attn": {**b["attn"], "ve_lambdas": lam}}
            blocks.append(b)
        params["blocks"] = blocks
        return params

    def values(v, ctx):
        v = prev_values(v, ctx)
        L = ctx.cfg.n_layer
        j = table_of(ctx.layer, L, n_tables(hp, L))
        if j is None:
            return v
        cache = f"value_embeds.{j}"
        if cache not in ctx.state:  # the mirrored block reuses the lookup
            ctx.state[cache] = ctx.params["value_embeds"][f"value_embed_{j}"][ctx.tokens]
        ve = ctx.state[cache].reshape(v.shape).astype(v.dtype)
        lam = ctx.params["blocks"][ctx.layer]["attn"]["ve_lambdas"]
        return lam[0] * v + lam[1] * ve

    return hooks.replace(init=init, values=values)


TRICK = Trick(
    name="value-embeds",
    summary="token value-embedding tables mixed into attention values, shared U-net style",
    changes=("model",),
    params={"tables": 0, "init_std": 1.0, "lambda_init": 0.5},
    limits={"tables": at_least(0), "init_std": at_least(0.0), "lambda_init": ANY},
    apply=apply,
    configure=configure,
    conflicts=("value-residual",),
    source="modded-nanogpt records 14 (12/04/24, ValueEmbed, @KoszarskyB) and "
    "15 (12/08/24, UNetValueEmbedsTweaks, @leloykun)",
)
