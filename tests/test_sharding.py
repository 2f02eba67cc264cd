"""Eight simulated devices: data-parallel steps give one device's losses, and
train.sharding fsdp splits parameters and optimizer state, trains as dp does (Muon's
orthogonalisations included), holds about an eighth of dp's bytes per device, and places every
trick's parameters from the one table; microbatches take the whole batch's steps under either;
on one device fsdp is dp."""

from __future__ import annotations

import math

import jax
import pytest
from jax.sharding import PartitionSpec

import tricks
from helpers import on_devices, param_gaps, setup, tokens
from speedrun import cli
from speedrun.distributed import sharding
from speedrun.training import train
from speedrun.training.state import init_state

DEVICES = 8

# Everything that needs 8 devices, in two child processes run side by side (JAX fixes the device
# count when a process starts): what they share, then what each checks and prints.
COMMON = """
import json
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
import tricks
from helpers import flat, mesh_steps, normal, setup
from speedrun.distributed import devices, sharding
from speedrun.errors import SpeedrunError
from speedrun.training.state import init_state
from tricks import muon, polar_express

mesh = devices.mesh()
out = {{"devices": jax.device_count()}}

def split_dims(spec):  # ('data', None) and ('data',) split alike: the trailing Nones go
    dims = tuple(spec)
    while dims and dims[-1] is None:
        dims = dims[:-1]
    return str(dims)

def steps(names, strategy, k):  # (losses, params by name, whether placed as declared)
    losses, params, placed = mesh_steps(names, strategy, k, mesh)
    return losses, flat(params), placed
"""

TRAINING = """
# Muon (Newton-Schulz) with NorMuon, Adam on the rest: 20 updates replicated and split, and
# replicated on one of the devices
out["muon"] = {{}}
for strategy in ("dp", "fsdp"):
    losses, params, _ = steps(["muon", "normuon"], strategy, 20)
    out["muon"][strategy] = losses, {{k: np.asarray(v).tolist() for k, v in params.items()}}
one = jax.sharding.Mesh(jax.devices()[:1], mesh.axis_names, axis_types=mesh.axis_types)
out["muon"]["one device"] = mesh_steps(["muon", "normuon"], "dp", 20, one)[0]

# 4 microbatches of 32 rows (one row a device each), replicated and split, against the whole
# batch replicated
out["accum"] = {{}}
for strategy, count in (("dp", 1), ("dp", 4), ("fsdp", 4)):
    losses, params, placed = mesh_steps(["muon"], strategy, 10, mesh, rows=32,
                                        overrides=[f"train.grad_accum={{count}}"])
    out["accum"][f"{{strategy}} {{count}}"] = losses, {{k: np.asarray(v).tolist() for k, v in
                                                     flat(params).items()}}, placed

# each orthogonalisation of a tall and a wide matrix split by rows, as fsdp splits one
out["ortho"] = {{}}
for f in (muon.orthogonalize, polar_express.polar_express):
    for shape in ((64, 32), (32, 64)):
        whole = normal(0, shape)
        split = jax.device_put(whole, NamedSharding(mesh, PartitionSpec("data", None)))
        diff = np.asarray(jax.jit(f)(split)) - np.asarray(jax.jit(f)(whole))
        out["ortho"][f"{{f.__name__}} {{shape}}"] = float(np.max(np.abs(diff)))

# parameter + optimizer-state bytes a device holds (what bench reports), at d_model 128
out["bytes"] = {{}}
for names in ([], ["muon", "normuon"]):
    for strategy in ("dp", "fsdp"):
        cfg, hooks, _ = setup(names, [f"train.sharding={{strategy}}"], d_model=128)
        state = init_state(cfg, hooks, 0, mesh)
        out["bytes"]["+".join(names) + " " + strategy] = sharding.bytes_per_device(
            (state.params, state.opt_state))
"""

TRICKS = """
# every trick, in as few valid sets as the registry allows, one split step each
registry = tricks.available()
groups = []
for name in sorted(registry):
    want = {{name, *registry[name].requires}}
    for g in groups:
        try:
            tricks.resolve(sorted(g | want))
        except SpeedrunError:
            continue
        g |= want
        break
    else:
        groups.append(want)
out["groups"] = []
for g in groups:
    losses, params, placed = steps(sorted(g), "fsdp", 1)
    specs = {{k: split_dims(v.sharding.spec) for k, v in params.items()}}
    table = {{k: split_dims(sharding.spec_for(k, v, "fsdp", {devices}))
             for k, v in params.items()}}
    out["groups"].append({{"tricks": sorted(g), "loss": losses[0], "specs": specs,
                          "table": table, "placed": placed}})
"""


@pytest.fixture(scope="module")
def split():
    """What the 8-device processes found."""
    scripts = [(COMMON + part).format(devices=DEVICES) + "print(json.dumps(out))\n"
               for part in (TRAINING, TRICKS)]
    training, each_trick = on_devices(scripts, DEVICES).wait()
    assert training["devices"] == each_trick["devices"] == DEVICES
    return training | each_trick


