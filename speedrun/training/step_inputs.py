"""Settings a train step can take as inputs, so that sweep points differing only in them train
side by side in one program (speedrun/training/side_by_side.py).

A configuration's settings are Python values when jit traces the step: most become constants of
the compiled program, and many decide what the program *is* (a shape, a count of layers or of
steps, an ``if``). A setting can be an input instead when every use of it is arithmetic the
program can do on a traced number. Which settings qualify is found by trying: the step of one
model is traced (``jax.eval_shape``: nothing compiles) with the setting as a traced scalar, and
the attempt fails where the step needs its value while it is built. What qualifies:

* float settings of the model, the optimizer and the tricks whose every use in the step is
  arithmetic: learning rates, betas, weight decay, a softcap value, a trick's scale ...;
  settings used only to initialise the parameters (``model.init_std``) qualify too, since
  every model of the program is initialised on its own;
* never integers (counts and shapes: layers, steps, warm-up lengths), flags and names (they
  choose code), ``train.*`` settings (the training loop reads them in Python: the batch, the
  run's length, validation), a float the step branches on (``optim.grad_clip``: 0 leaves the
  clipping out of the program) or converts to a Python number, and a float that sets the batch
  size of some steps (a shape).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import tricks as trick_registry
from speedrun.config import RunConfig
from speedrun.core.batch_sizes import batch_sizes
from speedrun.distributed import sharding
from speedrun.errors import SpeedrunError
from speedrun.training import train
from speedrun.training.grid import setting

SECTIONS = ("model", "optim", "train")


def settings_of(cfg: RunConfig) -> dict[str, Any]:
    """Every setting of a pretraining configuration by its ``section.key`` (a trick's by
    ``trick.key``), as ``--set`` names it."""
    d = cfg.to_dict()
    out = {f"{s}.{k}": v for s in SECTIONS for k, v in d[s].items()}
    out.update({f"{t}.{k}": v for t, hp in d["tricks"].items() for k, v in hp.items()})
    return out


def differing(cfgs: list[RunConfig]) -> list[str]:
    """The settings whose values differ among configurations of the same track and tricks (in
    the order the first configuration lists them); configurations that differ in anything else
    cannot share a program."""
    first = cfgs[0]
    for cfg in cfgs[1:]:
        if cfg.track != first.track or cfg.trick_names != first.trick_names:
            raise SpeedrunError("configurations of different tracks or tricks cannot train side "
                                "by side in one program")
    values = [settings_of(c) for c in cfgs]
    return [k for k in values[0] if any(v[k] != values[0][k] for v in values[1:])]


def with_settings(cfg: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """``cfg`` with ``values`` (traced scalars, in the step) in place of its settings; unchecked:
    the values were checked as numbers before they were traced."""
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section in cfg.tricks:
            tricks = {**cfg.tricks, section: {**cfg.tricks[section], name: value}}
            cfg = dataclasses.replace(cfg, tricks=tricks)
        else:
            sub = dataclasses.replace(getattr(cfg, section), **{name: value})
            cfg = dataclasses.replace(cfg, **{section: sub})
    return cfg


def weak(x):
    """A traced setting as weakly typed as the Python float it stands for: multiplied with a
    bfloat16 array it stays bfloat16, as the constant would (a plain float32 input would
    promote the product to float32 and change the program's dtypes)."""
    try:
        from jax._src.lax.lax import _convert_element_type
    except ImportError:  # a JAX without it: the values are the same, some products float32
        return x
    return _convert_element_type(x, np.dtype(np.float32), weak_type=True)


def resolved(cfg: RunConfig, hooks, inputs: Mapping[str, Any]):
    """(configuration, hooks) of one model of the program, ``inputs`` (traced) in place."""
    if not inputs:
        return cfg, hooks
    cfg = with_settings(cfg, {k: weak(v) for k, v in inputs.items()})
    return cfg, trick_registry.build_hooks(cfg, checked=False)


def lane_step(cfg: RunConfig, hooks, layout: sharding.Layout = sharding.UNSPLIT):
    """``step(inputs, params, opt_state, x, y, i)`` of one model: train.make_step's update,
    with ``inputs`` ({setting: traced value}) in place of those settings in its configuration,
    its hooks and its optimizer."""
    def step(inputs, params, opt_state, x, y, i):
        c, h = resolved(cfg, hooks, inputs)
        return train.make_step(c, h, h.optimizer(params, c, h), layout)(params, opt_state, x, y, i)

    return step


# --- which settings qualify ----------------------------------------------------------------------


def _kind(value) -> str | None:
    if isinstance(value, bool):
        return "a flag (it chooses code)"
    if isinstance(value, int):
        return "an integer (a count or a shape, fixed when the step compiles)"
    if not isinstance(value, float):
        return f"a {type(value).__name__} (it chooses code)"
    return None


def _traced_reason(e: Exception) -> str:
    errors = jax.errors
    if isinstance(e, errors.TracerBoolConversionError):
        return "the step branches on it in Python (an if or a comparison), so each value is " \
               "another program"
    if isinstance(e, errors.TracerIntegerConversionError):
        return "the step uses it as an integer (a count, an index or a shape)"
    if isinstance(e, errors.TracerArrayConversionError):
        return "the step turns it into a NumPy value while the program is built"
    if isinstance(e, errors.ConcretizationTypeError):
        return "the step needs its value as a Python number while the program is built"
    first = str(e).splitlines()[0] if str(e) else ""
    return f"tracing the step with it as an input failed ({type(e).__name__}: {first})"


def problem(cfg: RunConfig, hooks, key: str) -> str | None:
    """Why ``key`` cannot be an input of ``cfg``'s step (None: it can)."""
    if key.partition(".")[0] == "train":
        return "the training loop reads it in Python (the batch, the run's length, validation)"
    kind = _kind(setting(cfg, key))
    if kind is not None:
        return f"it is {kind}"
    params = jax.eval_shape(lambda k: hooks.init(k, cfg.model), jax.random.PRNGKey(0))
    opt_state = jax.eval_shape(lambda p: hooks.optimizer(p, cfg, hooks).init(p), params)
    x = jax.ShapeDtypeStruct((cfg.train.batch_size, cfg.model.seq_len), jnp.int32)
    value = {key: jax.ShapeDtypeStruct((), jnp.float32)}
    try:
        jax.eval_shape(lane_step(cfg, hooks), value, params, opt_state, x, x,
                       jax.ShapeDtypeStruct((), jnp.int32))
    except (jax.errors.JAXTypeError, TypeError, ValueError) as e:
        return _traced_reason(e)
    return None


def check(cfgs: list[RunConfig], hooks: list, known: dict | None = None) -> tuple[str, ...]:
    """The settings in which ``cfgs`` differ, each one the step can take as an input, and
    every configuration with the same batch size at every step; else a SpeedrunError naming the
    first setting that cannot be an input, and why. ``hooks``: each configuration's; ``known``:
    {setting: problem(...)} found before, not traced again."""
    keys = differing(cfgs)
    for key in keys:
        why = known[key] if known and key in known else problem(cfgs[0], hooks[0], key)
        if why is not None:
            raise SpeedrunError(f"{key} cannot be an input of the step: {why}")
    sizes = batch_sizes(cfgs[0], hooks[0])
    for cfg, h in zip(cfgs[1:], hooks[1:]):
        if batch_sizes(cfg, h) != sizes:
            raise SpeedrunError(f"{', '.join(keys)} cannot be an input of the step: it sets the "
                                f"batch size of some steps (a shape)")
    return tuple(keys)
