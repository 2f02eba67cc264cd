"""Several models trained side by side as one program, for untimed work: the seeds of a
configuration (screening, `find-steps`' probes, `compare --side-by-side`), and `sweep` points
that differ only in settings the step takes as inputs (step_inputs.py).

The program is train.make_step's update under ``jax.vmap``: over the models' parameters,
optimizer states and batches (each model's own seed's data order) and over the settings that
are inputs; the step index is shared. On a small model the matmuls become larger and fewer, so
a machine the model leaves partly idle trains several in little more time than one. Every model
is initialised on its own (its seed, its settings), exactly as one seed of `run` is; a model's
final loss equals its one-after-another run's to float rounding (tests/test_side_by_side.py
measures how close).

Each model keeps its own log, validations and result, as one seed of `run` has, but its train
time is the program's wall clock, shared by every model in it: not the time of one seed alone.
So a record of models trained side by side carries ``untimed`` (``untimed_reason``), the
leaderboard lists it unranked, and a timed claim (`submit`) never trains so. A model that
diverges stops counting (its result is a ``train.Diverged``); with ``stop_on_divergence`` (as
`run`, `compare` and `find-steps` want) the first divergence ends the program.

Before the first step, the program is compiled and its memory planned by XLA: a count of
models that does not fit the device stops there with how many would.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from speedrun.core import model
from speedrun.core.batch_sizes import batch_sizes, tokens_seen
from speedrun.data import bytelevel, loader
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.records import logs, sittings
from speedrun.training import environment, saving, speed, step_inputs, train
from speedrun.training.console import Console
from speedrun.training.grid import setting
from speedrun.training.plan import Plan
from speedrun.training.seed import summary_line


@dataclass(frozen=True)
class Lane:
    """One model of the program: a plan (its configuration) and a seed; ``tag`` prefixes its
    lines (e.g. 'point 2/3 ')."""

    plan: Plan
    seed: int
    tag: str = ""


# Backends on which several seeds side by side trained more seeds per hour than one after another
# (tests/benchmarks/side_by_side.py measures it; docs/performance.md): there the commands that
# time nothing (`sweep`, `find-steps`) train side by side unless --no-side-by-side.
FASTER_ON: frozenset[str] = frozenset()


def by_default() -> bool:
    """Whether untimed commands train side by side when not told: on the backends where it
    measured faster."""
    return jax.default_backend() in FASTER_ON


def untimed_reason(n_models: int, n_seeds: int | None = None) -> str:
    """A record's ``untimed``: how its seeds were trained (``n_seeds`` of it among
    ``n_models`` models of one program; None: all of them)."""
    n_seeds = n_models if n_seeds is None else n_seeds
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    if n_seeds == n_models:
        return f"{seeds} trained side by side in one program"
    return f"{seeds} trained side by side in one program of {n_models} models"


def check_can(cfg, what: str = "--side-by-side") -> None:
    """What side by side cannot do, said before anything is built."""
    if cfg.train.sharding != "dp":
        raise SpeedrunError(f"{what} keeps every model whole on each device: it needs "
                            f"train.sharding=dp, not {cfg.train.sharding}")
    if jax.process_count() > 1:
        raise SpeedrunError(f"{what} trains in one process: run it without `launch`")


def device_memory_bytes() -> int | None:
    """The memory one device's programs may use: the accelerator's allocator limit, or on a
    CPU the machine's physical memory (None where neither is known)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(compiled, n_models: int) -> None:
    """A program whose planned peak exceeds the device's memory stops here, saying how many
    models would fit (the peak grows with the models: parameters, optimizer states, batches and
    activations are each the models' own)."""
    need, have = speed.program_peak_bytes(compiled), device_memory_bytes()
    if need is None or have is None or need <= have:
        return
    fit = int(have // (need / n_models))
    raise SpeedrunError(f"{n_models} models side by side need about {need / 2**30:.1f} GiB for "
                        f"the train step (XLA's plan), more than this device's "
                        f"{have / 2**30:.1f} GiB: at most {fit} would fit; train fewer side by "
                        f"side, or one after another (--no-side-by-side)")


# --- the program ---------------------------------------------------------------------------------


class Program:
    """The compiled step and validation of every lane, their state, and the feed of batches."""

    def __init__(self, lanes: list[Lane]):
        plans = [lane.plan for lane in lanes]
        self.lanes, self.cfg, self.hooks = lanes, plans[0].cfg, plans[0].hooks
        for plan in plans:
            check_can(plan.cfg)
        self.keys = step_inputs.check([p.cfg for p in plans], [p.hooks for p in plans])
        self.inputs = {k: jnp.asarray([float(setting(p.cfg, k)) for p in plans],
                                      jnp.float32) for k in self.keys}
        self.sizes = batch_sizes(self.cfg, self.hooks)
        for size in sorted(set(self.sizes)):
            devices.check_batch(size, "train.batch_size" if size == self.cfg.train.batch_size
                                else "a scheduled batch size")
        mesh = devices.mesh()
        self.rows = NamedSharding(mesh, PartitionSpec(None, devices.AXIS))  # (model, row, T)
        self.val_rows = devices.batch_sharded(mesh)
        states = [init_lane(lane) for lane in lanes]
        self.params, self.opt_state = (jax.device_put(stack(part), devices.replicated(mesh))
                                       for part in zip(*states))
        tokenizer = plans[0].data["tokenizer"] or "gpt2"
        t = self.cfg.train
        self.loaders = [loader.TrainLoader(p.train_files, t.batch_size, self.cfg.model.seq_len,
                                           lane.seed, align_docs=t.align_docs,
                                           doc_sep=bytelevel.separator(tokenizer))
                        for p, lane in zip(plans, lanes)]

    def batch(self, step: int, rows_before: int):
        """Every lane's rows of this step, stacked: (inputs, targets), each (models, B, T)."""
        size = self.sizes[step]
        if self.hooks.extra("batch_schedule") is None:
            parts = [ld.batch(step, 0, 1) for ld in self.loaders]
        else:  # the endless sequence of windows, taken at this step's batch size
            parts = [ld.rows(rows_before, size, 0, 1) for ld in self.loaders]
        return tuple(jax.device_put(np.stack(a), self.rows) for a in zip(*parts))

    def compile(self) -> tuple[dict, callable]:
        """({batch size: compiled step}, validate(params, step) -> every lane's val loss):
        each step compiled, its memory checked, and run once on copies of the state."""
        step = jax.vmap(step_inputs.lane_step(self.cfg, self.hooks),
                        in_axes=(0, 0, 0, 0, 0, None))
        jitted = jax.jit(step, donate_argnums=(1, 2))
        seq, n, i0 = self.cfg.model.seq_len, len(self.lanes), jnp.int32(0)
        compiled = {}
        for size in sorted(set(self.sizes)):
            dummy = jax.device_put(np.zeros((n, size, seq), np.int32), self.rows)
            fn = jitted.lower(self.inputs, self.params, self.opt_state, dummy, dummy, i0).compile()
            check_memory(fn, n)
            jax.block_until_ready(fn(self.inputs, copy(self.params), copy(self.opt_state), dummy,
                                     dummy, i0))
            compiled[size] = fn
        return compiled, self.make_validate()

    def make_validate(self):
        cfg, hooks, chunk, steps = self.cfg, self.hooks, self.cfg.train.loss_chunk, \
            self.cfg.train.steps

        def one(inputs, params, x, y, i):
            c, h = step_inputs.resolved(cfg, hooks, inputs)
            return model.loss_sum(params, x, y, c.model, h, chunk, i, steps)

        summed = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None)))
        val = self.lanes[0].plan.val

        def validate(params, step: int) -> np.ndarray:
            total, n = jnp.zeros(len(self.lanes), jnp.float32), 0
            for x, y in val:
                put = lambda a: devices.put_batch(a, self.val_rows)  # noqa: E731
                total = total + summed(self.inputs, params, put(x), put(y), np.int32(step))
                n += y.size
            return np.asarray(total) / n

        return validate


