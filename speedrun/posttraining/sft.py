"""Supervised fine-tuning batches: a task's train conversations, packed into rows, the loss on
the assistant's tokens only.

Conversations are drawn from the task's train split (a stream fixed by the seed) and packed
whole into rows of ``post.seq_len + 1`` tokens, each starting with the separator token as every
pretraining document did; a conversation that no longer fits starts the next row, the rest of the
row is padding (weight 0), and one longer than a row is cut. A row's targets are its tokens
shifted by one; a target is trained (weight 1) when it is an assistant token or the assistant's
end token. nanochat packs the same way (best fit, padded, never cropped mid-row).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from speedrun.posttraining import chat
from speedrun.posttraining.loop import as_batch
from speedrun.posttraining.tasks.base import Example, Task


def stream(task: Task, seed: int, split: str = "train") -> Iterator[Example]:
    """An endless sequence of the split's examples, fixed by the seed (with repeats)."""
    chunk = 0
    while True:
        yield from task.examples(split, seed * 1_000_003 + chunk, 512)
        chunk += 1


class Packer:
    """Rows of packed conversations: ``next(rows) -> (tokens, mask)`` of (rows, seq_len + 1)."""

    def __init__(self, examples: Iterator[Example], tokenizer: str, vocab: int, seq_len: int):
        self.examples, self.tokenizer, self.vocab, self.width = examples, tokenizer, vocab, seq_len + 1
        self.pending: tuple[np.ndarray, np.ndarray] | None = None
        self.pad = chat.specials(tokenizer, vocab).bos

    def _next_conversation(self):
        if self.pending is not None:
            out, self.pending = self.pending, None
            return out
        ids, mask = chat.render(next(self.examples).messages, self.tokenizer, self.vocab)
        return ids[: self.width], mask[: self.width]

    def row(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full(self.width, self.pad, np.int32)
        mask = np.zeros(self.width, np.int32)
        used = 0
        while True:
            conv_ids, conv_mask = self._next_conversation()
            if used + len(conv_ids) > self.width:
                if used == 0:  # cannot happen: a conversation is cut to a row
                    raise AssertionError("a conversation longer than a row")
                self.pending = (conv_ids, conv_mask)
                return ids, mask
            ids[used:used + len(conv_ids)] = conv_ids
            mask[used:used + len(conv_mask)] = conv_mask
            used += len(conv_ids)

    def batch(self, rows: int) -> dict:
        ids, mask = zip(*(self.row() for _ in range(rows)))
        ids, mask = np.stack(ids), np.stack(mask)
        return as_batch(ids[:, :-1], ids[:, 1:], mask[:, 1:], mask[:, 1:])


def batches(task: Task, seed: int, tokenizer: str, vocab: int, rows: int, seq_len: int):
    """next_batch(params, step) for the post-training loop: packed rows, weights = mask."""
    packer = Packer(stream(task, seed), tokenizer, vocab, seq_len)

    def next_batch(params, step):
        b = packer.batch(rows)
        return b, f" trained_tokens:{int(b['norm'])}"

    return next_batch
