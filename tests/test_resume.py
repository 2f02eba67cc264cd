"""A run kept for resuming (`run --save DIR --checkpoint-every N`) and continued (`run --resume
DIR`): killed with SIGKILL mid-way, it resumes to the uninterrupted run's curve and model bit
for bit, its record says it was resumed (unranked, not a timed claim) and verifies; what cannot
be resumed is one line before anything compiles, and nothing is written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tricks
from helpers import (child_env, one_line_error, record_dirs, result, run_cli, tiny_config,
                     write)
from speedrun import cli
from speedrun.inference import checkpoint
from speedrun.records import leaderboard, verify
from speedrun.records.record import load_record
from speedrun.training import resume
from speedrun.training.state import init_state

STEPS, EVERY = 30, 10


def tensors(folder: Path) -> dict:
    (path,) = folder.glob("*.safetensors")
    return checkpoint.read_file(path)[1]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_runs_curve_and_model(tiny):
    common = ["--steps", str(STEPS), "--set", f"train.eval_every={EVERY // 2}"]
    kept = tiny / "kept"
    child = subprocess.Popen(
        [sys.executable, "-m", "tiny_cli", "run", "--track", "tiny", *common, "--quiet",
         "--save", str(kept), "--checkpoint-every", str(EVERY),
         "--records-dir", str(tiny / "records")],
        env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(kept.glob("*.train-state")):  # the first checkpoint: kill it there
        assert child.poll() is None and time.time() < deadline, "ended before a checkpoint"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert not list(kept.glob("*.result.json")) and not record_dirs(tiny)  # stopped mid-way
    state = resume.read_state(next(kept.glob("*.train-state")))
    assert 0 < state.step < STEPS

    assert cli.main(["run", "--resume", str(kept), "--quiet",
                     "--records-dir", str(tiny / "records")]) == 0
    assert run_cli(tiny, *common, "--save", str(tiny / "whole"), "--records-dir",
                   str(tiny / "uninterrupted")) == 0
    (resumed,) = record_dirs(tiny)
    rec = load_record(resumed)
    whole = load_record(next((tiny / "uninterrupted").rglob("record.yaml")).parent)
    curve = [(s, n, v) for s, _, n, v in rec["runs"][0]["curve"]]
    assert curve == [(s, n, v) for s, _, n, v in whole["runs"][0]["curve"]]
    assert len(curve) == STEPS // (EVERY // 2) + 1
    a, b = tensors(kept), tensors(tiny / "whole")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # bit for bit
    assert rec["untimed"] == f"resumed from step {state.step}"
    assert "untimed" not in whole
    assert verify.verify(resumed) == []
    assert json.loads((kept / resume.MANIFEST).read_text())["finished"] == str(resumed)
    assert not list(kept.glob("*.train-state"))  # a finished seed's state is not kept


# --- what cannot be resumed: one line, before anything compiles, nothing written -----------------


def kept_run(tiny, seeds=(0,), every=EVERY) -> resume.Folder:
    """A kept run of the tiny track's baseline whose seed 0 stopped at step ``every`` (its
    state written as a run writes it: the initial parameters stand in for the trained ones)."""
    cfg = tiny_config()
    folder = resume.start(tiny / "kept", cfg, list(seeds), every, None, {}, {})
    state = init_state(cfg, tricks.build_hooks(cfg), 0)
    folder.save(0, every, state.params, state.opt_state, [(0, 0.0, 0, 10.8)], 1.0, ["#"], 1.0,
                [])
    return folder


def contents(tiny) -> dict:
    return {p.name: p.read_bytes() for p in (tiny / "kept").iterdir()}


def refused(tiny, capsys, needles, *flags) -> None:
    """`run` with ``flags`` is one line holding ``needles``; no record, the kept run untouched."""
    before = contents(tiny)
    assert run_cli(tiny, *flags) == 1
    one_line_error(capsys, *needles)
    assert not record_dirs(tiny) and contents(tiny) == before


@pytest.mark.parametrize("flags, needles", [
    (["--tricks", "muon"], ["keeps a run of another configuration of tiny"]),
    (["--track", "unit"], ["keeps a run of track tiny, not the one this command names"]),
    (["--steps", "60"], ["another configuration of tiny"]),
    (["--seeds", "2"], ["keeps seeds [0], not [0, 1]; leave --seed/--seeds out"]),
    (["--save", "elsewhere"], ["drop --from-record/--save/--checkpoint-every"]),
])
def test_a_resume_of_another_run_is_one_line(tiny, capsys, no_training, flags, needles):
    kept_run(tiny)
    refused(tiny, capsys, needles, "--resume", str(tiny / "kept"), *flags)


def test_the_same_configuration_named_again_resumes(tiny):
    folder = kept_run(tiny)
    same = resume.open_folder(folder.path, tiny_config(), [0])
    assert same.cfg == folder.cfg and same.seeds == [0]


def test_a_checkpoint_cut_short_is_one_line(tiny, capsys, no_training):
    folder = kept_run(tiny)
    state = folder.file(0, resume.STATE_SUFFIX)
    state.write_bytes(state.read_bytes()[:-1000])
    refused(tiny, capsys, ["training state", str(state), "truncated"], "--resume",
            str(tiny / "kept"))


def test_a_finished_seeds_result_cut_short_is_one_line(tiny, capsys, no_training):
    folder = kept_run(tiny, seeds=(0, 1))
    folder.finish(result(0, 2.5))
    done = folder.file(0, resume.RESULT_SUFFIX)
    done.write_text(done.read_text()[:100])
    refused(tiny, capsys, [str(done), "a finished seed's result, cut short or damaged"],
            "--resume", str(tiny / "kept"))


def test_a_manifest_cut_short_is_one_line(tiny, capsys, no_training):
    kept_run(tiny)
    manifest = tiny / "kept" / resume.MANIFEST
    manifest.write_text(manifest.read_text()[:200])
    refused(tiny, capsys, ["resume.json is cut short or damaged"], "--resume", str(tiny / "kept"))


def test_a_run_on_another_machine_is_one_line(tiny, capsys, no_training):
    folder = kept_run(tiny)
    manifest = json.loads((folder.path / resume.MANIFEST).read_text())
    manifest["data"], manifest["environment"] = {}, {"device_count": 8}
    resume.write_manifest(folder.path, manifest)
    refused(tiny, capsys, ["environment.device_count is 1 here, the kept run's was 8"],
            "--resume", str(tiny / "kept"))


def test_a_finished_run_and_an_empty_folder_are_one_line(tiny, capsys, no_training):
    folder = kept_run(tiny)
    folder.done("records/tiny/2026-12-07_baseline")
    assert run_cli(tiny, "--resume", str(tiny / "kept")) == 1
    one_line_error(capsys, "that run has finished (record: records/tiny/2026-12-07_baseline)")
    (tiny / "empty").mkdir()
    assert run_cli(tiny, "--resume", str(tiny / "empty")) == 1
    one_line_error(capsys, "no run is kept there (no resume.json)")


def test_a_folder_keeping_a_run_is_never_overwritten(tiny, capsys, no_training):
    kept_run(tiny)
    refused(tiny, capsys, ["already keeps a run", f"--resume {tiny / 'kept'}"],
            "--save", str(tiny / "kept"), "--checkpoint-every", "5")


@pytest.mark.parametrize("flags, needle", [
    (["--checkpoint-every", "5"], "give --save DIR too"),
    (["--checkpoint-every", "0", "--save", "somewhere"], "--checkpoint-every must be at least 1"),
])
def test_bad_checkpoint_flags_are_one_line(tiny, capsys, no_training, flags, needle):
    assert run_cli(tiny, *flags) == 1
    one_line_error(capsys, needle)


def test_a_finished_seed_is_kept_with_how_it_ran(tiny):
    """A seed that finished before the stop is read back as it finished (its state file
    gone), with the steps it had resumed from; a seed still kept is whole."""
    folder = kept_run(tiny, seeds=(0, 1))
    folder.resumed[0] = [10]
    done = result(0, 2.5)
    folder.finish(done)
    assert not folder.file(0, resume.STATE_SUFFIX).exists()
    again = resume.open_folder(folder.path, None, None)
    assert again.result(0) == done and again.result(1) is None
    assert again.untimed() == "seed 0 resumed from step 10"


# --- what the record and the leaderboard say ----------------------------------------------------


def test_the_reason_names_the_seeds_that_resumed(tiny):
    folder = kept_run(tiny, seeds=(0, 1, 2))
    folder.resumed = {0: [10], 1: [], 2: [10, 20]}
    assert folder.untimed() == "seed 0 resumed from step 10; seed 2 resumed from steps 10, 20"
    folder.resumed = {}
    assert folder.untimed() is None


def test_a_resumed_record_is_listed_unranked_with_its_reason(tmp_path):
    runs = [result(s, 2.5 + 0.01 * s, time_s=10.0 + s) for s in range(3)]
    timed = write(tmp_path, runs, name="timed")
    resumed = write(tmp_path, runs, ["softcap"], name="resumed", untimed="resumed from step 40")
    assert verify.verify(resumed) == []
    board = leaderboard.load_all(tmp_path / "records")
    text = leaderboard.render(tmp_path / "records", board)
    ranked, unranked = text.split("### Sittings")[0], text.split("### Not ranked")[1]
    assert f"{timed.name}]" in ranked and f"{resumed.name}]" not in ranked
    assert f"{resumed.name}]" in unranked
    assert "untimed (resumed from step 40)" in unranked
