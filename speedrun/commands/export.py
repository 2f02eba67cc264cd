"""`python -m speedrun export CHECKPOINT --format hf DIR`: a checkpoint of the baseline's
architecture as a Hugging Face GPT-2 folder (what is written, and what is refused:
speedrun/inference/hf_gpt2.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    ex = sub.add_parser(
        "export", help="write a checkpoint as a Hugging Face GPT-2 folder (config, safetensors)",
        description="Write a checkpoint of the baseline's architecture (tricks that change only "
        "training are fine) as a Hugging Face GPT-2 folder: config.json, model.safetensors "
        "under GPT-2's parameter names, and for GPT-2-token models vocab.json, merges.txt and "
        "tokenizer_config.json. The vocabulary is cut to the tokenizer's (50257; 256 for "
        "bytes). A trick that changes the architecture is refused by name.")
    flags.checkpoint(ex)
    ex.add_argument("--format", default="hf", choices=("hf",),
                    help="hf: transformers' GPT2LMHeadModel layout (the only format)")
    ex.add_argument("output", metavar="DIR", help="the folder to write (new, or empty)")
    ex.add_argument("--tokenizer", default="auto", choices=("auto", "gpt2", "none"),
                    help="tokenizer files: auto writes GPT-2's for GPT-2-token models and none "
                    "for byte-level ones (default auto); gpt2 asks for them")
    ex.add_argument("--force", action="store_true",
                    help="write into a folder that already holds files, replacing ours")
    return ex


def main(args) -> int:
    from speedrun.inference import checkpoint, hf_gpt2

    ck = checkpoint.load(args.checkpoint)
    out = Path(args.output).expanduser()
    written = hf_gpt2.export(ck, out, args.tokenizer, args.force)
    print(ck.describe(), file=sys.stderr)
    vocab = hf_gpt2.exported_vocab(ck.cfg, ck.tokenizer)
    notes = [f"vocab_size {vocab}" + (f" (cut from the model's padded {ck.cfg.model.vocab_size})"
                                      if vocab < ck.cfg.model.vocab_size else "")]
    if ck.tokenizer != "gpt2":
        notes.append("no tokenizer files: its ids are a text's UTF-8 bytes")
    if ck.quantization != "none":
        notes.append(f"{ck.quantization} weights written dequantized to float32")
    if ck.cfg.model.compute_dtype != "float32" or "bf16" in ck.cfg.tricks:
        notes.append("trained with reduced-precision compute; float32 master weights written")
    print(f"Hugging Face GPT-2 folder written: {out} ({', '.join(written)}); "
          f"{'; '.join(notes)}")
    return 0
