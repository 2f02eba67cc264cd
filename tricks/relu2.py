"""ReLU-squared MLP activation: h -> relu(h)**2 instead of GELU (``F.relu(x).square()``)."""

import jax
import jax.numpy as jnp

from tricks import Trick


def relu2(h):
    return jnp.square(jax.nn.relu(h))


def apply(hooks, hp):
    return hooks.replace(mlp_act=relu2)


TRICK = Trick(
    name="relu2",
    summary="ReLU-squared MLP activation instead of GELU",
    changes=("model",),
    params={},
    apply=apply,
    replaces=("mlp_act",),
    source="modded-nanogpt record 5 (10/14/24, ModernArch); So et al. 2021 (Primer)",
)
