"""Inference through the training hooks: for every trick that changes the forward pass (and for
stacks of them), prefill + cached decoding gives the full forward pass's logits, and greedy
generation is token-for-token what re-running the full forward pass per token gives.

Models are tiny (helpers.tiny_model: 4 layers, d_model 32, vocab 256, 24 positions) with their
parameters jittered away from the init (a zero-init head or projection would make every
comparison trivially equal), so every configuration compiles and runs in about a second.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tricks
from helpers import GEN_SEQ, GEN_VOCAB, PROMPTS, sweep, tiny_model
from speedrun import cli
from speedrun.core import attention
from speedrun.errors import SpeedrunError
from speedrun.inference import generate as G
from speedrun.training import speed as bench
from tricks import rotary

FORWARD_TRICKS = sorted(n for n, t in tricks.available().items()
                        if "model" in t.changes and t.cached_decoding)
# tricks whose forward pass reads more than the cache keeps: generation must refuse them
UNCACHEABLE = sorted(n for n, t in tricks.available().items() if not t.cached_decoding)
STACKS = {
    "wiki-best": "muon,momentum-warmup,rotary,value-residual",
    "modded": "rotary,qknorm,relu2,rmsnorm,untie-head,softcap,embed-skip,value-embeds,"
              "unet-skips,zero-init,gqa",
    "modded-bf16": "rotary,qknorm,relu2,untie-head,softcap,embed-skip,value-residual,unet-skips,"
                   "gqa,bf16",
}
# float32 rounding of a different attention formulation; bfloat16 keeps ~3 significant digits
TOL = {"float32": 1e-4, "bfloat16": 5e-2}


def dtype_of(m: G.Model) -> str:
    return m.cfg.tricks.get("bf16", {}).get("dtype", "float32")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (1 + np.max(np.abs(b))))


def reference_greedy(m: G.Model, full, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Greedy decoding with no cache: the full forward pass over the padded batch per token
    (``full``: the compiled full forward pass, (B, GEN_SEQ) -> logits)."""
    seqs = [list(p) for p in prompts]
    for _ in range(n):
        tokens = np.zeros((len(seqs), GEN_SEQ), np.int32)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = s
        z = np.asarray(full(m.params, jnp.asarray(tokens)))
        for i, s in enumerate(seqs):
            s.append(int(np.argmax(z[i, len(s) - 1, : m.n_valid])))
    return [s[len(p):] for s, p in zip(seqs, prompts)]


# The quick tier decodes the baseline and rotary (positions); every other trick and stack is in
# the full suite.
QUICK = {"baseline", "rotary"}


def configs():
    found = [(n, n) for n in FORWARD_TRICKS] + [(k, v) for k, v in STACKS.items()] + [
        ("baseline", "")]
    return [pytest.param(v, id=k, marks=() if k in QUICK else pytest.mark.slow)
            for k, v in found]


@pytest.mark.parametrize("names", configs())
def test_cached_decoding_matches_full_forward(names):
    m = tiny_model(names)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, GEN_VOCAB, (3, GEN_SEQ)), jnp.int32)
    full = jax.jit(lambda p, t: G.full_logits(m, p, t))
    cached = jax.jit(lambda p, t: G.cached_logits(m, p, t, 7))(m.params, tokens)  # 7 + 17 steps
    assert rel_err(cached, full(m.params, tokens)) <= TOL[dtype_of(m)], names
    # greedy generation: batched prompts of different lengths, cached, == full forward per token
    got = G.generate(m, PROMPTS, max_new=8, s=G.Sampling(temperature=0), stop=None)
    assert got == reference_greedy(m, full, PROMPTS, 8), names


@pytest.mark.parametrize("name", sweep(UNCACHEABLE))
def test_tricks_cached_decoding_cannot_reproduce_are_refused(name):
    m = tiny_model(name)
    with pytest.raises(SpeedrunError, match=f"does not support {name}"):
        G.generate(m, PROMPTS, max_new=2)
    with pytest.raises(SpeedrunError, match=f"does not support {name}"):
        G.check_cache(m)


