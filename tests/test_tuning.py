"""Per-track tuned trick constants with the record that chose them: the default on their track
only, shown by `tricks NAME`, checked when the registry loads, and never changing what an earlier
record re-runs."""

from __future__ import annotations

import dataclasses
import re

import pytest

import tricks
from helpers import record_dirs, run_cli
from speedrun import cli
from speedrun.errors import SpeedrunError
from speedrun.records import record, verify
from speedrun.records.references import record_id
from speedrun.training import plan
from speedrun.training import run as run_module
from tricks import softcap

QUICK = ("--steps", "3", "--set", "train.eval_every=3", "--set", "model.n_layer=1", "--quiet")


# --- tuned constants ----------------------------------------------------------------------------


def tune(monkeypatch, trick, **tuned):
    """Register ``trick`` with ``tuned`` ({track: {key: Tuned}}) for this test."""
    monkeypatch.setattr(softcap, "TRICK", dataclasses.replace(trick, tuned=tuned))


def test_a_tuned_value_is_the_default_on_its_track_only(monkeypatch):
    chosen = "wiki-bytes/2026-11-27_sweep-softcap-cap-30"
    tune(monkeypatch, softcap.TRICK, **{"wiki-bytes": {"cap": tricks.Tuned(30.0, chosen)}})
    assert plan.config_for("wiki-bytes", "softcap", []).tricks["softcap"] == {"cap": 30.0}
    assert plan.config_for("wiki", "softcap", []).tricks["softcap"] == {"cap": 15.0}
    assert plan.config_for("wiki-bytes", "softcap", ["softcap.cap=20"]).tricks["softcap"] == {
        "cap": 20.0}  # --set still wins


def test_tricks_name_shows_the_records_constant_and_each_tuned_value(monkeypatch, capsys):
    chosen = "wiki-bytes/2026-11-27_sweep-softcap-cap-30"
    tune(monkeypatch, softcap.TRICK, **{"wiki-bytes": {"cap": tricks.Tuned(30.0, chosen)}})
    assert cli.main(["tricks", "softcap"]) == 0
    out = capsys.readouterr().out
    assert "the record's constants" in out
    assert re.search(r"cap = 15\.0  \(above 0\)\n +tuned on wiki-bytes: 30\.0, chosen by "
                     + re.escape(chosen), out), out


@pytest.mark.parametrize("tuned, needle", [
    ({"wiki-bytes": {"cpa": tricks.Tuned(30.0, "wiki-bytes/x")}}, "'cpa' is not one of its"),
    ({"wiki-bytes": {"cap": tricks.Tuned(30, "wiki-bytes/x")}}, "cap = 30 is not a float"),
    ({"wiki-bytes": {"cap": tricks.Tuned(-1.0, "wiki-bytes/x")}}, "must be above 0, got -1.0"),
    ({"nosuchtrack": {"cap": tricks.Tuned(30.0, "nosuchtrack/x")}}, "no such track"),
    ({"wiki-bytes": {"cap": tricks.Tuned(30.0, "wiki/x")}}, "'wiki-bytes/<record folder>'"),
])
def test_a_wrong_tuned_value_stops_the_registry(monkeypatch, tuned, needle):
    tune(monkeypatch, softcap.TRICK, **tuned)
    with pytest.raises(SpeedrunError, match=re.escape(needle)):
        tricks.available()


def test_a_record_made_before_tuning_verifies_and_reruns_its_own_values(tiny, monkeypatch):
    assert run_cli(tiny, "--tricks", "softcap", *QUICK[:-1]) == 0  # run_cli adds --quiet
    (before,) = record_dirs(tiny)
    tune(monkeypatch, softcap.TRICK,
         tiny={"cap": tricks.Tuned(20.0, record_id(before))})
    assert plan.config_for("tiny", "softcap", []).tricks["softcap"] == {"cap": 20.0}
    assert verify.verify(before) == []
    args = cli.build_parser().parse_args(["run", "--from-record", str(before)])
    cfg, _, _ = run_module.resolve(args)
    assert cfg.tricks["softcap"] == {"cap": 15.0}  # the stored config, not today's default
    assert cli.main(["run", "--from-record", str(before), "--quiet",
                     "--records-dir", str(tiny / "again")]) == 0
    (again,) = sorted((tiny / "again").rglob("record.yaml"))
    a, b = record.load_record(before), record.load_record(again)
    assert b["tricks"] == {"softcap": {"cap": 15.0}} and b["config_hash"] == a["config_hash"]
    assert b["runs"][0]["final_val_loss"] == a["runs"][0]["final_val_loss"]
