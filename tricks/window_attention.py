"""Document-causal sliding-window attention whose window warms up over training.

A query at position i sees key j only if

    j <= i   and   doc[j] == doc[i]   and   i - j < W          doc = cumsum(tokens == separator)

so no attention crosses a document boundary (the separator opens each document, as FineWeb's
<|endoftext|> does). The window W (tokens) grows linearly with the run's progress f = step / N
(N = train.steps, the run's length), rounded down to a multiple of 64, as record #13 wrote it:

    W = multiple * floor((f * (end - start) + start) / multiple),   start 64, end 1792, multiple 64

Validation uses the window of the step it follows (the full ``end`` after the last step; a
model used outside training, ``ctx.step`` None, uses ``end`` too).

``long_short`` (record #20, after Gemma 2): every layer keeps a sliding window, the "short"
layers half of it (W // 2, so the long window grows twice as fast); with L layers a layer is
long when min(i, L-1-i) % 4 == 0, which gives record #20's 12-layer pattern
[L,S,S,S,L,S,S,L,S,S,S,L] and, at 4 layers, long first and last layers.

``separator`` -1 takes the track's document separator (50256 on `wiki`/FineWeb, byte 0 on
`wiki-bytes`); the resolved id is written into the record's config.

Adaptations. The records built the mask with FlexAttention (#12-#28, 128-token blocks from #16,
so the window was block-ragged) and later FA3's varlen kernel (exact token windows); here the
window is exact at token level (FA3's semantics) with #13's token schedule. The records packed a
64K-token stream per GPU; our sequences are ``model.seq_len`` long (256 on `wiki-bytes`), so a
window of 64..1792 tokens covers the whole sequence after f = (T - 64) / 1728 (11% of the run at
T = 256): there the trick is mostly document masking with a short early window. The constants
are the record's, not retuned for short sequences. The mask is dynamic (a function of the traced
step), so the kernel is ``attention.masked``: the CPU formulation (query blocks, tiles above the
diagonal skipped) with the mask on CPU, cuDNN's fused kernel with the mask as a bias on GPU
(its ``local_window_size`` needs a static window), XLA with the mask elsewhere.
"""

from __future__ import annotations

import jax.numpy as jnp

from speedrun.core import attention as A
from speedrun.errors import SpeedrunError
from speedrun.core.hooks import progress
from tricks import ANY, Trick, at_least
from tricks._common import resolve_separator


def window(f, start: int, end: int, multiple: int):
    """Window in tokens at progress f (record #13's formula; at least one token)."""
    w = multiple * jnp.floor((f * (end - start) + start) / multiple)
    return jnp.maximum(w, 1).astype(jnp.int32)


def is_long(i: int, n_layer: int) -> bool:
    return min(i, n_layer - 1 - i) % 4 == 0


def mask(tokens, separator: int, w):
    """(B, T, T) bool: query i may attend key j (causal, same document, i - j < w)."""
    T = tokens.shape[1]
    doc = jnp.cumsum(tokens == separator, axis=1)
    qi, kj = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    near = (kj <= qi) & (qi - kj < w)
    return near[None] & (doc[:, :, None] == doc[:, None, :])


def configure(cfg, hp):
    if not 1 <= hp.multiple <= hp.start <= hp.end:
        raise SpeedrunError(f"window-attention needs 1 <= multiple <= start <= end, got multiple "
                            f"{hp.multiple}, start {hp.start}, end {hp.end}")
    return resolve_separator(cfg, "window-attention", hp.separator)


def apply(hooks, hp):
    def attend(q, k, v, ctx):
        if hp.separator < 0:
            raise SpeedrunError("window-attention.separator is unresolved (-1): build the config "
                                "with tricks.configure")
        long = not hp.long_short or is_long(ctx.layer, ctx.cfg.n_layer)
        key = f"window_attention.mask.{'long' if long else 'short'}"
        if key not in ctx.state:  # one mask per forward pass and window size
            w = window(progress(ctx), hp.start, hp.end, hp.multiple)
            ctx.state[key] = mask(ctx.tokens, hp.separator, w if long else jnp.maximum(w // 2, 1))
        return A.masked(q, k, v, ctx.state[key])

    return hooks.replace(attend=attend)


TRICK = Trick(
    name="window-attention",
    summary="document-causal attention with a sliding window warming up 64 -> 1792 tokens "
    "(long_short: half-width windows on most layers)",
    changes=("model", "schedule"),
    params={"start": 64, "end": 1792, "multiple": 64, "long_short": False, "separator": -1},
    limits={"start": at_least(1), "end": at_least(1), "multiple": at_least(1),
            "long_short": ANY, "separator": at_least(-1)},
    apply=apply,
    configure=configure,
    replaces=("attend",),
    source="modded-nanogpt records #12 (11/19/24, FlexAttention: doc-causal mask + window), "
    "#13 (11/24/24, WindowWarmup), #20 (01/16/25, Sub3Min: long-short windows, after Gemma 2)",
    cached_decoding=False,
)
