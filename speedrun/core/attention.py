"""Causal self-attention, with the implementation chosen per backend.

``causal(q, k, v)`` is what the baseline's ``attend`` hook calls (``model.causal_attention``):
q (B, T, H, hd), k and v (B, T, KV, hd) with H a multiple of KV (grouped-query attention: query
head n reads key/value head n // (H // KV), as ``jax.nn.dot_product_attention`` groups them);
returns (B, T, H, hd) in q's dtype. Which implementation runs is decided while jit traces:

* ``blocked`` (CPU): the formulation below, written for XLA:CPU.
* ``cudnn`` (GPU): ``jax.nn.dot_product_attention(..., implementation='cudnn')`` when the inputs
  allow it (bfloat16/float16, head_dim a multiple of 8 and at most 128), else ``xla``.
* ``xla`` (TPU, and GPU otherwise): ``jax.nn.dot_product_attention(..., implementation='xla')``,
  also the reference the others are tested against (``reference``).

``SPEEDRUN_ATTENTION=xla|blocked|cudnn`` forces one (for comparisons); ``implementation_name()``
says which one a run uses.

Why a CPU formulation: XLA:CPU runs ``jax.nn.dot_product_attention`` (B, T, H, hd)-layout
einsums, full T x T masked scores and softmax, then autodiff's backward, slowly; at the byte
track's shape (16, 256, 4, 32) it took ~18 ms forward and ~33 ms forward+backward per layer on a
2-core EPYC. ``blocked`` instead

* transposes to (B, H, T, hd), the layout in which XLA:CPU hands the batched matmuls to its
  fast matmul library (YNNPACK fusions, which also take in the max/exp/sum and the PV product);
* splits the queries into blocks of ``block`` rows (64 for T <= 384, else 128) and lets block i
  attend only to keys [0, end of block i): the tiles above the diagonal are never computed
  (10/16 of the T x T work at T=256 with 4 blocks);
* takes the row max under ``stop_gradient`` (the softmax is invariant to it) and divides by the
  row sum after the PV product (a (n, hd) division instead of (n, T));
* computes everything in float32 whatever the input dtype (XLA:CPU's bfloat16 matmuls are
  slower than its float32 ones: 3x forward+backward at the byte shape) and casts the output
  back, so bfloat16 inputs come out at least as exact as the reference's.

The backward is JAX's autodiff of this forward, which keeps the exponentiated scores. Custom
VJPs that recompute them from the log-sum-exp (flash-style), in either score layout, measured
about 2x slower here: recomputation adds a matmul and an exp pass per block, and on 2 cores the
(memory-bound) passes over T x T tiles, not the FLOPs, set the time.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

ENV = "SPEEDRUN_ATTENTION"
NAMES = ("blocked", "cudnn", "xla")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)

_last: dict = {}  # what the most recent trace of `causal` chose (see implementation_name)


# ----------------------------------------------------------------------------------------------
# Implementations: (q, k, v, scale) -> y
# ----------------------------------------------------------------------------------------------


def reference(q, k, v, scale=None):
    """``jax.nn.dot_product_attention``'s XLA implementation, causal."""
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                        implementation="xla")


def cudnn(q, k, v, scale=None):
    """cuDNN's fused attention (GPU; bfloat16/float16 only)."""
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                        implementation="cudnn")


def default_block(T: int) -> int:
    return 64 if T <= 384 else 128


def blocked(q, k, v, scale=None, block: int | None = None, allowed=None):
    """Causal attention as query-blocked batched matmuls that skip the tiles above the diagonal
    (see the module docstring). Exact: the same softmax as ``reference``, up to rounding.
    ``allowed``: an optional (B, T, T) bool mask applied on top of causality (e.g. documents,
    windows); each row must keep its diagonal, so no row is empty."""
    B, T, H, hd = q.shape
    S, KV = k.shape[1], k.shape[2]
    if S != T or H % KV:
        if allowed is not None:
            raise ValueError("blocked attention with a mask needs self-attention (as many keys "
                             "as queries, query heads a multiple of key/value heads)")
        return reference(q, k, v, scale)  # not self-attention: leave it to the reference
    if KV != H:  # grouped-query: head n reads kv head n // G, as jax.nn.dot_product_attention
        k, v = jnp.repeat(k, H // KV, axis=2), jnp.repeat(v, H // KV, axis=2)
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    block = block or default_block(T)
    # (B, H, T, hd), in float32: XLA:CPU's bfloat16 matmuls are slower (3x fwd+bwd at the byte
    # track's shape) and float32 is at least as exact
    qt, kt, vt = (x.astype(jnp.float32).transpose(0, 2, 1, 3) for x in (q, k, v))
    outs = []
    for i in range(0, T, block):
        e = min(T, i + block)
        s = jnp.einsum("bhqd,bhkd->bhqk", qt[:, :, i:e], kt[:, :, :e]) * scale
        mask = (i + jnp.arange(e - i))[:, None] >= jnp.arange(e)[None, :]
        if allowed is not None:
            mask = mask & allowed[:, None, i:e, :e]
        s = jnp.where(mask, s, -jnp.inf)  # the diagonal is always kept: no row is all -inf
        p = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))
        o = jnp.einsum("bhqk,bhkd->bhqd", p, vt[:, :, :e])
        outs.append(o / p.sum(-1, keepdims=True))
    y = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2)
    return y.astype(q.dtype).transpose(0, 2, 1, 3)


