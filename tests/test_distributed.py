"""Multi-process runs: `launch` joins processes through jax.distributed (CPU devices, gloo); each
process reads only its own rows, every process gets the same result, only process 0 writes,
split (fsdp) state is gathered across processes into checkpoints, 2 processes x 2 devices give
1 process x 4 devices' record and model, and a dead process ends the run at once with one
line. Every child process starts with the module, and they run side by side."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import (TINY, child_env, on_processes, param_gaps, record_dirs, short_cfg,
                     train_tiny, with_devices, write_dataset)
from speedrun import cli, tracks
from speedrun.distributed import launch
from speedrun.inference import checkpoint
from speedrun.records import record, verify

pytestmark = pytest.mark.slow  # joined processes and launched runs: the full suite only

PROCESSES, DEVICES = 2, 2

# What each of 2 joined processes (2 CPU devices each) checks and trains; every process prints
# its findings as one JSON line.
PROCESS_SCRIPT = """
import json
from pathlib import Path
import jax
import numpy as np
from jax.experimental import multihost_utils
from helpers import SEQ, TINY_DATASET, short_cfg, train_tiny
from speedrun.data import loader
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.training import train
from speedrun.distributed import devices

devices.maybe_initialize()
index, count = devices.process_slice()
folder = Path({folder!r})
shards = folder / TINY_DATASET
out = {{"process": index, "processes": count, "devices": jax.device_count()}}

def rows(a):  # a batch as the multiset of its rows
    return sorted(map(tuple, np.asarray(a).tolist()))

