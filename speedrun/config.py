"""Frozen run configuration: model, optimizer and training settings, plus resolved trick settings.

A run is fully described by a ``RunConfig``. It is built from a track's baseline, then changed by
``--set section.key=value`` overrides (sections: model, optim, train, or a trick's name). The
dict form (``to_dict``) is what records store; ``config_hash`` fingerprints it.

May import: speedrun.errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from speedrun.errors import SpeedrunError


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 128 for fast matmuls
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 0  # 0 means n_head (plain multi-head attention)
    d_model: int = 768
    mlp_ratio: int = 4
    seq_len: int = 1024
    init_std: float = 0.02
    # The forward pass's dtype; the master weights, optimizer and loss stay float32. "bfloat16" on
    # the GPU tracks (as llm.c trains GPT-2); "float32" on the CPU tracks, where XLA:CPU's bf16
    # matmuls are slower than float32 ones.
    compute_dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head


def validate_model(m: ModelConfig) -> list[str]:
    """Every out-of-range model setting, each naming its field and the fix."""
    out = _positive_ints(m, "model", ("vocab_size", "n_layer", "n_head", "d_model", "mlp_ratio",
                                      "seq_len"))
    if m.n_kv_head < 0:
        out.append(f"model.n_kv_head must be 0 (= n_head) or positive, got {m.n_kv_head}")
    if not out:
        if m.d_model % m.n_head:
            out.append(f"model.d_model={m.d_model} must be divisible by model.n_head={m.n_head} "
                       f"(the heads split the width)")
        if m.n_head % m.kv_heads:
            out.append(f"model.n_head={m.n_head} must be divisible by model.n_kv_head="
                       f"{m.n_kv_head} (each key/value head serves a group of query heads)")
    out += _finite_positive(m, "model", ("init_std",))
    if m.compute_dtype not in COMPUTE_DTYPES:
        out.append(f"model.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                   f"got {m.compute_dtype!r}")
    return out


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 6e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    warmup_steps: int = 700
    decay: str = "cosine"  # cosine | linear | constant, from the end of warm-up to train.steps
    min_lr_frac: float = 0.1  # final lr as a fraction of the peak


DECAYS = ("cosine", "linear", "constant")


def validate_optim(o: OptimConfig) -> list[str]:
    out = _finite_positive(o, "optim", ("lr", "eps"))
    for name in ("beta1", "beta2"):
        v = getattr(o, name)
        if not (isinstance(v, (int, float)) and 0 <= v < 1):
            out.append(f"optim.{name} must be in [0, 1), got {v}")
    out += _finite_non_negative(o, "optim", ("weight_decay", "grad_clip"))
    if o.warmup_steps < 0:
        out.append(f"optim.warmup_steps must be 0 or more, got {o.warmup_steps}")
    if o.decay not in DECAYS:
        out.append(f"optim.decay must be one of {', '.join(DECAYS)}, got {o.decay!r}")
    if not (math.isfinite(o.min_lr_frac) and 0 <= o.min_lr_frac <= 1):
        out.append(f"optim.min_lr_frac must be in [0, 1], got {o.min_lr_frac}")
    return out


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 512  # sequences per step, across all devices
    steps: int = 20000  # the run's length, and the horizon of every schedule (lr, cool-down, ...)
    eval_every: int = 250  # validate every N steps, untimed, for the curve (and after the last)
    val_tokens: int = 10_485_760  # validate on the first N tokens of the val split
    val_batch_size: int = 0  # sequences per validation batch; 0 = batch_size
    target: float = 3.28  # val loss the run's final validation must be below (a track rule)
    align_docs: bool = False  # start every sequence at a document start (<|endoftext|>)
    loss_chunk: int = 2048  # tokens per logits/cross-entropy chunk (never the whole batch at once)
    log_every: int = 10
    # Where parameters and optimizer state live: "dp" replicates them on every device, "fsdp"
    # splits them over the devices (speedrun/distributed/sharding.py). Batches split either way.
    sharding: str = "dp"
    # Microbatches per step: the step's gradient is the mean of theirs, so the optimizer takes
    # the step of the whole batch (speedrun/training/accumulate.py). 0: the fewest whose
    # microbatch fits this device's memory, chosen when the run starts.
    grad_accum: int = 1
    # Activation checkpointing of each block (jax.checkpoint): "off", "dots" (keep the matmul
    # outputs, recompute the rest) or "full" (keep only each block's input).
    remat: str = "off"


SHARDINGS = ("dp", "fsdp")
REMATS = ("off", "dots", "full")


def validate_train(t: TrainConfig) -> list[str]:
    out = _positive_ints(t, "train", ("batch_size", "steps", "eval_every", "val_tokens",
                                      "loss_chunk", "log_every"))
    if t.val_batch_size < 0:
        out.append(f"train.val_batch_size must be 0 (= batch_size) or positive, "
                   f"got {t.val_batch_size}")
    out += _finite_positive(t, "train", ("target",))
    if not isinstance(t.align_docs, bool):
        out.append(f"train.align_docs must be true or false, got {t.align_docs!r}")
    if t.sharding not in SHARDINGS:
        out.append(f"train.sharding must be one of {', '.join(SHARDINGS)}, got {t.sharding!r}")
    if not (isinstance(t.grad_accum, int) and t.grad_accum >= 0):
        out.append(f"train.grad_accum must be a positive count of microbatches, or 0 (the fewest "
                   f"that fit this device's memory), got {t.grad_accum!r}")
    if t.remat not in REMATS:
        out.append(f"train.remat must be one of {', '.join(REMATS)}, got {t.remat!r}")
    return out


@dataclass(frozen=True)
class PostConfig:
    """Post-training settings: present (``RunConfig.post``) only for `sft` and `rl` runs.
    ``train.batch_size`` is the rows of ``seq_len`` tokens trained per step: packed
    conversations for sft, prompts x ``samples`` answers for rl."""

    method: str = "sft"  # sft | rl
    task: str = "addition"  # a registered task, or jsonl:PATH
    start_sha256: str = ""  # sha256 of the start checkpoint's file
    seq_len: int = 256  # tokens per training row
    heldout: int = 200  # held-out examples scored (greedy pass@1) at every validation
    samples: int = 8  # rl: answers sampled per prompt; their mean reward is the baseline
    temperature: float = 1.0  # rl: sampling temperature
    top_k: int = 0  # rl: sample among the k most likely tokens (0: all)
    adv_norm: bool = False  # rl: divide each advantage by its group's reward std
    kl: float = 0.0  # rl: weight of a KL penalty to the start model (0: none, as nanochat)
    lr_scale: float = 1.0  # every group's peak lr x this, decaying linearly to 0 (no warm-up)


POST_METHODS = ("sft", "rl")


def validate_post(p: PostConfig | None, train: TrainConfig) -> list[str]:
    if p is None:
        return []
    out = _positive_ints(p, "post", ("seq_len", "heldout", "samples"))
    if p.method not in POST_METHODS:
        out.append(f"post.method must be one of {', '.join(POST_METHODS)}, got {p.method!r}")
    if p.top_k < 0:
        out.append(f"post.top_k must be 0 (all) or more, got {p.top_k}")
    if train.sharding != "dp":
        out.append(f"train.sharding={train.sharding} is for pretraining: sft and rl keep a whole "
                   f"copy of the model on every device (dp)")
    for key, plain in (("grad_accum", 1), ("remat", "off")):
        if getattr(train, key) != plain:
            out.append(f"train.{key}={getattr(train, key)} is for pretraining: sft and rl take "
                       f"each step whole (train.{key}={plain})")
    out += _finite_non_negative(p, "post", ("kl",)) + _finite_positive(p, "post", ("lr_scale",))
    if p.method == "rl":
        if isinstance(p.samples, int) and p.samples < 2:
            out.append(f"post.samples must be at least 2 for rl: a group of one has no "
                       f"advantage over its own mean, got {p.samples}")
        elif isinstance(p.samples, int) and p.samples >= 1 and train.batch_size % p.samples:
            out.append(f"train.batch_size={train.batch_size} must be a multiple of "
                       f"post.samples={p.samples} (rows = prompts x samples)")
        out += _finite_positive(p, "post", ("temperature",))
    return out


def validate_tricks(tricks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Trick settings: each trick checks its own meaning; here, no number may be NaN or inf."""
    return [f"{name}.{key} must be a finite number, got {value}"
            for name, params in tricks.items() for key, value in params.items()
            if isinstance(value, float) and not math.isfinite(value)]