def cached(q, k, v, positions, scale=None):
    """Attention over a KV cache (inference): q (B, T, H, hd) at absolute ``positions`` (B, T),
    k/v (B, S, KV, hd) with slot s holding position s. Query t reads the slots
    s <= positions[:, t]; slots beyond hold stale or padding entries and are never read. Grouped
    query heads read their key/value head without copying it (no repeat). float32 inside."""
    B, T, H, hd = q.shape
    S, KV = k.shape[1], k.shape[2]
    G = H // KV
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    qg = q.astype(jnp.float32).reshape(B, T, KV, G, hd)
    s = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32)) * scale
    mask = jnp.arange(S)[None, None, :] <= positions[:, :, None]  # (B, T, S)
    s = jnp.where(mask[:, None, None], s, -jnp.inf)
    p = jnp.exp(s - s.max(-1, keepdims=True))
    y = jnp.einsum("bkgts,bskd->btkgd", p, v.astype(jnp.float32))
    y = y / jnp.moveaxis(p.sum(-1), -1, 1)[..., None]  # (B, T, KV, G, 1)
    return y.reshape(B, T, H, hd).astype(q.dtype)


_IMPLS = {"blocked": blocked, "cudnn": cudnn, "xla": reference}


# ----------------------------------------------------------------------------------------------
# Choosing one
# ----------------------------------------------------------------------------------------------


def _platform(x=None) -> str:
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        try:
            return next(iter(x.devices())).platform
        except Exception:  # noqa: BLE001 - e.g. a deleted buffer; the default backend decides
            pass
    return jax.default_backend()


def cudnn_allows(dtype, head_dim: int) -> bool:
    return jnp.dtype(dtype) in tuple(map(jnp.dtype, _CUDNN_DTYPES)) and head_dim % 8 == 0 \
        and head_dim <= 128


def choose(platform: str, dtype, head_dim: int) -> str:
    """The implementation `causal` uses for these inputs on this platform."""
    forced = os.environ.get(ENV, "").strip()
    if forced:
        if forced not in NAMES:
            raise ValueError(f"{ENV}={forced!r}: expected one of {', '.join(NAMES)}")
        return forced
    if platform == "cpu":
        return "blocked"
    if platform in ("gpu", "cuda") and cudnn_allows(dtype, head_dim):
        return "cudnn"
    return "xla"


def causal(q, k, v, scale=None):
    """Causal self-attention: q (B, T, H, hd), k/v (B, T, KV, hd) -> (B, T, H, hd)."""
    if q.shape[1] != k.shape[1]:  # e.g. an attend hook that ignores ctx.cache while decoding
        raise ValueError(
            f"causal self-attention needs as many keys as queries, got {q.shape[1]} queries and "
            f"{k.shape[1]} keys: with a KV cache (ctx.cache) use attention.cached(q, k, v, "
            f"ctx.positions)")
    return _dispatch(q, k, v, lambda name: _IMPLS[name](q, k, v, scale))


def masked(q, k, v, allowed, scale=None):
    """Causal self-attention further restricted by ``allowed`` (B, T, T) bool (documents,
    windows; each row keeps its diagonal), with the implementation ``causal`` would choose:
    ``blocked`` with the mask on CPU, cuDNN's fused kernel with the mask as a bias on GPU (a
    dynamic mask rules out its static ``local_window_size``), else XLA with the mask."""
    def run(name):
        if name == "blocked":
            return blocked(q, k, v, scale, allowed=allowed)
        return jax.nn.dot_product_attention(q, k, v, mask=allowed[:, None], is_causal=True,
                                            scale=scale, implementation=name)

    return _dispatch(q, k, v, run)


def _dispatch(q, k, v, run):
    """``run(name)`` with the implementation chosen for q's platform, dtype and head size
    (cuDNN falls back to XLA where it refuses the inputs), remembered for
    ``implementation_name``."""
    name = choose(_platform(q), q.dtype, q.shape[-1])
    if name == "cudnn" and not (k.dtype == q.dtype == v.dtype):
        name = "xla"
    try:
        y = run(name)
    except (ValueError, NotImplementedError, RuntimeError):  # e.g. no cuDNN attention here
        if name != "cudnn":
            raise
        name, y = "xla", run("xla")
    _last.update(name=name, platform=_platform(q), dtype=str(q.dtype), head_dim=q.shape[-1])
    return y


def implementation_name(dtype=None, head_dim: int | None = None, platform: str | None = None):
    """Which implementation a run uses: with no arguments, what the most recent trace of
    `causal` or `masked` chose (else the choice for float32 on the default backend); with
    arguments, the choice for that dtype / head_dim / platform."""
    if dtype is None and head_dim is None and platform is None and _last:
        return _last["name"]
    return choose(platform or jax.default_backend(),
                  jnp.float32 if dtype is None else dtype, 64 if head_dim is None else head_dim)
