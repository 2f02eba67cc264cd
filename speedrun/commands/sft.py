"""`python -m speedrun sft`: supervised fine-tuning of a checkpoint on a task's conversations,
the loss on the assistant's tokens only (speedrun/posttraining/sft.py). From any checkpoint with
``--task`` (no record), or on a post-training track with ``--track`` (a record, timed like
pretraining): speedrun/posttraining/posttrain.py.
"""

from __future__ import annotations

import argparse

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    return flags.post_training(sub, "sft")


def main(args) -> int:
    from speedrun.posttraining.posttrain import posttrain

    return posttrain(args, "sft")
