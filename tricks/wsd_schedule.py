"""Warmup-stable-decay ("trapezoidal") learning-rate schedule.

Multiplier of every group's peak lr at update s = 0 .. N-1 of a run of N = train.steps:

    s < W:                 (s + 1) / W                       linear warm-up (W = warmup_steps)
    W <= s < N - C:        1                                 stable
    N - C <= s:            1 - (1 - final) * (s - (N - C)) / (C - 1)   linear cool-down, `final`
                                                             exactly at the last update

with C = round(cooldown_frac * N). The horizon is the run's length, so the cool-down always
happens, whatever the run's length. Records 9-18 warmed up for 0 steps and cooled down linearly
to 0 (record 9: the last 914 of 3200 steps); from record 19 the cool-down covers the last 40%
(``cooldown_frac = 0.4``) and ends at 0.1 of the peak (``--set wsd-schedule.final=0.1``).
Replaces the ``lr_schedule`` hook, so it drives whichever optimizer is in use.
"""

import optax

from tricks import FRACTION, Trick, at_least


def schedule(steps: int, warmup_steps: int, cooldown_frac: float, final: float):
    N, W = steps, warmup_steps
    C = min(round(cooldown_frac * N), N)
    pieces, bounds = [], []
    if W > 0:
        pieces.append(lambda s: (s + 1) / W)
        bounds.append(W)
    pieces.append(optax.constant_schedule(1.0))
    if C > 0:
        pieces.append(optax.linear_schedule(1.0, final, C - 1) if C > 1
                      else optax.constant_schedule(final))
        bounds.append(max(N - C, W))
    return optax.join_schedules(pieces, bounds) if bounds else pieces[0]


def apply(hooks, hp):
    def lr_schedule(cfg):
        return schedule(cfg.train.steps, hp.warmup_steps, hp.cooldown_frac, hp.final)

    return hooks.replace(lr_schedule=lr_schedule)


TRICK = Trick(
    name="wsd-schedule",
    summary="trapezoidal lr: warm-up, constant, then linear cool-down over the last cooldown_frac",
    changes=("schedule",),
    params={"warmup_steps": 0, "cooldown_frac": 0.4, "final": 0.0},
    limits={"warmup_steps": at_least(0), "cooldown_frac": FRACTION, "final": FRACTION},
    apply=apply,
    replaces=("lr_schedule",),
    source="modded-nanogpt trapezoid (record 9: no warm-up, linear to 0 over the last 914 of 3200 "
    "steps); record 19 (cooldown_frac 0.4, final 0.1)",
)