def init_lane(lane: Lane):
    """One model's initial parameters and optimizer state, as one seed of `run` starts."""
    cfg, hooks = lane.plan.cfg, lane.plan.hooks
    params = hooks.init(jax.random.PRNGKey(lane.seed), cfg.model)
    return params, hooks.optimizer(params, cfg, hooks).init(params)


def stack(trees):
    """Trees of the same structure as one tree of arrays with a leading model axis."""
    structures = {jax.tree_util.tree_structure(t) for t in trees}
    if len(structures) > 1:
        raise SpeedrunError("the models' states differ in structure: they cannot share a program")
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def lane_params(params, i: int):
    return jax.tree_util.tree_map(lambda a: a[i], params)


# --- training ------------------------------------------------------------------------------------


class Lanes:
    """Every lane's log, curve and divergence while the program trains."""

    def __init__(self, lanes: list[Lane], gflops: float, bpb_per_nat: float | None,
                 started: str):
        self.lanes, self.bpb, self.started = lanes, bpb_per_nat, started
        n = len(lanes)
        self.lines = [logs.header(lane.plan.cfg, lane.seed, lane.plan.env, started)
                      for lane in lanes]
        for lines in self.lines:
            lines += [logs.machine_line(gflops),
                      f"side by side: {n} models in one program (vmap); train_time is the "
                      f"program's wall clock, shared by all {n}, not this seed's alone (untimed)"]
        self.curves: list[list] = [[] for _ in lanes]
        self.diverged: dict[int, train.Diverged] = {}

    def live(self) -> list[int]:
        return [i for i in range(len(self.lanes)) if i not in self.diverged]

    def log(self, line_of) -> None:
        for i in self.live():
            self.lines[i].append(line_of(i))

    def check(self, values: np.ndarray, step: int, what: str) -> None:
        for i in self.live():
            if not np.isfinite(values[i]):
                self.diverged[i] = train.Diverged(f"diverged at step {step}: {what} loss is "
                                                  f"{float(values[i])}")
                self.lines[i].append(str(self.diverged[i]))

    def validated(self, step: int, steps: int, seen: int, time_s: float, vals) -> None:
        self.check(vals, step, "val")
        for i in self.live():
            self.curves[i].append((step, time_s, seen, float(vals[i])))
        self.log(lambda i: logs.val_line(step, steps, float(vals[i]), time_s, self.bpb))


