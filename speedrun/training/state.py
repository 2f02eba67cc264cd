"""The state a run starts from: initial parameters and optimizer state, placed on the mesh.

``train`` and ``bench`` both start here, so a benchmark times the state a run trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import optax

from speedrun.config import RunConfig
from speedrun.distributed import devices, sharding


@dataclass(frozen=True)
class State:
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation
    layout: sharding.Layout  # where params and opt_state live (train.sharding)


def init_state(cfg: RunConfig, hooks, seed: int, mesh=None) -> State:
    """Parameters from ``hooks.init`` (seeded), the optimizer ``hooks.optimizer`` builds for
    them and its state, placed over the mesh (every device by default) as ``train.sharding``
    says: replicated (dp) or split (fsdp)."""
    mesh = devices.mesh() if mesh is None else mesh
    params = hooks.init(jax.random.PRNGKey(seed), cfg.model)
    tx = hooks.optimizer(params, cfg, hooks)
    layout = sharding.layout(params, jax.eval_shape(tx.init, params), mesh, cfg.train.sharding)
    params = jax.device_put(params, layout.params)
    return State(params, jax.device_put(tx.init(params), layout.opt_state), tx, layout)
