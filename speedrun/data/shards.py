"""Token shards in the llm.c / modded-nanogpt format.

A shard is a header of 256 little-endian int32 (magic 20240520, version 1, token count, then
zeros) followed by the tokens as little-endian uint16. Documents are separated by EOT.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedrun.data import EOT
from speedrun.errors import SpeedrunError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
_COUNT_CHUNK = 1 << 24  # tokens per chunk when counting documents, to bound memory


class ShardError(SpeedrunError):
    """A shard file is missing or does not follow the format."""


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    n_tokens: int
    n_docs: int  # number of separator tokens (each document starts with one; EOT by default)


def write_shard(path: str | os.PathLike, tokens) -> Path:
    """Write tokens as a shard, atomically: readers see the old file or the whole new one."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"{path}: tokens must be a 1-D array, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise ShardError(f"{path}: tokens must be integers, got dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise ShardError(f"{path}: token ids must fit in uint16 (0..65535), "
                         f"got range {tokens.min()}..{tokens.max()}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, [header.tobytes(), tokens.astype(TOKEN_DTYPE, copy=False).tobytes()])
    return path


def atomic_write(path: Path, chunks: list[bytes]) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def shard_tokens(path: str | os.PathLike) -> int:
    """Check a shard's header against its size (without reading the tokens); return the count."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"{path}: shard file not found")
    if not path.is_file():
        raise ShardError(f"{path}: not a file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({size} bytes; a shard header is "
                         f"{HEADER_BYTES} bytes)")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, n = (int(v) for v in header[:3])
    if magic != MAGIC:
        raise ShardError(f"{path}: not a token shard (bad magic number: expected {MAGIC}, "
                         f"got {magic})")
    if version != VERSION:
        raise ShardError(f"{path}: unsupported shard version {version} (supported: {VERSION})")
    if n < 0:
        raise ShardError(f"{path}: corrupt header (negative token count {n})")
    body = size - HEADER_BYTES
    expected = n * TOKEN_DTYPE.itemsize
    if body < expected:
        raise ShardError(f"{path}: truncated: header says {n:,} tokens but file holds "
                         f"{body // TOKEN_DTYPE.itemsize:,}")
    if body > expected:
        raise ShardError(f"{path}: trailing bytes: header says {n:,} tokens but the file has "
                         f"{body - expected:,} bytes after them")
    return n


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memory map (nothing is loaded eagerly)."""
    n = shard_tokens(path)
    if n == 0:  # mmap cannot map zero bytes
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))


def validate_shard(path: str | os.PathLike, sep: int = EOT, vocab: int | None = None) -> ShardInfo:
    """Full check of one shard; counts its documents (reads every token once). ``sep`` is the
    document separator: EOT for GPT-2 shards, ``bytelevel.BYTE_SEP`` for byte shards. With
    ``vocab``, every token must be below it (an id outside the tokenizer is corruption)."""
    tokens = read_shard(path)
    n_docs = 0
    for i in range(0, tokens.size, _COUNT_CHUNK):
        chunk = tokens[i:i + _COUNT_CHUNK]
        n_docs += int(np.count_nonzero(chunk == sep))
        if vocab is not None and chunk.size and int(chunk.max()) >= vocab:
            bad = i + int(np.flatnonzero(chunk >= vocab)[0])
            raise ShardError(f"{path}: token {int(tokens[bad])} at position {bad:,} is outside "
                             f"the vocabulary (0..{vocab - 1})")
    return ShardInfo(path=Path(path), n_tokens=int(tokens.size), n_docs=n_docs)
