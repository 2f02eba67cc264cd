"""Grouped-query attention: n_head // group_size key/value heads, each shared by group_size
query heads. Only the config changes (``model.n_kv_head``); wk/wv shrink to (D, n_kv_head * hd)
and the attention kernel groups them (``speedrun/core/attention.py``: natively on GPU/TPU; the CPU
formulation repeats the K/V heads, which measured faster there than folding query heads into
rows). Not used by modded-nanogpt's
GPT-2-small track; included as a standard way to trade attention parameters for speed.
"""

import dataclasses

from speedrun.errors import SpeedrunError
from tricks import Trick, at_least


def configure(cfg, hp):
    m, g = cfg.model, hp.group_size
    if g < 1 or m.n_head % g:
        raise SpeedrunError(
            f"gqa.group_size={g} must be a positive divisor of model.n_head={m.n_head}")
    kv = m.n_head // g
    if m.n_kv_head not in (0, kv):  # idempotent: a second call sees kv and changes nothing
        raise SpeedrunError(
            f"gqa sets model.n_kv_head = n_head // group_size = {kv}, but it is already "
            f"{m.n_kv_head}; drop that setting or change gqa.group_size")
    return dataclasses.replace(cfg, model=dataclasses.replace(m, n_kv_head=kv))


def apply(hooks, hp):
    return hooks  # grouped K/V come from the config; the attention hook handles them


TRICK = Trick(
    name="gqa",
    summary="grouped-query attention: n_head // group_size shared key/value heads",
    changes=("model",),
    params={"group_size": 2},
    limits={"group_size": at_least(1)},
    apply=apply,
    configure=configure,
    source="Ainslie et al. 2023 (GQA, arXiv:2305.13245); not in the modded-nanogpt record line",
)
