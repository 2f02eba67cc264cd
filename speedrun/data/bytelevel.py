"""Byte-level tokenization: a document's token ids are its UTF-8 bytes, 0..255.

The text never contains byte 0 (NUL; asserted when encoding), so byte 0 is free to serve as
the document separator, placed before every document as FineWeb places <|endoftext|>. The
vocabulary is the 256 byte values, already a multiple of 128, so a model needs no padding.

``text_bytes`` and ``bits_per_byte`` put losses of either tokenizer on one scale.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable

import numpy as np

from speedrun.data import EOT, tokenizer
from speedrun.errors import SpeedrunError

BYTE_SEP = 0  # document separator of byte shards; precedes every document
BYTE_VOCAB = 256  # byte values 0..255; a multiple of 128 as it is
TOKENIZERS = ("gpt2", "bytes")


def separator(tokenizer: str) -> int:
    """The token that starts every document in shards of this tokenizer."""
    if tokenizer == "gpt2":
        return EOT
    if tokenizer == "bytes":
        return BYTE_SEP
    raise SpeedrunError(f"unknown tokenizer {tokenizer!r} (known: {', '.join(TOKENIZERS)})")


def encode_document(text: str) -> np.ndarray:
    """The UTF-8 bytes of ``text`` as uint16 token ids (no separator)."""
    data = text.encode("utf-8")
    if b"\0" in data:
        raise SpeedrunError(f"a document contains the byte 0 (NUL), which byte shards use as "
                            f"the document separator: {text[:60]!r}...")
    return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)


def encode_documents(texts: Iterable[str]) -> list[np.ndarray]:
    return [encode_document(t) for t in texts]


def decode_documents(tokens) -> list[str]:
    """The documents of a byte token stream that starts with BYTE_SEP, as text."""
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        return []
    if tokens[0] != BYTE_SEP:
        raise SpeedrunError("a byte token stream must start with the separator (byte 0)")
    if tokens.max() >= BYTE_VOCAB:
        raise SpeedrunError(f"not byte tokens: found id {int(tokens.max())} (>= {BYTE_VOCAB})")
    data = tokens.astype(np.uint8).tobytes()
    return [part.decode("utf-8") for part in data.split(b"\0")[1:]]


# --- bits per byte ---------------------------------------------------------------------------


@functools.cache
def gpt2_token_bytes() -> np.ndarray:
    """UTF-8 byte length of every GPT-2 token (int64, indexed by id); <|endoftext|> counts 0."""
    enc = tokenizer.gpt2_encoding()
    lengths = np.array([len(enc.decode_single_token_bytes(i)) for i in range(EOT)] + [0],
                       dtype=np.int64)
    lengths.setflags(write=False)
    return lengths


def text_bytes(tokens, tokenizer: str) -> int:
    """Exact UTF-8 byte count of the text ``tokens`` stand for. Separators (BYTE_SEP, EOT) are
    not text and count 0 bytes, so both tokenizations of the same documents give the same
    count. Pass the tokens a loss was averaged over (the validation *targets*)."""
    tokens = np.asarray(tokens).astype(np.int64).ravel()
    if tokenizer == "bytes":
        if tokens.size and (tokens.min() < 0 or tokens.max() >= BYTE_VOCAB):
            raise SpeedrunError(f"byte tokens must be in 0..{BYTE_VOCAB - 1}")
        return int(np.count_nonzero(tokens != BYTE_SEP))
    if tokenizer == "gpt2":
        lengths = gpt2_token_bytes()
        if tokens.size and (tokens.min() < 0 or tokens.max() >= lengths.size):
            raise SpeedrunError(f"GPT-2 tokens must be in 0..{lengths.size - 1}")
        return int(lengths[tokens].sum())
    raise SpeedrunError(f"unknown tokenizer {tokenizer!r} (known: {', '.join(TOKENIZERS)})")


def bits_per_byte(mean_nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """A mean loss in nats/token over ``n_tokens`` tokens that stand for ``n_bytes`` bytes of
    text, in bits per byte: total nats / bytes / ln 2. Comparable across tokenizers."""
    if n_bytes <= 0:
        raise SpeedrunError(f"bits per byte needs a positive byte count, got {n_bytes}")
    return mean_nats_per_token * n_tokens / n_bytes / math.log(2)
