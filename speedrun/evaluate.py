"""Validation: mean next-token loss over the track's fixed validation tokens."""

from __future__ import annotations

import jax
import numpy as np

from speedrun import distributed, model
from speedrun.config import RunConfig


def make_eval(cfg: RunConfig, hooks, m):
    """Returns evaluate(params, batches, step=None) -> mean val loss, batches = [(inputs,
    targets), ...]; ``step``: updates done so far, for hooks with schedules (None: the end)."""
    chunk, steps = cfg.train.loss_chunk, cfg.train.steps
    sharding = distributed.batch_sharded(m)
    summed = jax.jit(lambda p, x, y, i: model.loss_sum(p, x, y, cfg.model, hooks, chunk, i,
                                                       steps))
    index, count = distributed.process_slice()

    def put(a):
        return distributed.put_batch(a[index::count], sharding)

    def evaluate(params, batches, step: int | None = None) -> float:
        total = jax.numpy.float32(0)
        n = 0
        i = None if step is None else np.int32(step)
        for x, y in batches:
            total = total + summed(params, put(x), put(y), i)
            n += y.size
        return float(total) / n

    return evaluate


def val_batch_rows(n_seqs: int, want: int, devices: int) -> int:
    """Largest batch <= want that divides the validation sequences evenly and splits over devices,
    so every validation token is scored exactly once with no padding."""
    for rows in range(min(want, n_seqs), 0, -1):
        if n_seqs % rows == 0 and rows % devices == 0:
            return rows
    raise ValueError(f"cannot split {n_seqs} validation sequences over {devices} devices")


def as_numpy_batches(batches):
    return [(np.asarray(x, np.int32), np.asarray(y, np.int32)) for x, y in batches]
