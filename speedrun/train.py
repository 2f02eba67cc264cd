"""The timed training loop for one seed.

Timing follows modded-nanogpt: the step is compiled and warmed up before the clock starts, the
clock stops while validating, and a run trains exactly ``train.steps`` steps (the horizon of every
schedule); its result is the validation loss after the last step. Validations every
``train.eval_every`` steps (untimed) draw the curve and find the first crossing of the target,
which is stored as information only. A non-finite loss raises ``Diverged``; nothing here writes
files (run.py writes the record after every seed has finished).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speedrun import distributed, evaluate, model
from speedrun.config import RunConfig
from speedrun.errors import SpeedrunError
from speedrun.records import Outcome


class Diverged(SpeedrunError):
    pass


def make_step(cfg: RunConfig, hooks, tx: optax.GradientTransformation):
    chunk, steps = cfg.train.loss_chunk, cfg.train.steps

    def step(params, opt_state, x, y, i=None):
        # i: this update's index (traced), for hooks with schedules in the forward pass
        loss, grads = jax.value_and_grad(model.loss)(params, x, y, cfg.model, hooks, chunk,
                                                     i, steps)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def batch_sizes(cfg: RunConfig, hooks) -> list[int]:
    """Global batch size (sequences) of every step: ``train.batch_size``, unless a trick sets
    the ``batch_schedule`` extra (RunConfig -> step -> batch size)."""
    schedule = hooks.extras.get("batch_schedule")
    if schedule is None:
        return [cfg.train.batch_size] * cfg.train.steps
    fn = schedule(cfg)
    return [int(fn(s)) for s in range(cfg.train.steps)]


def tokens_seen(cfg: RunConfig, hooks) -> list[int]:
    """Train tokens consumed before each step 0 .. steps (cumulative, length steps + 1)."""
    return [0] + [int(n) * cfg.model.seq_len
                  for n in np.cumsum(batch_sizes(cfg, hooks))]


def _copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def train(
    cfg: RunConfig,
    seed: int,
    hooks,
    train_loader,
    val_batches,
    log: Callable[[str], None] = print,
    progress: Callable[[int, dict], None] | None = None,
    machine_gflops: float | None = None,
    bpb_per_nat: float | None = None,
    finished: Callable[[object], None] | None = None,
) -> Outcome:
    """Train one seed for ``train.steps`` steps. ``train_loader.batch(step, index, count)`` gives
    this process's rows of the global batch; ``val_batches`` is the fixed validation set;
    ``machine_gflops`` is the machine-speed probe taken before the seed (stored as is);
    ``bpb_per_nat`` converts a mean val loss to bits per byte for the log (None: not shown);
    ``finished(params)`` receives the final parameters after the last validation, with the
    clock stopped (``run --save`` writes them to a checkpoint)."""
    t, m = cfg.train, distributed.mesh()
    sizes = batch_sizes(cfg, hooks)  # one per step; a few distinct sizes, each compiled once
    for size in sorted(set(sizes)):
        distributed.check_batch(size, "train.batch_size" if size == t.batch_size
                                else "a scheduled batch size")
    scheduled = "batch_schedule" in hooks.extras
    rows_before = [0, *np.cumsum(sizes).tolist()]  # sequences consumed before each step
    seen = tokens_seen(cfg, hooks)
    rep, shard = distributed.replicated(m), distributed.batch_sharded(m)
    index, count = distributed.process_slice()

    params = jax.device_put(hooks.init(jax.random.PRNGKey(seed), cfg.model), rep)
    tx = hooks.optimizer(params, cfg, hooks)
    opt_state = jax.device_put(tx.init(params), rep)
    evaluate_fn = evaluate.make_eval(cfg, hooks, m)

    def put(a):
        return distributed.put_batch(a, shard)

    def put_step(i):
        return jax.device_put(np.int32(i), rep)

    # --- compile and warm up, untimed: AOT-compile, then run once on dummy data and copies of
    # the state, so the timed loop starts with everything built and the real state untouched.
    t0 = time.perf_counter()
    jitted = jax.jit(make_step(cfg, hooks, tx), donate_argnums=(0, 1))
    step_fns = {}
    for size in sorted(set(sizes)):
        dummy = np.zeros((size // count, cfg.model.seq_len), np.int32)
        fn = jitted.lower(params, opt_state, put(dummy), put(dummy), put_step(0)).compile()
        jax.block_until_ready(fn(_copy(params), _copy(opt_state), put(dummy), put(dummy),
                                 put_step(0)))
        step_fns[size] = fn
    first_val = evaluate_fn(params, val_batches, 0)  # compiles the eval step; step 0 of the curve
    compile_time = time.perf_counter() - t0
    log(f"compiled and warmed up in {compile_time:.1f}s (not timed)")
    if progress:
        progress(0, {"compiled": compile_time})  # lets a progress bar restart its rate here

    curve = [(0, 0.0, 0, first_val)]
    log(val_line(0, t.steps, first_val, 0.0, bpb_per_nat))
    _check_finite(first_val, 0, "val")
    train_time, step, val_loss = 0.0, 0, first_val
    while step < t.steps:
        t_start = time.perf_counter()
        # Run steps until the next validation or the end; the host only waits for the device at
        # log points, so data loading overlaps with compute.
        stop_at = min(t.steps, (step // t.eval_every + 1) * t.eval_every)
        while step < stop_at:
            if not scheduled:
                x, y = train_loader.batch(step, index, count)
            else:  # the endless sequence of windows, taken at this step's batch size
                x, y = train_loader.rows(rows_before[step], sizes[step], index, count)
            params, opt_state, loss = step_fns[sizes[step]](params, opt_state, put(x), put(y),
                                                            put_step(step))
            step += 1
            if step % t.log_every == 0 or step == stop_at:
                loss_value = float(loss)  # waits for the device
                elapsed = train_time + time.perf_counter() - t_start
                _check_finite(loss_value, step, "train")
                log(f"step:{step}/{t.steps} train_loss:{loss_value:.4f} "
                    f"train_time:{elapsed * 1e3:.0f}ms step_avg:{elapsed / step * 1e3:.2f}ms "
                    f"tokens/s:{seen[step] / max(elapsed, 1e-9):.0f}")
                if progress:
                    progress(step, {"loss": loss_value, "val": val_loss, "time": elapsed,
                                    "tok_s": seen[step] / max(elapsed, 1e-9)})
        jax.block_until_ready(params)
        train_time += time.perf_counter() - t_start  # the clock stops here for validation
        val_loss = evaluate_fn(params, val_batches, step)
        _check_finite(val_loss, step, "val")
        curve.append((step, train_time, seen[step], val_loss))
        log(val_line(step, t.steps, val_loss, train_time, bpb_per_nat))
        if progress:
            progress(step, {"val": val_loss, "time": train_time})
    if finished is not None:  # after the clock and the last validation: never timed
        finished(params)
    # The record rounds to what the log shows, so the log alone re-derives the record.
    curve = tuple((s, round(tt, 4), n, round(v, 6)) for s, tt, n, v in curve)
    crossing = first_crossing(curve, t.target)
    return Outcome(
        seed=seed,
        steps=step,
        train_time_s=curve[-1][1],
        tokens=seen[step],
        final_val_loss=curve[-1][3],
        reached=curve[-1][3] <= t.target,
        first_reached=crossing,
        compile_time_s=round(compile_time, 3),
        machine_gflops=machine_gflops,
        curve=curve,
    )


def val_line(step: int, steps: int, val_loss: float, train_time: float,
             bpb_per_nat: float | None = None) -> str:
    """A validation log line, at the precision the record stores (records.parse_log reads it)."""
    avg = train_time / step * 1e3 if step else 0.0
    bpb = "" if bpb_per_nat is None else f" val_bpb:{val_loss * bpb_per_nat:.4f}"
    return (f"step:{step}/{steps} val_loss:{val_loss:.6f} train_time:{train_time * 1e3:.1f}ms "
            f"step_avg:{avg:.2f}ms{bpb}")


def first_crossing(curve, target: float):
    """(step, train time) of the first validation at or below the target, or None. Information
    only: the claim is about the final loss of a fixed-length run."""
    for step, t, _, v in curve:
        if v <= target:
            return (step, t)
    return None


def _check_finite(value: float, step: int, what: str) -> None:
    if not math.isfinite(value):
        raise Diverged(f"diverged at step {step}: {what} loss is {value}")
