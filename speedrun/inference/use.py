"""Using a trained model: `sample` and `quantize` on a checkpoint (`run --save DIR`); `eval` is
speedrun/training/evaluate.py (it scores on the track's validation set, as a run does).

    python -m speedrun sample CHECKPOINT --prompt "The history of"      # prefill + KV-cache decode
    python -m speedrun sample CHECKPOINT --prompt-file prompts.txt      # one prompt a line, batched
    python -m speedrun sample CHECKPOINT --draft SMALL --draft-tokens 4 # speculative decoding
    python -m speedrun quantize CHECKPOINT                              # weight-only int8 copy

A CHECKPOINT is a .safetensors file written by `run --save` or `quantize`, or a folder holding
exactly one. `sample` and `eval` take float and int8 checkpoints alike.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax

from speedrun.data import paths
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint, generate as G
from speedrun.inference import quantize as Q


def prompts_of(args) -> list[str]:
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


def load_model(path: str) -> tuple[checkpoint.Checkpoint, G.Model]:
    ck = checkpoint.load(path)
    m = ck.model()
    return ck, G.Model(jax.device_put(m.params), m.cfg, m.hooks, m.tokenizer)


def sample_main(args) -> int:
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


def quantized_path(path: Path) -> Path:
    stem = path.name[: -len(checkpoint.SUFFIX)] if path.name.endswith(checkpoint.SUFFIX) else path.name
    return path.with_name(stem + ".int8" + checkpoint.SUFFIX)


def quantize_main(args) -> int:
    ck = checkpoint.load(args.checkpoint)
    if ck.quantization != "none":
        raise SpeedrunError(f"checkpoint {ck.path} is already {ck.quantization}")
    out = Path(args.output) if args.output else quantized_path(ck.path)
    if out.resolve() == ck.path.resolve():
        raise SpeedrunError(f"--output {out} would overwrite the float checkpoint")
    if out.is_dir():
        raise SpeedrunError(f"--output {out} is a folder: name the file to write")
    paths.probe_writable(out.parent, "--output folder", "pass --output FILE in a writable folder")
    q = Q.quantize(ck.params)
    checkpoint.save(out, q, ck.cfg, ck.tokenizer, ck.seed,
                    notes={**ck.notes, "quantized_from": ck.path.name})
    worst = max(Q.errors(ck.params, q).items(), key=lambda kv: kv[1])
    before, after = ck.path.stat().st_size, out.stat().st_size
    print(f"int8 checkpoint written: {out} ({after / 1e6:.2f} MB, float {before / 1e6:.2f} MB, "
          f"{before / after:.1f}x smaller); largest relative error {worst[1]:.2e} ({worst[0]}); "
          f"check it with: python -m speedrun eval {out}")
    return 0
