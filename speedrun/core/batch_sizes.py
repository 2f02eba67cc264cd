"""Each step's global batch size, and the train tokens seen before each step.

``train.batch_size`` sequences every step, unless a trick sets the ``batch_schedule`` extra
(RunConfig -> step -> batch size): the train loop compiles one step per distinct size, and a
record counts (and ``verify`` re-derives) the tokens actually seen.
"""

from __future__ import annotations

import numpy as np

from speedrun.config import RunConfig


def batch_sizes(cfg: RunConfig, hooks) -> list[int]:
    """Global batch size (sequences) of every step 0 .. steps - 1."""
    schedule = hooks.extra("batch_schedule")
    if schedule is None:
        return [cfg.train.batch_size] * cfg.train.steps
    fn = schedule(cfg)
    return [int(fn(s)) for s in range(cfg.train.steps)]


def row_tokens(cfg: RunConfig) -> int:
    """Tokens per row of a batch: the model's context, or a post-training run's row length."""
    return cfg.post.seq_len if cfg.post is not None else cfg.model.seq_len


def tokens_seen(cfg: RunConfig, hooks) -> list[int]:
    """Train tokens consumed before each step 0 .. steps (cumulative, length steps + 1)."""
    return [0] + [int(n) * row_tokens(cfg) for n in np.cumsum(batch_sizes(cfg, hooks))]
