"""The state a run starts from: initial parameters and optimizer state, placed on the mesh.

``train`` and ``bench`` both start here, so a benchmark times the state a run trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import optax

from speedrun.config import RunConfig
from speedrun.distributed import devices


@dataclass(frozen=True)
class State:
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation


def init_state(cfg: RunConfig, hooks, seed: int, mesh=None) -> State:
    """Parameters from ``hooks.init`` (seeded), the optimizer ``hooks.optimizer`` builds for
    them and its state, both replicated over the mesh (every device by default)."""
    rep = devices.replicated(devices.mesh() if mesh is None else mesh)
    params = jax.device_put(hooks.init(jax.random.PRNGKey(seed), cfg.model), rep)
    tx = hooks.optimizer(params, cfg, hooks)
    return State(params, jax.device_put(tx.init(params), rep), tx)
