"""Records: build, write, load, verify; tampering and schema errors are caught."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

import tricks
from helpers import config, result, write
from speedrun import cli
from speedrun.config import RunConfig, config_hash
from speedrun.records import record, stats, verify


def edit(folder, change, rehash=False):
    f = folder / "record.yaml"
    rec = yaml.safe_load(f.read_text())
    change(rec)
    if rehash:  # a forger who recomputes the hashes
        rec["content_hash"] = record.content_hash(rec)
    f.write_text(yaml.safe_dump(rec, sort_keys=False))


def test_round_trip_verifies(tmp_path):
    folder = write(tmp_path, [result(0, 2.99), result(1, 2.98, 11.0), result(2, 2.985, 12.0)],
                   start="2026-11-24T10:00:00+00:00")
    assert folder.name == "2026-11-24_baseline"  # the date of its first seed's start
    assert verify.verify(folder) == []
    rec = record.load_record(folder)
    assert rec["summary"]["seeds"] == 3 and rec["summary"]["mean_time_s"] == pytest.approx(11.0)
    assert rec["summary"]["p_value"] == pytest.approx(
        stats.ttest_less([2.99, 2.98, 2.985], 3.0), rel=1e-6)
    assert (folder / "seed1.log").read_text().startswith("# seed: 1\n")
    assert (folder / "curve.png").stat().st_size > 1000


def test_fields_added_later_keep_older_records_verifying(tmp_path):
    """A record written before model.compute_dtype existed stores no such field and hashed
    without it; it still verifies, and an identical config still hashes as it did."""
    folder = write(tmp_path, [result(s, 2.99 - s / 100) for s in range(3)])

    def drop_field(rec):
        del rec["config"]["model"]["compute_dtype"]
        rec["config_hash"] = config_hash(RunConfig.from_dict(rec["config"]))

    edit(folder, drop_field, rehash=True)
    assert verify.verify(folder) == []
    cfg = config()
    bf16 = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, compute_dtype="bfloat16"))
    assert config_hash(bf16) != config_hash(cfg)  # a non-default value is part of the hash
    # an edited config with the old hash kept is still caught
    edit(folder, lambda rec: rec["config"]["model"].update(n_layer=3), rehash=True)
    assert "config_hash does not match config" in " ".join(verify.verify(folder))


def test_never_overwrites(tmp_path):
    first = write(tmp_path, [result(0, 2.9)])
    second = write(tmp_path, [result(0, 2.8)])
    assert first != second and second.name == first.name + "-2"
    assert record.load_record(first)["runs"][0]["final_val_loss"] == 2.9


@pytest.mark.parametrize("change", [
    lambda r: r["runs"][0].__setitem__("final_val_loss", 2.5),
    lambda r: r["runs"][0].__setitem__("train_time_s", 1.0),
    lambda r: r["summary"].__setitem__("mean_time_s", 1.0),
])
def test_edited_number_fails_verify(tmp_path, change):
    folder = write(tmp_path, [result(0, 2.99), result(1, 2.98)])
    edit(folder, change)
    problems = verify.verify(folder)
    assert any("content hash mismatch" in p for p in problems), problems


def test_missing_field_is_named(tmp_path):
    folder = write(tmp_path, [result(0, 2.99)])
    edit(folder, lambda r: r.pop("config_hash"))
    problems = verify.verify(folder)
    assert any("missing field 'config_hash'" in p and "record.yaml" in p for p in problems)


def test_inconsistent_reached_flag_is_caught_even_with_a_fresh_hash(tmp_path):
    folder = write(tmp_path, [result(0, 2.99)])

    def lie(r):
        r["runs"][0]["final_val_loss"] = r["runs"][0]["curve"][-1][3] = 3.5

    edit(folder, lie, rehash=True)
    problems = verify.verify(folder)
    assert any("reached flag" in p for p in problems)
    assert any("summary.mean_val_loss" in p for p in problems)
    assert any("curve disagrees with its log" in p for p in problems)


@pytest.mark.parametrize("rule, change", [
    ("target", lambda r: r["config"]["train"].__setitem__("target", 7.9)),
    ("val tokens", lambda r: r["data"].__setitem__("val_tokens", 512)),
    ("val fingerprint", lambda r: r["data"].__setitem__("val_sha256", "c" * 64)),
    ("train data", lambda r: r["data"].__setitem__("train_sha256", "d" * 64)),
    ("tokenizer", lambda r: r["data"].__setitem__("tokenizer", "bytes")),
])
def test_breaking_a_track_rule_fails_verify_even_with_every_hash_recomputed(tmp_path, rule, change):
    folder = write(tmp_path, [result(0, 2.9), result(1, 2.91), result(2, 2.92)])

    def forge(r):
        change(r)
        r["target"] = r["config"]["train"]["target"]
        r["config_hash"] = config_hash(RunConfig.from_dict(r["config"]))
        r["summary"] = record.summary(r["runs"], r["target"], r["data"])
        for run in r["runs"]:
            run["reached"] = run["final_val_loss"] <= r["target"]

    edit(folder, forge, rehash=True)
    problems = verify.verify(folder)
    assert any(f"rule '{rule}'" in p for p in problems), problems


def test_an_edited_log_fails_verify(tmp_path):
    folder = write(tmp_path, [result(0, 2.9), result(1, 2.91), result(2, 2.92)])
    log = folder / "seed1.log"
    log.write_text(log.read_text().replace("val_loss:2.910000", "val_loss:2.810000"))
    assert any("does not match its log_sha256" in p for p in verify.verify(folder))

    def forge(r):  # the forger also updates the log's hash: the record now disagrees with it
        r["runs"][1]["log_sha256"] = record.sha256_text(log.read_text())

    edit(folder, forge, rehash=True)
    problems = verify.verify(folder)
    assert any("runs[1]" in p and "curve disagrees with its log" in p for p in problems), problems


def test_an_edited_time_with_a_recomputed_hash_fails_verify(tmp_path):
    folder = write(tmp_path, [result(0, 2.9), result(1, 2.91), result(2, 2.92)])

    def forge(r):
        r["runs"][0]["train_time_s"] = r["runs"][0]["curve"][-1][1] = 5.0
        r["summary"] = record.summary(r["runs"], r["target"], r["data"])

    edit(folder, forge, rehash=True)
    problems = verify.verify(folder)
    assert problems and all("runs[0]" in p for p in problems), problems
    assert any("curve disagrees with its log" in p for p in problems)


def test_duplicate_seeds_and_short_runs_are_caught(tmp_path):
    dup = write(tmp_path, [result(0, 2.9), result(0, 2.91), result(1, 2.92)], name="dup")
    assert any("duplicate seeds" in p for p in verify.verify(dup))
    assert "duplicate seeds" in record.load_record(dup)["summary"]["reasons"]
    # a run that stopped before train.steps (the old stop-at-target rule) is not fixed-length
    short = write(tmp_path, [result(0, 2.9, steps=60)], cfg=config(steps=100), name="short")
    assert any("ran 60 steps" in p for p in verify.verify(short))


def test_old_schema_records_are_not_claims(tmp_path):
    folder = write(tmp_path, [result(0, 2.9)])
    edit(folder, lambda r: r.__setitem__("schema_version", 1), rehash=True)
    (problem,) = verify.verify(folder)
    assert "old stop-at-target rules" in problem and "--from-record" in problem


def test_unknown_trick_and_missing_log_fail(tmp_path, monkeypatch):
    folder = write(tmp_path, [result(0, 2.99)], trick_names=["softcap"])
    (folder / "seed0.log").unlink()
    monkeypatch.setattr(tricks, "available", lambda: {})
    problems = verify.verify(folder)
    assert any("unknown trick 'softcap'" in p for p in problems)
    assert any("seed0.log is missing" in p for p in problems)


def test_verify_command_exit_codes(tmp_path, capsys):
    good = write(tmp_path, [result(0, 2.99)])
    assert cli.main(["verify", str(good)]) == 0
    edit(good, lambda r: r["runs"][0].__setitem__("steps", 7))
    assert cli.main(["verify", str(tmp_path / "records")]) == 1
    assert "FAIL" in capsys.readouterr().out
