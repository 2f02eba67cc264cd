"""Multi-digit addition: "What is 37+485?" -> "522".

Operands of 1 to 3 digits, uniform in their digit count. The key is the ordered pair, so
"37+485" and "485+37" are distinct examples (and may fall in different splits): a model that
commutes learns something held-out examples test.
"""

from __future__ import annotations

from speedrun.posttraining.tasks.base import Example, Task, conversation, exact

DIGITS = (1, 3)


def operand(rng) -> int:
    digits = int(rng.integers(DIGITS[0], DIGITS[1] + 1))
    return int(rng.integers(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits))


def generate(rng) -> Example:
    a, b = operand(rng), operand(rng)
    return Example(conversation(f"What is {a}+{b}?", str(a + b)), str(a + b), f"{a}+{b}")


TASK = Task(
    name="addition",
    summary="add two numbers of 1-3 digits; the answer is the sum, exactly",
    generate=generate,
    score=exact,
    max_new_tokens=8,
    source="a classic arithmetic probe (nanochat's SpellingBee and GSM8K are its relatives)",
)
