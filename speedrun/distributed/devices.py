"""The mesh: one data axis over every device of the run (all processes), batches split on it.

A multi-process run (speedrun/distributed/launch.py on one machine; SLURM, Open MPI, Kubernetes
or a TPU slice on a cluster) calls ``maybe_initialize`` first, which joins it through
``jax.distributed``; from then on ``jax.devices()`` is every process's devices, each process
feeds only its own rows of every batch, and only process 0 writes files.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from speedrun.distributed.launch import NUM_PROCESSES, PROCESS_ID
from speedrun.errors import SpeedrunError

AXIS = "data"


def maybe_initialize() -> None:
    """Join a multi-process run when the environment sets one up; a no-op on a single host.
    Set by `launch`, and by hand on hosts without a cluster manager (docs/distributed.md):
    JAX_COORDINATOR_ADDRESS (read by JAX), SPEEDRUN_NUM_PROCESSES and SPEEDRUN_PROCESS_ID;
    SPEEDRUN_DISTRIBUTED=1 alone lets JAX find all three in a cluster's environment (SLURM,
    Open MPI, Kubernetes, a Cloud TPU slice)."""
    launched = any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SPEEDRUN_DISTRIBUTED"))
    if not launched or jax.distributed.is_initialized():
        return
    where = os.environ.get("JAX_COORDINATOR_ADDRESS", "the cluster's coordinator")
    try:
        count, index = (_env_int(NUM_PROCESSES, 1), _env_int(PROCESS_ID, 0))
        jax.distributed.initialize(num_processes=count, process_id=index)
    except (RuntimeError, ValueError) as e:
        raise SpeedrunError(f"could not join the multi-process run at {where}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if jax.local_device_count() * jax.process_count() != jax.device_count():
        raise SpeedrunError(f"the {jax.process_count()} processes hold different numbers of "
                            f"devices ({jax.device_count()} in all, {jax.local_device_count()} "
                            f"here): give every process the same number")


def _env_int(name: str, lo: int) -> int | None:
    """An integer setting from the environment, or None (JAX then reads the cluster's own)."""
    text = os.environ.get(name)
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < lo:
        raise ValueError(f"{name}={text!r} must be an integer, at least {lo}")
    return int(text)


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
    n, processes = jax.device_count(), jax.process_count()
    if batch_size % n:
        across = f" ({processes} processes x {n // processes})" if processes > 1 else ""
        raise SpeedrunError(f"{what}={batch_size} must be divisible by the {n} devices{across}")


def put_batch(local_rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's rows of a global batch -> one global array sharded over the data axis."""
    return jax.make_array_from_process_local_data(sharding, local_rows)


def local_rows(batch: np.ndarray) -> np.ndarray:
    """This process's rows of a batch every process holds whole: rows index::count, the rows
    ``TrainLoader.batch`` reads for it (the global array is the batch's rows reordered, which no
    mean or sum over rows can see)."""
    index, count = process_slice()
    return batch[index::count]


def process_slice() -> tuple[int, int]:
    """(this process's index, the number of processes)."""
    return jax.process_index(), jax.process_count()


def device_count() -> int:
    """Devices of the whole run, across every process."""
    return jax.device_count()


def is_main_process() -> bool:
    """Only process 0 writes records, checkpoints, plots and progress bars."""
    return jax.process_index() == 0


def main_first(work):
    """``work()`` in process 0, then in the others once it has finished (e.g. building the data
    they all read): its result in every process."""
    if jax.process_count() == 1:
        return work()
    if is_main_process():
        out = work()
        multihost_utils.sync_global_devices("speedrun: process 0 done")
        return out
    multihost_utils.sync_global_devices("speedrun: process 0 done")
    return work()


VERDICT_BYTES = 2048  # room for one refusal's text


def decided_by_main(check) -> None:
    """``check()`` (a pre-flight check of what only process 0 touches: the records folder, the
    checkpoint folder) made by process 0, its refusal raised in every process. Every process
    must call it at the same point: the others then stop at once with process 0's message,
    where they would otherwise wait in their next collective for a process that has gone."""
    if jax.process_count() == 1:
        check()
        return
    refusal, text = None, ""
    if is_main_process():
        try:
            check()
        except Exception as e:  # noqa: BLE001 - the others must hear of any failure
            refusal = e
            text = str(e) if isinstance(e, SpeedrunError) else \
                f"process 0 failed its pre-flight check ({type(e).__name__}: {e})"
    sent = np.zeros(VERDICT_BYTES, np.uint8)
    raw = text.encode()[:VERDICT_BYTES]
    sent[:len(raw)] = np.frombuffer(raw, np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(sent)).astype(np.uint8).tobytes()
    if refusal is not None:
        raise refusal
    heard = got.rstrip(b"\0").decode(errors="replace")
    if heard:
        raise SpeedrunError(heard)
