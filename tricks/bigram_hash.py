"""Bigram hash embedding: a zero-initialised table indexed by a hash of (previous token, token),
added into every block's input with a learned per-block weight.

    M = rows - 1,   rows = table_mult * vocab_size
    h_0 = M  (reserved row),   h_t = ((36313 * x_t) XOR (27191 * x_{t-1})) mod M     (int32)
    block i:  x <- x + bigram_lambda_i * E[h]          bigram_lambda_i init 0.1

as record #62 (``bigram_embed = Embedding(5 * 50304, 768)``, zero-init), whose block input is
``resid * x + x0_lambda * x0 + bigram_lambda * E[h]``: ordered after embed-skip so the bigram
term is added after its mix. Parameters: ``bigram_embed`` (rows, D), kind 'embedding' (its
optimizer group: the record used Adam betas (0.75, 0.95), lr x75, wd x5, not reproduced here:
it gets the harness's embedding lr), and ``blocks.i.bigram_lambda`` (scalars).

Adaptations. The record hashed a per-GPU token stream in the loader, so only the stream's first
token got row M (a document's first token hashed with the previous document's last one); here
each sequence is hashed on the fly from the input tokens, so every sequence's position 0 gets
row M. The products stay below 2^31 for vocabularies up to 59,000. On the byte track (vocab 256)
the table has 1,280 rows for 65,536 possible byte pairs, so bigrams share rows (the record:
251,520 rows for ~2.5e9 token pairs); the sign trick (#83) is not included.
"""

import jax.numpy as jnp

from speedrun.errors import SpeedrunError
from tricks import ANY, Trick, at_least

A, B = 36313, 27191


def bigram_hash(tokens, rows: int):
    """tokens (B, T) int -> (B, T) int32 row indices in [0, rows)."""
    m = rows - 1
    x = tokens.astype(jnp.int32)
    h = jnp.bitwise_xor(A * x[:, 1:], B * x[:, :-1]) % m
    return jnp.concatenate([jnp.full_like(x[:, :1], m), h], axis=1)


def configure(cfg, hp):
    if A * (cfg.model.vocab_size - 1) >= 2 ** 31:
        raise SpeedrunError(f"bigram-hash: vocabulary {cfg.model.vocab_size} overflows the "
                            f"int32 hash")
    return cfg


def apply(hooks, hp):
    prev_init, prev_input = hooks.init, hooks.block_input

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        params["bigram_embed"] = jnp.zeros((hp.table_mult * cfg.vocab_size, cfg.d_model),
                                           jnp.float32)
        params["blocks"] = [{**b, "bigram_lambda": jnp.array(hp.lambda_init, jnp.float32)}
                            for b in params["blocks"]]
        return params

    def block_input(x, ctx):
        x = prev_input(x, ctx)
        if "bigram_hash.rows" not in ctx.state:  # one lookup per forward pass
            table = ctx.params["bigram_embed"]
            ctx.state["bigram_hash.rows"] = table[bigram_hash(ctx.tokens, table.shape[0])]
        lam = ctx.params["blocks"][ctx.layer]["bigram_lambda"]
        return x + (lam * ctx.state["bigram_hash.rows"]).astype(x.dtype)

    return hooks.replace(init=init, block_input=block_input)


TRICK = Trick(
    name="bigram-hash",
    summary="zero-init hashed bigram embedding (5 x vocab rows) added to every block input, "
    "weight init 0.1",
    changes=("model",),
    params={"table_mult": 5, "lambda_init": 0.1},
    limits={"table_mult": at_least(1), "lambda_init": ANY},
    apply=apply,
    configure=configure,
    after=("embed-skip",),
    source="modded-nanogpt record #62 (01/19/26, BigramHashEmbedding, @classiclarryd)",
    cached_decoding=False,
)
