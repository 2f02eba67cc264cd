"""Tuning: `sweep` over the tiny track (a grid of real settings, one verified record per point,
the table's paired differences checked against those records, resuming after Ctrl-C, a diverging
point that leaves the others running, the best point's margin and whether every seed agrees,
every bad input one line before anything trains), and per-track tuned trick constants with the
record that chose them (the default on their track only, shown by `tricks NAME`, checked when
the registry loads, never changing what an earlier record re-runs)."""

from __future__ import annotations

import dataclasses
import re
import statistics

import pytest

import tricks
from helpers import one_line_error, record_dirs, run_cli
from speedrun import cli
from speedrun.errors import SpeedrunError
from speedrun.records import record, verify
from speedrun.records.record import record_id
from speedrun.training import plan, train
from speedrun.commands import run as run_module
from speedrun.training import grid as sw
from tricks import softcap

QUICK = ("--steps", "3", "--set", "train.eval_every=3", "--set", "model.n_layer=1", "--quiet")


def sweep(tmp_path, *extra):
    return cli.main(["sweep", "--track", "tiny", "--records-dir", str(tmp_path / "records"),
                     *QUICK, *extra])


def row_of(out: str, rid: str) -> str:
    """The table's row of a record."""
    (line,) = [line for line in out.splitlines() if not line.startswith("point ")
               and line.rstrip().endswith((rid, f"{rid} (from record)"))]
    return line


def final_losses(folder) -> dict[int, float]:
    return {r["seed"]: r["final_val_loss"] for r in record.load_record(folder)["runs"]}


def check_row(out: str, folder, ref: dict[int, float]) -> str:
    """The row shows the record's own losses, their mean, and the paired difference from the
    reference's losses."""
    losses = final_losses(folder)
    row = row_of(out, record_id(folder))
    assert f"{statistics.fmean(losses.values()):.4f}" in row, row
    assert all(f"{loss:.4f}" in row for loss in losses.values()), row
    if losses == ref:
        assert row.startswith("ref"), row
    else:
        diffs = [losses[s] - ref[s] for s in sorted(ref)]
        lower = sum(d < 0 for d in diffs)
        assert f"{statistics.fmean(diffs):+.4f} ({lower}/{len(diffs)} seeds lower)" in row, row
    return row


def verdict_of(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("best: ")]
    return line


