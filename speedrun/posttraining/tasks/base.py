"""What every task is made of: examples, the scorer, the train / held-out split.

An example belongs to the held-out split when a hash of its key says so (one key in
``HELDOUT_ONE_IN``), so the train and held-out examples never share a key, whatever the seeds
and counts asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from speedrun.errors import SpeedrunError

SPLITS = ("train", "heldout")
HELDOUT_ONE_IN = 5  # a fifth of all keys are held out


@dataclass(frozen=True)
class Example:
    messages: tuple  # the conversation: user turns and the reference assistant turns
    answer: str  # what the last assistant turn must say (its scorer's reference)
    key: str  # identifies the example: the split is a hash of it

    @property
    def question(self) -> tuple:
        """The conversation up to (without) the last assistant turn."""
        return self.messages[:-1]


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    generate: Callable[[np.random.Generator], Example] | None  # one random example
    score: Callable[[str, Example], float]  # completion -> reward in [0, 1]
    max_new_tokens: int  # an answer never needs more (generation stops there)
    source: str = ""
    # a fixed list of examples instead of a generator (user data): split by key, drawn in order
    fixed: Sequence[Example] = field(default_factory=tuple)

    def examples(self, split: str, seed: int, n: int) -> list[Example]:
        """``n`` distinct examples of ``split``, drawn with ``seed``."""
        if split not in SPLITS:
            raise SpeedrunError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if self.fixed:
            pool = [e for e in self.fixed if split_of(e.key) == split]
            if not pool:
                raise SpeedrunError(f"task {self.name}: its {split} split is empty (it holds "
                                    f"{len(self.fixed)} example(s); a fifth go to held-out)")
            order = np.random.default_rng(seed).permutation(len(pool))
            return [pool[i] for i in order[:n]]
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        out, seen = [], set()
        for _ in range(200 * n + 1000):
            e = self.generate(rng)
            if e.key not in seen and split_of(e.key) == split:
                seen.add(e.key)
                out.append(e)
                if len(out) == n:
                    return out
        raise SpeedrunError(f"task {self.name}: only {len(out)} distinct {split} examples found "
                            f"of the {n} asked for")


def split_of(key: str) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return "heldout" if h % HELDOUT_ONE_IN == 0 else "train"


def fingerprint(examples: Sequence[Example]) -> str:
    """sha256 of a list of examples (questions and answers, in order): what a track pins."""
    h = hashlib.sha256()
    for e in examples:
        h.update(repr((e.messages, e.answer)).encode())
    return h.hexdigest()


def conversation(question: str, answer: str) -> tuple:
    return ({"role": "user", "content": question}, {"role": "assistant", "content": answer})


def exact(completion: str, example: Example) -> float:
    """1 when the completion, stripped, is the answer exactly."""
    return float(completion.strip() == example.answer)
