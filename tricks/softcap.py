"""Logit soft-capping: logits -> cap * tanh(logits / cap), bounding them to (-cap, cap)."""

import jax.numpy as jnp

from tricks import POSITIVE, Trick


def apply(hooks, hp):
    prev = hooks.logits

    def logits(z):
        z = prev(z)
        return hp.cap * jnp.tanh(z / hp.cap)

    return hooks.replace(logits=logits)


TRICK = Trick(
    name="softcap",
    summary="soft-cap the output logits with cap * tanh(logits / cap)",
    changes=("model",),
    params={"cap": 15.0},
    limits={"cap": POSITIVE},
    apply=apply,
    source="modded-nanogpt record 9 (2024-11-06, cap 30), lowered to 15 in record 18; Gemma 2",
)