def train_side_by_side(lanes: list[Lane], quiet: bool, tag: str = "",
                       stop_on_divergence: bool = True, save_dir: str | None = None,
                       save_failures: list | None = None, after=None) -> list:
    """Every lane trained as one program: each lane's ``train.RunResult`` (its log says it was
    trained side by side), or its ``train.Diverged``. ``save_dir``, ``save_failures`` and
    ``after(seed, params)``: as for seed.run_seed, for every lane that finished."""
    plan = lanes[0].plan
    started = sittings.now()  # the program's wall clock is every lane's (logs and records)
    gflops = environment.machine_gflops()  # one probe for the program, in every lane's log
    n_bytes = plan.data.get("val_bytes")
    bpb = bytelevel.bits_per_byte(1.0, plan.data["val_tokens"], n_bytes) if n_bytes else None
    state = Lanes(lanes, gflops, bpb, started)
    console = Console(plan.cfg.train.steps, quiet, f"{tag}{len(lanes)} side by side")
    try:
        t0 = time.perf_counter()  # --- untimed: build, compile and warm up
        program = Program(lanes)
        step_fns, validate = program.compile()
        first = validate(program.params, 0)
        compile_time = time.perf_counter() - t0
        state.log(lambda i: f"compiled and warmed up in {compile_time:.1f}s (not timed)")
        console.log(f"{tag}{len(lanes)} models side by side: compiled and warmed up in "
                    f"{compile_time:.1f}s (not timed)")
        console.progress(0, {"compiled": compile_time})  # the bar's rate counts train steps
        state.validated(0, plan.cfg.train.steps, 0, 0.0, first)
        params = timed_loop(program, step_fns, validate, state, console, stop_on_divergence,
                            tag)
    finally:
        console.close()
    ended = sittings.now()
    finish(lanes, state, params, save_dir, save_failures, after)
    return results(lanes, state, compile_time, gflops, ended)


