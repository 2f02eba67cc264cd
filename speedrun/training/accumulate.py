"""Gradient accumulation (``train.grad_accum``): a step's batch taken in microbatches inside the
one compiled step, so ``train.batch_size`` is the same optimizer step on 1, 8 or 64 devices.

With A microbatches, microbatch m holds rows m, m + A, m + 2A, ... of the step's batch. Each
device holds a contiguous block of the batch's rows whose length A divides, so every device
holds its share of every microbatch: splitting the batch moves no data between devices, and
each microbatch is split over every device as the whole batch is. A ``jax.lax.scan`` over the
microbatches keeps one microbatch's activations live at a time; the gradients are summed in
float32, on the parameters' split (under fsdp each microbatch's gradient goes back to the split
as it is made, as the whole batch's does).

The step's loss and gradient are the microbatches' weighted by their share of the batch's
targets; A divides the batch, so the shares are equal and that is their mean: the loss and
gradient of the whole batch, to float rounding. The optimizer (its clipping included) then
takes the very step it would take on the whole batch. A trick that computes over the batch's
tokens together (``Trick.whole_batch``: moe's routing capacity and load-balancing loss) would
compute something else on microbatches: a run refuses it with more than one.

``train.grad_accum=0`` (the FineWeb tracks' default) picks, when a run starts, the fewest
microbatches whose memory fits this device (``choose``), from its memory limit and a
per-sequence figure measured on an H100; a device that reports no memory limit (a CPU) takes 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

import tricks as trick_registry
from speedrun.config import RunConfig
from speedrun.core import params as P
from speedrun.core.batch_sizes import batch_sizes
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError

# --- the step ----------------------------------------------------------------------------------


def microbatches(a, count: int):
    """(B, ...) -> (count, B / count, ...): microbatch m is rows m, m + count, m + 2 count, ..."""
    return jnp.moveaxis(a.reshape(a.shape[0] // count, count, *a.shape[1:]), 1, 0)


def value_and_grad(loss_fn: Callable, count: int, split: Callable = lambda g: g) -> Callable:
    """``loss_fn(params, x, y, i)`` (the mean loss of a batch) -> ``f(params, x, y, i)`` giving
    (the batch's mean loss, its gradient on the parameters' split), taken in ``count``
    microbatches. ``split``: puts a gradient on the parameters' split (fsdp)."""
    if count < 1:
        raise ValueError(f"train.grad_accum={count}: choose the count before building the step")
    grad = jax.value_and_grad(loss_fn)
    if count == 1:  # the whole batch at once: the step as it always was
        def whole(params, x, y, i):
            loss, g = grad(params, x, y, i)
            return loss, split(g)
        return whole

    def accumulated(params, x, y, i):
        def body(carry, xy):
            loss_sum, g_sum = carry
            loss, g = grad(params, xy[0], xy[1], i)
            return (loss_sum + loss, jax.tree_util.tree_map(jnp.add, g_sum, split(g))), None

        zero = split(jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
        (loss, g), _ = jax.lax.scan(body, (jnp.float32(0), zero),
                                    (microbatches(x, count), microbatches(y, count)))
        return loss / count, jax.tree_util.tree_map(lambda a: a / count, g)

    return accumulated


# --- the count: checked, or chosen from the device's memory ---------------------------------------


def check(cfg: RunConfig, sizes: list[int], n_devices: int) -> None:
    """Every step's batch splits into ``train.grad_accum`` microbatches on every device, and no
    trick computes over the whole batch if there are several: else one line, before compiling."""
    count = cfg.train.grad_accum
    for size in sorted(set(sizes)):
        rows = size // n_devices
        if rows % count:
            what = f"train.batch_size={size}" if size == cfg.train.batch_size else \
                f"the scheduled batch size {size}"
            on = f"{n_devices} devices" if n_devices > 1 else "one device"
            raise SpeedrunError(
                f"train.grad_accum={count} must divide each device's share of the batch: "
                f"{what} on {on} is {rows} sequences a device; choose a count that divides "
                f"{rows} ({', '.join(str(d) for d in divisors(rows))})")
    if count > 1:
        whole = whole_batch_tricks(cfg)
        if whole:
            raise SpeedrunError(
                f"train.grad_accum={count}: {', '.join(whole)} computes over the whole batch's "
                f"tokens together (routing capacity, a load-balancing loss), which microbatches "
                f"would change; take each step whole (train.grad_accum=1) with a "
                f"train.batch_size that fits, or more devices")


def whole_batch_tricks(cfg: RunConfig) -> list[str]:
    registry = trick_registry.available()
    return [n for n in cfg.trick_names if n in registry and registry[n].whole_batch]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# What a step of GPT-2 small held at its peak on one H100 (bench, docs/performance.md): 64
# sequences of 1024 tokens, bfloat16 compute over float32 weights, AdamW, the baseline's cuDNN
# attention and 8192-token loss chunks.
MEASURED_PEAK = 27_564 * 2**20
MEASURED_ROWS = 64
MEASURED_SHAPE = (12, 768, 1024)  # n_layer, d_model, seq_len
MEASURED_PARAMS = 124_475_904
# float32 weights, gradients and Adam's two moments, plus the bfloat16 copy the forward reads
STATE_BYTES_PER_PARAM = 4 * 4 + 2
HEADROOM = 0.9  # of the device's limit: fragmentation, and what the estimate does not see


def per_sequence_bytes(cfg: RunConfig) -> float:
    """One sequence's share of a step's memory: the measured step less its state, per sequence,
    scaled by layers x width x length (the activations a block keeps), doubled for float32
    compute. It includes the loss chunks' buffers, which do not shrink with the microbatch, so
    it errs high for small microbatches."""
    state = MEASURED_PARAMS * STATE_BYTES_PER_PARAM
    m = cfg.model
    scale = (m.n_layer * m.d_model * m.seq_len) / math.prod(MEASURED_SHAPE)
    dtype = 2 if m.compute_dtype == "float32" else 1
    return (MEASURED_PEAK - state) / MEASURED_ROWS * scale * dtype


def state_bytes(n_params: int, sharding: str, n_devices: int) -> float:
    """Weights, gradients and optimizer state a device holds during a step: all of them (dp), or
    its split of them plus the gathered weights (fsdp)."""
    whole = n_params * STATE_BYTES_PER_PARAM
    return whole if sharding == "dp" else whole / n_devices + n_params * 4


def choose(cfg: RunConfig, sizes: list[int], n_devices: int, n_params: int,
           limit: int | None) -> tuple[int, str]:
    """(the fewest microbatches that fit ``limit`` bytes a device, the line saying so). Counts
    divide every step's share of a device; None ``limit`` (no figure, e.g. a CPU): 1."""
    if limit is None:
        return 1, ("train.grad_accum=0: 1 microbatch (this device reports no memory limit, so "
                   "each step is taken whole)")
    rows = max(sizes) // n_devices
    counts = [c for c in divisors(rows) if all((s // n_devices) % c == 0 for s in set(sizes))]
    state = state_bytes(n_params, cfg.train.sharding, n_devices)
    seq = per_sequence_bytes(cfg)
    for count in counts:
        need = state + rows / count * seq
        if need <= HEADROOM * limit:
            gb = 1e9
            return count, (
                f"train.grad_accum=0: {count} microbatch{'es' * (count > 1)} of "
                f"{rows // count} sequences a device (estimated {need / gb:.1f} GB of this "
                f"device's {limit / gb:.1f} GB: {state / gb:.1f} GB of weights and optimizer "
                f"state + {seq / gb:.2f} GB a sequence, scaled from GPT-2 small's "
                f"{MEASURED_PEAK / gb:.1f} GB for {MEASURED_ROWS} sequences on an H100)")
    raise SpeedrunError(
        f"train.grad_accum=0: even one sequence a microbatch needs an estimated "
        f"{(state + seq) / 1e9:.1f} GB, more than this device's {limit / 1e9:.1f} GB; try "
        f"train.remat=full with train.grad_accum={counts[-1]}, train.sharding=fsdp, or more "
        f"devices")


def device_limit(device) -> int | None:
    """Bytes the device's allocator may hand out, where its backend says (GPU, TPU)."""
    stats = device.memory_stats() or {}
    return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


def resolve(cfg: RunConfig, hooks, n_devices: int | None = None,
            device=None) -> tuple[RunConfig, str | None]:
    """(the configuration with its microbatch count chosen and checked, the line saying how it
    was chosen: None when given by hand), for this machine's devices (or ``n_devices`` of the
    kind of ``device``)."""
    n_devices = devices.device_count() if n_devices is None else n_devices
    sizes = batch_sizes(cfg, hooks)
    line = None
    if cfg.train.grad_accum == 0:
        shapes = jax.eval_shape(lambda k: hooks.init(k, cfg.model), jax.random.PRNGKey(0))
        limit = device_limit(jax.local_devices()[0] if device is None else device)
        count, line = choose(cfg, sizes, n_devices, P.count(shapes), limit)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad_accum=count))
    check(cfg, sizes, n_devices)
    return cfg, line
