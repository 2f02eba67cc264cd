"""Data parallelism: one mesh axis over every device, batches sharded on it, params replicated.

Multi-host runs call ``jax.distributed.initialize()`` first (when launched with the usual
coordinator environment, e.g. JAX_COORDINATOR_ADDRESS / SLURM / TPU pods); each process then
feeds only its own rows of the global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from speedrun.errors import SpeedrunError

AXIS = "data"


def maybe_initialize() -> None:
    """Join a multi-process run when the launcher set one up; a no-op on a single host."""
    launched = any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SPEEDRUN_DISTRIBUTED"))
    if launched and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def mesh() -> jax.sharding.Mesh:
    # Auto axes: XLA propagates the batch sharding through the model and inserts the gradient
    # all-reduce itself (explicit-sharding mode would demand annotations on every gather).
    auto = (jax.sharding.AxisType.Auto,)
    return jax.make_mesh((jax.device_count(),), (AXIS,), axis_types=auto)


def replicated(m) -> NamedSharding:
    return NamedSharding(m, PartitionSpec())


def batch_sharded(m) -> NamedSharding:
    return NamedSharding(m, PartitionSpec(AXIS))


def check_batch(batch_size: int, what: str = "train.batch_size") -> None:
    n = jax.device_count()
    if batch_size % n:
        raise SpeedrunError(f"{what}={batch_size} must be divisible by the {n} devices")


def put_batch(local_rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's rows of a global batch -> one global array sharded over the data axis."""
    return jax.make_array_from_process_local_data(sharding, local_rows)


def process_slice() -> tuple[int, int]:
    """(this process's index, the number of processes)."""
    return jax.process_index(), jax.process_count()


def device_count() -> int:
    """Devices of the whole run, across every process."""
    return jax.device_count()


def is_main_process() -> bool:
    """Only process 0 writes records, checkpoints and plots."""
    return jax.process_index() == 0
