"""Muon momentum warm-up: momentum rises linearly from ``start`` to ``end`` over the first
``steps`` optimizer steps, then stays at ``end``:

    frac = min(step / steps, 1);   m = (1 - frac) * start + frac * end     (0.85 -> 0.95)

as the records set ``group['momentum']`` before each step (step 0 uses 0.85). Provided as the
``muon_momentum`` extra, which the muon trick's optimizer reads in place of its constant.
"""

import optax

from tricks import Trick


def apply(hooks, hp):
    sched = optax.linear_schedule(hp.start, hp.end, max(hp.steps, 1))
    return hooks.with_extra("muon_momentum", sched)


TRICK = Trick(
    name="momentum-warmup",
    summary="Muon momentum warms up linearly 0.85 -> 0.95 over the first 300 steps",
    changes=("optimizer", "schedule"),
    params={"start": 0.85, "end": 0.95, "steps": 300},
    apply=apply,
    requires=("muon",),
    source="modded-nanogpt: 500 steps in record 12 (11/19/24, FlexAttention), "
    "300 steps from record 15 (12/08/24, UNetValueEmbedsTweaks)",
)