# --- sweep -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_grid_writes_a_verified_record_per_point_and_pairs_them_by_seed(tiny, capsys):
    assert sweep(tiny, "--tricks", "softcap", "--sweep", "softcap.cap=10,30",
                 "--sweep", "optim.lr=0.01,0.02", "--seeds", "1",
                 "--reference", "softcap.cap=30,optim.lr=1e-2") == 0
    out = capsys.readouterr().out
    grid = [(10.0, 0.01), (10.0, 0.02), (30.0, 0.01), (30.0, 0.02)]
    for i, (cap, lr) in enumerate(grid, 1):  # in order, one point after another
        assert f"point {i}/4: softcap.cap={cap:g}, optim.lr={lr:g}\n" in out
    assert out.index("point 2/4: softcap") > out.index("point 1/4: record written")
    folders = record_dirs(tiny)
    assert len(folders) == 4 and all(verify.verify(f) == [] for f in folders)
    by_point = {(r["tricks"]["softcap"]["cap"], r["config"]["optim"]["lr"]): f
                for f in folders for r in [record.load_record(f)]}
    assert sorted(by_point) == grid
    assert by_point[(10.0, 0.02)].name.endswith("_sweep-softcap-cap-10-optim-lr-0-02")
    ref = final_losses(by_point[(30.0, 0.01)])  # --reference: point 3
    assert list(ref) == [0]
    for folder in folders:
        check_row(out, folder, ref)
    means = {k: statistics.fmean(final_losses(f).values()) for k, f in by_point.items()}
    best = min(means, key=means.get)
    assert "best" in row_of(out, record_id(by_point[best])).split()[:2]
    verdict = verdict_of(out)
    assert verdict.startswith(f"best: #{grid.index(best) + 1} (softcap.cap={best[0]:g}, "
                              f"optim.lr={best[1]:g}")
    assert "one seed: how far seeds disagree is unknown" in verdict
    if best != (30.0, 0.01):
        assert f"{ref[0] - means[best]:.4f} below the reference #3" in verdict, verdict


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_with_only_the_missing_points(tiny, capsys, monkeypatch):
    real, calls = train.train, []

    def interrupt_in_the_second_point(*a, **k):
        calls.append(a[0].tricks["softcap"]["cap"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    args = ("--tricks", "softcap", "--sweep", "softcap.cap=10,30", "--seeds", "1")
    monkeypatch.setattr(train, "train", interrupt_in_the_second_point)
    assert sweep(tiny, *args) == 130
    assert "interrupted at point 2/2: 1 point(s) finished" in capsys.readouterr().err
    (first,) = record_dirs(tiny)  # the point finished before Ctrl-C is kept
    assert record.load_record(first)["tricks"]["softcap"]["cap"] == 10.0

    calls.clear()
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert sweep(tiny, *args) == 0
    out = capsys.readouterr().out
    assert [c.tricks["softcap"]["cap"] for c in calls] == [30.0]  # the missing point only
    assert f"point 1/2: softcap.cap=10: from record {record_id(first)}" in out
    folders = record_dirs(tiny)
    assert len(folders) == 2 and all(verify.verify(f) == [] for f in folders)
    (second,) = [f for f in folders if f != first]
    assert row_of(out, record_id(first)).rstrip().endswith("(from record)")
    check_row(out, first, final_losses(first))
    check_row(out, second, final_losses(first))

    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("ran a point on record"))
    assert sweep(tiny, *args) == 0  # everything on record: the table alone
    assert capsys.readouterr().out.count("(from record)") == 2

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", stop)
    assert sweep(tiny, *args[:-1], "0,1") == 130  # other seeds are another measurement
    assert "interrupted at point 1/2" in capsys.readouterr().err


@pytest.mark.parametrize("second, best, margin, holds, delta", [
    ({0: 2.00, 1: 2.10}, 2, "0.0500 below the reference #1", "negative (2 of 2): the margin is "
     "beyond the seeds' disagreement", "-0.0500 (2/2 seeds lower)"),
    ({0: 2.10, 1: 2.30}, 1, "0.1000 below the next best, #2", "negative (2 of 2): the margin is "
     "beyond the seeds' disagreement", "+0.1000 (0/2 seeds lower)"),
    ({0: 2.10, 1: 2.00}, 2, "0.0500 below the reference #1", "(negative on 1 of 2): the margin "
     "is within the seeds' disagreement", "-0.0500 (1/2 seeds lower)"),
])
def test_the_verdict_names_the_best_point_and_whether_every_seed_agrees(second, best, margin,
                                                                        holds, delta):
    cfg = plan.config_for("unit", "softcap", [])
    points = [sw.Point(i, (("softcap.cap", v),), cfg) for i, v in ((1, 15.0), (2, 30.0))]
    ref = sw.Outcome(points[0], {0: 2.05, 1: 2.15}, "unit/ref")
    outcomes = [ref, sw.Outcome(points[1], second, "unit/other")]
    verdict = sw.verdict(outcomes, ref)
    assert verdict.startswith(f"best: #{best} ") and margin in verdict and holds in verdict, verdict
    (row,) = [line for line in sw.table(outcomes, ref, [0, 1]).splitlines() if "unit/other" in line]
    assert delta in row and row.startswith("best" if best == 2 else " "), row


@pytest.mark.slow
def test_a_diverging_point_is_a_row_of_the_table_and_the_sweep_goes_on(tiny, capsys):
    assert sweep(tiny, "--sweep", "optim.lr=1e30,0.01", "--set", "optim.grad_clip=0",
                 "--seeds", "1") == 0
    out = capsys.readouterr().out
    (folder,) = record_dirs(tiny)  # the diverged point writes no record, as with `run`
    assert record.load_record(folder)["config"]["optim"]["lr"] == 0.01
    (row,) = [line for line in out.splitlines() if line.startswith("ref ")]
    assert re.search(r"1e\+30 .* seed 0 diverged at step \d+: train loss is nan", row), row
    assert "one point finished, #2 (optim.lr=0.01): nothing to compare it with" in out


@pytest.mark.parametrize("extra, needles", [
    (("--sweep", "optim.lrr=0.1,0.2"), ("unknown setting optim.lrr",)),
    (("--sweep", "muon.lr=0.1,0.2"), ("--sweep muon.lr: 'muon' is neither",)),
    (("--tricks", "softcap", "--sweep", "softcap.cpa=1,2"), ("'softcap' has no setting 'cpa'",)),
    (("--tricks", "softcap", "--sweep", "softcap.cap=10,abc"),
     ("softcap.cap must be a number, got 'abc'",)),
    (("--tricks", "softcap", "--sweep", "softcap.cap=10,-1"),
     ("softcap.cap must be above 0, got -1.0", "(change it with --sweep or --set)")),
    (("--sweep", "model.d_model=64,65"), ("model.d_model=65 must be divisible",)),
    (("--sweep", "optim.lr="), ("--sweep optim.lr= names no value",)),
    (("--sweep", "optim.lr=0.1,,0.2"), ("has an empty entry",)),
    (("--sweep", "optim.lr"), ("--sweep expects section.key=V1,V2",)),
    (("--sweep", "optim.lr=0.1,1e-1"), ("lists 0.1 more than once",)),
    (("--sweep", "optim.lr=0.1", "--sweep", "optim.lr=0.2"), ("given twice",)),
    (("--sweep", "optim.lr=0.1,0.2", "--set", "optim.lr=0.3"), ("both swept and fixed",)),
    (("--sweep", "optim.lr=0.1,0.2", "--reference", "optim.lr=0.3"),
     ("not a point of the grid (optim.lr takes 0.1, 0.2)",)),
    (("--sweep", "optim.lr=0.1,0.2", "--sweep", "optim.beta1=0.8,0.9",
      "--reference", "optim.lr=0.1"), ("gives no value for optim.beta1",)),
    (("--sweep", "optim.lr=" + ",".join(f"0.{i:02d}" for i in range(1, 13)),
      "--sweep", "optim.beta1=" + ",".join(f"0.{i}" for i in range(1, 9))),
     ("this grid has 96 points (192 runs): pass --yes to run it",)),
    (("--sweep", "optim.lr=0.1,0.2", "--seeds", ""), ("names no seed",)),
])
def test_bad_input_is_one_line_before_anything_trains(tiny, capsys, no_training, extra, needles):
    assert sweep(tiny, *extra) == 1
    one_line_error(capsys, *needles)
    assert record_dirs(tiny) == []


def test_a_point_record_that_cannot_be_read_back_is_named_before_anything_runs(tiny, capsys,
                                                                             no_training):
    """Rather than run the point again and write a -2 sibling beside its unreadable record."""
    broken = tiny / "records" / "tiny" / "2026-12-01_sweep-optim-lr-0-2"
    broken.mkdir(parents=True)
    (broken / "record.yaml").write_text("runs: [\n")
    other = tiny / "records" / "tiny" / "2026-12-01_something-else"  # not this sweep's: ignored
    other.mkdir()
    (other / "record.yaml").write_text("runs: [\n")
    assert sweep(tiny, "--sweep", "optim.lr=0.1,0.2") == 1
    one_line_error(capsys, "tiny/2026-12-01_sweep-optim-lr-0-2, the record of point 2 "
                   "(optim.lr=0.2) by its name, cannot be read back", "move it out of")
    assert sorted((tiny / "records" / "tiny").iterdir()) == sorted([broken, other])


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


@pytest.mark.slow
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


def test_a_long_record_name_keeps_every_value():
    """Folder names stop at 60 characters: where full keys would cut a value off, the keys are
    named by their last part, so two points never share a name up to a suffix."""
    point = sw.Point(4, (("untie-head.embed_std", 0.0), ("untie-head.head_std", 0.02)), None)
    assert record.slugify(point.name("sweep-untie-head")) == \
        "sweep-untie-head-embed-std-0-head-std-0-02"
    assert sw.Point(1, (("softcap.cap", 10.0),), None).name("sweep") == "sweep-softcap.cap=10"
