"""Weight-only int8: every 2-D parameter as int8 with one float32 scale per output channel.

    scale = max |w| over the channel / 127   (1 for an all-zero channel)
    q     = round(w / scale), in [-127, 127]          |w - q * scale| <= scale / 2

* Hidden matrices (kind 'matrix', stored (in, out)) and the untied head ``lm_head`` (D, V):
  one scale per output column (``axis=0`` is reduced).
* Embedding tables (``wte``, ``wpe``, value embeddings; (rows, D)): one scale per row, i.e. per
  token. For the tied head (``wte.T``) a row of ``wte`` is exactly one output channel, so the
  head is per-output-channel quantized either way; a lookup dequantizes only the rows it reads.
* 1-D and 0-D parameters (norm gains, biases, learned mixing scalars) stay float32: a few
  hundred numbers that set the scale of everything else.

The model keeps its int8 weights (4x less memory than float32) and dequantizes them inside the
jitted forward pass: ``int8_hooks`` wraps the ``cast`` hook, so the rest of the model (and every
trick, bf16 included) sees float weights as in training. Activations stay float.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.core import params as P


@jax.tree_util.register_dataclass
@dataclass
class Int8:
    """An int8 weight: ``q`` (the weight's shape) times ``scale`` (1 on the reduced axis)."""

    q: jax.Array
    scale: jax.Array

    def dequantize(self, dtype=jnp.float32):
        return (self.q.astype(jnp.float32) * self.scale).astype(dtype)


def channel_axis(name: str, leaf) -> int | None:
    """The axis that is reduced for the scale (None: the parameter stays float)."""
    if getattr(leaf, "ndim", 0) != 2:
        return None
    return 1 if P.kind(name, leaf) == "embedding" else 0


def quantize_array(w, axis: int) -> Int8:
    w = np.asarray(w, np.float32)
    amax = np.max(np.abs(w), axis=axis, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return Int8(q, scale)


def quantize(params):
    """float params -> params with every 2-D leaf an ``Int8`` (numpy arrays)."""
    def one(path, leaf):
        axis = channel_axis(P.path_name(path), leaf)
        return np.asarray(leaf) if axis is None else quantize_array(leaf, axis)

    return jax.tree_util.tree_map_with_path(one, params)


def is_int8(x) -> bool:
    return isinstance(x, Int8)


def quantized(params) -> bool:
    return any(is_int8(x) for x in jax.tree_util.tree_leaves(params, is_leaf=is_int8))


def dequantize(params):
    return jax.tree_util.tree_map(lambda x: x.dequantize() if is_int8(x) else x, params,
                                  is_leaf=is_int8)


def int8_hooks(hooks):
    """Hooks whose ``cast`` dequantizes int8 weights first (inside jit), then casts as before."""
    prev = hooks.cast

    def cast(params):
        return prev(dequantize(params))

    return hooks.replace(cast=cast)


def errors(params, qparams) -> dict[str, float]:
    """Per quantized parameter: max |w - dequantized| / max |w| (at most 1/254 by construction:
    half a step of the largest channel's scale)."""
    out = {}
    flat_q = dict((P.path_name(p), x) for p, x in
                  jax.tree_util.tree_leaves_with_path(qparams, is_leaf=is_int8))
    for path, w in jax.tree_util.tree_leaves_with_path(params):
        name = P.path_name(path)
        q = flat_q.get(name)
        if is_int8(q):
            w = np.asarray(w, np.float32)
            d = np.asarray(q.dequantize())
            out[name] = float(np.max(np.abs(w - d)) / max(float(np.max(np.abs(w))), 1e-30))
    return out
