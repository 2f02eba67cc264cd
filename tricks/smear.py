"""Smear: a one-token look-back gate on the embedding. Before anything normalises it, the
embedding e (the ``embed`` hook's output) becomes

    e'_0 = e_0,    e'_t = e_t + lambda * sigmoid(w . e_t[:12]) * e_{t-1}     (t >= 1)

with w (12 -> 1, no bias) zero-initialised (gate 0.5) and the scalar lambda initialised to 0, so
the model starts exactly as without smear. Document boundaries are not masked, as in the record.
Parameters: ``smear.gate`` (12, 1) (kind 'matrix': Muon under the muon trick, as record #34 had
it; HEAD later moved it to Adam) and ``smear.lambda`` (a scalar).

embed-skip normalises the embedding (x0 = rmsnorm(e')); it is ordered after this trick so smear
acts on the raw embedding, as in the record. With fewer than 12 model dimensions the gate reads
all of them.
"""

import jax
import jax.numpy as jnp

from tricks import ANY, Trick, at_least


def smear(e, w, lam):
    """e (B, T, D), w (k, 1), lam scalar -> e'."""
    k = w.shape[0]
    gate = jax.nn.sigmoid(e[:, 1:, :k] @ w)  # (B, T-1, 1)
    return jnp.concatenate([e[:, :1], e[:, 1:] + lam * gate * e[:, :-1]], axis=1)


def apply(hooks, hp):
    prev_init, prev_embed = hooks.init, hooks.embed

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        params["smear"] = {"gate": jnp.zeros((min(hp.gate_dims, cfg.d_model), 1), jnp.float32),
                           "lambda": jnp.array(hp.lambda_init, jnp.float32)}
        return params

    def embed(params, tokens, ctx):
        e = prev_embed(params, tokens, ctx)
        p = params["smear"]
        return smear(e, p["gate"].astype(e.dtype), p["lambda"].astype(e.dtype))

    return hooks.replace(init=init, embed=embed)


TRICK = Trick(
    name="smear",
    summary="one-token look-back on the embedding: e_t += lambda * sigmoid(w . e_t[:12]) * "
    "e_{t-1}, lambda init 0",
    changes=("model",),
    params={"gate_dims": 12, "lambda_init": 0.0},
    limits={"gate_dims": at_least(1), "lambda_init": ANY},
    apply=apply,
    source="modded-nanogpt record #34 (09/18/25, Smear, @classiclarryd)",
    cached_decoding=False,
)
