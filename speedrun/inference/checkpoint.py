"""Model checkpoints: one safetensors file per trained seed.

Why safetensors: a checkpoint here is a flat set of named arrays plus a few strings, which is
exactly what the format holds, and a safetensors file is read the same way from PyTorch, NumPy,
JAX, Rust or the Hugging Face tools, lazily and without executing anything (no pickle).
Orbax, what JAX training stacks use, shines at sharded, asynchronous checkpoints of training
state on many hosts; we write final weights once, after the clock stops, from one process, and
want them usable outside this harness.

Layout of a file:

* one tensor per parameter, named by its dotted path (``blocks.0.attn.wq``; see
  speedrun/core/params.py), float32 as trained;
* int8 checkpoints (``speedrun quantize``): a quantized parameter is an int8 tensor under its own
  name plus its float32 scales under ``NAME:scale`` (speedrun/inference/quantize.py);
* string metadata: ``format``, ``format_version``, ``config`` (the resolved run config as JSON,
  tricks and their hyperparameters included), ``config_hash``, ``track``, ``tokenizer``,
  ``seed``, ``quantization`` (``none`` | ``int8``) and free ``notes`` (JSON).

Loading rebuilds the config, checks its hash, derives the parameter tree the config's hooks
would initialise (``jax.eval_shape`` of ``hooks.init``: no compute) and checks that every
tensor is there, with nothing extra, at the expected shape and dtype. Any problem is one
``SpeedrunError`` line naming the file and what is wrong. Files are written atomically
(temporary file, fsync, rename), so an interrupted save never leaves a half-written checkpoint
under the final name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

import tricks as trick_registry
from speedrun.config import RunConfig, config_hash
from speedrun.core import params as P
from speedrun.data.shards import atomic_write
from speedrun.errors import SpeedrunError
from speedrun.inference import quantize as Q
from speedrun.inference.generate import Model

FORMAT = "speedrun-checkpoint"
VERSION = 1
SUFFIX = ".safetensors"
SCALE = ":scale"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    params: Any  # nested dict/list of numpy arrays (Int8 leaves when quantized)
    cfg: RunConfig
    tokenizer: str
    seed: int | None
    quantization: str  # 'none' | 'int8'
    notes: dict

    @property
    def hooks(self):
        hooks = trick_registry.build_hooks(self.cfg)
        return Q.int8_hooks(hooks) if self.quantization == "int8" else hooks

    def model(self):
        return Model(self.params, self.cfg, self.hooks, self.tokenizer)

    def describe(self) -> str:
        m = self.cfg.model
        tricks = ",".join(self.cfg.trick_names) or "baseline"
        quant = ", int8 weights" if self.quantization == "int8" else ""
        return (f"{self.path.name}: track {self.cfg.track}, {m.n_layer}L d{m.d_model} "
                f"h{m.n_head}, tricks {tricks}{quant}, tokenizer {self.tokenizer}")


def file_name(cfg: RunConfig, seed: int) -> str:
    """``<track>-<config hash>-seed<N>.safetensors``: one name per configuration and seed."""
    return f"{cfg.track}-{config_hash(cfg)}-seed{seed}{SUFFIX}"


def host_array(x) -> np.ndarray:
    """A device array as numpy, whole: replicated, split over this process's devices, or split
    over other processes' too (then gathered, so every process must call this, in the same
    order: a collective)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def to_host(params):
    """The parameter tree as numpy arrays (``host_array`` of each, in one order everywhere)."""
    return jax.tree_util.tree_map(host_array, params)


def tensors_of(params) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params, is_leaf=Q.is_int8):
        name = P.path_name(path)
        if Q.is_int8(leaf):
            out[name] = host_array(leaf.q)
            out[name + SCALE] = host_array(leaf.scale)
        else:
            out[name] = host_array(leaf)
    return out


def save(path: str | os.PathLike, params, cfg: RunConfig, tokenizer: str, seed: int | None = None,
         notes: dict | None = None) -> Path:
    """Write ``params`` (float or int8) with the config and tokenizer, atomically."""
    from safetensors.numpy import save

    path = Path(path)
    tensors = tensors_of(params)
    meta = {
        "format": FORMAT,
        "format_version": str(VERSION),
        "config": json.dumps(cfg.to_dict(), sort_keys=True, default=str),
        "config_hash": config_hash(cfg),
        "track": cfg.track,
        "tokenizer": tokenizer,
        "seed": "" if seed is None else str(seed),
        "quantization": "int8" if Q.quantized(params) else "none",
        "notes": json.dumps(notes or {}, sort_keys=True, default=str),
    }
    blob = save(tensors, metadata=meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, [blob])  # temp file, fsync, rename; readable like the data files
    return path


