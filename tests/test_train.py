"""End-to-end training: a tiny GPT on tiny generated shards, through the real run command."""

from __future__ import annotations

import math
import re
import time

import pytest
import yaml

from helpers import record_dirs, run_cli, tiny_config, train_tiny
from speedrun import cli
from speedrun.records import record, verify
from speedrun.commands import run as run_module
from speedrun.training import train


@pytest.mark.slow
def test_loss_falls(tiny):
    out = train_tiny(tiny_config(steps=40), tiny / "data")
    losses = [point[3] for point in out.curve]
    assert out.steps == 40 and out.final_val_loss == losses[-1]
    assert losses[-1] < losses[0] - 2.0, losses
    assert [p[0] for p in out.curve] == [0, 10, 20, 30, 40]


@pytest.mark.slow
def test_compile_time_is_not_train_time(tiny, monkeypatch):
    """Compiling is made to take 3 s longer: had it been on the clock, train time would hold it
    (whatever the machine's speed; three tiny steps take a fraction of that)."""
    real = train.compile_steps

    def slow_compile(*args):
        time.sleep(3)
        return real(*args)

    monkeypatch.setattr(train, "compile_steps", slow_compile)
    out = train_tiny(tiny_config(steps=3, eval_every=3), tiny / "data")
    assert out.compile_time_s >= 3
    assert 0 < out.train_time_s < 3


@pytest.mark.slow
def test_run_trains_fixed_steps_and_writes_complete_record(tiny, capsys):
    assert run_cli(tiny, "--name", "tiny-baseline", "--steps", "60") == 0
    (folder,) = record_dirs(tiny)
    assert folder.name.endswith("_tiny-baseline")
    assert verify.verify(folder) == []
    rec = record.load_record(folder)
    (run,) = rec["runs"]
    # Fixed length: all 60 steps run even though the target (3.0) is crossed earlier.
    assert run["steps"] == 60 and rec["config"]["train"]["steps"] == 60
    assert run["reached"] and run["final_val_loss"] <= rec["target"] == 3.0
    step, t = run["first_reached"]
    assert 0 < step < 60 and 0 < t < run["train_time_s"]
    assert run["tokens"] == 60 * 8 * 32
    assert run["train_time_s"] > 0 and run["compile_time_s"] > 0 and run["machine_gflops"] > 0
    for key in ("git_commit", "git_dirty", "jax_version", "jaxlib_version", "optax_version",
                "device_kind", "device_count", "host", "date", "command"):
        assert key in rec["environment"], key
    assert rec["environment"]["attention"] == "blocked"  # the CPU formulation, chosen per run
    data = rec["data"]
    assert data["tokenizer"] == "gpt2" and data["val_tokens"] == 1024
    assert len(data["val_sha256"]) == len(data["train_sha256"]) == 64
    # bits per byte: the tiny ids 0..60 are one-byte GPT-2 tokens, the separator (EOT) none
    assert 0 < data["val_bytes"] < data["val_tokens"]
    assert rec["summary"]["mean_val_bpb"] == pytest.approx(
        run["final_val_loss"] * 1024 / data["val_bytes"] / math.log(2), rel=1e-5)
    assert rec["config"]["model"]["d_model"] == 32 and rec["tricks"] == {}
    log = (folder / run["log"]).read_text()
    assert record.sha256_text(log) == run["log_sha256"]
    assert "val_bpb:" in log
    assert log.count("val_loss") == len(run["curve"])
    step_line = re.search(r"step:(\d+)/\d+ train_loss:[\d.]+ train_time:(\d+)ms step_avg:[\d.]+ms "
                          r"tokens/s:(\d+)", log)
    assert step_line, log  # per-step progress: loss, clock, step average, throughput
    step, ms, tok_s = map(int, step_line.groups())
    assert tok_s == pytest.approx(step * 8 * 32 / (ms / 1e3), rel=0.05, abs=1)
    out = capsys.readouterr().out
    assert "60 steps in" in out and "NOT a claim (1 distinct seed(s)" in out


