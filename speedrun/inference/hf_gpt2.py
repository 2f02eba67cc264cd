"""A checkpoint as a Hugging Face GPT-2 folder (`python -m speedrun export CHECKPOINT --format hf
DIR`).

What it writes (the layout of transformers' ``GPT2LMHeadModel``):

* ``config.json``: every field ``GPT2Config`` defines, sorted and indented as transformers
  writes it, plus ``architectures``, ``model_type``, ``tie_word_embeddings`` and
  ``torch_dtype``. Dropout is 0 (the model trained without it); ``n_positions`` is the
  model's context (``model.seq_len``); ``n_inner`` is null at the baseline's 4x MLP.
* ``model.safetensors``: float32 tensors under GPT-2's names, ``transformer.wte.weight``,
  ``transformer.wpe.weight``, per block ``transformer.h.{i}.ln_1``, ``attn.c_attn`` (q, k, v
  concatenated along the output), ``attn.c_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``
  (each ``.weight`` and ``.bias``; Conv1D layout (in, out), which is ours: ``x @ w + b``), and
  ``transformer.ln_f``. The head is tied to ``wte``, so there is no ``lm_head.weight`` (as
  transformers saves it). The metadata says ``format: pt``, which transformers requires.
* ``vocab.json``, ``merges.txt`` (GPT-2's ``encoder.json`` and ``vocab.bpe``, checked against
  their hashes) and ``tokenizer_config.json``, for GPT-2-token models only.

The vocabulary is cut to the tokenizer's (50,257 GPT-2 tokens; 256 for bytes): the padding
rows (to 50,304) are ids no tokenizer produces, and transformers' tokenizer would disagree
with a larger ``vocab_size``. The logits of the remaining ids are unchanged.

Only the baseline's architecture exports: learned positions, LayerNorm with biases, GELU
(tanh), one key/value head per query head, biases, the tied head. A trick that changes a
forward-pass hook, adds parameters or regroups the heads is refused by name; tricks that
change only the optimizer, the schedule, the data, the initialisation, the training loss or
the compute dtype export as they are (the weights are float32 either way; an int8 checkpoint
exports its dequantized weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np

import tricks as trick_registry
from speedrun.config import RunConfig
from speedrun.core import params as P
from speedrun.core.model import baseline_hooks
from speedrun.data import bytelevel, corpus, paths, tokenizer
from speedrun.data.shards import atomic_write
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.inference import quantize as Q

FORMATS = ("hf",)
# Hook points the forward pass of a trained model calls (``cast`` only changes the dtype).
FORWARD_HOOKS = ("embed", "blocks", "block_input", "norm", "qk", "values", "attend",
                 "attn_output", "mlp", "mlp_act", "head", "logits")
TOKENIZER_FILES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}
TOKENIZER_CONFIG = "tokenizer_config.json"


# --- what exports ------------------------------------------------------------------------------


def param_shapes(hooks, cfg: RunConfig) -> dict[str, tuple]:
    tree = jax.eval_shape(lambda k: hooks.init(k, cfg.model), jax.random.PRNGKey(0))
    return {P.path_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def trick_problem(name: str, cfg: RunConfig, registry) -> str | None:
    """Why one trick keeps ``cfg``'s model from being GPT-2's (None: it does not)."""
    t = registry[name]
    touched = trick_registry.touched_hooks(t)
    forward = sorted(touched & set(FORWARD_HOOKS))
    if forward:
        return f"{name} (changes the {', '.join(forward)} hook{'s' if len(forward) > 1 else ''})"
    hp = trick_registry.hp(t, cfg.tricks.get(name))
    if t.configure is not None:
        plain = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_kv_head=0))
        m = t.configure(plain, hp).model
        if m.kv_heads != m.n_head:
            return f"{name} ({m.kv_heads} key/value heads for {m.n_head} query heads)"
    if "init" in touched:
        base = baseline_hooks()
        theirs = param_shapes(t.apply(base, hp), cfg)
        if theirs != param_shapes(base, cfg):
            return f"{name} (changes the parameters)"
    return None


def problems(cfg: RunConfig, registry=None) -> list[str]:
    """Everything in ``cfg`` that GPT-2's architecture cannot express, each named."""
    registry = trick_registry.available() if registry is None else registry
    out = [p for p in (trick_problem(n, cfg, registry) for n in cfg.tricks) if p]
    if cfg.model.kv_heads != cfg.model.n_head and not out:
        out.append(f"model.n_kv_head={cfg.model.n_kv_head} (GPT-2 has one key/value head per "
                   f"query head)")
    return out


def refusal(ck: checkpoint.Checkpoint, found: list[str]) -> SpeedrunError:
    fine = [n for n in ck.cfg.tricks if not any(p.startswith(n + " ") for p in found)]
    also = f"; its other tricks ({', '.join(fine)}) would export" if fine else ""
    return SpeedrunError(f"checkpoint {ck.path} cannot be exported as a Hugging Face GPT-2: "
                         f"its architecture is not GPT-2's: {'; '.join(found)}{also}")


# --- the files ---------------------------------------------------------------------------------


def exported_vocab(cfg: RunConfig, tok: str) -> int:
    return min(cfg.model.vocab_size, corpus.VOCAB[tok])


