"""bfloat16 forward pass over float32 master weights.

The cast hook returns bfloat16 copies of every floating parameter, so the forward pass (matmuls,
attention, activations) runs in bfloat16 while the optimizer keeps and updates the float32
parameters (the cast's gradient brings the bf16 gradients back to float32). The loss head upcasts
logits to float32 and the norms compute their statistics in float32, as in the record
(``model.bfloat16()`` with float32 ``CastedLinear`` weights cast to the activations' dtype).
"""

from speedrun.core import model
from speedrun.config import COMPUTE_DTYPES
from tricks import Trick, one_of


def apply(hooks, hp):
    low, prev = model.compute_cast(hp.dtype), hooks.cast  # the GPU tracks' baseline cast

    def cast(params):
        return low(prev(params))

    return hooks.replace(cast=cast)


TRICK = Trick(
    name="bf16",
    summary="bfloat16 activations and weights in the forward pass, float32 master weights",
    changes=("model",),
    params={"dtype": "bfloat16"},
    limits={"dtype": one_of(*COMPUTE_DTYPES)},
    apply=apply,
    source="modded-nanogpt record 10 (11/08/24, CastBf16)",
)
