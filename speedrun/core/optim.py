"""Baseline optimizer and learning-rate schedule (llm.c's GPT-2 recipe), built from optax pieces.

AdamW on the hidden weight matrices (and an untied head, if a trick adds one); Adam without
weight decay on embeddings, gains, biases and scalars; global-norm gradient clipping; linear
warm-up then cosine (or linear) decay to ``min_lr_frac`` of the peak at the run's last step
(``train.steps`` is the horizon of every schedule: the run's length, never a budget).
"""

from __future__ import annotations

import jax
import optax

from speedrun.core import params as P
from speedrun.config import RunConfig


def lr_schedule(cfg: RunConfig) -> optax.Schedule:
    """Multiplier (0..1] of each parameter group's peak learning rate, by step."""
    o, steps = cfg.optim, cfg.train.steps
    warm = min(o.warmup_steps, max(steps - 1, 0))
    # Updates are steps 0 .. steps-1; the decay ends exactly at the last one.
    decay_steps = max(steps - 1 - warm, 1)
    if o.decay == "cosine":
        decay = optax.cosine_decay_schedule(1.0, decay_steps, alpha=o.min_lr_frac)
    elif o.decay == "linear":
        decay = optax.linear_schedule(1.0, o.min_lr_frac, decay_steps)
    elif o.decay == "constant":
        decay = optax.constant_schedule(1.0)
    else:
        raise ValueError(f"optim.decay must be cosine, linear or constant, got {o.decay!r}")
    if warm == 0:
        return decay
    # Warm-up starts above zero so step 0 still learns, as llm.c does ((step + 1) / warmup).
    warmup = optax.linear_schedule(1.0 / warm, 1.0, warm)
    return optax.join_schedules([warmup, decay], [warm])


def clip(cfg: RunConfig) -> optax.GradientTransformation:
    c = cfg.optim.grad_clip
    return optax.clip_by_global_norm(c) if c > 0 else optax.identity()


def grouped(params, label_fn, groups: dict[str, optax.GradientTransformation], cfg: RunConfig):
    """Clip, then route each parameter to the transform of its group label."""
    labels = P.label_tree(params, label_fn)
    used = set(jax.tree_util.tree_leaves(labels))
    return optax.chain(clip(cfg), optax.multi_transform({k: groups[k] for k in used}, labels))


def adamw(params, cfg: RunConfig, hooks) -> optax.GradientTransformation:
    o = cfg.optim
    sched = hooks.lr_schedule(cfg)
    lr = lambda step: o.lr * sched(step)  # noqa: E731

    def label(name, leaf):
        return "decay" if P.kind(name, leaf) in ("matrix", "head") else "no_decay"

    groups = {
        "decay": optax.adamw(lr, o.beta1, o.beta2, o.eps, weight_decay=o.weight_decay),
        "no_decay": optax.adam(lr, o.beta1, o.beta2, o.eps),
    }
    return grouped(params, label, groups, cfg)
