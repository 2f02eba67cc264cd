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

from speedrun.data import bytelevel, corpus, shards


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


# --- a shard file on its own: its tokenizer and checksum, from the manifest beside it ------------


def _manifest(shard: Path) -> dict:
    try:
        manifest = json.loads((shard.parent / "manifest.json").read_text())
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        return {}


def tokenizer_for(shard: Path) -> tuple[str, str]:
    """(the shard's tokenizer, how it is known): the manifest beside it names it; without one,
    the tokens tell: a shard whose every id is below 256 is read as bytes (a GPT-2 shard holds
    its separator 50256), else GPT-2."""
    named = _manifest(shard).get("tokenizer")
    if named in corpus.VOCAB:
        return named, "manifest.json"
    try:
        tokens = shards.read_shard(shard)
    except (shards.ShardError, OSError):
        return "gpt2", "no manifest.json"  # validation reports what is wrong with the file
    if tokens.size and int(tokens.max()) < bytelevel.BYTE_VOCAB:
        return "bytes", "no manifest.json; every id is below 256, so read as bytes"
    return "gpt2", "no manifest.json; read as GPT-2 tokens"


def expected_sha256(shard: Path) -> str | None:
    """The file's sha256 as the manifest beside it records it (None where it records none)."""
    try:
        for entry in _manifest(shard).get("splits", {}).values():
            if shard.name in entry.get("files", []) and entry.get("file_sha256"):
                return entry["file_sha256"][entry["files"].index(shard.name)]
    except (AttributeError, TypeError, IndexError):
        pass
    return None


def check_shard(shard: Path) -> str:
    """What `data check` says of a valid shard (its tokens and documents, and how its tokenizer
    is known); raises shards.ShardError naming what is wrong (OSError: it cannot be read)."""
    tokenizer, how = tokenizer_for(shard)
    info = shards.validate_shard(shard, bytelevel.separator(tokenizer),
                                 corpus.VOCAB.get(tokenizer))
    want = expected_sha256(shard)
    if want and corpus.file_sha256(shard) != want:
        raise shards.ShardError(f"{shard}: checksum does not match manifest.json (the file "
                                f"changed after it was built; rebuild it)")
    note = "" if how == "manifest.json" else f" ({how})"
    return f"{info.n_tokens:,} tokens, {info.n_docs:,} documents{note}"
