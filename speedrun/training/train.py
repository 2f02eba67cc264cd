"""The timed training loop for one seed.

Timing follows modded-nanogpt: the step is compiled and warmed up before the clock starts, the
clock stops while validating, and a run trains exactly ``train.steps`` steps (the horizon of every
schedule); its result is the validation loss after the last step. Validations every
``train.eval_every`` steps (untimed) draw the curve and find the first crossing of the target,
which is stored as information only. A non-finite loss raises ``Diverged``; nothing here writes
files (the command writes the record after every seed has finished: saving.py).

``train`` is three parts: ``compile_steps`` (untimed: every step program compiled and run once
on copies of the state), ``timed_loop`` (the clock) and ``outcome`` (what the seed measured).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speedrun.config import RunConfig
from speedrun.core import model
from speedrun.core.batch_sizes import batch_sizes, tokens_seen
from speedrun.distributed import devices, sharding
from speedrun.errors import SpeedrunError
from speedrun.records.logs import val_line
from speedrun.records.record import first_crossing
from speedrun.training import accumulate, evaluate, remat
from speedrun.training.state import State, init_state


class Diverged(SpeedrunError):
    pass


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one seed's fixed-length run measured."""

    seed: int
    steps: int
    train_time_s: float  # of all ``steps`` steps, compilation and validation excluded
    tokens: int
    final_val_loss: float  # after the last step: the seed's result
    reached: bool  # final_val_loss <= target
    first_reached: tuple | None  # (step, train_time_s) of the first validation <= target
    compile_time_s: float
    machine_gflops: float | None  # machine-speed probe before the seed
    curve: tuple  # ((step, train_time_s, tokens, val_loss), ...) at each validation


@dataclasses.dataclass(frozen=True)
class RunResult(Outcome):
    """A finished seed as a record stores it: its outcome, its full text log and its wall-clock
    start and end (ISO 8601, UTC; speedrun/records/sittings.py)."""

    log: str
    started: str | None = None
    ended: str | None = None


def make_step(cfg: RunConfig, hooks, tx: optax.GradientTransformation,
              layout: sharding.Layout = sharding.UNSPLIT):
    """One update. With a split ``layout`` (fsdp) the forward and backward pass see the whole
    parameters (XLA all-gathers them), the gradients come back split (summed, each device
    keeping its slice) and the optimizer updates each device's slice; replicated (dp), none of
    that is in the step. The gradient is taken in ``train.grad_accum`` microbatches
    (accumulate.py), each block checkpointed as ``train.remat`` says (remat.py)."""
    chunk, steps = cfg.train.loss_chunk, cfg.train.steps
    hooks = remat.with_remat(hooks, cfg.train.remat)

    def loss_fn(params, x, y, i):
        return model.loss(layout.gather(params), x, y, cfg.model, hooks, chunk, i, steps)

    grads_of = accumulate.value_and_grad(loss_fn, cfg.train.grad_accum, layout.split_params)

    def step(params, opt_state, x, y, i=None):
        # i: this update's index (traced), for hooks with schedules in the forward pass
        loss, grads = grads_of(params, x, y, i)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return layout.split_params(params), layout.split_state(opt_state), loss

    return step


class Feed:
    """Puts this process's rows of a batch, and a step index, on the mesh."""

    def __init__(self, mesh):
        self.rep, self.shard = devices.replicated(mesh), devices.batch_sharded(mesh)
        self.index, self.count = devices.process_slice()

    def batch(self, rows):
        return devices.put_batch(rows, self.shard)

    def step(self, i: int):
        return jax.device_put(np.int32(i), self.rep)


