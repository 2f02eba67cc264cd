"""Your own conversations as a task: ``--task jsonl:PATH``.

The common JSONL chat format (SmolTalk, converted GSM8K and most SFT sets): one object per
line, ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...},
...]}`` (a first ``system`` message is allowed; it is merged into the first user turn). Every
conversation must end with an assistant turn: it is the reference answer, scored by exact match
(after stripping whitespace). Lines split into train and held-out by a hash of their text, so the
split does not depend on the file's order. A line that is not a conversation is an error naming
its line number.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from speedrun.data import corpus
from speedrun.errors import SpeedrunError
from speedrun.posttraining import chat
from speedrun.posttraining.tasks.base import Example, Task, exact


def load(path: str) -> Task:
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SpeedrunError(f"cannot read {file}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SpeedrunError(f"{file} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    examples = []
    for number, line, body in corpus.json_lines(
            lines, lambda n, e: f"{file}, line {n}: not JSON ({e.msg})"):
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            raise SpeedrunError(f"{file}, line {number}: not a conversation (expected "
                                f'{{"messages": [{{"role": ..., "content": ...}}, ...]}})')
        try:
            turns = chat.normalise(messages)
        except SpeedrunError as e:
            raise SpeedrunError(f"{file}, line {number}: {e}") from None
        if turns[-1]["role"] != "assistant":
            raise SpeedrunError(f"{file}, line {number}: the conversation must end with the "
                                f"assistant's answer")
        key = hashlib.sha256(line.strip().encode()).hexdigest()
        examples.append(Example(tuple(turns), turns[-1]["content"].strip(), key))
    if not examples:
        raise SpeedrunError(f"{file} holds no conversation")
    longest = max(len(e.answer.encode()) for e in examples)
    return Task(name=f"jsonl:{file}", summary=f"{len(examples)} conversations from {file.name}",
                generate=None, score=exact, max_new_tokens=min(256, longest + 8),
                fixed=tuple(examples), source=str(file))
