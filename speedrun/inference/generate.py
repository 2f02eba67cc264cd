"""Inference: prefill, KV-cache decoding and speculative decoding, through the training hooks.

Nothing here is a second copy of the model: every call is ``model.forward`` with the tokens'
absolute positions and a KV cache in its ``Ctx`` (speedrun/core/hooks.py, speedrun/inference/kvcache.py), so
a trick that changes the forward pass changes generation too.

* ``prefill`` runs the prompts (right-padded to one length, each row at positions 0..len-1)
  through the model once, filling the cache, and picks each row's first new token from the
  logits at its last prompt position.
* ``decode`` continues every row from its own position, one token per step, inside one
  ``lax.while_loop`` (no Python loop per token), until each row has produced the stop token
  (the document separator: <|endoftext|> for GPT-2 tokens, byte 0 for bytes) or
  ``max_new`` tokens.
* ``speculative`` lets a draft model propose K tokens per round that the target checks in one
  forward pass over its cache: greedy keeps the longest prefix that agrees with the target's
  own choices (then the target's next token), so its output is the target's greedy output;
  sampling uses the standard rejection rule (accept a proposal with probability
  min(1, p/q), else draw from max(0, p - q) renormalised; Leviathan et al. 2023), so its
  output is distributed as the target's.
* ``check_cache`` compares cached decoding with the full forward pass on a short text, so a
  trick whose hooks ignore ``ctx.positions`` or ``ctx.cache`` fails loudly instead of writing
  nonsense (``sample`` runs it before generating).

Sampling: ``temperature`` 0 is greedy (argmax); otherwise logits / temperature, optionally
restricted to the ``top_k`` largest; ids past the tokenizer's vocabulary (the model's padding)
are never chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import tricks
from speedrun.config import RunConfig, config_hash
from speedrun.core import model as M
from speedrun.data import bytelevel, corpus
from speedrun.data import tokenizer as tok
from speedrun.errors import SpeedrunError
from speedrun.inference.kvcache import KVCache


@dataclass(frozen=True)
class Model:
    """A model ready for inference: parameters (float or int8), resolved config, hooks."""

    params: Any
    cfg: RunConfig
    hooks: Any
    tokenizer: str  # 'bytes' | 'gpt2'

    @property
    def stop(self) -> int:
        return bytelevel.separator(self.tokenizer)

    @property
    def n_valid(self) -> int:
        return min(self.cfg.model.vocab_size, corpus.VOCAB.get(self.tokenizer, 1 << 30))

    @property
    def seq_len(self) -> int:
        return self.cfg.model.seq_len


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: the whole vocabulary

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def sampling(temperature: float, top_k: int) -> Sampling:
    """``--temperature`` and ``--top-k`` as given on the command line, checked."""
    if temperature < 0 or not math.isfinite(temperature):
        raise SpeedrunError(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if top_k < 0:
        raise SpeedrunError(f"--top-k must be 0 (all) or more, got {top_k}")
    return Sampling(temperature, top_k)


# ----------------------------------------------------------------------------------------------
# Forward passes
# ----------------------------------------------------------------------------------------------


def full_logits(m: Model, params, tokens):
    """The training forward pass (no cache): (B, T) -> (B, T, V) float32 logits."""
    h, p = M.forward(params, tokens, m.cfg.model, m.hooks)
    return M.output_logits(h, p, m.hooks)


def cached_step(m: Model, params, tokens, positions, cache_arrays, size: int, last=None):
    """One forward pass over the cache: tokens (B, T) at ``positions`` (B, T) -> logits
    (B, T, V) (or (B, 1, V) at index ``last`` (B,) of each row) and the updated cache.
    ``cache_arrays`` None starts an empty cache of ``size`` slots."""
    B = tokens.shape[0]
    cache = KVCache(B, size) if cache_arrays is None else KVCache.of(cache_arrays)
    h, p = M.forward(params, tokens, m.cfg.model, m.hooks, positions=positions, cache=cache)
    if last is not None:
        h = jnp.take_along_axis(h, last[:, None, None], axis=1)
    return M.output_logits(h, p, m.hooks), cache.arrays()


def cached_logits(m: Model, params, tokens, prefill: int):
    """Logits of every position of ``tokens`` (B, T) from a prefill over the first ``prefill``
    tokens, then one cached decode step per remaining token (a scan): what generation computes,
    to compare with ``full_logits``."""
    B, T = tokens.shape
    pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    z0, arrays = cached_step(m, params, tokens[:, :prefill], pos[:, :prefill], None, T)

    def body(arrays, tp):
        tok, p = tp
        z, arrays = cached_step(m, params, tok[:, None], p[:, None], arrays, T)
        return arrays, z[:, 0]

    _, zs = jax.lax.scan(body, arrays, (tokens[:, prefill:].T, pos[:, prefill:].T))
    return jnp.concatenate([z0, jnp.moveaxis(zs, 0, 1)], axis=1)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def process(z, s: Sampling, n_valid: int):
    """Logits (..., V) -> the logits a token is drawn from (padding masked, temperature, top-k)."""
    V = z.shape[-1]
    if n_valid < V:
        z = jnp.where(jnp.arange(V) < n_valid, z, -jnp.inf)
    if s.greedy:
        return z
    z = z / s.temperature
    if 0 < s.top_k < n_valid:
        kth = jax.lax.top_k(z, s.top_k)[0][..., -1:]
        z = jnp.where(z < kth, -jnp.inf, z)
    return z


def choose(z, key, s: Sampling):
    """Processed logits (B, V) -> token ids (B,)."""
    if s.greedy:
        return jnp.argmax(z, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, z, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# Prompts in, tokens out
# ----------------------------------------------------------------------------------------------


def encode(text: str, tokenizer: str) -> list[int]:
    """A prompt as the model saw documents in training: the separator, then the text."""
    if tokenizer == "bytes":
        return [bytelevel.BYTE_SEP, *bytelevel.encode_document(text).tolist()]
    if tokenizer == "gpt2":
        return [bytelevel.separator("gpt2"), *tok.gpt2_encoding().encode_ordinary(text)]
    raise SpeedrunError(f"unknown tokenizer {tokenizer!r} (known: {', '.join(bytelevel.TOKENIZERS)})")


def decode_text(tokens, tokenizer: str) -> str:
    if tokenizer == "bytes":
        return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
    return tok.gpt2_encoding().decode([int(t) for t in tokens])


def pad(prompts: list[list[int]], width: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, P) token array and the lengths (B,); P is at least ``width``, so
    batches of prompts of other lengths reuse one compiled program."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise SpeedrunError("every prompt needs at least one token")
    P = max(width, max(len(p) for p in prompts))
    tokens = np.zeros((len(prompts), P), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    return tokens, np.array([len(p) for p in prompts], np.int32)


def trim(row, stop: int | None) -> list[int]:
    """Generated tokens up to (not including) the first stop token."""
    row = [int(t) for t in row]
    if stop is not None and stop in row:
        row = row[: row.index(stop)]
    return row


def room(m: Model, longest_prompt: int, max_new: int) -> int:
    """``max_new`` cut to what fits the model's context (seq_len positions)."""
    if longest_prompt >= m.seq_len:
        raise SpeedrunError(f"a prompt is {longest_prompt} tokens long; this model reads at most "
                            f"{m.seq_len} (model.seq_len) and needs room to write")
    if max_new < 1:
        raise SpeedrunError(f"--max-new-tokens must be at least 1, got {max_new}")
    return min(max_new, m.seq_len - longest_prompt)


