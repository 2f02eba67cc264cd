"""`python -m speedrun rl`: reinforcement learning of a checkpoint on a task's verifiable
rewards, on-policy policy gradient with a group-mean baseline (speedrun/posttraining/rl.py). From
any checkpoint with ``--task`` (no record), or on a post-training track with ``--track`` (a
record, timed like pretraining): speedrun/posttraining/posttrain.py.
"""

from __future__ import annotations

import argparse

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    return flags.post_training(sub, "rl")


def main(args) -> int:
    from speedrun.posttraining.posttrain import posttrain

    return posttrain(args, "rl")
