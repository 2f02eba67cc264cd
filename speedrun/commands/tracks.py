"""`python -m speedrun tracks`: each track with its target, the count-model reference losses on
its own validation tokens (where the data is built), the rules no record may change, and its
baseline; then the post-training tracks (speedrun/tracks.py defines them all)."""

from __future__ import annotations

import argparse

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    trk = sub.add_parser("tracks", help="list tracks: targets, rules, baselines, reference losses",
                         description="List the tracks: target loss, count-model reference losses "
                         "(unigram/bigram/trigram, where the data is built), the rules no record "
                         "may change, and each baseline.")
    flags.data_dir(trk)
    return trk


def rows(data_dir: str | None) -> tuple[list, list]:
    """(pretraining rows, post-training rows) of the tables."""
    from speedrun.tracks import DEFAULT, TRACKS, references

    pre, post = [], []
    for t in TRACKS.values():
        m, tr, r = t.config.model, t.config.train, t.rules
        if t.config.post is not None:
            p = t.config.post
            post.append((t.name, f"pass@1 > {1 - t.target:.2f}", p.task,
                         f"{r.val_tokens} held-out examples", f"{p.method} {tr.steps} steps x "
                         f"{tr.batch_size} rows of {p.seq_len}", t.start))
            continue
        ref = references(t, data_dir)
        refs = "(no data here)" if ref is None else " / ".join(
            f"{ref[k]:.3f}" for k in ("unigram", "bigram", "trigram"))
        pre.append((t.name + (" (default)" if t.name == DEFAULT else ""), t.target, refs,
                    f"{r.val_tokens:,} {r.tokenizer}",
                    f"{m.n_layer}L d{m.d_model} seq{m.seq_len} x{tr.batch_size}, {tr.steps} steps",
                    t.where, t.data_command))
    return pre, post


def main(args) -> int:
    from tabulate import tabulate

    from speedrun.data import paths
    from speedrun.errors import SpeedrunError
    from speedrun.tracks import TRACKS

    root = paths.data_dir(getattr(args, "data_dir", None))
    if root.exists() and not root.is_dir():
        raise SpeedrunError(f"data dir {root} is not a folder; pass --data-dir DIR or set "
                            f"SPEEDRUN_DATA_DIR to the folder that holds the data")
    pre, post = rows(getattr(args, "data_dir", None))
    print(tabulate(pre, headers=["track", "target", "uni/bi/trigram ref", "val tokens",
                                 "baseline", "where", "get data"]))
    print("\nTarget and references in nats per token of the track's own validation tokens; the "
          "references are count models fit on the train split (interpolated Kneser-Ney), so a "
          "target below the bigram needs context. Rules (what no record may change): the "
          "target, the validation tokens (count + sha256), the train data (sha256) and the "
          "tokenizer; everything else is the competitor's choice.")
    for t in TRACKS.values():
        if t.config.post is None:
            print(f"  {t.name}: {t.summary}; val sha256 "
                  f"{(t.rules.val_sha256 or 'not pinned')[:16]}, train sha256 "
                  f"{(t.rules.train_sha256 or 'not pinned')[:16]}")
    print("\nPost-training tracks (`sft --track NAME`, `rl --track NAME`):\n")
    print(tabulate(post, headers=["track", "target", "task", "held-out", "baseline",
                                  "start checkpoint"]))
    print("\nRules: the start checkpoint (sha256), the task, its held-out examples (count + "
          "fingerprint) and the target; a claim's held-out pass@1 beats the target in every seed "
          "by a one-sided binomial test, p < 0.01, over 3+ seeds.")
    return 0
