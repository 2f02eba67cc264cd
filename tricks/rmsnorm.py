"""Parameter-free RMSNorm in place of every LayerNorm.

    rms_norm(x) = x / sqrt(mean(x**2, axis=-1) + eps)

computed in float32 and returned in x's dtype, with no gain and no bias (PyTorch's
``F.rms_norm(x, (x.size(-1),))`` as modded-nanogpt calls it; its default eps is the float32
machine epsilon). The init drops the ln1/ln2/ln_f parameters, so the norm hook receives None.
Other tricks (qknorm, embed-skip) import ``rms_norm`` from here.
"""

import jax
import jax.numpy as jnp

from tricks import Trick

EPS = float(jnp.finfo(jnp.float32).eps)  # what F.rms_norm uses for float32 inputs


def rms_norm(x, eps: float = EPS):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def _drop_norm_params(params):
    params = {k: v for k, v in params.items() if k != "ln_f"}
    params["blocks"] = [
        {k: v for k, v in b.items() if k not in ("ln1", "ln2")} for b in params["blocks"]
    ]
    return params


def apply(hooks, hp):
    prev_init = hooks.init

    def init(key, cfg):
        return _drop_norm_params(prev_init(key, cfg))

    def norm(p, x):  # p is None: the init no longer creates norm parameters
        return rms_norm(x)

    return hooks.replace(init=init, norm=norm)


TRICK = Trick(
    name="rmsnorm",
    summary="parameter-free RMSNorm instead of every LayerNorm (no gains, no biases)",
    changes=("model",),
    params={},
    apply=apply,
    replaces=("norm",),
    source="modded-nanogpt record 5 (10/14/24, ModernArch); Zhang & Sennrich 2019",
)
