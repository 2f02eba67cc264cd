"""The timed loop of one post-training seed (sft and rl alike), timed like pretraining.

The step is compiled and run once on copies of the state before the clock starts; the clock
stops while the model is scored on the held-out examples (greedy pass@1, every
``train.eval_every`` steps and after the last); everything else is training time: building each
step's batch, and for rl sampling the answers it learns from. The curve's "val loss" is the
held-out **error**, 1 - pass@1, so the claim rule of pretraining applies as it is: a record is a
claim when the seeds' final errors are below the track's target error (its target accuracy
read from the other side) with p < 0.01.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speedrun.config import RunConfig
from speedrun.core.batch_sizes import tokens_seen
from speedrun.distributed import devices
from speedrun.inference import generate as G
from speedrun.posttraining import objective, scoring
from speedrun.records.logs import val_line
from speedrun.training.train import Outcome, check_finite, outcome


def make_step(cfg: RunConfig, hooks, tx: optax.GradientTransformation):
    """(params, opt_state, batch) -> (params, opt_state, loss); batch: x, y, w, norm (and for
    a KL penalty: mask, ref, the start model's log-probabilities)."""
    chunk, kl = cfg.train.loss_chunk, cfg.post.kl

    def loss_fn(params, b):
        loss = objective.weighted_nll(params, b["x"], b["y"], b["w"], b["norm"], cfg, hooks,
                                      chunk)
        if kl:  # k3 estimator of KL(policy || start), per answer token
            d = b["ref"] - objective.token_logprobs(params, b["x"], b["y"], cfg, hooks)
            loss = loss + kl * jnp.sum(b["mask"] * (jnp.exp(d) - d - 1)) / b["norm"]
        return loss

    def step(params, opt_state, b):
        loss, grads = jax.value_and_grad(loss_fn)(params, b)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def heldout_error(model: G.Model, task, heldout) -> tuple[float, float]:
    """(1 - greedy pass@1, its standard error) on the held-out examples."""
    s = scoring.score(model, task, heldout, k=1)
    return 1.0 - s.pass1, s.pass1_se


def run(cfg: RunConfig, seed: int, hooks, params, tokenizer: str, task, heldout,
        next_batch: Callable[[object, int], tuple[dict, str]], log: Callable[[str], None] = print,
        progress: Callable[[int, dict], None] | None = None,
        finished: Callable[[object], None] | None = None,
        machine_gflops: float | None = None) -> Outcome:
    """Train one seed for ``train.steps`` steps from ``params`` (the start model, on the
    device). ``next_batch(params, step)`` builds the step's batch (numpy arrays) and a note for
    the log, sampling with ``params`` where the method does (rl)."""
    t = cfg.train
    rep = devices.replicated(devices.mesh())
    tx = hooks.optimizer(params, cfg, hooks)
    opt_state = jax.device_put(tx.init(params), rep)
    seen = tokens_seen(cfg, hooks)

    def evaluate(p) -> float:
        err, se = heldout_error(G.Model(p, cfg, hooks, tokenizer), task, heldout)
        log(f"heldout pass@1 {1 - err:.4f} ± {se:.4f} over {len(heldout)} examples")
        return err

    t0 = time.perf_counter()  # --- untimed: compile the step on a real batch and copies
    first, info = next_batch(params, 0)
    step_fn = jax.jit(make_step(cfg, hooks, tx), donate_argnums=(0, 1)).lower(
        params, opt_state, first).compile()
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731
    jax.block_until_ready(step_fn(copy(params), copy(opt_state), first))
    error = evaluate(params)  # compiles generation too
    compile_time = time.perf_counter() - t0
    log(f"compiled and warmed up in {compile_time:.1f}s (not timed)")
    if progress:
        progress(0, {"compiled": compile_time})
    log(val_line(0, t.steps, error, 0.0))
    curve, train_time, step = [(0, 0.0, 0, error)], 0.0, 0
    batch = first  # step 0's batch was built (untimed) to compile with: the first step uses it
    while step < t.steps:
        t_start = time.perf_counter()
        stop_at = min(t.steps, (step // t.eval_every + 1) * t.eval_every)
        while step < stop_at:
            if step > 0:
                batch, info = next_batch(params, step)  # rl: sampling with the current policy
            params, opt_state, loss = step_fn(params, opt_state, batch)
            step += 1
            if step % t.log_every == 0 or step == stop_at:
                value = float(loss)
                elapsed = train_time + time.perf_counter() - t_start
                check_finite(value, step, "train")
                log(f"step:{step}/{t.steps} train_loss:{value:.4f} train_time:{elapsed * 1e3:.0f}ms "
                    f"step_avg:{elapsed / step * 1e3:.2f}ms{info}")
                if progress:
                    progress(step, {"loss": value, "time": elapsed})
        jax.block_until_ready(params)
        train_time += time.perf_counter() - t_start  # the clock stops for the held-out score
        error = evaluate(params)
        curve.append((step, train_time, seen[step], error))
        log(val_line(step, t.steps, error, train_time))
        if progress:
            progress(step, {"val": error, "time": train_time})
    if finished is not None:
        finished(params)
    return outcome(cfg, seed, curve, compile_time, machine_gflops)


def as_batch(x: np.ndarray, y: np.ndarray, w: np.ndarray, mask: np.ndarray,
             ref: np.ndarray | None = None) -> dict:
    """A step's arrays as the step function takes them."""
    b = {"x": x.astype(np.int32), "y": y.astype(np.int32), "w": w.astype(np.float32),
         "mask": mask.astype(np.float32), "norm": np.float32(max(float(mask.sum()), 1.0))}
    if ref is not None:
        b["ref"] = ref.astype(np.float32)
    return b
