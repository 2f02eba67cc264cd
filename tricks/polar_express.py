"""Polar Express: Muon's orthogonalisation with a different quintic at each of 5 iterations,
in place of Newton-Schulz's fixed (3.4445, -4.7750, 2.0315).

    X = G / (||G||_F * (1 + 2e-2) + 1e-6)
    for (a, b, c) in COEFFS:  A = X X^T;  B = b A + c A A;  X = a X + B X

(X transposed while iterating when taller than wide, as muon does). The coefficients are the
record's, computed by Amsel et al. for 5 iterations, safety factor 2e-2 and cushion 2; each
step's polynomial is chosen so the composition maps singular values in [~1e-3, 1] closer to 1
than the fixed quintic (whose outputs land in about [0.7, 1.2]).

Adaptations: the record iterated in bfloat16; here in muon's ``ns_dtype`` (float32 by default,
exact on CPU). Record #38 also raised Muon's lr from 0.05 to 0.06; this trick changes only the
orthogonalisation (set ``--set muon.lr=...`` separately). Provided as muon's
``muon_orthogonalize`` extension point, so it requires muon.
"""

from __future__ import annotations

import jax.numpy as jnp

from tricks import Trick
from tricks import muon as muon_mod

COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
SAFETY, EPS = 2e-2, 1e-6


def polar_express(g, dtype=jnp.float32, coeffs=COEFFS):
    """Approximately U V^T for G = U S V^T."""
    if g.ndim != 2:
        raise ValueError(f"Polar Express orthogonalises 2-D matrices, got shape {g.shape}")
    x = g.astype(jnp.float32)
    x = (x / (jnp.linalg.norm(x) * (1 + SAFETY) + EPS)).astype(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for a, b, c in coeffs:
        A = x @ x.T
        x = a * x + (b * A + c * (A @ A)) @ x
    if tall:
        x = x.T
    return x.astype(g.dtype)


def apply(hooks, hp):
    def orthogonalize(x, muon_hp):
        return polar_express(x, muon_mod.NS_DTYPES[muon_hp.ns_dtype])

    return hooks.with_extra("muon_orthogonalize", orthogonalize)


TRICK = Trick(
    name="polar-express",
    summary="Muon orthogonalises with Polar Express (5 per-iteration quintics) instead of "
    "Newton-Schulz",
    changes=("optimizer",),
    params={},
    apply=apply,
    requires=("muon",),
    source="modded-nanogpt record #38 (09/29/25, PolarExpress, @varunneal); Amsel et al. 2025 "
    "(arXiv:2505.16932)",
)
