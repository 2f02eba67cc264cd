"""Untie the output head from the token embedding.

Adds ``lm_head`` (D, V) (optimizer kind 'head'), zero-initialised as from record 9
(``lm_head.weight.data.zero_()``; set ``head_std`` > 0 for a N(0, head_std) init), and the head
hook returns it instead of ``wte.T``. Once untied, the record's token embedding is a plain
``nn.Embedding``, i.e. initialised N(0, 1) instead of the tied matrix's ~N(0, 0.02): ``embed_std``
re-draws ``wte`` from N(0, embed_std) (default 1.0, as the record); 0 keeps the baseline's init.
"""

import jax
import jax.numpy as jnp

from tricks import Trick, Tuned, at_least

# fold_in constants: new randomness that leaves the baseline's parameters identical
_HEAD_KEY, _EMBED_KEY = 0x4EAD, 0xE3BED
# the record of the sweep point whose pair is tuned on wiki-bytes
_SWEPT = "wiki-bytes/2026-11-27_sweep-untie-head-embed-std-0-head-std-0-02"


def apply(hooks, hp):
    prev_init = hooks.init

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        shape = (cfg.d_model, cfg.vocab_size)
        if hp.head_std > 0:
            head = hp.head_std * jax.random.normal(jax.random.fold_in(key, _HEAD_KEY), shape)
        else:
            head = jnp.zeros(shape, jnp.float32)
        params["lm_head"] = head
        if hp.embed_std > 0:
            wte = params["wte"]
            params["wte"] = hp.embed_std * jax.random.normal(
                jax.random.fold_in(key, _EMBED_KEY), wte.shape, wte.dtype)
        return params

    def head(params):
        return params["lm_head"]

    return hooks.replace(init=init, head=head)


TRICK = Trick(
    name="untie-head",
    summary="separate output head lm_head (zero-init) instead of the tied token embedding",
    changes=("model",),
    params={"head_std": 0.0, "embed_std": 1.0},
    limits={"head_std": at_least(0.0), "embed_std": at_least(0.0)},
    # On the byte model the record's N(0, 1) embedding and zero head cost 0.36 nats at 150
    # steps on muon,rotary; the baseline's embedding and a N(0, 0.02) head cost 0.10.
    tuned={"wiki-bytes": {"embed_std": Tuned(0.0, _SWEPT), "head_std": Tuned(0.02, _SWEPT)}},
    apply=apply,
    replaces=("head",),
    source="modded-nanogpt record 8 (11/03/24, UntieEmbed), zero-init head as record 9 (11/06/24)",
)
