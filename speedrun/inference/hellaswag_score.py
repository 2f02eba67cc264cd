"""HellaSwag, scored the way llm.c scores it (`eval CHECKPOINT --hellaswag`, and after a `run`
on the tracks that report it).

Each example is a context and four endings, one of them right. Every ending is rendered as
llm.c does: the context's tokens, then the tokens of " " + ending (each encoded on its own, no
document separator before the context), and the model's next-token loss is read over the
ending's tokens only. Two accuracies, both llm.c's:

* ``acc_norm``: the ending with the lowest *mean* loss per ending token wins (llm.c's
  ``acc_norm``; the number llm.c reports for GPT-2);
* ``acc``: the ending with the lowest *summed* loss wins (llm.c's ``acc``; the rule
  lm-evaluation-harness reports as ``acc``).

Each comes with its binomial standard error sqrt(p (1 - p) / n); chance is 0.25. A row longer
than the model's context (``model.seq_len`` + 1 tokens) keeps its last tokens: the context is
cut on the left, and the count of such examples is reported. Rows are right-padded to one
length and scored in batches of fixed shape, so the scorer compiles once; the logits are
formed a few rows at a time, never for the whole batch (a 50K vocabulary would not fit).
GPT-2 tokens and bytes (a text's UTF-8 bytes) alike: the checkpoint's tokenizer decides.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.core import model as M
from speedrun.data import bytelevel
from speedrun.data import tokenizer as tok
from speedrun.data import hellaswag as data
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.inference.generate import Model

EXAMPLES_PER_BATCH = 16  # 64 rows of one example's four endings each
LOGITS_PER_CHUNK = 1 << 25  # float32 logits formed at once (128 MB)
ALIGN = 16  # row length rounded up to a multiple of this (within the model's context)


def encode_texts(texts: Sequence[str], tokenizer: str) -> list[list[int]]:
    """Token ids of each text on its own (no separator)."""
    if tokenizer == "bytes":
        return [bytelevel.encode_document(t).tolist() for t in texts]
    if tokenizer == "gpt2":
        return tok.gpt2_encoding().encode_ordinary_batch(list(texts))
    raise SpeedrunError(f"unknown tokenizer {tokenizer!r} (known: "
                        f"{', '.join(bytelevel.TOKENIZERS)})")


@dataclass(frozen=True)
class Rows:
    """Every ending of every example as one row: inputs, targets and the ending's mask."""

    inputs: np.ndarray  # (4 N, L) int32
    targets: np.ndarray  # (4 N, L) int32
    mask: np.ndarray  # (4 N, L) float32: 1 where the target is one of the ending's tokens
    labels: np.ndarray  # (N,)
    truncated: int  # examples with a row cut on the left to fit the model's context