def resolve_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a folder holding exactly one."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(p.glob(f"*{SUFFIX}"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise SpeedrunError(f"{p}: no {SUFFIX} checkpoint in this folder")
        raise SpeedrunError(f"{p} holds {len(found)} checkpoints ({', '.join(f.name for f in found[:4])}"
                            f"{', ...' if len(found) > 4 else ''}); name one")
    if not p.exists():
        raise SpeedrunError(f"{p}: no such checkpoint")
    return p


def read_file(path: Path, what: str = "checkpoint", tensors: bool = True) -> tuple[dict, dict]:
    """(metadata, tensors) of a safetensors file, its size checked against its header first: a
    file cut short or padded is one ``SpeedrunError`` line naming ``what`` it is. Without
    ``tensors``, only that check (and the metadata)."""
    from safetensors import safe_open

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"only {size} bytes, not even a safetensors header")
        header_len = int.from_bytes(head, "little")
        if 8 + header_len > size:
            raise ValueError(f"truncated: the header says {header_len} bytes, the file has "
                             f"{size - 8} after the length")
        header = json.loads(open(path, "rb").read(8 + header_len)[8:])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                  default=0)
        if 8 + header_len + end != size:
            raise ValueError(f"truncated or padded: the tensors need {8 + header_len + end} "
                             f"bytes, the file has {size}")
        if not tensors:
            return header.get("__metadata__") or {}, {}
        out = {}
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            for name in f.keys():
                out[name] = f.get_tensor(name)
    except OSError as e:
        raise SpeedrunError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - safetensors/json errors: a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpeedrunError(f"{what} {path}: not a readable safetensors file ({msg})") from None
    return meta, out


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint (see the module docstring)."""
    path = resolve_path(path)
    meta, tensors = read_file(path)

    def bad(what: str):
        return SpeedrunError(f"checkpoint {path}: {what}")

    if meta.get("format") != FORMAT:
        raise bad(f"not a speedrun checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != str(VERSION):
        raise bad(f"format version {meta.get('format_version')!r}, this harness reads {VERSION}")
    try:
        cfg = RunConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise bad(f"its config cannot be read ({e})") from None
    except SpeedrunError as e:
        raise bad(f"its config cannot be read ({e})") from None
    if config_hash(cfg) != meta.get("config_hash"):
        raise bad(f"its config does not match its config_hash ({meta.get('config_hash')} stored, "
                  f"{config_hash(cfg)} computed): the config was edited or damaged")
    try:
        cfg = trick_registry.canonical(cfg)
        hooks = trick_registry.build_hooks(cfg)
    except SpeedrunError as e:
        raise bad(f"its tricks cannot be built here ({e})") from None
    quant = meta.get("quantization", "none")
    if quant not in ("none", "int8"):
        raise bad(f"unknown quantization {quant!r}")
    expected = jax.eval_shape(lambda k: hooks.init(k, cfg.model), jax.random.PRNGKey(0))
    want: dict[str, tuple] = {}
    for p_, leaf in jax.tree_util.tree_leaves_with_path(expected):
        name = P.path_name(p_)
        axis = Q.channel_axis(name, leaf) if quant == "int8" else None
        if axis is None:
            want[name] = (leaf.shape, np.float32)
        else:
            want[name] = (leaf.shape, np.int8)
            scale_shape = tuple(1 if i == axis else n for i, n in enumerate(leaf.shape))
            want[name + SCALE] = (scale_shape, np.float32)
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing:
        raise bad(f"missing tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                  f" that its config ({', '.join(cfg.trick_names) or 'baseline'}) needs")
    if extra:
        raise bad(f"unexpected tensor(s) {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"
                  f" that its config ({', '.join(cfg.trick_names) or 'baseline'}) does not have")
    for name, (shape, dtype) in want.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise bad(f"tensor {name} is {t.dtype}{list(t.shape)}, its config needs "
                      f"{np.dtype(dtype)}{list(shape)}")

    def leaf(p_, x):
        name = P.path_name(p_)
        if name + SCALE in tensors:
            return Q.Int8(tensors[name], tensors[name + SCALE])
        return tensors[name]

    params = jax.tree_util.tree_map_with_path(leaf, expected)
    seed = meta.get("seed") or None
    try:
        notes = json.loads(meta.get("notes") or "{}")
    except ValueError:
        notes = {}
    return Checkpoint(path, params, cfg, meta.get("tokenizer") or "gpt2",
                      None if seed is None else int(seed), quant, notes)
