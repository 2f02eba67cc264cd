"""Count a letter in a word: "How many a are in banana?" -> "3".

Words as in the reverse task (the wiki corpus's 3-8 letter words); the letter is one of the
word's own letters half of the time, else any letter (so 0 is a possible answer). The key is
the (letter, word) pair.
"""

from __future__ import annotations

import string

from speedrun.posttraining.tasks.base import Example, Task, conversation, exact
from speedrun.posttraining.tasks.reverse import words


def generate(rng) -> Example:
    pool = words()
    word = pool[int(rng.integers(len(pool)))]
    letters = word if rng.random() < 0.5 else string.ascii_lowercase
    letter = letters[int(rng.integers(len(letters)))]
    n = str(word.count(letter))
    return Example(conversation(f"How many {letter} are in {word}?", n), n, f"{letter}:{word}")


TASK = Task(
    name="count",
    summary="count how often a letter occurs in a word (from the wiki corpus)",
    generate=generate,
    score=exact,
    max_new_tokens=4,
    source="the letter-counting probe of reasoning-gym's letter_counting and nanochat's SpellingBee",
)