def timed_loop(program: Program, step_fns: dict, validate, state: Lanes, console: Console,
               stop_on_divergence: bool, tag: str = ""):
    """Every step on the clock, the clock stopped for validations (as train.timed_loop); the
    final parameters of every lane."""
    t, sizes = program.cfg.train, program.sizes
    seen = tokens_seen(program.cfg, program.hooks)
    rows_before = [0, *np.cumsum(sizes).tolist()]
    params, opt_state, inputs = program.params, program.opt_state, program.inputs
    train_time, step = 0.0, 0
    while step < t.steps and state.live():
        t_start = time.perf_counter()
        stop_at = min(t.steps, (step // t.eval_every + 1) * t.eval_every)
        while step < stop_at:
            x, y = program.batch(step, rows_before[step])
            params, opt_state, loss = step_fns[sizes[step]](inputs, params, opt_state, x, y,
                                                            jnp.int32(step))
            step += 1
            if step % t.log_every == 0 or step == stop_at:
                losses = np.asarray(loss)  # waits for the device
                elapsed = train_time + time.perf_counter() - t_start
                state.check(losses, step, "train")
                state.log(lambda i: f"step:{step}/{t.steps} train_loss:{losses[i]:.4f} "
                          f"train_time:{elapsed * 1e3:.0f}ms step_avg:{elapsed / step * 1e3:.2f}ms "
                          f"tokens/s:{seen[step] / max(elapsed, 1e-9):.0f}")
                live = state.live()
                if live:
                    console.progress(step, {"loss": float(np.mean(losses[live])), "time": elapsed})
                stop_if_diverged(state, stop_on_divergence)
        jax.block_until_ready(params)
        train_time += time.perf_counter() - t_start  # the clock stops here for validation
        vals = validate(params, step)
        state.validated(step, t.steps, seen[step], train_time, vals)
        console.log(f"{tag}step:{step}/{t.steps} val_loss " + " ".join(
            f"{v:.4f}" for v in vals) + f" train_time:{train_time * 1e3:.0f}ms")
        stop_if_diverged(state, stop_on_divergence)
    return params


def stop_if_diverged(state: Lanes, stop_on_divergence: bool) -> None:
    if stop_on_divergence and state.diverged:
        i = min(state.diverged)
        raise train.Diverged(f"{state.lanes[i].tag}seed {state.lanes[i].seed} "
                             f"{state.diverged[i]}")


def finish(lanes: list[Lane], state: Lanes, params, save_dir, save_failures, after) -> None:
    """After the clock: each finished lane's parameters saved and handed to ``after``."""
    if save_dir is None and after is None:
        return
    for i in state.live():
        lane, p = lanes[i], checkpoint.to_host(lane_params(params, i))
        if save_dir is not None:
            ok, line = saving.save_checkpoint(lane.plan, p, lane.seed, save_dir)
            print(f"{lane.tag}seed {lane.seed}: {line}")
            if not ok and save_failures is not None:
                save_failures.append(line)
        if after is not None:
            after(lane.seed, p)


def results(lanes: list[Lane], state: Lanes, compile_time: float, gflops: float,
            ended: str) -> list:
    out = []
    for i, lane in enumerate(lanes):
        if i in state.diverged:
            out.append(state.diverged[i])
            continue
        cfg = lane.plan.cfg
        o = train.outcome(cfg, lane.seed, state.curves[i], compile_time, gflops)
        line = summary_line(o, cfg.train.target, gflops, lane.tag)
        print(line)
        lines = [*state.lines[i], logs.ended_line(ended), line]
        out.append(train.RunResult(**vars(o), log="\n".join(lines) + "\n",
                                   started=state.started, ended=ended))
    return out


def seeds_of(plan: Plan, seeds: list[int], quiet: bool, tag: str = "", **kw) -> list:
    """One configuration's seeds side by side: their RunResults (the first divergence raises
    train.Diverged, as one seed after another would)."""
    lanes = [Lane(plan, s, tag) for s in seeds]
    return train_side_by_side(lanes, quiet, tag, stop_on_divergence=True, **kw)
