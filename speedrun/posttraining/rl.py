"""Reinforcement learning on verifiable rewards: on-policy policy gradient as nanochat does it.

Every step draws ``train.batch_size / post.samples`` prompts from the task's train split and
samples ``post.samples`` answers to each with the current model (the KV-cache sampler, at
``post.temperature`` and ``post.top_k``; this sampling is training time). Each answer's reward
is the task's scorer; its advantage is the reward minus its group's mean (divided by the group's
std with ``post.adv_norm``), so a prompt every answer gets right, or wrong, teaches nothing.
The loss is -advantage x log p(token) summed over every answer token (the end token included
when the model wrote it) and divided by the answer tokens of the batch (token-level), with
optionally ``post.kl`` x a KL estimate to the start model. No ratio clipping, no value model:
on-policy REINFORCE with a group-mean baseline.
"""

from __future__ import annotations

import jax
import numpy as np

from speedrun.inference import generate as G
from speedrun.posttraining import chat, objective
from speedrun.posttraining.loop import as_batch
from speedrun.posttraining.sft import stream
from speedrun.posttraining.tasks.base import Task


def advantages(rewards: np.ndarray, samples: int, normalise: bool) -> np.ndarray:
    """Per answer: reward minus its group's mean (groups of ``samples`` consecutive answers)."""
    r = rewards.reshape(-1, samples)
    a = r - r.mean(axis=1, keepdims=True)
    if normalise:
        a = a / (r.std(axis=1, keepdims=True) + 1e-6)
    return a.reshape(-1)


def rows(prompts: list[list[int]], answers: list[list[int]], stopped: list[bool], end: int,
         pad: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (N, width + 1), mask of the trained targets): prompt then answer (then the end
    token when the model wrote it), padded; the answer's tokens are the trained targets."""
    ids = np.full((len(prompts), width + 1), pad, np.int32)
    mask = np.zeros((len(prompts), width + 1), np.int32)
    for i, (p, a, done) in enumerate(zip(prompts, answers, stopped)):
        row = [*p, *a, *([end] if done else [])][: width + 1]
        ids[i, :len(row)] = row
        mask[i, len(p):len(row)] = 1
    return ids, mask


def batches(task: Task, seed: int, model: G.Model, start_params, cfg) -> callable:
    """next_batch(params, step) for the post-training loop: answers sampled with ``params``."""
    post = cfg.post
    n_prompts = cfg.train.batch_size // post.samples
    sp = chat.specials(model.tokenizer, model.cfg.model.vocab_size)
    examples = stream(task, seed)
    sampling = G.Sampling(post.temperature, post.top_k)
    max_new = min(task.max_new_tokens, post.seq_len // 2)
    ref_fn = jax.jit(lambda p, x, y: objective.token_logprobs(p, x, y, cfg, model.hooks)) \
        if post.kl else None

    def next_batch(params, step):
        group = [next(examples) for _ in range(n_prompts)]
        asked = [chat.prompt(e.question, model.tokenizer, model.cfg.model.vocab_size)
                 for e in group]
        width = post.seq_len - max_new  # prompts padded to one width: one compiled sampler
        if max(map(len, asked)) > width:
            asked = [a[-width:] for a in asked]  # an over-long prompt keeps its end
        prompts = [p for p in asked for _ in range(post.samples)]
        policy = G.Model(params, model.cfg, model.hooks, model.tokenizer)
        out = G.generate(policy, prompts, max_new, sampling, seed=seed * 100_003 + step,
                         stop=sp.assistant_end, width=width)
        texts = [chat.completion(a, model.tokenizer, model.cfg.model.vocab_size) for a in out]
        reward = np.array([task.score(t, e) for t, e in
                           zip(texts, [e for e in group for _ in range(post.samples)])])
        adv = advantages(reward, post.samples, post.adv_norm)
        ids, mask = rows(prompts, out, [len(a) < max_new for a in out], sp.assistant_end,
                         sp.bos, post.seq_len)
        x, y, m = ids[:, :-1], ids[:, 1:], mask[:, 1:]
        ref = None if ref_fn is None else np.asarray(ref_fn(start_params, x, y))
        b = as_batch(x, y, adv[:, None] * m, m, ref)
        solved = (reward.reshape(-1, post.samples).max(axis=1) > 0).mean()
        return b, f" mean_reward:{reward.mean():.4f} prompts_solved:{solved:.3f}"

    return next_batch
