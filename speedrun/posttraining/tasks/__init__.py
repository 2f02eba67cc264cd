"""The task registry: one module per task, like the tricks'.

A task module defines ``TASK = Task(...)`` (base.py): ``generate(rng) -> Example`` draws one
example (a conversation, its reference answer and a key that identifies it), and
``score(completion, example) -> reward`` in [0, 1] checks an answer. ``examples(split, seed, n)``
draws ``n`` distinct examples of a split; the train and held-out splits never share a key.

User data in the common JSONL chat format (one ``{"messages": [...]}`` per line, e.g. SmolTalk
or GSM8K converted) is a task too: ``jsonl:PATH`` (jsonl.py), split the same way by line.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from speedrun.errors import SpeedrunError
from speedrun.posttraining.tasks import jsonl
from speedrun.posttraining.tasks.base import Task


def available() -> dict[str, Task]:
    """Every task module in this package, by task name."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in ("jsonl", "base"):
            continue
        task = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK", None)
        if isinstance(task, Task):
            found[task.name] = task
    return found


def get(name: str) -> Task:
    """A registered task, or user conversations from ``jsonl:PATH``."""
    if name.startswith("jsonl:"):
        return jsonl.load(name.split(":", 1)[1])
    tasks = available()
    if name not in tasks:
        close = difflib.get_close_matches(name, tasks, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpeedrunError(f"unknown task {name!r}{hint} (tasks: {', '.join(tasks)}, or "
                            f"jsonl:PATH for your own conversations)")
    return tasks[name]


