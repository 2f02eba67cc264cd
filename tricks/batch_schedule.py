"""Batch-size schedule: the run is split into equal stages (thirds of train.steps by default)
whose batch sizes are multiples of ``train.batch_size``, with the lr scaled per stage:

    stage s of S covers steps [s N / S, (s+1) N / S)          N = train.steps
    batch_s = round(m_s * train.batch_size),   m = (0.5, 1, 1.5)
    lr multiplier_s = (batch_s / batch_0) ** 0.6               (1, 1.516, 1.933)

times the run's lr schedule, as record #46 (tokens per step 131,072 / 262,144 / 393,216 for each
third, replacing a constant 262,144: the same tokens in total; lr multiplier (bs/bs0)^0.6).
Each stage's shape is compiled once before the clock starts (three executables, no
recompiling); the loader takes the next batch_s sequences of its endless sequence of windows,
so no data is skipped or repeated, and records count the tokens actually seen.

Adaptations: #46 also moved the cool-down to the last 55% and HEAD later used lr multipliers
1, 1.52, 1.73; neither is part of this trick (use wsd-schedule for the cool-down). Each stage's
batch must split evenly over the devices. On the byte track (batch 16) the stages are 8, 16
and 24 sequences.
"""

from __future__ import annotations

import jax.numpy as jnp

from speedrun.errors import SpeedrunError
from tricks import ANY, Trick, at_least


def multipliers(hp) -> list[float]:
    try:
        out = [float(m) for m in str(hp.multipliers).split(",") if m.strip()]
    except ValueError:
        out = []
    if not out or any(m <= 0 for m in out):
        raise SpeedrunError(f"batch-schedule.multipliers must be positive numbers separated by "
                            f"commas, got {hp.multipliers!r}")
    return out


def sizes(batch_size: int, hp) -> list[int]:
    return [max(1, round(m * batch_size)) for m in multipliers(hp)]


def stage_of(step, steps: int, n: int):
    """Stage index of a step (python int or traced)."""
    if isinstance(step, int):
        return min(n - 1, step * n // max(steps, 1))
    return jnp.minimum(n - 1, (step * n) // max(steps, 1))


def configure(cfg, hp):
    multipliers(hp)
    return cfg


def apply(hooks, hp):
    prev_lr = hooks.lr_schedule

    def batch_schedule(cfg):
        b, N = sizes(cfg.train.batch_size, hp), cfg.train.steps
        return lambda step: b[stage_of(int(step), N, len(b))]

    def lr_schedule(cfg):
        b, N = sizes(cfg.train.batch_size, hp), cfg.train.steps
        mult = jnp.array([(x / b[0]) ** hp.lr_power for x in b], jnp.float32)
        base = prev_lr(cfg)

        def schedule(step):
            return base(step) * mult[stage_of(jnp.asarray(step, jnp.int32), N, len(b))]

        return schedule

    return hooks.replace(lr_schedule=lr_schedule).with_extra("batch_schedule", batch_schedule)


TRICK = Trick(
    name="batch-schedule",
    summary="batch size 0.5x, 1x, 1.5x train.batch_size by thirds of the run, lr x "
    "(bs/bs0)^0.6 per stage",
    changes=("schedule", "data"),
    params={"multipliers": "0.5,1,1.5", "lr_power": 0.6},
    limits={"multipliers": ANY, "lr_power": at_least(0.0)},
    apply=apply,
    configure=configure,
    after=("wsd-schedule",),
    source="modded-nanogpt record #46 (11/29/25, BatchSizeSchedule, @varunneal)",
)
