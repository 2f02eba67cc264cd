"""QK-norm: RMS-normalise every query and key vector over its head dimension, without
parameters (``q, k = F.rms_norm(q, (hd,)), F.rms_norm(k, (hd,))`` in modded-nanogpt), before the
rotary rotation. Bounds the attention logits to |q.k|/sqrt(hd) <= sqrt(hd).
"""

from tricks import Trick
from tricks.rmsnorm import rms_norm


def apply(hooks, hp):
    prev = hooks.qk

    def qk(q, k, ctx):
        q, k = prev(q, k, ctx)
        return rms_norm(q), rms_norm(k)

    return hooks.replace(qk=qk)


TRICK = Trick(
    name="qknorm",
    summary="RMS-normalise queries and keys per head (parameter-free QK-norm)",
    changes=("model",),
    params={},
    apply=apply,
    source="modded-nanogpt record 5 (10/14/24, ModernArch, @Grad62304977); Dehghani et al. 2023",
)