@pytest.mark.slow
def test_too_short_a_run_is_recorded_but_not_a_claim(tiny):
    assert run_cli(tiny, "--steps", "4", "--seeds", "3") == 0
    (folder,) = record_dirs(tiny)
    assert verify.verify(folder) == []
    rec = record.load_record(folder)
    assert all(not r["reached"] and r["first_reached"] is None for r in rec["runs"])
    assert not rec["summary"]["claim"] and rec["summary"]["p_value"] > 0.5
    assert any(reason.startswith("p = ") for reason in rec["summary"]["reasons"])


@pytest.mark.slow
def test_three_seeds_below_the_target_make_a_claim(tiny):
    assert run_cli(tiny, "--steps", "60", "--seeds", "3") == 0
    (folder,) = record_dirs(tiny)
    rec = record.load_record(folder)
    assert verify.verify(folder) == [] and rec["summary"]["claim"], rec["summary"]
    assert rec["summary"]["p_value"] < 0.01 and rec["summary"]["reasons"] == []


@pytest.mark.slow
def test_divergence_is_reported_and_writes_no_record(tiny, capsys):
    assert run_cli(tiny, "--set", "optim.lr=1e6", "--set", "optim.grad_clip=0") == 1
    assert "diverged at step" in capsys.readouterr().err
    assert record_dirs(tiny) == []


def test_interrupt_writes_no_record(tiny, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", interrupted)
    assert run_cli(tiny) == 130
    assert record_dirs(tiny) == []


def test_unknown_setting_is_a_clear_error(tiny, capsys):
    assert run_cli(tiny, "--set", "optim.lrr=0.1") == 1
    err = capsys.readouterr().err
    assert "unknown setting optim.lrr" in err and "lr" in err


def test_unknown_trick_fails_before_training(tiny, capsys, no_training):
    assert run_cli(tiny, "--tricks", "nosuchtrick") == 1
    assert "unknown trick 'nosuchtrick'" in capsys.readouterr().err


@pytest.mark.slow
def test_from_record_reproduces_config_and_curve(tiny):
    assert run_cli(tiny, "--tricks", "softcap", "--set", "softcap.cap=20", "--seed", "3") == 0
    (original,) = record_dirs(tiny)
    assert cli.main(["run", "--from-record", str(original), "--quiet",
                     "--records-dir", str(tiny / "again")]) == 0
    (again,) = sorted((tiny / "again").rglob("record.yaml"))
    a, b = record.load_record(original), record.load_record(again)
    assert b["config_hash"] == a["config_hash"] and b["tricks"] == {"softcap": {"cap": 20.0}}
    assert [r["seed"] for r in b["runs"]] == [3]
    assert [p[3] for p in b["runs"][0]["curve"]] == [p[3] for p in a["runs"][0]["curve"]]
    assert run_cli(tiny, "--from-record", str(original), "--tricks", "rotary") == 1


@pytest.mark.slow
def test_from_record_re_resolves_the_trick_order(tiny):
    """A record whose tricks are stored out of order (and hashes recomputed) re-runs in the one
    canonical order: rotary is declared after qknorm."""
    assert run_cli(tiny, "--tricks", "rotary,qknorm", "--steps", "3", "--set", "train.eval_every=3") == 0
    (folder,) = record_dirs(tiny)
    f = folder / "record.yaml"
    rec = record.load_record(folder)
    assert list(rec["tricks"]) == ["qknorm", "rotary"]
    rec["tricks"] = {"rotary": rec["tricks"]["rotary"], "qknorm": rec["tricks"]["qknorm"]}
    rec["config"]["tricks"] = dict(rec["tricks"])
    rec["content_hash"] = record.content_hash(rec)
    f.write_text(yaml.safe_dump(rec, sort_keys=False))
    assert list(record.load_record(folder)["config"]["tricks"]) == ["rotary", "qknorm"]
    args = cli.build_parser().parse_args(["run", "--from-record", str(folder)])
    cfg, seeds, name = run_module.resolve(args)
    assert list(cfg.tricks) == ["qknorm", "rotary"] and seeds == [0] and name == "qknorm-rotary"
