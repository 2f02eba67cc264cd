"""Validation: the mean next-token loss over a track's fixed validation tokens, during a run
(``make_eval``) and of a saved model (``evaluate_checkpoint``, for `eval CHECKPOINT`)."""

from __future__ import annotations

import jax
import numpy as np

from speedrun import tracks
from speedrun.config import RunConfig
from speedrun.core import model
from speedrun.data import bytelevel, fingerprint
from speedrun.distributed import devices, sharding
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.training import plan


def make_eval(cfg: RunConfig, hooks, m, layout: sharding.Layout = sharding.UNSPLIT):
    """Returns evaluate(params, batches, step=None) -> mean val loss, batches = [(inputs,
    targets), ...]; ``step``: updates done so far, for hooks with schedules (None: the end).
    Every process holds the whole validation set and puts only its own rows of each batch on
    the mesh; ``layout``: the training state's (split parameters are gathered, as in a step)."""
    chunk, steps = cfg.train.loss_chunk, cfg.train.steps
    split_rows = devices.batch_sharded(m)
    summed = jax.jit(lambda p, x, y, i: model.loss_sum(layout.gather(p), x, y, cfg.model, hooks,
                                                       chunk, i, steps))

    def put(a):
        return devices.put_batch(devices.local_rows(a), split_rows)

    def evaluate(params, batches, step: int | None = None) -> float:
        total = jax.numpy.float32(0)
        n = 0
        i = None if step is None else np.int32(step)
        for x, y in batches:
            total = total + summed(params, put(x), put(y), i)
            n += y.size
        return float(total) / n

    return evaluate


def evaluate_checkpoint(ck: checkpoint.Checkpoint, data_dir: str | None) -> dict:
    """The track's validation loss of a checkpoint, with the harness's own evaluation (the
    same validation tokens, batches and function a run's record uses)."""
    cfg = ck.cfg
    try:
        track = tracks.get(cfg.track)
    except SpeedrunError as e:
        raise SpeedrunError(f"checkpoint {ck.path}: {e}") from None
    plan.check_data_dir(track, data_dir)
    _, val_files = plan.data_for(track, data_dir)
    tokenizer = fingerprint.tokenizer_of(val_files[0].parent, track.dataset) or ck.tokenizer
    if tokenizer != ck.tokenizer:
        raise SpeedrunError(f"checkpoint {ck.path} was trained on {ck.tokenizer!r} tokens, the "
                            f"{track.dataset} data here is {tokenizer!r}")
    val = plan.validation_set(cfg, val_files)
    mesh = devices.mesh()
    params = jax.device_put(ck.params, devices.replicated(mesh))
    loss = make_eval(cfg, ck.hooks, mesh)(params, val)
    n_tokens = sum(int(y.size) for _, y in val)
    n_bytes = bytelevel.text_bytes(np.concatenate([y.reshape(-1) for _, y in val]), tokenizer)
    return {"val_loss": loss, "val_tokens": n_tokens, "val_bytes": n_bytes,
            "bits_per_byte": bytelevel.bits_per_byte(loss, n_tokens, n_bytes) if n_bytes else None,
            "target": cfg.train.target}
