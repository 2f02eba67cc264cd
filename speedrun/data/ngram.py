"""Count-model reference losses: what unigram, bigram and trigram statistics alone achieve.

A track's target means more next to these: a GPT whose validation loss is not below the bigram
reference has learned little beyond which token tends to follow which.

Each n-gram model is **interpolated Kneser-Ney** (Chen & Goodman 1998, one discount per order),
fit on the train split's token stream and scored on the validation stream exactly as the
harness scores a model: the first N validation tokens are the inputs, targets are
``val[1:N+1]``, each predicted from the tokens before it (separators are ordinary tokens, and
contexts may cross them and the model's window boundaries). For the k-gram level, with h the
k-1 preceding tokens and w the target::

    p_k(w | h) = max(c_k(h, w) - D_k, 0) / c_k(h) + D_k * u_k(h) / c_k(h) * p_{k-1}(w | h')
    p_0(w)     = 1 / vocab                                    (never zero: no infinite loss)

where h' drops h's oldest token, c_k(h) = sum_w c_k(h, w), u_k(h) = #{w : c_k(h, w) > 0}, and
p_k = p_{k-1} when c_k(h) = 0 (unseen context). The top level counts k-grams; a lower level
counts *continuations*, c_k(h, w) = #{v : c_{k+1}(v, h, w) > 0}, the Kneser-Ney idea. The
discount is D_k = n1 / (n1 + 2 n2) over that level's counts (n1, n2: events counted once,
twice), or 1/2 when nothing was counted once. The first target has only one preceding token; a
trigram model predicts it with its bigram level. Every p_k sums to 1 over the vocabulary.

n-grams are int64 keys ``sum t_i * vocab**(k-i)`` (np.unique + searchsorted, no dense
vocab**2 tables), so GPT-2's 50,257 tokens work as well as 256 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedrun.errors import SpeedrunError

NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}
METHOD = "interpolated Kneser-Ney, D = n1/(n1+2*n2) per order, uniform base"


@dataclass(frozen=True)
class _Level:
    keys: np.ndarray  # sorted unique k-gram keys
    counts: np.ndarray  # count (top level) or continuation count (lower levels) per key
    ctx: np.ndarray  # sorted unique contexts (k-gram key // vocab)
    ctx_total: np.ndarray  # c_k(h)
    ctx_types: np.ndarray  # u_k(h)
    discount: float


def _grams(tokens: np.ndarray, k: int, vocab: int) -> np.ndarray:
    """Keys of the k-grams ending at positions k-1 .. len-1."""
    n = tokens.size - k + 1
    key = np.zeros(max(n, 0), np.int64)
    for i in range(k):
        key = key * vocab + tokens[i:i + n]
    return key


def _discount(counts: np.ndarray) -> float:
    n1 = int(np.count_nonzero(counts == 1))
    n2 = int(np.count_nonzero(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 else 0.5


def _level(keys: np.ndarray, counts: np.ndarray, vocab: int) -> _Level:
    ctx, start = np.unique(keys // vocab, return_index=True)  # keys are sorted: runs per ctx
    total = np.add.reduceat(counts, start) if keys.size else np.zeros(0, np.int64)
    types = np.diff(np.append(start, keys.size))
    return _Level(keys, counts, ctx, total, types, _discount(counts))


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values at query's keys; 0 where a key is absent."""
    if sorted_keys.size == 0:
        return np.zeros(query.shape, values.dtype)
    i = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return np.where(sorted_keys[i] == query, values[i], 0)


class KneserNey:
    """An interpolated Kneser-Ney n-gram model of ``order`` fit on a token stream."""

    def __init__(self, train, order: int, vocab: int):
        if order not in NAMES:
            raise SpeedrunError(f"n-gram order must be 1, 2 or 3, got {order}")
        if vocab ** order >= 2 ** 63:
            raise SpeedrunError(f"{order}-gram keys over a vocabulary of {vocab} overflow int64")
        train = np.asarray(train).astype(np.int64)
        if train.size < order:
            raise SpeedrunError(f"need at least {order} train tokens for a {NAMES[order]} model")
        if train.size and (train.min() < 0 or train.max() >= vocab):
            raise SpeedrunError(f"train token ids must be in 0..{vocab - 1}")
        self.order, self.vocab = order, vocab
        keys, counts = np.unique(_grams(train, order, vocab), return_counts=True)
        levels = [_level(keys, counts.astype(np.int64), vocab)]
        for k in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
            keys, counts = np.unique(keys % vocab ** k, return_counts=True)
            levels.append(_level(keys, counts.astype(np.int64), vocab))
        self.levels = levels[::-1]  # levels[k-1] is the k-gram level

    @property
    def discounts(self) -> list[float]:
        return [lv.discount for lv in self.levels]

    def log_probs(self, tokens) -> np.ndarray:
        """ln p(tokens[i] | tokens[:i]) for i = 1 .. len-1."""
        tokens = np.asarray(tokens).astype(np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab):
            raise SpeedrunError(f"token ids must be in 0..{self.vocab - 1}")
        n = tokens.size - 1
        target = tokens[1:]
        p = np.full(max(n, 0), 1.0 / self.vocab)
        for k, lv in enumerate(self.levels, start=1):
            # positions whose target has k-1 tokens of context: i >= k-1 (0-based target index)
            first = k - 2 if k > 1 else 0
            if first >= n:
                break
            ctx = np.zeros(n - first, np.int64)
            for j in range(k - 1, 0, -1):  # context tokens oldest first
                ctx = ctx * self.vocab + tokens[first + 1 - j:first + 1 - j + n - first]
            w = target[first:]
            c = _lookup(lv.keys, lv.counts, ctx * self.vocab + w)
            total = _lookup(lv.ctx, lv.ctx_total, ctx)
            types = _lookup(lv.ctx, lv.ctx_types, ctx)
            seen = total > 0
            safe = np.where(seen, total, 1)
            mixed = (np.maximum(c - lv.discount, 0) + lv.discount * types * p[first:]) / safe
            p[first:] = np.where(seen, mixed, p[first:])
        return np.log(p)


def reference_losses(train, val, vocab: int, n_tokens=(None,), orders=(1, 2, 3)) -> list[dict]:
    """Mean nats/token of each order's model on the first N validation inputs (targets
    val[1:N+1]), one entry per N in ``n_tokens`` (None: the whole split, N = len(val) - 1;
    N is capped at that). Entries: {"val_tokens": N, "unigram": ..., "bigram": ..., ...}."""
    val = np.asarray(val)
    full = val.size - 1
    if full < 1:
        raise SpeedrunError("the validation stream needs at least 2 tokens")
    ns = [full if n is None else min(int(n), full) for n in n_tokens]
    longest = max(ns)
    logp = {NAMES[o]: KneserNey(train, o, vocab).log_probs(val[:longest + 1]) for o in orders}
    return [{"val_tokens": n, **{name: float(-lp[:n].mean()) for name, lp in logp.items()}}
            for n in ns]
