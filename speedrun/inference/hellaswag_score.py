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
cut on the left, and the count of such examples is reported. The work is only what the rule
reads: rows are sorted by length and batched (``Batching``), each batch right-padded to its
own longest row (rounded up, so few shapes compile), and the output head (with the logits
hook) is applied only at the positions whose targets are an ending's tokens, their hidden
states gathered first, about 170 at a time at a 50K vocabulary (whose logits for a whole
batch would not fit). The forward pass, head and logits are the model's own (``model.forward`` and
``model.output_logits``, every hook), read as the validation loss reads them: the plain
next-token loss, whatever the ``loss`` hook trains on (e.g. multi-token prediction).
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

@dataclass(frozen=True)
class Batching:
    """How rows are grouped into compiled shapes. Rows are sorted by length and taken ``rows``
    at a time (a fixed count, so memory is bounded whatever the lengths); each batch is padded
    to its longest row rounded up to a multiple of ``align``, so at most ``seq_len / align``
    shapes compile (5 for HellaSwag's GPT-2 rows, at most 151 tokens), each wasting fewer than
    ``align`` positions per row; powers of two would save a compile or two but pad the common
    rows (median 86 tokens) up to 128. The logits are formed ``logits`` float32 values at a
    time."""

    rows: int = 64
    align: int = 32
    # 32 MB: about 170 positions of a 50K vocabulary. On a 2-core CPU, 128 MB chunks scored
    # measurably slower (each written out and read back far beyond the caches); 8 MB no faster.
    logits: int = 1 << 23

    def positions_per_chunk(self, vocab: int) -> int:
        return max(1, self.logits // vocab)


BATCHING = Batching()


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
    """Every ending of every example as one row: its tokens and how many of its last targets
    are the ending's (the positions scored)."""

    tokens: tuple[np.ndarray, ...]  # row 4 i + j: example i's context + ending j, int32
    scored: np.ndarray  # (4 N,) int: the ending's tokens among the row's targets
    labels: np.ndarray  # (N,)
    truncated: int  # examples with a row cut on the left to fit the model's context

    @property
    def lengths(self) -> np.ndarray:
        """(4 N,) each row's input positions (its tokens but the last)."""
        return np.array([len(t) - 1 for t in self.tokens])


def render(examples: Sequence[data.Example], tokenizer: str, seq_len: int) -> Rows:
    """The rows of ``examples`` (see the module docstring), each at most ``seq_len`` + 1 tokens."""
    contexts = encode_texts([e.ctx for e in examples], tokenizer)
    endings = encode_texts([" " + end for e in examples for end in e.endings], tokenizer)
    rows, scored, cut = [], [], set()
    for i, ctx in enumerate(contexts):
        for j in range(data.ENDINGS):
            end = endings[data.ENDINGS * i + j]
            full = ctx + end
            if len(full) > seq_len + 1:
                full, cut = full[-(seq_len + 1):], cut | {i}
            rows.append(np.array(full, np.int32))
            scored.append(min(len(end), len(full) - 1))
    return Rows(tuple(rows), np.array(scored), np.array([e.label for e in examples]), len(cut))


@dataclass(frozen=True)
class Batch:
    """Rows scored together: the inputs, and the scored positions gathered into (chunks,
    per chunk) slots, padded with position 0 and target 0 (their losses are dropped). Only
    the first ``chunks`` chunks hold scored positions: the others are not computed."""

    inputs: np.ndarray  # (rows, L) int32, right-padded with zeros
    at: np.ndarray  # (n, c) int32: flat index r * L + t of each scored position
    targets: np.ndarray  # (n, c) int32: the token expected there
    owner: np.ndarray  # (used slots,) the Rows index each of the first slots belongs to

    @property
    def chunks(self) -> int:
        return -(-len(self.owner) // self.at.shape[1])


def round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def slots(need: int, per_chunk: int) -> tuple[int, int]:
    """(chunks, positions per chunk) holding ``need`` positions: chunks of ``per_chunk``
    (rounded down to a multiple of 8), or one chunk of ``need`` rounded up to 8 if smaller."""
    c = min(round_up(need, 8), max(8, per_chunk // 8 * 8))
    return -(-need // c), c


def batches(rows: Rows, b: Batching, seq_len: int, vocab: int) -> list[Batch]:
    """The rows, shortest first, ``b.rows`` a batch. One shape per padded length: every batch
    of that length gets the slots the most demanding of them needs (so the scorer compiles once
    per length), and computes only the chunks its own positions fill."""
    lengths = rows.lengths
    order = np.argsort(lengths, kind="stable")
    groups = [order[i:i + b.rows] for i in range(0, len(order), b.rows)]
    padded = [min(seq_len, round_up(int(lengths[g].max()), b.align)) for g in groups]
    need: dict[int, int] = {}
    for g, L in zip(groups, padded):
        need[L] = max(need.get(L, 0), int(rows.scored[g].sum()))
    shape = {L: slots(n, b.positions_per_chunk(vocab)) for L, n in need.items()}
    return [fill(rows, g, L, shape[L], b.rows) for g, L in zip(groups, padded)]


def fill(rows: Rows, group: np.ndarray, length: int, shape: tuple[int, int],
         count: int) -> Batch:
    inputs = np.zeros((count, length), np.int32)
    at = np.zeros(shape[0] * shape[1], np.int32)
    targets = np.zeros_like(at)
    owner, used = np.repeat(group, rows.scored[group]), 0
    for i, r in enumerate(group):
        t, s = rows.tokens[r], int(rows.scored[r])
        n = len(t) - 1
        inputs[i, :n] = t[:-1]
        at[used:used + s] = i * length + np.arange(n - s, n)
        targets[used:used + s] = t[n - s + 1:]
        used += s
    return Batch(inputs, at.reshape(shape), targets.reshape(shape), owner)


def make_scorer(m: Model):
    """jit(params, inputs (rows, L), at (n, c), targets (n, c), chunks) -> the next-token loss
    at each scored position (n, c), in the first ``chunks`` chunks (zero after). The forward
    pass runs over every row; the head (and the logits hook, e.g. a softcap) only at the
    gathered positions, c of them at a time, exactly as ``model.output_logits`` forms them at
    every position. ``chunks`` is traced: batches of one shape differ in it without a compile."""
    cfg = m.cfg.model

    def losses(params, x, at, y, chunks):
        h, p = M.forward(params, x, cfg, m.hooks)
        flat = h.reshape(-1, h.shape[-1])

        def one(i, out):
            z = M.output_logits(flat[at[i]][None], p, m.hooks)[0]  # (c, V)
            picked = jnp.take_along_axis(z, y[i][:, None], -1)[:, 0]
            return out.at[i].set(jax.nn.logsumexp(z, -1) - picked)

        return jax.lax.fori_loop(0, chunks, one, jnp.zeros(at.shape, jnp.float32))

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


def score(m: Model, examples: Sequence[data.Example], quiet: bool = False,
          batching: Batching = BATCHING) -> Score:
    """Score every example with ``m`` (its params on a device), batched as ``batching`` says.
    Each batch is read back after the next one is dispatched, so the device never waits on
    the host."""
    from tqdm import tqdm

    if not examples:
        raise SpeedrunError("no HellaSwag example to score")
    rows = render(examples, m.tokenizer, m.seq_len)
    fn = make_scorer(m)
    summed = np.zeros(len(rows.scored), np.float64)

    def read(batch: Batch, out) -> None:
        got = np.asarray(out, np.float64).reshape(-1)[: len(batch.owner)]
        np.add.at(summed, batch.owner, got)

    pending = None
    for batch in tqdm(batches(rows, batching, m.seq_len, m.cfg.model.vocab_size),
                      desc="hellaswag", unit="batch", disable=quiet or None, file=sys.stderr):
        out = fn(m.params, batch.inputs, batch.at, batch.targets, np.int32(batch.chunks))
        if pending:
            read(*pending)
        pending = (batch, out)
    read(*pending)
    shape = (len(examples), data.ENDINGS)
    return Score(summed.reshape(shape), rows.scored.astype(np.float64).reshape(shape),
                 rows.labels, rows.truncated)


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