def test_a_position_blind_hook_fails_loudly():
    """A trick whose positions ignore ctx.positions is caught by sample's check."""
    m = tiny_model("rotary")
    prev = tricks.available()["rotary"]
    blind = dataclasses.replace(m.hooks, qk=lambda q, k, ctx: (rotary.rotate(q, 1e4),
                                                               rotary.rotate(k, 1e4)))
    assert prev  # the real rotary passes the check
    assert G.check_cache(m) <= G.tolerance(m)
    with pytest.raises(SpeedrunError, match="ctx.positions"):
        G.check_cache(dataclasses.replace(m, hooks=blind))


def test_an_attend_hook_that_ignores_the_cache_raises():
    m = tiny_model("")
    blind = dataclasses.replace(m.hooks, attend=lambda q, k, v, ctx: attention.causal(q, k, v))
    with pytest.raises(ValueError, match="KV cache"):
        G.generate(dataclasses.replace(m, hooks=blind), PROMPTS[:1], 2)


def test_gqa_caches_only_the_kv_heads():
    m = tiny_model("gqa")
    tokens = jnp.zeros((2, 5), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
    _, arrays = jax.eval_shape(lambda p: G.cached_step(m, p, tokens, pos, None, 7), m.params)
    assert len(arrays) == 4
    assert arrays[0][0].shape == (2, 7, 2, 8)  # 4 query heads share 2 key/value heads


def test_sampling_is_reproducible_per_seed():
    m = tiny_model("", seed=3)
    s = G.Sampling(temperature=0.8, top_k=5)
    a = G.generate(m, PROMPTS, 8, s, seed=1, stop=None)
    assert a == G.generate(m, PROMPTS, 8, s, seed=1, stop=None)
    assert a != G.generate(m, PROMPTS, 8, s, seed=2, stop=None)
    assert all(len(r) == 8 for r in a)


def test_a_row_ends_at_its_stop_token():
    m = tiny_model("", seed=4)
    greedy = G.Sampling(temperature=0)
    full = G.generate(m, PROMPTS, 8, greedy, stop=None)
    row = full[2]
    stop = row[3]  # the 4th token this row writes: the row must end before it
    got = G.generate(m, PROMPTS, 8, greedy, stop=stop)
    assert got[2] == row[: row.index(stop)]
    assert all(g == f[: len(g)] for g, f in zip(got, full))


def test_padding_ids_are_never_chosen():
    m = tiny_model("", vocab=384, tokenizer="bytes")  # 128 padding ids past the 256 bytes
    s = G.Sampling(temperature=5.0)
    rows = G.generate(m, PROMPTS, 10, s, seed=0, stop=None)
    assert max(max(r) for r in rows) < 256


def test_prompt_too_long_is_one_clear_error():
    m = tiny_model("")
    with pytest.raises(SpeedrunError, match="seq_len"):
        G.generate(m, [[0] * GEN_SEQ], 4)


@pytest.mark.slow
def test_bench_decode_measures_prefill_and_decode(capsys):
    r = bench.measure_decode(tiny_model(""), batch=2, prompt_len=4, new_tokens=6, repeats=1)
    assert r["new_tokens"] == 6 and r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
    assert cli.main(["bench", "--decode", "--track", "unit", "--batch", "1,2",
                     "--prompt-len", "4", "--new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "batch 1: prefill 4 tokens/row" in out and "batch 2:" in out and "decode 4" in out


def test_prompts_start_a_document_and_bytes_decode_back():
    ids = G.encode("héllo", "bytes")
    assert ids[0] == 0 and bytes(ids[1:]).decode() == "héllo"
    assert G.decode_text(ids[1:], "bytes") == "héllo"
    assert G.decode_text([0xE2, 0x82], "bytes") == "\ufffd"  # a cut character is replaced, not fatal
    assert G.trim([5, 6, 0, 7], 0) == [5, 6] and G.trim([5, 6], None) == [5, 6]