@pytest.mark.slow
def test_eight_devices_train_as_one(split):
    """Data parallelism: the batch split over 8 devices takes one device's steps (reductions
    over 8 shards round differently, hence the tolerance)."""
    one = split["muon"]["one device"]
    assert split["muon"]["dp"][0] == pytest.approx(one, abs=2e-3)
    assert one[-1] < one[0] - 0.5


@pytest.mark.slow
def test_fsdp_trains_as_dp_does(split):
    (dp_losses, dp_params), (fsdp_losses, fsdp_params) = (split["muon"][s]
                                                           for s in ("dp", "fsdp"))
    assert len(dp_losses) == 20 and dp_losses[-1] < dp_losses[0] - 0.5, dp_losses  # it trained
    assert fsdp_losses == pytest.approx(dp_losses, abs=1e-5)
    gaps = param_gaps(dp_params, fsdp_params)
    assert len(gaps) > 10 and max(gaps.values()) < 1e-5, gaps


@pytest.mark.slow
def test_microbatches_take_the_whole_batchs_steps_over_eight_devices(split):
    """4 microbatches of 32 rows on 8 devices (one row a device each), replicated or split:
    the whole batch's losses and parameters within 1e-5 (key biases aside), every array on
    its declared split."""
    (whole, whole_params, _), *micro = (split["accum"][k] for k in ("dp 1", "dp 4", "fsdp 4"))
    assert whole[-1] < whole[0] - 0.5, whole  # it trained
    for losses, params, placed in micro:
        assert losses == pytest.approx(whole, abs=1e-5)
        gaps = param_gaps(whole_params, params)
        assert max(gaps.values()) < 1e-5, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
        assert placed


@pytest.mark.slow
def test_muon_and_polar_express_orthogonalize_split_matrices_as_whole_ones(split):
    assert len(split["ortho"]) == 4
    assert max(split["ortho"].values()) < 1e-5, split["ortho"]


@pytest.mark.slow
def test_fsdp_holds_about_an_eighth_of_the_state_per_device(split):
    got = split["bytes"]
    for names in ("", "muon+normuon"):
        dp, fsdp = got[f"{names} dp"], got[f"{names} fsdp"]
        assert dp > 2 * 400_000 * 4  # ~430K float32 parameters, and the optimizer's state
        # Vectors (gains, biases: ~1% of the parameters here) stay whole on every device.
        assert dp / DEVICES <= fsdp < dp / DEVICES * 1.1, (names, dp, fsdp)


@pytest.mark.slow
def test_every_trick_gets_a_sharding_from_the_table_and_runs(split):
    groups = split["groups"]
    assert set().union(*(g["tricks"] for g in groups)) == set(tricks.available())
    for g in groups:
        assert math.isfinite(g["loss"]) and 0 < g["loss"] < 20, g["tricks"]
        assert g["placed"], g["tricks"]  # the step returns every array on its split
        assert g["specs"] == g["table"], g["tricks"]  # placed where the one table says
    specs = {k: v for g in groups for k, v in g["specs"].items()}
    assert specs["bigram_embed"] == "('data',)"  # a trick's own table, split by token
    assert specs["lm_head"] == "(None, 'data')"
    assert specs["blocks.0.mlp.experts.0.wfc"] == "('data',)"  # a trick's own matrices
    assert specs["blocks.0.attn.gate"] == "()"  # 12 rows do not split in 8ths
    assert specs["blocks.0.attn.bq"] == "()"  # vectors stay whole


def test_the_table_keeps_what_does_not_divide_whole():
    _, _, params = setup(["untie-head"])
    n = DEVICES
    assert sharding.spec_for("wte", params["wte"], "fsdp", n) == PartitionSpec("data", None)
    assert sharding.spec_for("lm_head", params["lm_head"], "fsdp", n) == \
        PartitionSpec(None, "data")
    assert sharding.spec_for("wte", params["wte"][:7], "fsdp", n) == PartitionSpec(None, None)
    assert sharding.spec_for("wte", params["wte"], "dp", n) == PartitionSpec()


def test_fsdp_on_one_device_is_dp():
    """Allowed, and the very same program: nothing divides over one device."""
    programs = []
    for strategy in ("dp", "fsdp"):
        cfg, hooks, _ = setup(["muon"], [f"train.sharding={strategy}"])
        state = init_state(cfg, hooks, 0)
        assert not state.layout.sharded
        step = jax.jit(train.make_step(cfg, hooks, state.tx, state.layout))
        x = tokens(0)
        programs.append(step.lower(state.params, state.opt_state, x, x).as_text())
    assert programs[0] == programs[1]


def test_an_unknown_sharding_is_one_clear_error(tiny, capsys):
    assert cli.main(["run", "--track", "tiny", "--set", "train.sharding=tp", "--no-record"]) == 1
    assert "train.sharding must be one of dp, fsdp, got 'tp'" in capsys.readouterr().err
