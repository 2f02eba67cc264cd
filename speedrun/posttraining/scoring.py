"""How well a model does a task: greedy pass@1, and pass@1 / pass@k from k samples, on a
task's held-out examples, each with its standard error over the examples.

Generation runs through the KV-cache sampler (speedrun.inference.generate): each question is
rendered as a chat prompt primed with <assistant_start>, and an answer ends at <assistant_end>
or after the task's ``max_new_tokens``. pass@k from n samples with c correct is the unbiased
estimator 1 - C(n - c, k) / C(n, k) (Chen et al. 2021), averaged over the examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from speedrun.errors import SpeedrunError
from speedrun.inference import generate as G
from speedrun.posttraining import chat
from speedrun.posttraining.tasks.base import Example, Task


def prompts(m: G.Model, examples: Sequence[Example]) -> list[list[int]]:
    return [chat.prompt(e.question, m.tokenizer, m.cfg.model.vocab_size) for e in examples]


def check_room(task: Task, examples: Sequence[Example], tokenizer: str, vocab_size: int,
               seq_len: int) -> None:
    """Every example's prompt leaves the model room to answer (its context is ``seq_len``
    tokens), and a task of fixed conversations (jsonl) renders whole: known from the text alone,
    so a command says so before anything compiles."""
    for e in task.fixed:
        chat.render(e.messages, tokenizer, vocab_size)
    longest = max((len(chat.prompt(e.question, tokenizer, vocab_size)), i)
                  for i, e in enumerate(examples))
    if longest[0] >= seq_len:
        raise SpeedrunError(f"task {task.name}: a held-out prompt is {longest[0]} tokens long "
                            f"({examples[longest[1]].question[-1]['content'][:40]!r}...); this "
                            f"model reads at most {seq_len} (model.seq_len) and needs room to "
                            f"answer: shorten the conversations, or use a model with a longer "
                            f"context")


def answers(m: G.Model, examples: Sequence[Example], task: Task, sampling: G.Sampling,
            seed: int, batch: int = 64) -> list[str]:
    """One generated answer per example (as text), ``batch`` prompts at a time. Every batch is
    padded to the same shape (rows and prompt width), so one program serves them all."""
    stop = chat.specials(m.tokenizer, m.cfg.model.vocab_size).assistant_end
    asked = prompts(m, examples)
    width, batch = max(map(len, asked)), min(batch, len(asked))
    out = []
    for i in range(0, len(asked), batch):
        part = asked[i:i + batch]
        rows = G.generate(m, part + [part[-1]] * (batch - len(part)), task.max_new_tokens,
                          sampling, seed + i, stop=stop, width=width)
        out += [chat.completion(r, m.tokenizer, m.cfg.model.vocab_size) for r in rows[:len(part)]]
    return out


def rewards(task: Task, examples: Sequence[Example], texts: Sequence[str]) -> np.ndarray:
    return np.array([task.score(t, e) for t, e in zip(texts, examples)], np.float64)


@dataclass(frozen=True)
class Score:
    n: int  # examples
    k: int  # samples per example (1: greedy)
    pass1: float
    pass1_se: float
    passk: float
    passk_se: float


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one example from n samples with c correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0)


def score(m: G.Model, task: Task, examples: Sequence[Example], k: int = 1,
          temperature: float = 1.0, top_k: int = 0, seed: int = 0,
          progress: Callable[[int], None] | None = None) -> Score:
    """Greedy pass@1 when ``k`` is 1; else ``k`` samples per example at ``temperature``."""
    sampling = G.Sampling(0.0) if k == 1 else G.Sampling(temperature, top_k)
    correct = np.zeros(len(examples))
    for j in range(k):
        correct += rewards(task, examples, answers(m, examples, task, sampling, seed + 7919 * j))
        if progress:
            progress(j + 1)
    p1, p1se = mean_se(correct / k)
    pk, pkse = mean_se([pass_at_k(k, int(c), k) for c in correct])
    return Score(len(examples), k, p1, p1se, pk, pkse)
