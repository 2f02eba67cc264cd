"""Using a trained model: `sample`, `eval` and `quantize` on a checkpoint (`run --save DIR`).

    python -m speedrun sample CHECKPOINT --prompt "The history of"      # prefill + KV-cache decode
    python -m speedrun sample CHECKPOINT --prompt-file prompts.txt      # one prompt a line, batched
    python -m speedrun sample CHECKPOINT --draft SMALL --draft-tokens 4 # speculative decoding
    python -m speedrun eval CHECKPOINT                                  # the track's val loss, bpb
    python -m speedrun quantize CHECKPOINT                              # weight-only int8 copy

A CHECKPOINT is a .safetensors file written by `run --save` or `quantize`, or a folder holding
exactly one. `sample` and `eval` take float and int8 checkpoints alike.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

from speedrun import checkpoint, distributed, evaluate, generate as G
from speedrun import quantize as Q
from speedrun.errors import SpeedrunError


def prompts_of(args) -> list[str]:
    if args.prompt is not None and args.prompt_file is not None:
        raise SpeedrunError("give --prompt or --prompt-file, not both")
    if args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as e:
            raise SpeedrunError(f"cannot read --prompt-file {args.prompt_file}: "
                                f"{e.strerror or e}") from None
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


def describe(ck: checkpoint.Checkpoint) -> str:
    m = ck.cfg.model
    tricks = ",".join(ck.cfg.trick_names) or "baseline"
    quant = ", int8 weights" if ck.quantization == "int8" else ""
    return (f"{ck.path.name}: track {ck.cfg.track}, {m.n_layer}L d{m.d_model} h{m.n_head}, "
            f"tricks {tricks}{quant}, tokenizer {ck.tokenizer}")


def sample_main(args) -> int:
    if args.temperature < 0 or not math.isfinite(args.temperature):
        raise SpeedrunError(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    if args.top_k < 0:
        raise SpeedrunError(f"--top-k must be 0 (all) or more, got {args.top_k}")
    texts = prompts_of(args)
    ck, m = load_model(args.checkpoint)
    print(describe(ck), file=sys.stderr)
    s = G.Sampling(args.temperature, args.top_k)
    ids = [G.encode(t, m.tokenizer) for t in texts]
    if not args.no_check:
        G.check_cache(m)
    draft = None
    if args.draft:
        dck, draft = load_model(args.draft)
        print(f"draft {describe(dck)}", file=sys.stderr)
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


def evaluate_checkpoint(ck: checkpoint.Checkpoint, data_dir: str | None) -> dict:
    """The track's validation loss of a checkpoint, with the harness's own evaluation (the
    same validation tokens, batches and function a run's record uses)."""
    from speedrun import run, tracks
    from speedrun.data import bytelevel, fingerprint

    cfg = ck.cfg
    try:
        tracks.get(cfg.track)
    except SpeedrunError as e:
        raise SpeedrunError(f"checkpoint {ck.path}: {e}") from None
    _, val_files = run.data_for(cfg, data_dir)
    dataset = tracks.get(cfg.track).dataset
    tokenizer = fingerprint.tokenizer_of(val_files[0].parent, dataset) or ck.tokenizer
    if tokenizer != ck.tokenizer:
        raise SpeedrunError(f"checkpoint {ck.path} was trained on {ck.tokenizer!r} tokens, the "
                            f"{dataset} data here is {tokenizer!r}")
    val = run.validation_set(cfg, val_files)
    mesh = distributed.mesh()
    params = jax.device_put(ck.params, distributed.replicated(mesh))
    loss = evaluate.make_eval(cfg, ck.hooks, mesh)(params, val)
    n_tokens = sum(int(y.size) for _, y in val)
    n_bytes = bytelevel.text_bytes(np.concatenate([y.reshape(-1) for _, y in val]), tokenizer)
    return {"val_loss": loss, "val_tokens": n_tokens, "val_bytes": n_bytes,
            "bits_per_byte": bytelevel.bits_per_byte(loss, n_tokens, n_bytes) if n_bytes else None,
            "target": cfg.train.target}


def eval_main(args) -> int:
    ck = checkpoint.load(args.checkpoint)
    print(describe(ck), file=sys.stderr)
    r = evaluate_checkpoint(ck, args.data_dir)
    bpb = "" if r["bits_per_byte"] is None else f", {r['bits_per_byte']:.4f} bits/byte"
    print(f"val loss {r['val_loss']:.6f} nats/token{bpb} over {r['val_tokens']:,} validation "
          f"tokens (track {ck.cfg.track}, target {r['target']})")
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
    q = Q.quantize(ck.params)
    checkpoint.save(out, q, ck.cfg, ck.tokenizer, ck.seed,
                    notes={**ck.notes, "quantized_from": ck.path.name})
    worst = max(Q.errors(ck.params, q).items(), key=lambda kv: kv[1])
    before, after = ck.path.stat().st_size, out.stat().st_size
    print(f"int8 checkpoint written: {out} ({after / 1e6:.2f} MB, float {before / 1e6:.2f} MB, "
          f"{before / after:.1f}x smaller); largest relative error {worst[1]:.2e} ({worst[0]}); "
          f"check it with: python -m speedrun eval {out}")
    return 0
