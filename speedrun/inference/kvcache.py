"""The key/value cache of inference: every layer's keys and values, one slot per position.

``model.attention`` calls ``cache.update(layer, k, v, positions)`` after the ``qk`` and
``values`` hooks, so the cache holds exactly what attention reads in training: rotated keys
(rotary), normalised keys (qknorm), mixed values (value residual, value embeddings), only the
key/value heads (GQA), in the compute dtype (bf16). Slot s of a row holds that row's token at
absolute position s, so prompts of different lengths share one batch: each row writes at its
own positions, and attention (``attention.cached``) reads only slots up to the query's
position, never the padding or stale entries beyond it (they are overwritten before they are
read).

A cache is built empty inside the traced function (buffers appear on the first update of each
layer, with that layer's shape and dtype) and leaves it as ``arrays()``, a plain pytree that
``lax.while_loop`` can carry; ``KVCache.of(arrays)`` rebuilds it in the next call.
"""

from __future__ import annotations

import jax.numpy as jnp


class KVCache:
    def __init__(self, batch: int, size: int, layers: dict | None = None):
        self.batch, self.size = batch, size
        self.layers: dict[int, tuple] = dict(layers or {})  # layer -> (k, v), (B, S, KV, hd)

    @classmethod
    def of(cls, arrays) -> "KVCache":
        """The cache ``arrays()`` returned (a list of (k, v) per layer, in layer order)."""
        k0 = arrays[0][0]
        return cls(k0.shape[0], k0.shape[1], {i: kv for i, kv in enumerate(arrays)})

    def arrays(self) -> list:
        if sorted(self.layers) != list(range(len(self.layers))):
            raise ValueError(f"KV cache holds layers {sorted(self.layers)}, not 0..n-1")
        return [self.layers[i] for i in range(len(self.layers))]

    def update(self, layer: int, k, v, positions):
        """Write k, v (B, T, KV, hd) at ``positions`` (B, T); return the layer's whole cache."""
        if positions is None:
            raise ValueError("a KV cache needs the tokens' positions (ctx.positions)")
        if layer < 0:
            raise ValueError("KV cache update outside a block (ctx.layer is not set)")
        if layer in self.layers:
            ck, cv = self.layers[layer]
        else:
            ck = jnp.zeros((self.batch, self.size, *k.shape[2:]), k.dtype)
            cv = jnp.zeros((self.batch, self.size, *v.shape[2:]), v.dtype)
        rows = jnp.arange(k.shape[0])[:, None]
        # positions past the cache (a finished row running on) are dropped, never wrapped
        ck = ck.at[rows, positions].set(k.astype(ck.dtype), mode="drop")
        cv = cv.at[rows, positions].set(v.astype(cv.dtype), mode="drop")
        self.layers[layer] = (ck, cv)
        return ck, cv