def render(examples: Sequence[data.Example], tokenizer: str, seq_len: int) -> Rows:
    """The rows of ``examples`` (see the module docstring), right-padded with zeros."""
    contexts = encode_texts([e.ctx for e in examples], tokenizer)
    endings = encode_texts([" " + end for e in examples for end in e.endings], tokenizer)
    rows, cut = [], set()
    for i, ctx in enumerate(contexts):
        for j in range(data.ENDINGS):
            end = endings[data.ENDINGS * i + j]
            full = ctx + end
            if len(full) > seq_len + 1:
                full, cut = full[-(seq_len + 1):], cut | {i}
            rows.append((full, min(len(end), len(full) - 1)))
    longest = max(len(full) - 1 for full, _ in rows)
    L = min(seq_len, -(-longest // ALIGN) * ALIGN)
    inputs = np.zeros((len(rows), L), np.int32)
    targets = np.zeros((len(rows), L), np.int32)
    mask = np.zeros((len(rows), L), np.float32)
    for r, (full, scored) in enumerate(rows):
        n = len(full) - 1
        inputs[r, :n], targets[r, :n] = full[:-1], full[1:]
        mask[r, n - scored:n] = 1.0
    return Rows(inputs, targets, mask, np.array([e.label for e in examples]), len(cut))


def make_scorer(m: Model, rows: int, length: int):
    """jit(params, inputs, targets) -> the next-token loss at every position (rows, length),
    the logits formed a group of rows at a time."""
    cfg = m.cfg.model
    group = max(g for g in range(1, rows + 1)
                if rows % g == 0 and (g == 1 or g * length * cfg.vocab_size <= LOGITS_PER_CHUNK))

    def losses(params, x, y):
        h, p = M.forward(params, x, cfg, m.hooks)

        def one(hy):
            z = M.output_logits(hy[0], p, m.hooks)
            return jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, hy[1][..., None], -1)[..., 0]

        hs = h.reshape(rows // group, group, length, h.shape[-1])
        return jax.lax.map(one, (hs, y.reshape(rows // group, group, length))).reshape(rows, length)

    return jax.jit(losses)


@dataclass(frozen=True)
class Score:
    summed: np.ndarray  # (N, 4): each ending's summed loss over its tokens (nats)
    tokens: np.ndarray  # (N, 4): each ending's tokens scored
    labels: np.ndarray  # (N,)
    truncated: int

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def mean(self) -> np.ndarray:
        return self.summed / self.tokens

    @property
    def acc(self) -> float:
        return float(np.mean(np.argmin(self.summed, axis=1) == self.labels))

    @property
    def acc_norm(self) -> float:
        return float(np.mean(np.argmin(self.mean, axis=1) == self.labels))

    def se(self, p: float) -> float:
        return math.sqrt(p * (1 - p) / self.n)

    def summary(self) -> dict:
        return {"examples": self.n, "acc_norm": round(self.acc_norm, 6),
                "acc_norm_se": round(self.se(self.acc_norm), 6), "acc": round(self.acc, 6),
                "acc_se": round(self.se(self.acc), 6), "truncated": self.truncated}

    def line(self) -> str:
        cut = (f"; {self.truncated:,} contexts cut on the left to the model's context"
               if self.truncated else "")
        return (f"acc_norm {self.acc_norm:.4f} ± {self.se(self.acc_norm):.4f} (lowest mean loss "
                f"per ending token), acc {self.acc:.4f} ± {self.se(self.acc):.4f} (lowest summed "
                f"loss) over {self.n:,} examples; chance 0.25{cut}")


def score(m: Model, examples: Sequence[data.Example], quiet: bool = False) -> Score:
    """Score every example with ``m`` (its params on a device), in batches of fixed shape."""
    from tqdm import tqdm

    if not examples:
        raise SpeedrunError("no HellaSwag example to score")
    rows = render(examples, m.tokenizer, m.seq_len)
    R = data.ENDINGS * EXAMPLES_PER_BATCH
    total, length = rows.inputs.shape
    fn = make_scorer(m, R, length)
    summed = np.zeros(total, np.float64)
    for start in tqdm(range(0, total, R), desc="hellaswag", unit="batch", disable=quiet or None,
                      file=sys.stderr):
        stop = min(start + R, total)
        x = np.zeros((R, length), np.int32)
        y = np.zeros((R, length), np.int32)
        x[: stop - start], y[: stop - start] = rows.inputs[start:stop], rows.targets[start:stop]
        per_token = np.asarray(fn(m.params, x, y), np.float64)[: stop - start]
        summed[start:stop] = (per_token * rows.mask[start:stop]).sum(axis=1)
    shape = (len(examples), data.ENDINGS)
    return Score(summed.reshape(shape), rows.mask.sum(axis=1).reshape(shape), rows.labels,
                 rows.truncated)


def on_device(m: Model) -> Model:
    """The model with host copies of its parameters on the default device (parameters a run
    left sharded over a mesh, or numpy arrays from a checkpoint)."""
    params = jax.tree_util.tree_map(checkpoint.host_array, m.params)
    return Model(jax.device_put(params), m.cfg, m.hooks, m.tokenizer)


# --- what a run records ------------------------------------------------------------------------


def record_field(examples: data.Examples, seeds: dict[int, Score]) -> dict:
    """The record's optional ``hellaswag`` field: information, never a rule."""
    return {"examples": len(examples.items), "sha256": examples.sha256,
            "seeds": [{"seed": seed, **s.summary()} for seed, s in sorted(seeds.items())]}
