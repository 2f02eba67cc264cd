"""`python -m speedrun quantize CHECKPOINT`: a weight-only int8 copy of a checkpoint, which
`sample` and `eval` read as they read a float one (speedrun/inference/quantize.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    qz = sub.add_parser(
        "quantize", help="write a weight-only int8 copy of a checkpoint",
        description="Quantize every 2-D weight to int8 with one float32 scale per output "
        "channel (hidden matrices and head per output column, embedding tables per row, "
        "which for a tied head is its output channel); vectors stay float32. `sample` and "
        "`eval` read the result.")
    flags.checkpoint(qz)
    qz.add_argument("--output", default=None, metavar="FILE",
                    help="where to write it (default: NAME.int8.safetensors beside the input)")
    return qz


def quantized_path(path: Path) -> Path:
    from speedrun.inference import checkpoint

    stem = path.name[: -len(checkpoint.SUFFIX)] if path.name.endswith(checkpoint.SUFFIX) else path.name
    return path.with_name(stem + ".int8" + checkpoint.SUFFIX)


def main(args) -> int:
    from speedrun.data import paths
    from speedrun.errors import SpeedrunError
    from speedrun.inference import checkpoint
    from speedrun.inference import quantize as Q

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
