"""`python -m speedrun sample CHECKPOINT`: continue prompts with a trained model.

    python -m speedrun sample CHECKPOINT --prompt "The history of"      # prefill + KV-cache decode
    python -m speedrun sample CHECKPOINT --prompt-file prompts.txt      # one prompt a line, batched
    python -m speedrun sample CHECKPOINT --draft SMALL --draft-tokens 4 # speculative decoding

A CHECKPOINT is a .safetensors file written by `run --save` or `quantize`, or a folder holding
exactly one; float and int8 checkpoints alike. Decoding: speedrun/inference/generate.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    smp = sub.add_parser(
        "sample", help="generate text from a checkpoint (KV cache, batched prompts)",
        description="Continue prompts with a checkpoint written by `run --save` (or `quantize`): "
        "prefill, then a jitted decode loop over a KV cache, through the same hooks as training. "
        "Each prompt starts a document (after the separator token) and its row stops at the "
        "next separator (<|endoftext|>, or byte 0 for bytes) or after --max-new-tokens.")
    flags.checkpoint(smp)
    smp.add_argument("--prompt", default=None, metavar="TEXT", help="the prompt (default: empty)")
    smp.add_argument("--prompt-file", default=None, metavar="FILE",
                     help="one prompt per line (blank lines skipped), generated as one batch")
    smp.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                     help="tokens to generate per prompt at most (default 200; cut to the "
                     "model's context)")
    smp.add_argument("--temperature", type=float, default=0.8,
                     help="sampling temperature; 0 is greedy (default 0.8)")
    smp.add_argument("--top-k", type=int, default=0, metavar="K",
                     help="sample among the K most likely tokens only (default 0: all)")
    smp.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    smp.add_argument("--draft", default=None, metavar="CHECKPOINT",
                     help="speculative decoding: a smaller model with the same tokenizer "
                     "proposes tokens that this one checks")
    smp.add_argument("--draft-tokens", type=int, default=4, metavar="K",
                     help="tokens the draft proposes per round (default 4)")
    smp.add_argument("--no-check", action="store_true",
                     help="skip the check that cached decoding matches the full forward pass")
    return smp


def prompts_of(args) -> list[str]:
    from speedrun.errors import SpeedrunError

    if args.prompt is not None and args.prompt_file is not None:
        raise SpeedrunError("give --prompt or --prompt-file, not both")
    if args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as e:
            raise SpeedrunError(f"cannot read --prompt-file {args.prompt_file}: "
                                f"{e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise SpeedrunError(f"--prompt-file {args.prompt_file} is not UTF-8 text ({e.reason} "
                                f"at byte {e.start})") from None
        lines = [line.rstrip("\r") for line in text.split("\n")]
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise SpeedrunError(f"--prompt-file {args.prompt_file} holds no prompt (one a line)")
        return lines
    return [args.prompt if args.prompt is not None else ""]


def load_model(path: str):
    """(checkpoint, its model with the parameters on the device)."""
    import jax

    from speedrun.inference import checkpoint
    from speedrun.inference import generate as G

    ck = checkpoint.load(path)
    m = ck.model()
    return ck, G.Model(jax.device_put(m.params), m.cfg, m.hooks, m.tokenizer)


def main(args) -> int:
    from speedrun.inference import generate as G

    s = G.sampling(args.temperature, args.top_k)
    texts = prompts_of(args)
    ck, m = load_model(args.checkpoint)
    print(ck.describe(), file=sys.stderr)
    ids = [G.encode(t, m.tokenizer) for t in texts]
    if not args.no_check:
        G.check_cache(m)
    draft = None
    if args.draft:
        dck, draft = load_model(args.draft)
        print(f"draft {dck.describe()}", file=sys.stderr)
    t0 = time.perf_counter()
    if draft is None:
        rows = G.generate(m, ids, args.max_new_tokens, s, args.seed)
        stats = None
    else:
        rows, stats = G.speculative(m, draft, ids, args.max_new_tokens, args.draft_tokens, s,
                                    args.seed)
    elapsed = time.perf_counter() - t0
    for i, (text, row) in enumerate(zip(texts, rows)):
        if i:
            print("-" * 40)
        print(text + G.decode_text(row, m.tokenizer))
    n = sum(len(r) for r in rows)
    line = (f"{len(rows)} prompt(s), {n} new tokens in {elapsed:.2f}s including compilation")
    if stats is not None:
        line += (f"; draft acceptance {stats.acceptance:.1%} ({stats.accepted}/{stats.proposed} "
                 f"proposals, {stats.rounds} rounds of {args.draft_tokens})")
    print(line, file=sys.stderr)
    return 0
