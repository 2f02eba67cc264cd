"""The conversation format: user and assistant turns as tokens, and which tokens are trained.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``;
a system message is merged into the first user turn (as nanochat does). Rendered, it is

    <bos> <user_start> text <user_end> <assistant_start> text <assistant_end> <user_start> ...

where <bos> is the tokenizer's document separator (every pretraining document started after it)
and the four turn markers are special tokens the pretraining text never holds:

    bytes:  control bytes 1 2 3 4 (SOH STX ETX EOT); the wiki corpus holds no control byte
            but 0 (the separator) and 10 (newline): ``check_corpus`` verifies it on the shards
    gpt2:   ids 50257 50258 50259 50260, inside the padded vocabulary (50304) past <|endoftext|>

The mask marks the tokens a model is trained to predict: each assistant turn's text and its
<assistant_end> (so it learns to stop), never the user's. Generation is primed with
<assistant_start> and stops at <assistant_end>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from speedrun.data import bytelevel
from speedrun.data import tokenizer as gpt2
from speedrun.errors import SpeedrunError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Specials:
    bos: int
    user_start: int
    user_end: int
    assistant_start: int
    assistant_end: int

    @property
    def ids(self) -> tuple[int, ...]:
        return (self.user_start, self.user_end, self.assistant_start, self.assistant_end)


SPECIALS = {
    "bytes": Specials(bytelevel.BYTE_SEP, 1, 2, 3, 4),
    "gpt2": Specials(bytelevel.separator("gpt2"), 50257, 50258, 50259, 50260),
}


def specials(tokenizer: str, vocab_size: int) -> Specials:
    """The chat tokens of a model's tokenizer, or a clear error when its vocabulary cannot
    carry them (e.g. a GPT-2 model whose vocabulary was not padded past 50257)."""
    if tokenizer not in SPECIALS:
        raise SpeedrunError(f"no chat format for the {tokenizer!r} tokenizer "
                            f"(known: {', '.join(SPECIALS)})")
    s = SPECIALS[tokenizer]
    if max(s.ids) >= vocab_size:
        raise SpeedrunError(f"this model's vocabulary ({vocab_size} ids) cannot carry the chat "
                            f"tokens of the {tokenizer} tokenizer (ids {min(s.ids)}-{max(s.ids)}): "
                            f"post-train a model whose vocabulary is padded past them")
    return s


def encode_text(text: str, tokenizer: str) -> list[int]:
    if tokenizer == "bytes":
        data = text.encode("utf-8")
        bad = sorted({b for b in data if b in SPECIALS["bytes"].ids or b == bytelevel.BYTE_SEP})
        if bad:
            raise SpeedrunError(f"the text holds control byte(s) {bad} that the chat format uses "
                                f"as markers: {text[:60]!r}")
        return list(data)
    return gpt2.gpt2_encoding().encode_ordinary(text)


def decode_text(ids: Sequence[int], tokenizer: str) -> str:
    if tokenizer == "bytes":
        return bytes(int(t) for t in ids).decode("utf-8", errors="replace")
    return gpt2.gpt2_encoding().decode([int(t) for t in ids])


def normalise(conversation: Sequence[Mapping]) -> list[dict]:
    """Messages as user/assistant turns: a system message merged into the first user turn,
    roles alternating user, assistant, ..., every content a string. Raises on anything else."""
    for i, m in enumerate(conversation):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or \
                not isinstance(m.get("content"), str):
            raise SpeedrunError(f"message {i} must be {{'role': one of {', '.join(ROLES)}, "
                                f"'content': text}}, got {m!r}"[:300])
    msgs = [dict(m) for m in conversation]
    if msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0)["content"]
        if not msgs or msgs[0]["role"] != "user":
            raise SpeedrunError("a system message must be followed by a user message")
        msgs[0] = {"role": "user", "content": f"{system}\n\n{msgs[0]['content']}"}
    for i, m in enumerate(msgs):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise SpeedrunError(f"message {i} is {m['role']!r}: turns must alternate user, "
                                f"assistant, ... starting with the user")
    if not msgs:
        raise SpeedrunError("a conversation needs at least one user message")
    return msgs


def render(conversation: Sequence[Mapping], tokenizer: str, vocab_size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, mask): the mask is 1 on the tokens trained (assistant text and its end)."""
    s = specials(tokenizer, vocab_size)
    ids, mask = [s.bos], [0]
    for m in normalise(conversation):
        text = encode_text(m["content"], tokenizer)
        if m["role"] == "user":
            part, trained = [s.user_start, *text, s.user_end], 0
            ids += part
            mask += [trained] * len(part)
        else:
            ids.append(s.assistant_start)
            mask.append(0)
            ids += [*text, s.assistant_end]
            mask += [1] * (len(text) + 1)
    return np.array(ids, np.int32), np.array(mask, np.int32)


def prompt(conversation: Sequence[Mapping], tokenizer: str, vocab_size: int) -> list[int]:
    """The tokens that ask for the next assistant turn: the conversation so far (ending with a
    user turn), then <assistant_start>."""
    msgs = normalise(conversation)
    if msgs[-1]["role"] != "user":
        raise SpeedrunError("the conversation to answer must end with a user message")
    ids, _ = render(msgs, tokenizer, vocab_size)
    return [*ids.tolist(), specials(tokenizer, vocab_size).assistant_start]


def parse(ids: Sequence[int], tokenizer: str, vocab_size: int) -> list[dict]:
    """The conversation a rendering holds (the inverse of ``render``)."""
    s = specials(tokenizer, vocab_size)
    ids = [int(t) for t in ids]
    if not ids or ids[0] != s.bos:
        raise SpeedrunError("a rendered conversation starts with the separator token")
    out, i = [], 1
    while i < len(ids):
        start = ids[i]
        if start not in (s.user_start, s.assistant_start):
            raise SpeedrunError(f"token {start} at {i} does not start a turn")
        role, end = ("user", s.user_end) if start == s.user_start else ("assistant",
                                                                          s.assistant_end)
        try:
            j = ids.index(end, i + 1)
        except ValueError:
            raise SpeedrunError(f"the {role} turn at {i} never ends") from None
        out.append({"role": role, "content": decode_text(ids[i + 1:j], tokenizer)})
        i = j + 1
    return out


def completion(ids: Sequence[int], tokenizer: str, vocab_size: int) -> str:
    """A generated assistant turn as text: the tokens before <assistant_end> (all of them when
    the model never wrote it), other special tokens dropped."""
    s = specials(tokenizer, vocab_size)
    out = []
    for t in (int(t) for t in ids):
        if t in (s.assistant_end, s.bos):
            break
        if t not in s.ids:
            out.append(t)
    return decode_text(out, tokenizer)


def check_corpus(tokens: np.ndarray, tokenizer: str) -> list[int]:
    """The chat marker ids that occur in a token array (empty: the markers are free)."""
    present = np.bincount(np.asarray(tokens).ravel(), minlength=max(SPECIALS[tokenizer].ids) + 1)
    return [t for t in SPECIALS[tokenizer].ids if present[t]]
