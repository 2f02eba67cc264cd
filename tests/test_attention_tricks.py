"""Tricks that change attention: rotary (scores depend only on relative position),
window-attention (a sliding window within each document, against a dense reference) and
key-offset (the slow key dimensions shifted by one position on long layers). The attention
kernels themselves are tested in tests/test_attention.py.

Models are tiny (helpers.setup: d_model 32, 2-4 layers, vocab 256, 16 tokens).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from helpers import BATCH, SEQ, ctx, normal, setup, sweep, tokens
from speedrun import tracks
from speedrun.core import attention as A
from speedrun.core import model
from speedrun.core.hooks import Ctx
from speedrun.errors import SpeedrunError
from tricks import key_offset as ko
from tricks import window_attention as wa


# ----------------------------------------------------------------------------------------------
# rotary
# ----------------------------------------------------------------------------------------------


def test_rotary_scores_depend_only_on_relative_position():
    cfg, hooks, params = setup(["rotary"])
    assert "wpe" not in params
    c = ctx(cfg, hooks, params)
    toks = tokens()
    assert jnp.array_equal(hooks.embed(params, toks, c), params["wte"][toks])  # no positions

    q, k = normal(1, (1, SEQ, 4, 8)), normal(2, (1, SEQ, 4, 8))

    def scores(q, k):
        rq, rk = hooks.qk(q, k, c)
        return jnp.einsum("bshd,bthd->bhst", rq, rk)

    shift = 5  # the same content placed 5 positions later: identical scores
    pad = jnp.zeros((1, shift, 4, 8))
    shifted = scores(jnp.concatenate([pad, q], 1), jnp.concatenate([pad, k], 1))
    assert jnp.allclose(scores(q, k), shifted[:, :, shift:, shift:], atol=1e-4)
    assert not jnp.allclose(scores(q, k), jnp.einsum("bshd,bthd->bhst", q, k), atol=1e-2)
    # a constant vector everywhere: scores are a function of s - t only (Toeplitz)
    a = jnp.broadcast_to(q[:, :1], q.shape)
    s = scores(a, a)[0, 0]
    assert jnp.allclose(s[1:, 1:], s[:-1, :-1], atol=1e-4)
    assert not jnp.allclose(s[0, 0], s[3, 0])


# ----------------------------------------------------------------------------------------------
# window-attention
# ----------------------------------------------------------------------------------------------


def reference_mask(toks, sep, w):
    toks = np.asarray(toks)
    B, T = toks.shape
    out = np.zeros((B, T, T), bool)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                # same document: no separator in (j, i]
                same = not np.any(toks[b, j + 1:i + 1] == sep)
                out[b, i, j] = j <= i and i - j < w and same
    return out


def reference_attention(q, k, v, allowed):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    s = np.where(allowed[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def doc_tokens():
    t = np.array(tokens(5, (2, SEQ)))
    t[t == 0] = 1
    t[0, [0, 5, 6, 11]] = 0  # documents start at 0, 5, 6 (one byte long) and 11
    t[1, [9]] = 0  # row 1: a document continued from before, then one starting at 9
    return jnp.asarray(t)


@pytest.mark.parametrize("w", sweep([3, 1, 8, 64]))
def test_window_attention_mask_and_output_match_a_dense_reference(w, monkeypatch):
    toks = doc_tokens()
    got = np.asarray(wa.mask(toks, 0, w))
    want = reference_mask(toks, 0, w)
    assert np.array_equal(got, want)
    assert not got[0, 5, 4] and got[0, 4, 1] == (w > 3) and not got[0, 7, 6 - 1]
    q, k, v = normal(1, (2, SEQ, 4, 8)), normal(2, (2, SEQ, 4, 8)), normal(3, (2, SEQ, 4, 8))
    ref = reference_attention(q, k, v, want)
    for y in (A.blocked(q, k, v, block=4, allowed=got), A.masked(q, k, v, got),
              jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(got)[:, None])):
        assert np.allclose(np.asarray(y), ref, atol=1e-5)
    monkeypatch.setenv(A.ENV, "xla")  # the path a GPU takes where cuDNN cannot serve
    assert np.allclose(np.asarray(A.masked(q, k, v, got)), ref, atol=1e-5)
    assert A.implementation_name() == "xla"
    # grouped-query: 2 kv heads serve 4 query heads
    k2, v2 = k[:, :, :2], v[:, :, :2]
    ref = reference_attention(q, jnp.repeat(k2, 2, 2), jnp.repeat(v2, 2, 2), want)
    assert np.allclose(np.asarray(A.blocked(q, k2, v2, allowed=got)), ref, atol=1e-5)


def test_window_attention_schedule_and_hook():
    assert [int(wa.window(f, 64, 1792, 64)) for f in (0.0, 0.5, 0.99, 1.0)] == [64, 896, 1728,
                                                                                 1792]
    assert [wa.is_long(i, 12) for i in range(12)] == [c == "L" for c in "LSSSLSSLSSSL"]
    assert [wa.is_long(i, 4) for i in range(4)] == [True, False, False, True]
    cfg, hooks, params = setup(["window-attention"],
                               ["window-attention.start=4", "window-attention.end=20",
                                "window-attention.multiple=2", "window-attention.long_short=true"],
                               n_layer=4, steps=10)
    assert cfg.tricks["window-attention"]["separator"] == 0  # wiki-bytes: byte 0
    toks = doc_tokens()
    q, k, v = normal(1, (2, SEQ, 4, 8)), normal(2, (2, SEQ, 4, 8)), normal(3, (2, SEQ, 4, 8))
    # step 5 of 10: W = 2 * floor((0.5 * 16 + 4) / 2) = 12 on long layers, 6 on short ones
    for layer, w in ((0, 12), (1, 6), (3, 12)):
        c = Ctx(params=params, tokens=toks, cfg=cfg.model, layer=layer, step=jnp.int32(5),
                steps=10)
        y = hooks.attend(q, k, v, c)
        assert np.allclose(np.asarray(y), reference_attention(q, k, v, reference_mask(toks, 0, w)),
                           atol=1e-5), layer
    # no step (a trained model): the final window, which covers the 16-token sequence
    c = Ctx(params=params, tokens=toks, cfg=cfg.model, layer=1)
    y = hooks.attend(q, k, v, c)
    assert np.allclose(np.asarray(y), reference_attention(q, k, v, reference_mask(toks, 0, 10)),
                       atol=1e-5)


def test_window_attention_separator_comes_from_the_track():
    cfg, *_ = setup(["window-attention"])
    assert cfg.tricks["window-attention"]["separator"] == 0
    wiki = tricks.configure(tricks.with_tricks(tracks.get("wiki").config, ["window-attention"]))
    assert wiki.tricks["window-attention"]["separator"] == 50256
    assert tricks.configure(wiki) == wiki  # idempotent
    other = dataclasses.replace(tricks.with_tricks(tracks.get("wiki").config,
                                                   ["window-attention"]), track="nowhere")
    with pytest.raises(SpeedrunError, match="separator"):
        tricks.configure(other)


def test_window_attention_blocks_attention_across_documents():
    cfg, hooks, params = setup(["window-attention"], n_layer=2)
    x = np.array(tokens(0))
    x[x == 0] = 1
    x[:, 8] = 0  # a new document at position 8
    y = x.copy()
    y[:, :8] = (y[:, :8] + 7) % 255 + 1  # change the first document only
    h1, _ = model.forward(params, jnp.asarray(x), cfg.model, hooks)
    h2, _ = model.forward(params, jnp.asarray(y), cfg.model, hooks)
    # learned positions are absolute, so the second document's states depend only on itself
    assert np.allclose(np.asarray(h1[:, 8:]), np.asarray(h2[:, 8:]), atol=1e-5)
    assert not np.allclose(np.asarray(h1[:, :8]), np.asarray(h2[:, :8]), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# key-offset
# ----------------------------------------------------------------------------------------------


def test_key_offset_shifts_the_slow_dims_on_long_layers():
    assert ko.offset_dims(8) == [2, 3, 6, 7]
    cfg, hooks, params = setup(["key-offset", "rotary", "qknorm"], n_layer=4)
    assert list(cfg.tricks)[-1] == "key-offset"
    q, k = normal(1, (BATCH, SEQ, 4, 8)), normal(2, (BATCH, SEQ, 4, 8))
    c = ctx(cfg, hooks, params, layer=0)
    _, ref_k = tricks.build_hooks(tricks.with_tricks(cfg, ["rotary", "qknorm"])).qk(q, k, c)
    _, got = hooks.qk(q, k, c)
    rk, gk = np.asarray(ref_k), np.asarray(got)
    for d in range(8):
        if d in (2, 3, 6, 7):
            assert np.array_equal(gk[:, 1:, :, d], rk[:, :-1, :, d])
            assert np.array_equal(gk[:, 0, :, d], rk[:, 0, :, d])
        else:
            assert np.array_equal(gk[..., d], rk[..., d])
    _, k1 = hooks.qk(q, k, ctx(cfg, hooks, params, layer=1))  # a short layer: unchanged
    assert np.array_equal(np.asarray(k1), rk)