def _copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def compile_steps(cfg: RunConfig, hooks, state: State, sizes: list[int], feed: Feed) -> dict:
    """{batch size: compiled step}, each AOT-compiled and run once on dummy data and copies of
    the state, so the timed loop starts with everything built and the real state untouched."""
    jitted = jax.jit(make_step(cfg, hooks, state.tx, state.layout), donate_argnums=(0, 1))
    compiled = {}
    for size in sorted(set(sizes)):
        dummy = feed.batch(np.zeros((size // feed.count, cfg.model.seq_len), np.int32))
        fn = jitted.lower(state.params, state.opt_state, dummy, dummy, feed.step(0)).compile()
        jax.block_until_ready(fn(_copy(state.params), _copy(state.opt_state), dummy, dummy,
                                 feed.step(0)))
        compiled[size] = fn
    return compiled


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
    keep=None,
) -> Outcome:
    """Train one seed for ``train.steps`` steps. ``train_loader.batch(step, index, count)`` gives
    this process's rows of the global batch; ``val_batches`` is the fixed validation set;
    ``machine_gflops`` is the machine-speed probe taken before the seed (stored as is);
    ``bpb_per_nat`` converts a mean val loss to bits per byte for the log (None: not shown);
    ``finished(params)`` receives the final parameters after the last validation, with the
    clock stopped (``run --save`` writes them to a checkpoint). ``keep`` (resume.SeedKeeper):
    the state to continue from (``keep.restore``), and a checkpoint every ``keep.every``
    steps (``keep.save``, with the clock stopped)."""
    mesh = devices.mesh()
    sizes = batch_sizes(cfg, hooks)  # one per step; a few distinct sizes, each compiled once
    for size in sorted(set(sizes)):
        devices.check_batch(size, "train.batch_size" if size == cfg.train.batch_size
                            else "a scheduled batch size")
    feed = Feed(mesh)
    state = init_state(cfg, hooks, seed, mesh)
    evaluate_fn = evaluate.make_eval(cfg, hooks, mesh, state.layout)

    resumed = keep.restore(state) if keep is not None else None  # (state, step, curve, time)

    t0 = time.perf_counter()  # --- untimed: compile and warm up
    step_fns = compile_steps(cfg, hooks, state, sizes, feed)
    if resumed is None:  # step 0 of the curve (its validation compiles eval)
        curve, start = [(0, 0.0, 0, evaluate_fn(state.params, val_batches, 0))], None
    else:
        state, step, curve, train_time = resumed
        start = (step, train_time)
        evaluate_fn(state.params, val_batches[:1], step)  # compiles eval; not a curve point
    compile_time = time.perf_counter() - t0
    log(f"compiled and warmed up in {compile_time:.1f}s (not timed)")
    if progress:
        progress(0, {"compiled": compile_time})  # lets a progress bar restart its rate here
    if resumed is None:
        log(val_line(0, cfg.train.steps, curve[0][3], 0.0, bpb_per_nat))
        check_finite(curve[0][3], 0, "val")
        if progress:
            progress(0, {"val": curve[0][3], "time": 0.0})
    else:
        log(f"resumed at step {step} ({train_time:.1f}s of train time before it; the time "
            f"from that checkpoint to the stop is not counted)")

    params, curve = timed_loop(cfg, hooks, state, step_fns, sizes, feed, train_loader,
                               lambda p, s: evaluate_fn(p, val_batches, s), curve, log,
                               progress, bpb_per_nat, keep, start)
    if finished is not None:  # after the clock and the last validation: never timed
        finished(params)
    return outcome(cfg, seed, curve, compile_time, machine_gflops)


def timed_loop(cfg: RunConfig, hooks, state: State, step_fns: dict, sizes: list[int], feed: Feed,
               train_loader, validate: Callable, curve: list, log, progress,
               bpb_per_nat, keep=None, start: tuple | None = None) -> tuple:
    """Every step from ``start`` (step, train time; default: the curve's last point) on, on the
    clock; the clock stops for each validation and checkpoint. Returns the final parameters
    and the curve [(step, train_time_s, tokens, val_loss), ...] from step 0."""
    t = cfg.train
    seen = tokens_seen(cfg, hooks)
    scheduled = hooks.extra("batch_schedule") is not None
    rows_before = [0, *np.cumsum(sizes).tolist()]  # sequences consumed before each step
    params, opt_state = state.params, state.opt_state
    curve = list(curve)
    step, train_time = start or curve[-1][:2]
    val_loss = curve[-1][3]
    stops = [t.eval_every] + ([keep.every] if keep is not None else [])
    while step < t.steps:
        t_start = time.perf_counter()
        # Run steps until the next validation, checkpoint or the end; the host only waits for
        # the device at log points, so data loading overlaps with compute.
        stop_at = min(t.steps, *((step // every + 1) * every for every in stops))
        while step < stop_at:
            if not scheduled:
                x, y = train_loader.batch(step, feed.index, feed.count)
            else:  # the endless sequence of windows, taken at this step's batch size
                x, y = train_loader.rows(rows_before[step], sizes[step], feed.index, feed.count)
            params, opt_state, loss = step_fns[sizes[step]](params, opt_state, feed.batch(x),
                                                            feed.batch(y), feed.step(step))
            step += 1
            if step % t.log_every == 0 or step == stop_at:
                loss_value = float(loss)  # waits for the device
                elapsed = train_time + time.perf_counter() - t_start
                check_finite(loss_value, step, "train")
                log(f"step:{step}/{t.steps} train_loss:{loss_value:.4f} "
                    f"train_time:{elapsed * 1e3:.0f}ms step_avg:{elapsed / step * 1e3:.2f}ms "
                    f"tokens/s:{seen[step] / max(elapsed, 1e-9):.0f}")
                if progress:
                    progress(step, {"loss": loss_value, "val": val_loss, "time": elapsed,
                                    "tok_s": seen[step] / max(elapsed, 1e-9)})
        jax.block_until_ready(params)
        train_time += time.perf_counter() - t_start  # the clock stops here
        if step % t.eval_every == 0 or step == t.steps:
            val_loss = validate(params, step)
            check_finite(val_loss, step, "val")
            curve.append((step, train_time, seen[step], val_loss))
            log(val_line(step, t.steps, val_loss, train_time, bpb_per_nat))
            if progress:
                progress(step, {"val": val_loss, "time": train_time})
        if keep is not None and step % keep.every == 0 and step < t.steps:
            keep.save(step, params, opt_state, curve, train_time)
    return params, curve


def outcome(cfg: RunConfig, seed: int, curve, compile_time: float,
            machine_gflops: float | None) -> Outcome:
    """The seed's result, rounded to what the log shows, so the log alone re-derives it."""
    curve = tuple((s, round(tt, 4), n, round(v, 6)) for s, tt, n, v in curve)
    step, train_time, tokens, final = curve[-1]
    return Outcome(
        seed=seed,
        steps=step,
        train_time_s=train_time,
        tokens=tokens,
        final_val_loss=final,
        reached=final <= cfg.train.target,
        first_reached=first_crossing(curve, cfg.train.target),
        compile_time_s=round(compile_time, 3),
        machine_gflops=machine_gflops,
        curve=curve,
    )


def check_finite(value: float, step: int, what: str) -> None:
    if not math.isfinite(value):
        raise Diverged(f"diverged at step {step}: {what} loss is {value}")
