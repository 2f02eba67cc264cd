"""`python -m speedrun tasks`: the post-training tasks, each with an example."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    return sub.add_parser("tasks", help="list the post-training tasks",
                          description="List the tasks `sft`, `rl` and `eval --task` train and "
                          "score on, each with an example.")


def main(args) -> int:
    from tabulate import tabulate

    from speedrun.posttraining import tasks as task_registry
    from speedrun.posttraining.posttrain import post_tracks

    rows = []
    for t in task_registry.available().values():
        e = t.examples("train", 0, 1)[0]
        rows.append((t.name, t.summary, f"{e.question[-1]['content']} -> {e.answer}"))
    print(tabulate(rows, headers=["task", "what", "an example"], tablefmt="simple"))
    print("\nOr your own conversations: --task jsonl:PATH (one {\"messages\": [...]} a line). "
          "Post-training tracks: " + ", ".join(post_tracks()))
    return 0
