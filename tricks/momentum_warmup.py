"""Muon momentum warm-up: momentum rises linearly from ``start`` to ``end`` over the first
W = round(frac * train.steps) optimizer steps, then stays at ``end``:

    f = min(step / W, 1);   m = (1 - f) * start + f * end     (0.85 -> 0.95)

as the records set ``group['momentum']`` before each step (step 0 uses 0.85). The records warmed
up over a fixed 300 steps of runs 1390-1490 steps long (records 15-18); here the warm-up is a
fraction of the run (0.2, about 300/1490) so that it scales with the run's length, as every
schedule in this harness does. Provided as the ``muon_momentum`` extra, a function of the
RunConfig returning a schedule, which the muon trick's optimizer reads in place of its constant.
"""

import optax

from tricks import BETA, Trick, Tuned, between


def schedule(steps: int, start: float, end: float, frac: float):
    return optax.linear_schedule(start, end, max(round(frac * steps), 1))


def apply(hooks, hp):
    def momentum(cfg):
        return schedule(cfg.train.steps, hp.start, hp.end, hp.frac)

    return hooks.with_extra("muon_momentum", momentum)


TRICK = Trick(
    name="momentum-warmup",
    summary="Muon momentum warms up linearly 0.85 -> 0.95 over the first 20% of the run",
    changes=("optimizer", "schedule"),
    params={"start": 0.85, "end": 0.95, "frac": 0.2},
    limits={"start": BETA, "end": BETA, "frac": between(0.0, 1.0, lo_open=True)},
    # From 0.6 the ramp helps muon,rotary at 150 steps by 0.008 (both seeds); from 0.85, 0.003.
    tuned={"wiki-bytes": {"start": Tuned(
        0.6, "wiki-bytes/2026-11-27_sweep-momentum-warmup-momentum-warmup-start-0-6")}},
    apply=apply,
    requires=("muon",),
    source="modded-nanogpt: 500 steps in record 12 (11/19/24, FlexAttention), "
    "300 steps from record 15 (12/08/24, UNetValueEmbedsTweaks)",
)
