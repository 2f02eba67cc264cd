"""Spell a word backward: "Spell river backward." -> "revir".

Words are the distinct lower-case alphabetic words of 3 to 8 letters in the Wikipedia lead
paragraphs the default tracks use (read from the installed corpus package, so offline and the
same everywhere). The key is the word, so a held-out word was never seen reversed in training.
"""

from __future__ import annotations

import functools
import re

from speedrun.data import corpus
from speedrun.posttraining.tasks.base import Example, Task, conversation, exact


@functools.cache
def words() -> tuple[str, ...]:
    found = set()
    for doc in corpus.wiki_documents(corpus.wiki_source()):
        found.update(re.findall(r"\b[a-z]{3,8}\b", doc.text))
    return tuple(sorted(found))


def generate(rng) -> Example:
    pool = words()
    word = pool[int(rng.integers(len(pool)))]
    return Example(conversation(f"Spell {word} backward.", word[::-1]), word[::-1], word)


TASK = Task(
    name="reverse",
    summary="spell a word (3-8 letters, from the wiki corpus) backward",
    generate=generate,
    score=exact,
    max_new_tokens=12,
    source="nanochat's SpellingBee family of letter tasks",
)