# ----------------------------------------------------------------------------------------------
# Plain decoding
# ----------------------------------------------------------------------------------------------

_compiled: dict = {}  # jitted functions by (what, models' hooks and configs, settings)


def _memo(key: tuple, models: tuple, build):
    """One jitted function per model (hooks + config) and settings, so repeated calls (bench,
    tests) reuse its compilations. The hooks are kept alive with it (their id is in the key)."""
    full = key + tuple((id(m.hooks), config_hash(m.cfg), m.tokenizer) for m in models)
    if full not in _compiled:
        _compiled[full] = (build(), [m.hooks for m in models])
    return _compiled[full][0]



def require_cached_decoding(m: Model) -> None:
    """A clear error for a model whose tricks cached decoding cannot reproduce (see
    ``Trick.cached_decoding``), instead of wrong text."""
    registry = tricks.available()
    blocked = [n for n in m.cfg.trick_names if n in registry and not registry[n].cached_decoding]
    if blocked:
        raise SpeedrunError(
            f"cached decoding does not support {', '.join(blocked)} yet (its forward pass reads "
            f"more than the KV cache keeps); `eval` works, `sample` does not")


def make_prefill(m: Model, s: Sampling, size: int):
    """jit: (params, tokens (B, P), lengths (B,), key) -> (first tokens (B,), cache arrays)."""
    require_cached_decoding(m)
    return _memo(("prefill", s, size), (m,), lambda: _make_prefill(m, s, size))


