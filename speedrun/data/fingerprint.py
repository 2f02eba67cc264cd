"""Fingerprints of the data a run used: what a track's rules pin and ``verify`` checks.

Both are sha256 digests of token ids as little-endian uint16, so they do not depend on file
names, shard boundaries or headers:

- train: every token of the train split, shard by shard in order (for a built corpus this equals
  the ``sha256`` its manifest records for the train split);
- val: exactly the tokens the validation scores, inputs and targets: the first
  ``val_token_count + 1`` tokens of the val split (independent of how they are batched).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from speedrun.data import bytelevel, shards


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.asarray(a).astype("<u2").tobytes())
    return h.hexdigest()


def train_sha256(files: Sequence[str | os.PathLike]) -> str:
    # `compare` and `find-steps` prepare several configurations over the same (on FineWeb,
    # gigabytes of) train shards: hash them once per process while the files are unchanged.
    key = tuple((os.fspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
    return _train_sha256(key)


@functools.lru_cache(maxsize=8)
def _train_sha256(files: tuple) -> str:
    return _digest(shards.read_shard(f) for f, _, _ in files)


def val_sha256(batches) -> tuple[int, str]:
    """(tokens scored, fingerprint) of a validation set ``[(inputs, targets), ...]`` built by
    ``loader.val_batches`` (consecutive sequences: inputs then the one extra final target)."""
    inputs = [x.reshape(-1) for x, _ in batches]
    last = batches[-1][1].reshape(-1)[-1:]
    return int(sum(x.size for x in inputs)), _digest([*inputs, last])


# Datasets that come without a manifest of ours, and the tokenizer they are known to use.
KNOWN_TOKENIZERS = {"fineweb10b": "gpt2"}


def tokenizer_of(folder: str | os.PathLike, dataset: str) -> str | None:
    """The tokenizer named in a built dataset's manifest (or known for a downloaded one)."""
    try:
        return json.loads((Path(folder) / "manifest.json").read_text()).get("tokenizer")
    except (OSError, ValueError):
        return KNOWN_TOKENIZERS.get(dataset)


def describe(folder, dataset: str, train_files, val_batches) -> dict:
    """The ``data`` section of a record: what a track's rules are checked against, and
    ``val_bytes``, the UTF-8 bytes of the text the scored tokens stand for (bits per byte =
    mean val loss x val_tokens / val_bytes / ln 2, comparable across tokenizations)."""
    n_val, val_fp = val_sha256(val_batches)
    tokenizer = tokenizer_of(folder, dataset)
    targets = [y.reshape(-1) for _, y in val_batches]
    n_bytes = bytelevel.text_bytes(np.concatenate(targets), tokenizer) if tokenizer else None
    return {"dataset": dataset, "tokenizer": tokenizer, "train_sha256": train_sha256(train_files),
            "val_tokens": n_val, "val_sha256": val_fp, "val_bytes": n_bytes}