def _positive_ints(obj, section: str, names) -> list[str]:
    return [f"{section}.{n} must be a positive integer, got {getattr(obj, n)!r}" for n in names
            if not (isinstance(getattr(obj, n), int) and getattr(obj, n) >= 1)]


def _finite_positive(obj, section: str, names) -> list[str]:
    return [f"{section}.{n} must be a finite number above 0, got {getattr(obj, n)!r}"
            for n in names if not (isinstance(getattr(obj, n), (int, float))
                                   and math.isfinite(getattr(obj, n)) and getattr(obj, n) > 0)]


def _finite_non_negative(obj, section: str, names) -> list[str]:
    return [f"{section}.{n} must be a finite number, 0 or more, got {getattr(obj, n)!r}"
            for n in names if not (isinstance(getattr(obj, n), (int, float))
                                   and math.isfinite(getattr(obj, n)) and getattr(obj, n) >= 0)]


@dataclass(frozen=True)
class RunConfig:
    track: str = "wiki"
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Resolved trick hyperparameters in application order: {trick name: {param: value}}.
    # Treated as immutable; replaced, never mutated.
    tricks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    post: PostConfig | None = None  # post-training runs only; absent from pretraining configs

    @property
    def trick_names(self) -> tuple[str, ...]:
        return tuple(self.tricks)

    def to_dict(self) -> dict:
        out = {
            "track": self.track,
            "model": dataclasses.asdict(self.model),
            "optim": dataclasses.asdict(self.optim),
            "train": dataclasses.asdict(self.train),
            "tricks": {name: dict(params) for name, params in self.tricks.items()},
        }
        if self.post is not None:  # so a pretraining config hashes as it always did
            out["post"] = dataclasses.asdict(self.post)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        try:
            return cls(
                track=d["track"],
                model=_section(ModelConfig, d.get("model", {}), "model"),
                optim=_section(OptimConfig, d.get("optim", {}), "optim"),
                train=_section(TrainConfig, d.get("train", {}), "train"),
                tricks={name: dict(p or {}) for name, p in (d.get("tricks") or {}).items()},
                post=_section(PostConfig, d["post"], "post") if d.get("post") else None,
            )
        except KeyError as e:
            raise SpeedrunError(f"config is missing the field {e.args[0]!r}") from None


SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "post": PostConfig}
VALIDATORS = {"model": validate_model, "optim": validate_optim, "train": validate_train}


def problems(cfg: RunConfig) -> list[str]:
    """Every out-of-range setting of a configuration (one validator per section)."""
    out = [p for name, check in VALIDATORS.items() for p in check(getattr(cfg, name))]
    return out + validate_post(cfg.post, cfg.train) + validate_tricks(cfg.tricks)


def invalid_settings(found: list[str], how: str = "--set section.key=value") -> str:
    """One line naming every out-of-range setting, and ``how`` to change it."""
    return ("invalid setting" + ("s" if len(found) > 1 else "") + ": " + "; ".join(found)
            + f" (change it with {how})")


def validate(cfg: RunConfig, more: list[str] = (), how: str = "--set section.key=value"
             ) -> RunConfig:
    """The configuration, or a SpeedrunError naming every out-of-range setting (``more``: the
    tricks' own, from tricks.setting_problems) on one line, with ``how`` to change it."""
    found = problems(cfg) + list(more)
    if found:
        raise SpeedrunError(invalid_settings(found, how))
    return cfg


def _section(cls, values: Mapping[str, Any], name: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SpeedrunError(f"unknown {name} setting(s): {', '.join(unknown)}")
    return cls(**values)


# Fields added after records existed, with the value that reproduces how those records ran. At
# that value a field is left out of the hash, so a configuration hashes as it did before the
# field existed and identical configurations keep hashing identically across versions.
HASH_OMITS_AT = {("model", "compute_dtype"): "float32", ("train", "sharding"): "dp",
                 ("train", "grad_accum"): 1, ("train", "remat"): "off"}


def config_hash(cfg: RunConfig) -> str:
    """Stable fingerprint of everything that defines a run (not the seed)."""
    d = cfg.to_dict()
    for (section, key), value in HASH_OMITS_AT.items():
        if d[section].get(key) == value:
            del d[section][key]
    return dict_hash(d)


# Settings that say how a step is carried out on a machine (how the batch and parameters are laid
# over the devices, how the loss is chunked, how often the run validates and logs, in how many
# microbatches a step's gradient is summed, which activations are recomputed), never what it
# computes beyond float rounding. A record made with other values of these is a measurement of
# the same configuration: the leaderboard gives a configuration one entry (``identity_hash``).
EXECUTION = (("train", "sharding"), ("train", "loss_chunk"), ("train", "val_batch_size"),
             ("train", "eval_every"), ("train", "log_every"), ("train", "grad_accum"),
             ("train", "remat"))


def identity_hash(cfg: RunConfig) -> str:
    """What the leaderboard counts as one configuration: ``config_hash`` of the configuration
    with every ``EXECUTION`` setting at its default."""
    sections: dict = {}
    for section, key in EXECUTION:
        sections.setdefault(section, {})[key] = _default(SECTIONS[section], key)
    changed = {s: dataclasses.replace(getattr(cfg, s), **keys) for s, keys in sections.items()}
    return config_hash(dataclasses.replace(cfg, **changed))


def _default(cls, key: str) -> Any:
    return next(f for f in dataclasses.fields(cls) if f.name == key).default


def dict_hash(d: Mapping[str, Any]) -> str:
    """The fingerprint of a config dict exactly as given (e.g. as a record stores it)."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_value(text: str) -> Any:
    """Parse the right-hand side of key=value as YAML (numbers, bools, lists, strings)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-2" as a string; a user means the number
            return float(value)
        except ValueError:
            pass
    return value


def coerce(value: Any, default: Any, where: str) -> Any:
    """Check an override against the type of the default it replaces."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SpeedrunError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpeedrunError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpeedrunError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            value = str(value)
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise SpeedrunError(f"{where} must be a list, got {value!r}")
        return type(default)(value)
    return value


def split_override(item: str, flag: str = "--set") -> tuple[str, str, Any]:
    """'optim.lr=3e-4' -> ('optim', 'lr', 0.0003)."""
    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise SpeedrunError(f"{flag} expects section.key=value (e.g. optim.lr=3e-4), got {item!r}")
    return section, name, parse_value(text.strip())


def apply_overrides(cfg: RunConfig, items: list[str], flag: str = "--set") -> RunConfig:
    """Apply ``--set`` overrides (``flag``: the option that gave them, for the messages).
    Unknown sections or keys are errors, never ignored.

    Trick sections (``muon.lr=0.03``) require the trick to be in ``cfg.tricks`` already, so
    resolve the trick list first.
    """
    for item in items:
        section, name, value = split_override(item, flag)
        if section in SECTIONS:
            sub = getattr(cfg, section)
            if sub is None:
                raise SpeedrunError(f"--set {section}.{name}: {section} settings belong to "
                                    f"post-training runs (`sft`, `rl`)")
            fields = {f.name: getattr(sub, f.name) for f in dataclasses.fields(sub)}
            if name not in fields:
                raise SpeedrunError(
                    f"unknown setting {section}.{name}; {section} settings are: {', '.join(fields)}"
                )
            if isinstance(fields[name], str):  # as typed: YAML would read off/no/on as booleans
                value = item.partition("=")[2].strip()
            value = coerce(value, fields[name], f"{section}.{name}")
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{name: value})})
        elif section in cfg.tricks:
            params = dict(cfg.tricks[section])
            if name not in params:
                known = ", ".join(params) or "none"
                raise SpeedrunError(f"trick {section!r} has no setting {name!r} (it has: {known})")
            params[name] = coerce(value, params[name], f"{section}.{name}")
            tricks = dict(cfg.tricks)
            tricks[section] = params
            cfg = dataclasses.replace(cfg, tricks=tricks)
        else:
            raise SpeedrunError(
                f"{flag} {section}.{name}: {section!r} is neither a config section "
                f"({', '.join(SECTIONS)}) nor an enabled trick"
            )
    return cfg