def _make_prefill(m: Model, s: Sampling, size: int):
    def prefill(params, tokens, lengths, key):
        B, P = tokens.shape
        pos = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
        z, arrays = cached_step(m, params, tokens, pos, None, size, last=lengths - 1)
        return choose(process(z[:, 0], s, m.n_valid), key, s), arrays

    return jax.jit(prefill)


def make_decode(m: Model, s: Sampling, max_new: int, stop: int | None):
    """jit: (params, first (B,), cache, lengths (B,), key) -> (tokens (B, max_new), steps run).
    One ``lax.while_loop``; ``stop`` None never stops early (benchmarks)."""
    return _memo(("decode", s, max_new, stop), (m,), lambda: _make_decode(m, s, max_new, stop))


def _make_decode(m: Model, s: Sampling, max_new: int, stop: int | None):
    def decode(params, first, arrays, lengths, key):
        B = first.shape[0]
        size = arrays[0][0].shape[1]
        fill = -1 if stop is None else stop
        out = jnp.full((B, max_new), fill, jnp.int32).at[:, 0].set(first)
        done = jnp.zeros((B,), bool) if stop is None else first == stop

        def cond(c):
            i, done = c[0], c[5]
            return (i < max_new) & ~jnp.all(done)

        def body(c):
            i, out, arrays, tok, pos, done, key = c
            key, sub = jax.random.split(key)
            z, arrays = cached_step(m, params, tok[:, None], pos[:, None], arrays, size)
            nxt = choose(process(z[:, 0], s, m.n_valid), sub, s)
            if stop is not None:
                nxt = jnp.where(done, stop, nxt)
                done = done | (nxt == stop)
            return i + 1, out.at[:, i].set(nxt), arrays, nxt, pos + 1, done, key

        c = (jnp.int32(1), out, arrays, first, lengths, done, key)
        i, out, *_ = jax.lax.while_loop(cond, body, c)
        return out, i

    return jax.jit(decode)


def generate(m: Model, prompts: list[list[int]], max_new: int, s: Sampling = Sampling(),
             seed: int = 0, stop: int | None | str = "default", width: int = 0) -> list[list[int]]:
    """Continue every prompt (token lists of any lengths, one batch) by up to ``max_new`` tokens;
    each row ends before its first stop token (default: the tokenizer's separator). ``width``:
    pad the prompts to at least this many tokens (one compilation for many batches)."""
    stop = m.stop if stop == "default" else stop
    tokens, lengths = pad(prompts, width)
    max_new = room(m, tokens.shape[1], max_new)
    key0, key1 = jax.random.split(jax.random.PRNGKey(seed))
    first, arrays = make_prefill(m, s, tokens.shape[1] + max_new)(m.params, tokens, lengths, key0)
    out, _ = make_decode(m, s, max_new, stop)(m.params, first, arrays, lengths, key1)
    return [trim(row, stop) for row in np.asarray(out)]


# ----------------------------------------------------------------------------------------------
# Speculative decoding
# ----------------------------------------------------------------------------------------------


def make_speculative(target: Model, draft: Model, s: Sampling, max_new: int, K: int, stop: int):
    require_cached_decoding(target)
    require_cached_decoding(draft)
    return _memo(("speculative", s, max_new, K, stop), (target, draft),
                 lambda: _make_speculative(target, draft, s, max_new, K, stop))


