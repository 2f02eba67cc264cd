"""The flags several commands share, each declared once: what a configuration is (--track,
--tricks, --set), its length and seeds, where records, data and checkpoints go, and sampling.
Only argparse here: `--help` builds every parser without importing JAX."""

from __future__ import annotations

import argparse

from speedrun.tracks import DEFAULT as DEFAULT_TRACK


def data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   help="where track data lives (default: $SPEEDRUN_DATA_DIR, else "
                   "~/.cache/speedrun)")


def track(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default=DEFAULT_TRACK,
                   help=f"track (default: {DEFAULT_TRACK}; see `tracks`)")


def configuration(p: argparse.ArgumentParser) -> None:
    """--track, --tricks, --set: what a configuration is."""
    track(p)
    p.add_argument("--tricks", default="", metavar="A,B,...",
                   help="comma-separated trick names (see `python -m speedrun tricks`); "
                   "empty: the baseline")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set optim.lr=1e-3, or a trick's, e.g. "
                   "--set muon.lr=0.03 with --tricks muon (repeatable)")


def steps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="the run's length, and every schedule's horizon (default: the track's "
                   "baseline steps; `find-steps` finds the fewest that make a claim)")


def seeds(p, default: str | None, what: str) -> None:
    p.add_argument("--seeds", default=default, metavar="N|A,B,...", help=what)


def seed_or_seeds(p: argparse.ArgumentParser, what: str) -> None:
    """--seed S or --seeds N|A,B,... (not both); neither means seed 0."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, default=None, help="single seed (default 0)")
    seeds(group, None, what)


def side_by_side(p: argparse.ArgumentParser, default: str, what: str = "") -> None:
    """--side-by-side / --no-side-by-side: several seeds trained as one program (untimed);
    None when neither is given (the command's default, ``default`` says which)."""
    p.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=None,
                   help=f"train the seeds side by side in one vmapped program (untimed: records "
                   f"say so and are not ranked){what}; default: {default}")


def records_dir(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--records-dir", default="records", metavar="DIR",
                   help=f"{where} (default: ./records)")


def quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar, only summary lines")


def output(p: argparse.ArgumentParser, where: str) -> None:
    """--records-dir, --no-record, --quiet, --data-dir: what every training command shares."""
    records_dir(p, f"where {where}")
    p.add_argument("--no-record", action="store_true", help="do not write records")
    quiet(p)
    data_dir(p)


def checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a .safetensors checkpoint, or a folder holding exactly one")


def sampling(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--temperature", type=float, default=temperature,
                   help=f"sampling temperature; 0 is greedy (default {temperature})")
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample among the K most likely tokens only (default 0: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


POST_TRAINING = {
    "sft": ("fine-tune a checkpoint on a task (loss on the assistant's tokens)",
            "supervised fine-tuning on a task's conversations (loss on the assistant's tokens "
            "only)"),
    "rl": ("teach a checkpoint a task by policy gradient on verifiable rewards",
           "reinforcement learning on a task's verifiable rewards: on-policy policy gradient, "
           "answers sampled per prompt, advantage = reward - the group's mean"),
}


def post_training(sub, method: str) -> argparse.ArgumentParser:
    """`sft` and `rl`: the same flags, from a checkpoint with --task or on a track."""
    short, what = POST_TRAINING[method]
    pp = sub.add_parser(
        method, help=short,
        description=f"{what[0].upper() + what[1:]}. From any checkpoint with "
        f"--task (no record), or on a post-training track with --track (its start checkpoint, "
        f"task, held-out set and target; writes a record, a claim when the seeds' held-out "
        f"pass@1 beats the target with p < 0.01 over 3+ seeds). Held-out pass@1 is scored "
        f"(untimed) every train.eval_every steps.")
    pp.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default=None,
                    help="the model to start from (a track fixes its own)")
    pp.add_argument("--task", default=None, help="the task (see `tasks`), or jsonl:PATH")
    pp.add_argument("--track", default=None, help="a post-training track (see `tracks`)")
    pp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set post.lr_scale=0.5, --set "
                    "train.batch_size=32 (repeatable)")
    steps(pp)
    seed_or_seeds(pp, "several seeds: a count (3 -> 0,1,2) or a list (1,5,9)")
    pp.add_argument("--save", metavar="DIR", default=None,
                    help="write each seed's final model to DIR (after the clock)")
    pp.add_argument("--name", default=None, help="short name for the record folder slug")
    output(pp, "records are written (with --track)")
    return pp
