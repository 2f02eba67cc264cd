"""`python -m speedrun eval CHECKPOINT`: a checkpoint's validation loss on its track (the same
loss a record reports: speedrun/training/evaluate.py), its HellaSwag accuracy (``--hellaswag``:
speedrun/inference/hellaswag_score.py), or its pass@1 and pass@k on a task's held-out examples
(``--task``: speedrun/posttraining/scoring.py).
"""

from __future__ import annotations

import argparse
import sys

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser(
        "eval", help="a checkpoint's validation loss on its track, or its pass@k on a task",
        description="Score a checkpoint (float or int8) on its track's validation tokens with "
        "the harness's own evaluation: the same loss a record reports. With --hellaswag, "
        "HellaSwag's validation set instead (get it with `data hellaswag`): llm.c's rule, the "
        "ending with the lowest mean loss per token wins (acc_norm), and with the lowest summed "
        "loss (acc). With --task, its greedy pass@1 on the task's held-out examples, and with "
        "--k K also pass@1 and pass@K from K samples each, every figure with its standard error.")
    flags.checkpoint(ev)
    flags.data_dir(ev)
    ev.add_argument("--hellaswag", action="store_true",
                    help="score HellaSwag (10,042 validation examples) instead of the val loss")
    ev.add_argument("--hellaswag-examples", type=int, default=None, metavar="N",
                    help="with --hellaswag: only the first N examples (a quick look; the full "
                    "set is what compares)")
    ev.add_argument("--task", default=None, help="score on a task's held-out examples instead (see `tasks`)")
    ev.add_argument("--n", type=int, default=200, metavar="N",
                    help="with --task: held-out examples scored (default 200)")
    flags.sampling(ev, temperature=1.0)
    ev.add_argument("--k", type=int, default=1, metavar="K",
                    help="with --task: samples per example for pass@K (default 1: greedy only)")
    return ev


def main(args) -> int:
    from speedrun.errors import SpeedrunError

    if args.task and args.hellaswag:
        raise SpeedrunError("give --task or --hellaswag, not both")
    if args.task:
        return task_main(args)
    if args.hellaswag or args.hellaswag_examples is not None:
        return hellaswag_main(args)
    return val_loss_main(args)


def val_loss_main(args) -> int:
    """The track's validation loss (and bits per byte) of the checkpoint."""
    from speedrun.inference import checkpoint
    from speedrun.training.evaluate import evaluate_checkpoint

    ck = checkpoint.load(args.checkpoint)
    r = evaluate_checkpoint(ck, args.data_dir)
    print(ck.describe(), file=sys.stderr)
    bpb = "" if r["bits_per_byte"] is None else f", {r['bits_per_byte']:.4f} bits/byte"
    print(f"val loss {r['val_loss']:.6f} nats/token{bpb} over {r['val_tokens']:,} validation "
          f"tokens (track {ck.cfg.track}, target {r['target']})")
    return 0


def hellaswag_main(args) -> int:
    """HellaSwag's acc_norm and acc, as llm.c scores them."""
    from speedrun.data import hellaswag as data
    from speedrun.data import paths
    from speedrun.errors import SpeedrunError
    from speedrun.inference import checkpoint
    from speedrun.inference import hellaswag_score

    limit = args.hellaswag_examples
    if not args.hellaswag:
        raise SpeedrunError("--hellaswag-examples N limits --hellaswag: give both")
    if limit is not None and limit < 1:
        raise SpeedrunError(f"--hellaswag-examples must be at least 1, got {limit}")
    examples = data.require(paths.data_dir(args.data_dir))
    ck = checkpoint.load(args.checkpoint)
    print(ck.describe(), file=sys.stderr)
    items = examples.items[:limit] if limit else examples.items
    s = hellaswag_score.score(hellaswag_score.on_device(ck.model()), items)
    part = f", the first {len(items):,} scored" if len(items) < len(examples.items) else ""
    print(f"{examples.describe()}{part}: {s.line()}")
    return 0


def task_main(args) -> int:
    """Greedy pass@1, and with --k K sampled pass@1 and pass@K, on the held-out examples."""
    import jax

    from speedrun.errors import SpeedrunError
    from speedrun.inference import checkpoint
    from speedrun.inference import generate as G
    from speedrun.posttraining import chat, scoring
    from speedrun.posttraining import tasks as task_registry

    G.sampling(args.temperature, args.top_k)  # checked now, used when --k asks for samples
    ck = checkpoint.load(args.checkpoint)
    task = task_registry.get(args.task)
    chat.specials(ck.tokenizer, ck.cfg.model.vocab_size)
    if args.k < 1 or args.n < 1:
        raise SpeedrunError("--k and --n must be at least 1")
    examples = task.examples("heldout", 0, args.n)
    scoring.check_room(task, examples, ck.tokenizer, ck.cfg.model.vocab_size,
                       ck.cfg.model.seq_len)
    model = ck.model()
    model = G.Model(jax.device_put(model.params), model.cfg, model.hooks, model.tokenizer)
    print(ck.describe(), file=sys.stderr)
    greedy = scoring.score(model, task, examples, k=1)
    print(f"{task.name}: greedy pass@1 {greedy.pass1:.4f} ± {greedy.pass1_se:.4f} over "
          f"{greedy.n} held-out examples")
    if args.k > 1:
        s = scoring.score(model, task, examples, k=args.k, temperature=args.temperature,
                          top_k=args.top_k, seed=args.seed,
                          progress=lambda j: print(f"  sample {j}/{args.k}", file=sys.stderr))
        print(f"{task.name}: sampled (temperature {args.temperature}) pass@1 {s.pass1:.4f} ± "
              f"{s.pass1_se:.4f}, pass@{args.k} {s.passk:.4f} ± {s.passk_se:.4f}")
    return 0