def _make_speculative(target: Model, draft: Model, s: Sampling, max_new: int, K: int, stop: int):
    """jit: (target params, draft params, tokens (B, P), lengths (B,), key) ->
    (tokens (B, max_new), accepted draft tokens, proposed draft tokens, rounds).

    Every row keeps its own position: ``last`` is its newest token, at position ``pos``, not
    yet run through either model. A round runs the draft on last, d1 .. dK (K proposals, plus
    one step that only puts dK in the draft's cache), then the target on [last, d1 .. dK] in one
    pass; the row keeps n accepted proposals and one token of the target's, and advances by
    n + 1. Slots past a row's position hold rejected proposals, which attention never reads and
    the next round overwrites."""

    def run(tparams, dparams, tokens, lengths, key):
        B, P = tokens.shape
        size = P + max_new + K + 1
        pos0 = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
        zt, tcache = cached_step(target, tparams, tokens, pos0, None, size, last=lengths - 1)
        _, dcache = cached_step(draft, dparams, tokens, pos0, None, size, last=lengths - 1)
        key, sub = jax.random.split(key)
        first = choose(process(zt[:, 0], s, target.n_valid), sub, s)
        out = jnp.full((B, max_new + K + 1), stop, jnp.int32).at[:, 0].set(first)
        done = (first == stop) | (max_new <= 1)
        j = jnp.arange(K + 1)

        def cond(c):
            return ~jnp.all(c[5])

        def body(c):
            out, tcache, dcache, last, pos, done, cnt, acc, prop, rounds, key = c
            key, kd, ku, kr = jax.random.split(key, 4)

            def draft_step(carry, i):
                dcache, tok = carry
                z, dcache = cached_step(draft, dparams, tok[:, None], (pos + i)[:, None],
                                        dcache, size)
                zq = process(z[:, 0], s, draft.n_valid)
                nxt = choose(zq, jax.random.fold_in(kd, i), s)
                return (dcache, nxt), (nxt, zq)

            (dcache, _), (d, zq) = jax.lax.scan(draft_step, (dcache, last), jnp.arange(K + 1))
            d, zq = d[:K].T, jnp.moveaxis(zq[:K], 0, 1)  # (B, K), (B, K, V)
            seq = jnp.concatenate([last[:, None], d], axis=1)  # (B, K + 1)
            z, tcache = cached_step(target, tparams, seq, pos[:, None] + j, tcache, size)
            zp = process(z, s, target.n_valid)  # (B, K + 1, V): after last, d1, .., dK
            if s.greedy:
                g = jnp.argmax(zp, axis=-1).astype(jnp.int32)  # the target's own choices
                ok = d == g[:, :K]
                n = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)
                nxt = jnp.take_along_axis(g, n[:, None], axis=1)[:, 0]
            else:
                p, q = jax.nn.softmax(zp, axis=-1), jax.nn.softmax(zq, axis=-1)
                pd = jnp.take_along_axis(p[:, :K], d[..., None], axis=-1)[..., 0]
                qd = jnp.take_along_axis(q, d[..., None], axis=-1)[..., 0]
                u = jax.random.uniform(ku, pd.shape)
                ok = u * qd < pd  # u < p/q, without dividing by 0
                n = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)
                # where rejected at n < K: draw from max(0, p_n - q_n+1); all accepted: from p_K
                qn = jnp.concatenate([q, jnp.zeros_like(q[:, :1])], axis=1)
                resid = jnp.maximum(jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
                                    - jnp.take_along_axis(qn, n[:, None, None], axis=1)[:, 0], 0)
                total = resid.sum(-1, keepdims=True)
                pn = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
                resid = jnp.where(total > 0, resid / jnp.where(total > 0, total, 1), pn)
                nxt = jax.random.categorical(kr, jnp.log(resid), axis=-1).astype(jnp.int32)
            active = ~done
            new = jnp.where(j[None, :] == n[:, None], nxt[:, None],
                            jnp.concatenate([d, d[:, :1]], axis=1))  # d1 .. dn, then nxt
            keep = (j[None, :] <= n[:, None]) & active[:, None]
            idx = jnp.where(keep, cnt[:, None] + j[None, :], out.shape[1])  # dropped if not kept
            out = out.at[jnp.arange(B)[:, None], idx].set(new, mode="drop")
            hit_stop = jnp.any(keep & (new == stop), axis=1)
            step = jnp.where(active, n + 1, 0)
            cnt, pos = cnt + step, pos + step
            acc = acc + jnp.sum(jnp.where(active, n, 0))
            prop = prop + K * jnp.sum(active)
            done = done | hit_stop | (cnt >= max_new)
            return (out, tcache, dcache, jnp.where(active, nxt, last), pos, done, cnt, acc, prop,
                    rounds + 1, key)

        c = (out, tcache, dcache, first, lengths, done, jnp.ones((B,), jnp.int32),
             jnp.int32(0), jnp.int32(0), jnp.int32(0), key)
        c = jax.lax.while_loop(cond, body, c)
        return c[0][:, :max_new], c[7], c[8], c[9]

    return jax.jit(run)


