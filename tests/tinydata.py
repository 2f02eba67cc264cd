"""Small, learnable token data and a tiny track for end-to-end tests (no network, seconds to train).

Tokens follow a noisy deterministic chain (next = 5 * prev + 3 mod 61 nine times in ten), so a
2-layer model's loss falls quickly from ln(vocab) toward the chain's entropy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from speedrun import tracks
from speedrun.config import ModelConfig, OptimConfig, RunConfig, TrainConfig
from speedrun.data import shards

EOT = 50256
DATASET = "tiny"


def chain_tokens(n: int, seed: int, doc_len: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n, np.int64)
    prev = 0
    for i in range(n):
        if i % doc_len == 0:
            out[i] = EOT  # document separator, as in FineWeb shards
            prev = int(rng.integers(61))
            continue
        prev = (5 * prev + 3) % 61 if rng.random() < 0.9 else int(rng.integers(61))
        out[i] = prev
    return out


def write_dataset(data_dir: Path, train_tokens: int = 60_000, val_tokens: int = 4_096) -> Path:
    folder = Path(data_dir) / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    shards.write_shard(folder / f"{DATASET}_train_000000.bin", chain_tokens(train_tokens, 1))
    shards.write_shard(folder / f"{DATASET}_val_000000.bin", chain_tokens(val_tokens, 2))
    (folder / "manifest.json").write_text('{"tokenizer": "gpt2"}\n')  # what the rules check
    return folder


# EOT (50256) must be a valid id, so the vocabulary stays GPT-2's; the model is tiny elsewhere.
TINY = tracks.Track(
    name="tiny",
    dataset=DATASET,
    summary="synthetic chain tokens for tests",
    where="tests",
    data_command="(tests write it)",
    config=RunConfig(
        track="tiny",
        model=ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=32),
        optim=OptimConfig(lr=1e-2, warmup_steps=5, weight_decay=0.0, min_lr_frac=0.1),
        train=TrainConfig(batch_size=8, steps=40, eval_every=10, val_tokens=1024,
                          val_batch_size=8, target=3.0, loss_chunk=64, log_every=5),
    ),
    rules=tracks.Rules(target=3.0, val_tokens=1024, tokenizer="gpt2", vocab=50257),
)


def tiny_config(**train_changes) -> RunConfig:
    cfg = TINY.config
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_changes))
