"""Deterministic batches from memory-mapped shards.

The train split is one logical token stream (the shards concatenated). A *window* is seq_len+1
consecutive tokens (inputs + the shifted targets); windows start every seq_len tokens, or at
every document start (EOT; ``doc_sep`` for byte shards) with ``align_docs``. Each epoch visits
all windows in a permutation seeded by (seed, epoch), and step s takes windows s*B .. s*B+B-1
of that endless sequence. So a batch is a pure function of (data, seed, step, batch_size,
seq_len, align_docs): a run can resume at any step and a re-run reproduces every batch.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from speedrun.data import EOT, shards
from speedrun.errors import SpeedrunError

Batch = tuple[np.ndarray, np.ndarray]  # (inputs, targets), int32 (rows, seq_len)


class TokenStream:
    """Shards as one read-only token sequence, without loading them into memory."""

    def __init__(self, files: Sequence[str | os.PathLike]):
        if not files:
            raise SpeedrunError("no shard files given")
        self.files = tuple(files)
        self.parts = [shards.read_shard(f) for f in self.files]
        self.offsets = np.cumsum([0] + [p.size for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length), across shard boundaries if needed."""
        out = []
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while length > 0:
            local = start - int(self.offsets[k])
            piece = self.parts[k][local:local + length]
            out.append(piece)
            start, length, k = start + piece.size, length - piece.size, k + 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def eot_positions(self, sep: int = EOT) -> np.ndarray:
        """Positions of every separator (EOT, or BYTE_SEP in byte shards) in the stream: the
        document starts, scanned shard by shard."""
        return np.concatenate([np.flatnonzero(p == sep) + int(o)
                               for p, o in zip(self.parts, self.offsets)]).astype(np.int64)


class TrainLoader:
    """``batch(step)`` -> (inputs, targets) of shape (batch_size, seq_len), int32."""

    def __init__(self, files: Sequence[str | os.PathLike], batch_size: int, seq_len: int,
                 seed: int, align_docs: bool = False, doc_sep: int = EOT):
        if batch_size < 1 or seq_len < 1:
            raise SpeedrunError(f"batch_size and seq_len must be positive, got {batch_size}, "
                                f"{seq_len}")
        if seed < 0:
            raise SpeedrunError(f"seed must be non-negative, got {seed}")
        self.stream = TokenStream(files)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.align_docs = align_docs
        last_start = len(self.stream) - (seq_len + 1)  # a window needs seq_len+1 tokens
        if align_docs:
            eots = self.stream.eot_positions(doc_sep)
            self.starts = eots[eots <= last_start]
        else:
            self.starts = np.arange(0, max(last_start + 1, 0), seq_len, dtype=np.int64)
        if self.starts.size == 0:
            what = "no document start (EOT) with" if align_docs else "fewer than"
            raise SpeedrunError(f"train split has {len(self.stream):,} tokens: {what} "
                                f"{seq_len + 1} tokens (one sequence) after it")
        self._perms: dict[int, np.ndarray] = {}

    @property
    def n_windows(self) -> int:
        """Distinct sequences per epoch."""
        return int(self.starts.size)

    @property
    def epoch_steps(self) -> float:
        """Steps per pass over the data (batches may straddle epochs)."""
        return self.n_windows / self.batch_size

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # steps move forward: keep this epoch and the next
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.n_windows)
        return self._perms[epoch]

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> Batch:
        """Rows process_index::process_count of the global batch for ``step``."""
        if step < 0:
            raise SpeedrunError(f"step must be non-negative, got {step}")
        return self.rows(step * self.batch_size, self.batch_size, process_index, process_count)

    def rows(self, first: int, n: int, process_index: int = 0, process_count: int = 1) -> Batch:
        """Rows process_index::process_count of the n sequences first .. first+n-1 of the
        endless sequence ``batch`` takes its batches from (for batch sizes that vary by step)."""
        if n % process_count or not 0 <= process_index < process_count:
            raise SpeedrunError(f"batch_size={n} cannot be split over "
                                f"{process_count} processes (process {process_index})")
        rows = first + np.arange(process_index, n, process_count)
        epochs, positions = np.divmod(rows, self.n_windows)
        windows = np.stack([
            self.stream.read(int(self.starts[self._permutation(int(e))[p]]), self.seq_len + 1)
            for e, p in zip(epochs, positions)])
        windows = windows.astype(np.int32)
        return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def val_token_count(files: Sequence[str | os.PathLike], n_tokens: int, seq_len: int) -> int:
    """Input tokens validation scores: ``n_tokens`` capped at what the split holds (one extra
    token is needed for the last target), rounded down to whole sequences."""
    available = sum(shards.shard_tokens(f) for f in files) - 1
    n_seqs = min(n_tokens, available) // seq_len
    if n_seqs < 1:
        raise SpeedrunError(f"validation needs at least {seq_len + 1} tokens (one sequence); "
                            f"the val split has {available + 1:,} and {n_tokens:,} were asked")
    return n_seqs * seq_len


def val_batches(files: Sequence[str | os.PathLike], n_tokens: int, batch_size: int,
                seq_len: int) -> list[Batch]:
    """The first ``val_token_count`` tokens of the val split as consecutive sequences, in fixed
    order, ``batch_size`` sequences per batch (the last batch may be smaller)."""
    count = val_token_count(files, n_tokens, seq_len)
    tokens = TokenStream(files).read(0, count + 1).astype(np.int32)
    inputs = tokens[:-1].reshape(-1, seq_len)
    targets = tokens[1:].reshape(-1, seq_len)
    return [(inputs[i:i + batch_size], targets[i:i + batch_size])
            for i in range(0, inputs.shape[0], batch_size)]
