"""Records: build, write, load, verify; tampering and schema errors are caught."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

import tricks
from speedrun import cli, records, stats
from speedrun.config import RunConfig

ENV = {"hardware_class": "cpu-2core", "device_kind": "cpu", "device_count": 1, "command": "test"}


def result(seed: int, loss: float, time_s: float = 10.0, steps: int = 100, target: float = 3.0):
    reached = loss <= target
    curve = ((0, 0.0, 0, 10.8), (steps // 2, time_s / 2, steps * 128, 5.0),
             (steps, time_s, steps * 256, loss))
    return records.RunResult(seed=seed, status="reached" if reached else "budget", reached=reached,
                             train_time_s=time_s, steps=steps, tokens=steps * 256,
                             final_val_loss=loss, compile_time_s=2.0, curve=curve,
                             log=f"log of seed {seed}\n")


def config(trick_names=(), target=3.0):
    cfg = RunConfig(track="wiki")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, target=target))
    return tricks.with_tricks(cfg, list(trick_names))


def write(tmp_path, results, trick_names=(), name=None, date="2026-11-24"):
    rec = records.build_record(config(trick_names), results, ENV, name=name, date=date)
    return records.write_record(tmp_path / "records", rec, results=results)


def edit(folder, change):
    f = folder / "record.yaml"
    rec = yaml.safe_load(f.read_text())
    change(rec)
    f.write_text(yaml.safe_dump(rec, sort_keys=False))


def test_round_trip_verifies(tmp_path):
    folder = write(tmp_path, [result(0, 2.99), result(1, 2.98, 11.0), result(2, 2.985, 12.0)])
    assert folder.name == "2026-11-24_baseline"
    assert records.verify(folder) == []
    rec = records.load_record(folder)
    assert rec["summary"]["seeds"] == 3 and rec["summary"]["mean_time_s"] == pytest.approx(11.0)
    assert rec["summary"]["p_value"] == pytest.approx(
        stats.ttest_less([2.99, 2.98, 2.985], 3.0), rel=1e-6)
    assert (folder / "seed1.log").read_text() == "log of seed 1\n"
    assert (folder / "curve.png").stat().st_size > 1000


def test_never_overwrites(tmp_path):
    first = write(tmp_path, [result(0, 2.9)])
    second = write(tmp_path, [result(0, 2.8)])
    assert first != second and second.name == first.name + "-2"
    assert records.load_record(first)["runs"][0]["final_val_loss"] == 2.9


@pytest.mark.parametrize("change", [
    lambda r: r["runs"][0].__setitem__("final_val_loss", 2.5),
    lambda r: r["runs"][0].__setitem__("train_time_s", 1.0),
    lambda r: r["summary"].__setitem__("mean_time_s", 1.0),
])
def test_edited_number_fails_verify(tmp_path, change):
    folder = write(tmp_path, [result(0, 2.99), result(1, 2.98)])
    edit(folder, change)
    problems = records.verify(folder)
    assert any("content hash mismatch" in p for p in problems), problems


def test_missing_field_is_named(tmp_path):
    folder = write(tmp_path, [result(0, 2.99)])
    edit(folder, lambda r: r.pop("config_hash"))
    problems = records.verify(folder)
    assert any("missing field 'config_hash'" in p and "record.yaml" in p for p in problems)


def test_inconsistent_reached_flag_is_caught_even_with_a_fresh_hash(tmp_path):
    folder = write(tmp_path, [result(0, 2.99)])

    def lie(r):
        r["runs"][0]["final_val_loss"] = r["runs"][0]["curve"][-1][3] = 3.5
        r["content_hash"] = records.content_hash(r)

    edit(folder, lie)
    problems = records.verify(folder)
    assert any("reached flag" in p for p in problems)
    assert any("summary.mean_val_loss" in p for p in problems)


def test_unknown_trick_and_missing_log_fail(tmp_path, monkeypatch):
    folder = write(tmp_path, [result(0, 2.99)], trick_names=["softcap"])
    (folder / "seed0.log").unlink()
    monkeypatch.setattr(tricks, "available", lambda: {})
    problems = records.verify(folder)
    assert any("unknown trick 'softcap'" in p for p in problems)
    assert any("seed0.log is missing" in p for p in problems)


def test_verify_command_exit_codes(tmp_path, capsys):
    good = write(tmp_path, [result(0, 2.99)])
    assert cli.main(["verify", str(good)]) == 0
    edit(good, lambda r: r["runs"][0].__setitem__("steps", 7))
    assert cli.main(["verify", str(tmp_path / "records")]) == 1
    assert "FAIL" in capsys.readouterr().out
