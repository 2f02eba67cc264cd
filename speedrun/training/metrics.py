"""Metrics a person can watch while a run trains, outside the terminal (`run --log-to`):

    --log-to tensorboard:DIR   TensorBoard event files under DIR/<run>/, one run per seed
                               (written by tensorboardX: pip install tensorboardX)
    --log-to wandb[:PROJECT]   Weights & Biases (project "speedrun" unless named; pip install
                               wandb; WANDB_MODE=offline keeps it on this machine)

Each seed logs, against its step (updates done):

    train/loss          the training loss of the step logged (every train.log_every steps)
    train/lr            optim.lr x the lr schedule's multiplier at that step (each optimizer
                        group's lr is its own peak x the same multiplier)
    perf/step_time_ms   the mean train time a step since the step logged before
    perf/tokens_per_s   train tokens a second of train time so far (as the log line)
    perf/mfu            model FLOPs utilisation: tokens/s x FLOPs a token (speed.py) / the
                        peak (a CPU: the seed's speed probe; an accelerator computing in
                        bfloat16: its datasheet's dense bf16 peak, as `bench`)
    val/loss, val/bpb   at each validation (bits per byte where the track knows its bytes)

The values come from the training loop's progress points, where the host already waits for
the device: logging adds no wait. Only process 0 of a multi-process run writes. A resumed run
writes on into the same TensorBoard run, dropping what the stopped one wrote after its last
checkpoint (purge_step).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.data import paths
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.records.record import slugify
from speedrun.training import environment, speed

LOGGERS = {"tensorboard": ("tensorboardX", "pip install tensorboardX (or, in the clone, pip "
                           "install -e \".[tensorboard]\")"),
           "wandb": ("wandb", "pip install wandb (it runs offline with WANDB_MODE=offline)")}


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str  # tensorboard | wandb
    where: str | None  # the TensorBoard folder, or the W&B project


def parse(specs: list[str]) -> list[Target]:
    """``--log-to`` values, checked before anything is built: a known logger, its package
    installed, a TensorBoard folder that can be written."""
    out = []
    for spec in specs:
        kind, _, where = spec.partition(":")
        if kind not in LOGGERS:
            raise SpeedrunError(f"--log-to {spec}: unknown logger {kind!r}; use "
                                f"tensorboard:DIR or wandb")
        if kind == "tensorboard" and not where:
            raise SpeedrunError("--log-to tensorboard needs a folder: --log-to tensorboard:DIR")
        module, install = LOGGERS[kind]
        try:
            __import__(module)
        except ImportError:
            raise SpeedrunError(f"--log-to {kind} needs the {module} package, which is not "
                                f"installed: {install}") from None
        if kind == "tensorboard":
            paths.probe_writable(Path(where), "--log-to tensorboard folder", "pass --log-to "
                                 "tensorboard:DIR with a writable folder")
        out.append(Target(kind, where or None))
    return out


class Watch:
    """One seed's metrics: ``around(progress)`` is the training loop's progress callback that
    also writes them; ``close()`` at the end."""

    def __init__(self, sinks: list, lrs: np.ndarray, flops_per_token: float,
                 peak: float | None, bpb_per_nat: float | None):
        self.sinks, self.lrs, self.fpt, self.peak = sinks, lrs, flops_per_token, peak
        self.bpb_per_nat = bpb_per_nat
        self.last: tuple | None = None  # (step, train time) of the step logged before

    def scalars(self, step: int, values: dict) -> None:
        for sink in self.sinks:
            sink.scalars(step, values)

    def around(self, progress):
        def watched(step: int, info: dict) -> None:
            progress(step, info)
            if "compiled" in info:
                self.last = None
            elif "loss" in info:
                self.scalars(step, self.train_values(step, info))
            else:  # a validation
                values = {"val/loss": info["val"]}
                if self.bpb_per_nat is not None:
                    values["val/bpb"] = info["val"] * self.bpb_per_nat
                self.scalars(step, values)
                for sink in self.sinks:
                    sink.flush()
        return watched

    def train_values(self, step: int, info: dict) -> dict:
        since, then = self.last or (0, 0.0)
        if step > since and info["time"] > then:
            step_time = (info["time"] - then) / (step - since)
        else:
            step_time = info["time"] / max(step, 1)
        self.last = (step, info["time"])
        values = {"train/loss": info["loss"], "train/lr": float(self.lrs[step]),
                  "perf/step_time_ms": step_time * 1e3, "perf/tokens_per_s": info["tok_s"]}
        if self.peak:
            values["perf/mfu"] = info["tok_s"] * self.fpt / self.peak
        return values

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_watch(targets: list[Target], name: str, plan, seed: int, gflops: float | None,
               bpb_per_nat: float | None, resumed_at: int | None) -> Watch | None:
    """The seed's Watch (None where nothing is watched, or in processes other than 0).
    ``name``: the run's name in the loggers (a resumed run passes the stopped one's, and the
    step it resumed at); ``bpb_per_nat``: bits per byte of a nat of val loss (None: none)."""
    if not targets or not devices.is_main_process():
        return None
    cfg = plan.cfg
    run = slugify(f"{name}-seed{seed}", limit=None)
    sinks = [open_sink(t, run, cfg, seed, resumed_at) for t in targets]
    shapes = jax.eval_shape(lambda k: plan.hooks.init(k, cfg.model), jax.random.PRNGKey(0))
    return Watch(sinks, learning_rates(cfg, plan.hooks), speed.flops_per_token(cfg, shapes),
                 mfu_peak(cfg, gflops), bpb_per_nat)


def learning_rates(cfg, hooks) -> np.ndarray:
    """optim.lr x the schedule's multiplier at every step 0 .. steps, on the host's CPU."""
    with jax.default_device(jax.devices("cpu")[0]):
        schedule = hooks.lr_schedule(cfg)
        steps = jnp.arange(cfg.train.steps + 1)
        return cfg.optim.lr * np.asarray(jax.jit(jax.vmap(schedule))(steps), np.float64)


def mfu_peak(cfg, gflops: float | None) -> float | None:
    """The FLOP/s MFU is quoted against, all devices together, without measuring again: the
    datasheet's bf16 peak where the device computes in bfloat16 and has one, else the seed's
    float32 probe."""
    dev, n = jax.devices()[0], jax.device_count()
    if dev.platform != "cpu" and cfg.model.compute_dtype == "bfloat16":
        sheet = environment.datasheet_peak(dev.device_kind)
        if sheet is not None:
            return sheet[0] * n
    return None if gflops is None else gflops * 1e9 * n


def open_sink(target: Target, run: str, cfg, seed: int, resumed_at: int | None):
    if target.kind == "tensorboard":
        return TensorBoard(Path(target.where).expanduser() / run, resumed_at)
    return WandB(target.where or os.environ.get("WANDB_PROJECT") or "speedrun", run,
                 {**cfg.to_dict(), "seed": seed}, resumed_at)


class TensorBoard:
    def __init__(self, folder: Path, resumed_at: int | None):
        from tensorboardX import SummaryWriter

        # the file's name orders it after an earlier process's, even within one second
        suffix = f".{time.time_ns() // 1000}.{os.getpid()}"
        # resumed after step N: what the stopped run wrote after N gives way (N's own points
        # were written before its checkpoint)
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(str(folder), purge_step=purge, filename_suffix=suffix)

    def scalars(self, step: int, values: dict) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, project: str, run: str, config: dict, resumed_at: int | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=project, name=run, id=run, config=config,
                              resume="allow" if resumed_at is not None else None)

    def scalars(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()