# train rows: this process reads rows index::count; the global batch they make is the whole one
feed = train.Feed(devices.mesh())
batches = loader.TrainLoader(list(shards.glob("*_train_*.bin")), 8, SEQ, seed=0)
out["train_rows"] = [
    rows(multihost_utils.process_allgather(feed.batch(batches.batch(s, index, count)[0]),
                                           tiled=True)) == rows(batches.batch(s)[0])
    and len(batches.batch(s, index, count)[0]) == 8 // count for s in range(3)]
val = loader.val_batches(list(shards.glob("*_val_*.bin")), 512, 8, SEQ)
out["val_rows"] = [
    rows(multihost_utils.process_allgather(devices.put_batch(devices.local_rows(x), feed.shard),
                                           tiled=True)) == rows(x) for x, _ in val]
try:
    devices.check_batch(6)
except SpeedrunError as e:
    out["batch_error"] = str(e)

# the harness's training loop, split (fsdp), its final model gathered into a checkpoint
cfg = short_cfg("fsdp")
def save(params):
    params = checkpoint.to_host(params)  # every process: split arrays gather collectively
    if devices.is_main_process():
        checkpoint.save(folder / "fsdp.safetensors", params, cfg, "bytes", 0)
out["curve"] = [p[3] for p in train_tiny(cfg, folder, finished=save).curve]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The 2 joined processes, started."""
    folder = tmp_path_factory.mktemp("joined")
    write_dataset(folder, train_tokens=20_000, val_tokens=4_000, vocab=256)  # byte ids
    processes = on_processes(PROCESS_SCRIPT.format(folder=str(folder)), PROCESSES, DEVICES)
    yield processes, folder
    processes.stop()


@pytest.fixture(scope="module")
def one_process(started):
    """The joined processes' run, replicated (dp) in this one process on its one device, trained
    while they run: its validation curve and final parameters."""
    _, folder = started
    final = {}
    run = train_tiny(short_cfg("dp"), folder,
                     finished=lambda params: final.update(checkpoint.tensors_of(params)))
    return [p[3] for p in run.curve], final


@pytest.fixture(scope="module")
def joined(started, one_process):
    """Both processes' findings, and the folder holding their data and process 0's checkpoint
    (waited for once this process's own run is done)."""
    processes, folder = started
    return processes.wait(), folder


@pytest.fixture(scope="module", autouse=True)
def all_started(started, two_runs, killing, refused):
    """Every child process of this module (the joined processes above, the `launch` runs below),
    started before its first test: they share the two cores, and much of a small run is one
    core compiling or waiting on another."""


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


def test_every_process_gets_the_same_result_and_fsdp_gives_one_process_dps(joined, one_process):
    """Split over 2 processes x 2 devices (fsdp), the run gives this one process's replicated
    run on one device."""
    (first, second), _ = joined
    assert first["curve"] == second["curve"]
    curve, _ = one_process
    assert curve[-1] < curve[0] - 0.05, curve  # it trained
    assert first["curve"] == pytest.approx(curve, abs=1e-5)


def test_split_state_is_gathered_across_processes_into_a_checkpoint(joined, one_process, capsys):
    _, folder = joined
    fsdp = checkpoint.load(folder / "fsdp.safetensors")
    assert fsdp.cfg.train.sharding == "fsdp"
    _, final = one_process
    gathered = checkpoint.tensors_of(fsdp.params)
    assert set(gathered) == set(final)
    gaps = param_gaps(final, gathered)
    assert max(gaps.values()) < 1e-5, gaps
    assert cli.main(["sample", str(fsdp.path), "--prompt", "Hi", "--max-new-tokens", "4",
                     "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Hi")


# ----------------------------------------------------------------------------------------------
# `launch` through the command line, on the tiny track
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory):
    """A folder holding the tiny dataset (data/), and the environment of the `python -m
    tiny_cli` processes that train on it."""
    folder = tmp_path_factory.mktemp("cli")
    write_dataset(folder / "data")
    return folder, child_env(SPEEDRUN_DATA_DIR=str(folder / "data"),
                             SPEEDRUN_NO_COMPILATION_CACHE="1")


def speedrun_in(cli_folder, cwd: str, *argv, devices=None) -> subprocess.Popen:
    """`python -m speedrun ...` with the tiny track (tests/tiny_cli.py), started in a child
    process in ``cli_folder``/``cwd`` (``communicate()`` waits for its output)."""
    folder, env = cli_folder
    (folder / cwd).mkdir()
    extra = {} if devices is None else with_devices(devices)
    return subprocess.Popen([sys.executable, "-m", "tiny_cli", *argv], cwd=folder / cwd,
                            text=True, env=env | extra, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def launch_argv(*command, processes=PROCESSES, devices=DEVICES):
    return ["launch", "--module", "tiny_cli", "--processes", str(processes),
            "--devices-per-process", str(devices), "--", *command]


# One layer and the loss in one chunk: the least to compile (the joined processes' model has
# two layers and a chunked loss).
RUN = ("run", "--track", "tiny", "--steps", "10", "--set", "train.eval_every=5", "--set",
       "model.n_layer=1", "--set", "train.loss_chunk=256", "--quiet", "--records-dir", "records",
       "--save", "models")


def stop(child: subprocess.Popen) -> None:
    """SIGTERM first: a launcher stops its processes on it (SIGKILL would leave them running)."""
    child.terminate()
    try:
        child.wait(timeout=2 * launch.GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()


def finished(child: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = child.communicate(timeout=600)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.fixture(scope="module")
def two_runs(cli_folder):
    """The same 10 steps as 1 process x 4 devices ("one") and as 2 launched processes x 2
    devices ("two"), started."""
    runs = (speedrun_in(cli_folder, "one", *RUN, devices=PROCESSES * DEVICES),
            speedrun_in(cli_folder, "two", *launch_argv(*RUN)))
    yield runs
    for child in runs:
        stop(child)


def kill_second_once_joined(launcher: subprocess.Popen) -> dict:
    """Reads the launcher's lines until process 1 has joined (it prints the run's header), kills
    process 1, and waits for the launcher: what was seen, and how long the rest took to end."""
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if line.startswith("[process 1] track tiny:"):
            break
    pids = re.search(r"pids (\d+) (\d+)", "".join(lines))
    if not (pids and lines[-1].startswith("[process 1] track")):
        return {"seen": "".join(lines)}
    first, second = map(int, pids.groups())
    killed = time.monotonic()
    os.kill(second, signal.SIGKILL)
    code = launcher.wait(timeout=60)
    return {"seen": "".join(lines), "first": first, "code": code,
            "ended": time.monotonic() - killed, "rest": launcher.stdout.read()}


@pytest.fixture(scope="module")
def killing(cli_folder):
    """A launched run whose process 1 is killed once it has joined, watched from a thread."""
    folder, env = cli_folder
    argv = launch_argv("run", "--track", "tiny", "--steps", "100000", "--no-record", "--quiet",
                       "--set", "model.n_layer=1", devices=1)
    launcher = subprocess.Popen([sys.executable, "-m", "tiny_cli", *argv], cwd=folder, text=True,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watcher = ThreadPoolExecutor(1)
    yield watcher.submit(kill_second_once_joined, launcher)
    stop(launcher)
    watcher.shutdown()


def comparable(rec: dict) -> dict:
    """A record without what differs between any two runs of it (times, speeds, dates, its
    sitting, hashes of its logs, which hold the times) and without the environment."""
    rec = {k: v for k, v in rec.items() if k not in ("environment", "content_hash", "sitting")}
    rec["runs"] = [{k: v for k, v in run.items() if k not in (
        "train_time_s", "compile_time_s", "machine_gflops", "log_sha256", "curve", "started",
        "ended")}
        | {"curve": [(s, n, v) for s, _, n, v in run["curve"]]} for run in rec["runs"]]
    rec["summary"] = {k: v for k, v in rec["summary"].items()
                      if "time" not in k and "gflops" not in k}
    return rec


def test_two_processes_give_the_one_process_record(cli_folder, two_runs, monkeypatch):
    monkeypatch.setitem(tracks.TRACKS, "tiny", TINY)  # the records' track, to verify them
    folder, _ = cli_folder
    one, two = (finished(child) for child in two_runs)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    (a,), (b,) = record_dirs(folder / "one"), record_dirs(folder / "two")  # process 0's only
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
    # the same loss, and the same machine probe: process 0's
    assert mine and theirs and mine.groups() == theirs.groups(), two.stdout
    assert "record written" in two.stdout and "[process 1] record written" not in two.stdout
    assert "seed 0: checkpoint written" in two.stdout and "[process 1] seed 0: checkpoint" \
        not in two.stdout
    (ka,), (kb,) = ((folder / d / "models").glob("*.safetensors") for d in ("one", "two"))
    gaps = param_gaps(*(checkpoint.tensors_of(checkpoint.load(k).params) for k in (ka, kb)))
    assert max(gaps.values()) < 1e-5, gaps


@pytest.fixture(scope="module")
def refused(cli_folder):
    """A launched run whose records folder cannot be made (a file stands where its parent
    would be): what only process 0 checks, since only it writes records."""
    folder, _ = cli_folder
    (folder / "refused").mkdir()
    (folder / "refused" / "afile").write_text("")
    child = speedrun_in(cli_folder, "refused/run", *launch_argv(
        "run", "--track", "tiny", "--steps", "5", "--quiet", "--records-dir", "../afile/records",
        devices=1))
    yield child
    stop(child)


def test_a_refusal_of_process_0_stops_every_process_in_one_line(refused):
    """Process 0's verdict reaches the others, so they stop at once beside it, rather than wait
    30 s in a collective for it and end in a traceback; the launcher shows the one line."""
    done = finished(refused)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert lines[0].startswith("launch: 2 process(es)") and len(lines) == 2, done.stderr[-3000:]
    assert lines[1] == ("error: records folder ../afile/records/tiny cannot be used: ../afile is "
                        "not a folder; pass --records-dir DIR (a writable folder) or --no-record")


def test_a_killed_process_ends_the_run_at_once(killing):
    seen = killing.result(timeout=600)
    assert "rest" in seen, seen["seen"][-3000:]
    assert seen["code"] == 128 + signal.SIGKILL, seen["rest"]
    # the other was stopped by the launcher's SIGTERM, not left waiting on the dead one (nor
    # killed once the grace for a stopped process ran out)
    assert seen["ended"] < launch.GRACE_S, seen
    assert "error: process 1 of 2 failed (killed by SIGKILL); stopped the other process" in \
        seen["rest"]
    with pytest.raises(ProcessLookupError):
        os.kill(seen["first"], 0)  # process 0 is gone too


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
