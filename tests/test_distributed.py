"""Multi-process runs: `launch` joins processes through jax.distributed (CPU devices, gloo); each
process reads only its own rows, every process gets the same result, only process 0 writes,
split (fsdp) state is gathered across processes into checkpoints, 2 processes x 2 devices give
1 process x 4 devices' record and model, and a dead process ends the run at once with one
line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import chain_tokens, child_env, on_processes, record_dirs
from speedrun import cli
from speedrun.data import shards
from speedrun.inference import checkpoint
from speedrun.records import record, verify

PROCESSES, DEVICES = 2, 2

# What each of 2 joined processes (2 CPU devices each) checks and trains; every process prints
# its findings as one JSON line.
PROCESS_SCRIPT = """
import dataclasses, json
from pathlib import Path
import jax
import numpy as np
from jax.experimental import multihost_utils
import tricks
from helpers import SEQ, tiny_cfg
from speedrun.data import loader
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.training import train
from speedrun.distributed import devices

devices.maybe_initialize()
index, count = devices.process_slice()
folder = Path({folder!r})
out = {{"process": index, "processes": count, "devices": jax.device_count()}}

def rows(a):  # a batch as the multiset of its rows
    return sorted(map(tuple, np.asarray(a).tolist()))

# train rows: this process reads rows index::count; the global batch they make is the whole one
feed = train.Feed(devices.mesh())
batches = loader.TrainLoader([folder / "train.bin"], 8, SEQ, seed=0)
out["train_rows"] = [
    rows(multihost_utils.process_allgather(feed.batch(batches.batch(s, index, count)[0]),
                                           tiled=True)) == rows(batches.batch(s)[0])
    and len(batches.batch(s, index, count)[0]) == 8 // count for s in range(3)]
val = loader.val_batches([folder / "val.bin"], 512, 8, SEQ)
out["val_rows"] = [
    rows(multihost_utils.process_allgather(devices.put_batch(devices.local_rows(x), feed.shard),
                                           tiled=True)) == rows(x) for x, _ in val]
try:
    devices.check_batch(6)
except SpeedrunError as e:
    out["batch_error"] = str(e)

# the harness's training loop, replicated and split, its final model gathered into a checkpoint
out["curves"] = {{}}
for strategy in ("dp", "fsdp"):
    base = tiny_cfg()
    cfg = dataclasses.replace(base, train=dataclasses.replace(
        base.train, batch_size=8, steps=6, eval_every=3, val_tokens=512, val_batch_size=8,
        log_every=3, sharding=strategy))
    def save(params, cfg=cfg, strategy=strategy):
        params = checkpoint.to_host(params)  # every process: split arrays gather collectively
        if devices.is_main_process():
            checkpoint.save(folder / f"{{strategy}}.safetensors", params, cfg, "bytes", 0)
    run = train.train(cfg, 0, tricks.build_hooks(cfg), batches, val, log=lambda _: None,
                      finished=save)
    out["curves"][strategy] = [p[3] for p in run.curve]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The 2 joined processes, started: the `launch` tests below run beside them (each of
    these processes spends much of its time on one core, compiling or waiting on the other)."""
    folder = tmp_path_factory.mktemp("joined")
    shards.write_shard(folder / "train.bin", chain_tokens(20_000, 1) % 256)  # byte ids
    shards.write_shard(folder / "val.bin", chain_tokens(4_000, 2) % 256)
    processes = on_processes(PROCESS_SCRIPT.format(folder=str(folder)), PROCESSES, DEVICES)
    yield processes, folder
    processes.stop()


@pytest.fixture(scope="module")
def joined(started):
    """Both processes' findings, and the folder holding their data and process 0's checkpoints."""
    processes, folder = started
    return processes.wait(), folder


# ----------------------------------------------------------------------------------------------
# `launch` through the command line, on the tiny track
# ----------------------------------------------------------------------------------------------


def speedrun_in(cwd, *argv, devices=None) -> subprocess.Popen:
    """`python -m speedrun ...` with the tiny track (tests/tiny_cli.py), started in a child
    process (``communicate()`` waits for its output)."""
    extra = {} if devices is None else {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "tiny_cli", *argv], cwd=cwd, text=True,
                            env=child_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finished(child: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = child.communicate(timeout=600)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def launch_argv(*command, processes=PROCESSES, devices=DEVICES):
    return ["launch", "--module", "tiny_cli", "--processes", str(processes),
            "--devices-per-process", str(devices), "--", *command]


RUN = ("run", "--track", "tiny", "--steps", "10", "--set", "train.eval_every=5", "--quiet",
       "--records-dir", "records", "--save", "models")


def comparable(rec: dict) -> dict:
    """A record without what differs between any two runs of it (times, speeds, dates, hashes
    of its logs, which hold the times) and without the environment."""
    rec = {k: v for k, v in rec.items() if k not in ("environment", "content_hash")}
    rec["runs"] = [{k: v for k, v in run.items() if k not in (
        "train_time_s", "compile_time_s", "machine_gflops", "log_sha256", "curve")}
        | {"curve": [(s, n, v) for s, _, n, v in run["curve"]]} for run in rec["runs"]]
    rec["summary"] = {k: v for k, v in rec["summary"].items()
                      if "time" not in k and "gflops" not in k}
    return rec


@pytest.mark.usefixtures("started")  # the joined processes run beside this test
def test_two_processes_give_the_one_process_record(tiny):
    (tiny / "one").mkdir()
    (tiny / "two").mkdir()
    # side by side: they share only the data, and much of a tiny run is one core compiling
    started = speedrun_in(tiny / "one", *RUN, devices=PROCESSES * DEVICES), \
        speedrun_in(tiny / "two", *launch_argv(*RUN))
    try:
        one, two = (finished(child) for child in started)
    finally:
        for child in started:
            child.kill()
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    (a,), (b,) = record_dirs(tiny / "one"), record_dirs(tiny / "two")  # process 0's only
    assert verify.verify(a) == [] and verify.verify(b) == []
    ra, rb = record.load_record(a), record.load_record(b)
    loss = rb["runs"][0]["final_val_loss"]
    assert loss == pytest.approx(ra["runs"][0]["final_val_loss"], abs=1e-5)
    ca, cb = comparable(ra), comparable(rb)
    for run in ca["runs"]:
        run["curve"] = [(s, n, pytest.approx(v, abs=1e-5)) for s, n, v in run["curve"]]
        run["final_val_loss"] = pytest.approx(run["final_val_loss"], abs=1e-5)
    assert ca == cb
    ea, eb = ra["environment"], rb["environment"]
    assert {k for k in ea | eb if ea.get(k) != eb.get(k)} - {"date"} == {
        "process_count", "local_device_count"}
    assert (eb["process_count"], eb["local_device_count"], eb["device_count"]) == (2, 2, 4)
    # every process got the same result, and said so; only process 0 wrote the record (one
    # folder, where a second writer would have made another) and the model
    mine = re.search(r"^seed 0: .*final val loss ([\d.]+).*machine ([\d.]+)", two.stdout, re.M)
    theirs = re.search(r"^\[process 1\] seed 0: .*final val loss ([\d.]+).*machine ([\d.]+)",
                       two.stdout, re.M)
    # the same loss, and the same machine probe: process 0's (probed alone, not side by side)
    assert mine and theirs and mine.groups() == theirs.groups(), two.stdout
    assert "record written" in two.stdout and "[process 1] record written" not in two.stdout
    assert "seed 0: checkpoint written" in two.stdout and "[process 1] seed 0: checkpoint" \
        not in two.stdout
    (ka,), (kb,) = ((tiny / d / "models").glob("*.safetensors") for d in ("one", "two"))
    ta, tb = (checkpoint.tensors_of(checkpoint.load(k).params) for k in (ka, kb))
    assert max(float(np.max(np.abs(ta[n] - tb[n]))) for n in ta) < 1e-5


@pytest.mark.usefixtures("started")
def test_a_killed_process_ends_the_run_at_once(tiny):
    argv = launch_argv("run", "--track", "tiny", "--steps", "100000", "--no-record", "--quiet",
                       "--set", "model.n_layer=1", devices=1)
    launcher = subprocess.Popen([sys.executable, "-m", "tiny_cli", *argv], cwd=tiny, text=True,
                                env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in launcher.stdout:  # until process 1 has joined (it prints the run's header)
            lines.append(line)
            if line.startswith("[process 1] track tiny:"):
                break
        started = re.search(r"pids (\d+) (\d+)", "".join(lines))
        assert started and lines[-1].startswith("[process 1] track"), "".join(lines)[-3000:]
        first, second = int(started.group(1)), int(started.group(2))
        killed = time.monotonic()
        os.kill(second, signal.SIGKILL)
        code = launcher.wait(timeout=60)
        ended = time.monotonic() - killed
    finally:
        launcher.kill()
    rest = launcher.stdout.read()
    assert code == 128 + signal.SIGKILL, rest
    assert ended < 15, ended  # the other was stopped, not left waiting on the dead one
    assert "error: process 1 of 2 failed (killed by SIGKILL); stopped the other process" in rest
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)  # process 0 is gone too


# ----------------------------------------------------------------------------------------------
# What the joined processes found
# ----------------------------------------------------------------------------------------------


def test_each_process_reads_only_its_own_rows(joined):
    outs, _ = joined
    assert [o["process"] for o in outs] == [0, 1]
    assert all(o["processes"] == PROCESSES and o["devices"] == PROCESSES * DEVICES for o in outs)
    for o in outs:
        assert o["train_rows"] == [True] * 3  # no row twice, none missing: the whole batch
        assert o["val_rows"] == [True] * 4  # 32 validation sequences, 8 a batch


def test_the_batch_is_checked_across_processes(joined):
    outs, _ = joined
    assert outs[0]["batch_error"] == ("train.batch_size=6 must be divisible by the 4 devices "
                                      "(2 processes x 2)")


def test_every_process_gets_the_same_result_and_fsdp_gives_dps(joined):
    (first, second), _ = joined
    assert first["curves"] == second["curves"]
    dp, fsdp = first["curves"]["dp"], first["curves"]["fsdp"]
    assert dp[-1] < dp[0] - 0.05, dp  # it trained
    assert fsdp == pytest.approx(dp, abs=1e-5)


def test_split_state_is_gathered_across_processes_into_a_checkpoint(joined, capsys):
    outs, folder = joined
    dp, fsdp = (checkpoint.load(folder / f"{s}.safetensors") for s in ("dp", "fsdp"))
    assert fsdp.cfg.train.sharding == "fsdp"
    dp_t, fsdp_t = checkpoint.tensors_of(dp.params), checkpoint.tensors_of(fsdp.params)
    assert set(dp_t) == set(fsdp_t)
    for name, value in dp_t.items():
        np.testing.assert_allclose(fsdp_t[name], value, atol=1e-5, err_msg=name)
    assert cli.main(["sample", str(fsdp.path), "--prompt", "Hi", "--max-new-tokens", "4",
                     "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Hi")


def test_bad_launches_are_one_line(capsys):
    def error(*argv) -> str:
        assert cli.main(["launch", *argv]) == 1
        return capsys.readouterr().err.strip()

    assert error("--processes", "0", "--", "run") == "error: --processes must be at least 1, got 0"
    assert error("--processes", "2", "--devices-per-process", "0", "--", "run") == \
        "error: --devices-per-process must be at least 1, got 0"
    assert "launch needs the command to run after --" in error("--processes", "2")
    assert "not 'bench'" in error("--processes", "2", "--", "bench")
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert error("--processes", "2", "--port", str(port), "--", "run") == (
            f"error: --port {port} is in use on this machine (Address already in use): pick "
            f"another, or leave --port out to use a free one")