def hf_config(cfg: RunConfig, tok: str) -> dict:
    """GPT2Config's fields for this model (sorted and indented when written, as transformers
    writes them)."""
    m = cfg.model
    sep = bytelevel.separator(tok)
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0, "bos_token_id": sep, "embd_pdrop": 0.0, "eos_token_id": sep,
        "initializer_range": m.init_std, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
        "n_embd": m.d_model, "n_head": m.n_head,
        "n_inner": None if m.mlp_ratio == 4 else m.mlp_ratio * m.d_model,
        "n_layer": m.n_layer, "n_positions": m.seq_len, "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0, "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
        "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
        "summary_type": "cls_index", "summary_use_proj": True, "tie_word_embeddings": True,
        "torch_dtype": "float32", "use_cache": True, "vocab_size": exported_vocab(cfg, tok),
    }


def hf_tensors(params, vocab: int) -> dict[str, np.ndarray]:
    """Our baseline parameters under GPT-2's names and layout (module docstring)."""
    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), Q.dequantize(params))
    out = {"transformer.wte.weight": p["wte"][:vocab], "transformer.wpe.weight": p["wpe"],
           "transformer.ln_f.weight": p["ln_f"]["scale"],
           "transformer.ln_f.bias": p["ln_f"]["bias"]}
    for i, b in enumerate(p["blocks"]):
        a, m, h = b["attn"], b["mlp"], f"transformer.h.{i}."
        out.update({
            h + "ln_1.weight": b["ln1"]["scale"], h + "ln_1.bias": b["ln1"]["bias"],
            h + "attn.c_attn.weight": np.concatenate([a["wq"], a["wk"], a["wv"]], axis=1),
            h + "attn.c_attn.bias": np.concatenate([a["bq"], a["bk"], a["bv"]]),
            h + "attn.c_proj.weight": a["wo"], h + "attn.c_proj.bias": a["bo"],
            h + "ln_2.weight": b["ln2"]["scale"], h + "ln_2.bias": b["ln2"]["bias"],
            h + "mlp.c_fc.weight": m["wfc"], h + "mlp.c_fc.bias": m["bfc"],
            h + "mlp.c_proj.weight": m["wproj"], h + "mlp.c_proj.bias": m["bproj"],
        })
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def files(ck: checkpoint.Checkpoint, with_tokenizer: bool) -> dict[str, bytes]:
    """Every file of the export, by name."""
    from safetensors.numpy import save

    cfg = ck.cfg
    blob = save(hf_tensors(ck.params, exported_vocab(cfg, ck.tokenizer)),
                metadata={"format": "pt"})
    out = {"config.json": (json.dumps(hf_config(cfg, ck.tokenizer), indent=2, sort_keys=True)
                           + "\n").encode(),
           "model.safetensors": blob}
    if with_tokenizer:
        bpe = {f.name: f for f in tokenizer.FILES}
        out.update({name: tokenizer.bpe_bytes(bpe[ours]) for name, ours in TOKENIZER_FILES.items()})
        out[TOKENIZER_CONFIG] = (json.dumps({"model_max_length": cfg.model.seq_len,
                                             "tokenizer_class": "GPT2Tokenizer"}, indent=2)
                                 + "\n").encode()
    return out


# --- writing -----------------------------------------------------------------------------------


def check_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SpeedrunError(f"export folder {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SpeedrunError(f"export folder {out} already exists and is not empty; pass --force "
                            f"to write over its files, or name a new folder")
    paths.probe_writable(out, "export folder", "name a folder in a writable place")


def write(out: Path, blobs: dict[str, bytes]) -> None:
    """A new (or empty) folder is built beside it and renamed into place, so an interrupted
    export leaves nothing half-written; with --force an existing folder gets each file replaced
    atomically, and tokenizer files this export does not write are removed (a stale vocab.json
    would pair a byte-level model with GPT-2's tokenizer)."""
    if out.is_dir() and any(out.iterdir()):
        for name, blob in blobs.items():
            atomic_write(out / name, [blob])
        for name in (*TOKENIZER_FILES, TOKENIZER_CONFIG):
            if name not in blobs:
                (out / name).unlink(missing_ok=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, blob in blobs.items():
            atomic_write(tmp / name, [blob])
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)  # replaces an empty folder; fails if one appeared meanwhile
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def wants_tokenizer(ck: checkpoint.Checkpoint, choice: str) -> bool:
    if choice == "gpt2" and ck.tokenizer != "gpt2":
        raise SpeedrunError(
            f"checkpoint {ck.path} reads {ck.tokenizer} (a text's UTF-8 bytes as ids 0..255), "
            f"not GPT-2 tokens: GPT-2's tokenizer files would feed it ids it never saw; export "
            f"it without --tokenizer gpt2 (config.json says vocab_size 256)")
    return choice == "gpt2" or (choice == "auto" and ck.tokenizer == "gpt2")


def export(ck: checkpoint.Checkpoint, out: Path, tokenizer_choice: str = "auto",
           force: bool = False) -> list[str]:
    """Write the export of ``ck`` to ``out``: the names of the files written."""
    found = problems(ck.cfg)
    if found:
        raise refusal(ck, found)
    with_tokenizer = wants_tokenizer(ck, tokenizer_choice)
    check_folder(out, force)
    blobs = files(ck, with_tokenizer)
    write(out, blobs)
    return sorted(blobs)