@dataclass(frozen=True)
class SpecStats:
    accepted: int
    proposed: int
    rounds: int

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else math.nan


def compatible(target: Model, draft: Model) -> None:
    if target.tokenizer != draft.tokenizer:
        raise SpeedrunError(f"the draft model uses the {draft.tokenizer!r} tokenizer, the target "
                            f"{target.tokenizer!r}: speculative decoding needs the same one")
    if draft.n_valid != target.n_valid:
        raise SpeedrunError(f"the draft model's vocabulary ({draft.n_valid}) is not the "
                            f"target's ({target.n_valid})")


def speculative(target: Model, draft: Model, prompts: list[list[int]], max_new: int, K: int,
                s: Sampling = Sampling(), seed: int = 0) -> tuple[list[list[int]], SpecStats]:
    """Continue every prompt with ``target``, ``draft`` proposing ``K`` tokens a round."""
    compatible(target, draft)
    if K < 1:
        raise SpeedrunError(f"--draft-tokens must be at least 1, got {K}")
    tokens, lengths = pad(prompts)
    P = tokens.shape[1]
    # A last round may look up to K positions past the budget (learned positions clamp there):
    # those only shape tokens after the budget, which are cut, so no room is reserved for them.
    max_new = min(room(target, P, max_new), room(draft, P, max_new))
    run = make_speculative(target, draft, s, max_new, K, target.stop)
    out, acc, prop, rounds = run(target.params, draft.params, tokens, lengths,
                                 jax.random.PRNGKey(seed))
    rows = [trim(r, target.stop) for r in np.asarray(out)]
    return rows, SpecStats(int(acc), int(prop), int(rounds))


# ----------------------------------------------------------------------------------------------
# The consistency check `sample` runs first
# ----------------------------------------------------------------------------------------------

CHECK_TEXT = "The history of the city begins in the early years of the"


def tolerance(m: Model) -> float:
    """Allowed |cached - full| logit difference, relative to 1 + max |full logit|: float32
    rounding, or bfloat16's when a trick computes in it."""
    dt = m.cfg.tricks.get("bf16", {}).get("dtype") if "bf16" in m.cfg.tricks else None
    return 1e-4 if dt in (None, "float32") else 5e-2


def check_cache(m: Model, text: str = CHECK_TEXT) -> float:
    """Cached decoding against the full forward pass on a short text: the largest relative
    logit difference, or a SpeedrunError naming the tricks when it exceeds ``tolerance``."""
    require_cached_decoding(m)
    ids = encode(text, m.tokenizer)[: min(m.seq_len, 32)]
    if len(ids) < 2:
        return 0.0
    tokens = jnp.asarray([ids], jnp.int32)
    full = jax.jit(lambda p, t: full_logits(m, p, t))(m.params, tokens)
    cached = jax.jit(lambda p, t: cached_logits(m, p, t, len(ids) // 2))(m.params, tokens)
    valid = slice(0, m.n_valid)
    full, cached = np.asarray(full)[..., valid], np.asarray(cached)[..., valid]
    err = float(np.max(np.abs(full - cached)) / (1 + np.max(np.abs(full))))
    if not err <= tolerance(m):
        names = ", ".join(m.cfg.trick_names) or "the baseline"
        raise SpeedrunError(
            f"cached decoding disagrees with the full forward pass (relative logit difference "
            f"{err:.2g} > {tolerance(m):g}) with {names}: a hook ignores ctx.positions or "
            f"ctx.cache (see speedrun/core/hooks.py); generation would be wrong")
    return err
