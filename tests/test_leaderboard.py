"""leaderboard.md: one entry per configuration, only claims ranked on the fitted time scale,
the rest listed with reasons, ablations, byte-identical regeneration, --check."""

from __future__ import annotations

import dataclasses
import re
import shutil

import tricks
from helpers import config, one_line_error, result, write
from speedrun import cli


def claim(times, loss=2.9, steps=100):
    """Three seeds well below the target 3.0: a claim."""
    return [result(i, loss + 0.01 * i, t, steps) for i, t in enumerate(times)]


def build(tmp_path):
    write(tmp_path, claim((20.0, 22.0, 21.0)), name="baseline")
    write(tmp_path, claim((10.0, 12.0, 11.0), loss=2.88), ["softcap"])
    write(tmp_path, [result(0, 3.2, 30.0)], ["rotary"])  # one seed, above the target


def render(tmp_path, *extra):
    out = tmp_path / "leaderboard.md"
    code = cli.main(["leaderboard", "--records-dir", str(tmp_path / "records"),
                     "--output", str(out), *extra])
    return code, out


def test_ranking_and_unranked(tmp_path):
    build(tmp_path)
    code, out = render(tmp_path)
    text = out.read_text()
    assert code == 0
    ranked = text.split("### Sittings")[0]
    assert ranked.index("| softcap") < ranked.index("| baseline")  # faster first
    # each in a reference-machine sitting of its own: the geometric mean of its seeds' times,
    # the interval wide with the sittings' spread
    assert re.search(r"\| 1\s+\| 11\.0 s\s+\| [\d.]+-[\d.]+ s\s+\|", ranked), ranked
    assert "rotary" not in ranked
    assert "not a claim (1 distinct seed(s); a claim needs 3; p not computable); 100 steps, " \
           "final val loss 3.2000" in text.split("### Not ranked")[1]
    ablation = text.split("### Ablations")[1]
    assert re.search(r"\| softcap\s+\| baseline\s+\| 100 → 100\s+\| 2\.9100 → 2\.8900\s+"
                     r"\| -0\.0200 ± 0\.0000 \(3\)\s+\| 0\.52x \(", ablation), ablation
    # rotary is verified but not a claim, timed in no claim's sitting: its ablation row shows
    # the loss, not a time ratio; the loss difference is paired over the one seed both ran
    # (3.20 - 2.90), not the two means
    assert re.search(r"\| rotary\s+\| baseline\s+\| 100 → 100\s+\| 2\.9100 → 3\.2000\s+"
                     r"\| \+0\.3000 \(1\)\s+\| — \(not both on the scale\)", ablation), ablation


def test_only_claims_are_ranked(tmp_path):
    # four configurations (their lengths differ), one record each
    write(tmp_path, claim((10.0, 11.0, 12.0)), name="fine")
    write(tmp_path, [result(0, 2.9, 5.0, 90), result(1, 2.91, 5.0, 90)], name="two-seeds")
    write(tmp_path, [result(0, 2.9, 4.0, 80), result(0, 2.91, 4.0, 80), result(1, 2.92, 4.0, 80)],
          name="dup")
    write(tmp_path, [result(0, 2.99, 3.0, 70), result(1, 2.995, 3.0, 70), result(2, 3.01, 3.0, 70)],
          name="weak")  # mean below the target, p >= 0.01
    _, out = render(tmp_path)
    text = out.read_text()
    ranked, unranked = text.split("### Sittings")[0], text.split("### Not ranked")[1]
    assert "fine" in ranked
    for name in ("two-seeds", "dup", "weak"):
        assert name not in ranked and name in unranked
    assert "a claim needs 3" in unranked and "duplicate seeds" in unranked
    assert re.search(r"weak.*p = 0\.\d+ >= 0\.01", unranked)


def test_regeneration_is_identical_and_check_detects_staleness(tmp_path):
    build(tmp_path)
    _, out = render(tmp_path)
    first = out.read_bytes()
    render(tmp_path)
    assert out.read_bytes() == first
    assert render(tmp_path, "--check")[0] == 0
    write(tmp_path, claim((5.0, 6.0, 5.5)), ["softcap", "rotary"])
    assert render(tmp_path, "--check")[0] == 1
    assert out.read_bytes() == first  # --check never writes


def test_failed_verification_is_listed_not_ranked(tmp_path):
    folder = write(tmp_path, claim((10.0, 12.0, 11.0)), ["softcap"])
    (folder / "seed0.log").unlink()
    _, out = render(tmp_path)
    text = out.read_text()
    assert "_No ranked records._" in text and "seed0.log is missing" in text


def test_plots_are_written_linked_and_checked(tmp_path):
    build(tmp_path)
    _, out = render(tmp_path)
    prog = tmp_path / "records" / "unit" / "progression_cpu-2core.png"
    top = tmp_path / "records" / "unit" / "top-curves_cpu-2core.png"
    text = out.read_text()
    for png in (prog, top):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.relative_to(tmp_path).as_posix()})" in text
    first = prog.read_bytes(), top.read_bytes()
    render(tmp_path)
    assert (prog.read_bytes(), top.read_bytes()) == first  # plots regenerate byte-identically
    prog.unlink()
    assert render(tmp_path, "--check")[0] == 1  # a missing plot makes the leaderboard stale
    assert not prog.exists()


def test_ablations_pair_only_records_that_differ_by_one_trick_alone(tmp_path):
    build(tmp_path)  # baseline, softcap (cap 15) ranked
    cfg = config(["softcap", "rotary"])
    cfg = dataclasses.replace(cfg, tricks={**cfg.tricks, "softcap": {"cap": 30.0}})
    write(tmp_path, claim((8.0, 9.0, 8.5)), cfg=cfg)
    wide = config()
    wide = dataclasses.replace(wide, model=dataclasses.replace(wide.model, d_model=64))
    wide = tricks.with_tricks(wide, ["qknorm"])
    write(tmp_path, claim((8.0, 9.0, 8.5)), cfg=wide)  # qknorm on a wider model
    _, out = render(tmp_path)
    text = out.read_text()
    assert "rotary + softcap (softcap.cap=30.0)" in text.split("### Ablations")[0]
    ablation = text.split("### Ablations")[1]
    assert re.search(r"\| softcap\s+\| baseline\s+\|", ablation)
    # softcap at cap 30 + rotary is not "rotary on top of softcap (cap 15)": no such row
    assert not re.search(r"\| rotary\s+\| softcap", ablation)
    # qknorm at d_model 64 is not qknorm on top of the d_model 32 baseline
    assert not re.search(r"\| qknorm\s+\|", ablation)


def test_ablations_accept_a_trick_that_changes_the_model_config(tmp_path):
    write(tmp_path, claim((20.0, 22.0, 21.0)), name="baseline")
    write(tmp_path, claim((18.0, 19.0, 18.5), steps=80), ["gqa"])  # gqa sets n_kv_head
    _, out = render(tmp_path)
    ablation = out.read_text().split("### Ablations")[1]
    assert re.search(r"\| gqa\s+\| baseline\s+\| 100 → 80\s+\|", ablation), ablation


def test_ablation_time_ratios_come_from_the_sittings_that_timed_both(tmp_path):
    def rec(trick_names, seconds, when, sitting):
        runs = claim((seconds, seconds + 1, seconds + 0.5))
        return write(tmp_path, runs, trick_names, start=when, sitting=sitting,
                     name="-".join(trick_names) or f"baseline-{when[11:13]}")

    rec([], 30.0, "2026-11-24T01:00:00+00:00", "slow")  # a slow sitting
    rec(["softcap"], 27.0, "2026-11-24T01:10:00+00:00", "slow")
    rec([], 20.0, "2026-11-24T09:00:00+00:00", "fast")  # a fast one, later
    rec(["rotary"], 19.0, "2026-11-24T09:10:00+00:00", "fast")
    _, out = render(tmp_path)
    text = out.read_text()
    ranked = text.split("### Sittings")[0]
    assert ranked.count("| baseline") == 1  # its two records are one entry, in two sittings
    assert re.search(r"\| baseline\s+\|.*\| 2\s+\| step", ranked), ranked
    ablation = text.split("### Ablations")[1]
    assert re.search(r"\| softcap\s+\| baseline.*\| 0\.90x", ablation), ablation
    assert re.search(r"\| rotary\s+\| baseline.*\| 0\.95x", ablation), ablation


def test_a_records_folder_that_is_missing_a_file_or_empty_is_refused(tmp_path, capsys):
    build(tmp_path)
    _, out = render(tmp_path)
    before = out.read_bytes()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    for where, needle in (("recrods", "does not exist"), ("afile", "is a file, not a folder"),
                          ("empty", "no records under")):
        for extra in ((), ("--check",)):
            assert cli.main(["leaderboard", "--records-dir", str(tmp_path / where), "--output",
                             str(out), *extra]) == 1
            one_line_error(capsys, needle)
    assert out.read_bytes() == before  # the leaderboard is never emptied by a typo


def test_a_leaderboard_never_loses_a_record_still_on_disk_unless_forced(tmp_path, capsys):
    build(tmp_path)
    softcap = write(tmp_path, claim((9.0, 9.5, 9.2), loss=2.87), ["softcap", "rotary"])
    _, out = render(tmp_path)
    before = out.read_text()
    part = ["leaderboard", "--records-dir", str(tmp_path / "records" / "unit"), "--output",
            str(out)]
    assert cli.main(part) == 1  # a part of the records: the others would vanish from it
    one_line_error(capsys, "lists 4 record(s) that are still on disk", "--force")
    assert out.read_text() == before
    assert cli.main([*part, "--output", str(tmp_path / "lb" / "afile" / "x.md")]) == 1
    capsys.readouterr()
    assert cli.main([*part, "--output", str(tmp_path)]) == 1
    one_line_error(capsys, "is a folder")
    # a record removed from the records folder leaves the leaderboard: the records say so
    shutil.rmtree(softcap)
    code, _ = render(tmp_path)
    assert code == 0 and softcap.name in before and softcap.name not in out.read_text()
    assert cli.main([*part, "--force"]) == 0  # asked for: written
    assert "records/unit/" not in out.read_text()


def test_an_untimed_record_is_listed_and_feeds_nothing(tmp_path):
    """A record whose times are not one seed's uninterrupted wall clock (a resumed run, seeds
    trained side by side) keeps its losses on show but never ranks nor moves the scale."""
    write(tmp_path, claim((20.0, 22.0, 21.0)), name="baseline")
    write(tmp_path, claim((5.0, 5.0, 5.0), loss=2.88), ["softcap"],
          untimed="3 seeds trained side by side in one program")
    _, out = render(tmp_path)
    text = out.read_text()
    ranked = text.split("### Sittings")[0]
    assert "| baseline" in ranked and "softcap" not in ranked
    unranked = text.split("### Not ranked")[1]
    assert "untimed (3 seeds trained side by side in one program)" in unranked


def test_step_zero_is_rescored_where_a_rank_is_at_stake(tmp_path, monkeypatch):
    """The records of configurations that make a claim have their seeds' step 0 re-scored (a
    model run each); a record that cannot be placed costs nothing; a failing one drops out."""
    from speedrun.audit import step0

    build(tmp_path)
    checked = []

    def problems(self, rec):
        checked.append(rec["description"])
        return ["runs (seed 1): a copied or altered seed"] if rec["description"] == "softcap" else []

    monkeypatch.setattr(step0.Checker, "problems", problems)
    _, out = render(tmp_path)
    assert sorted(checked) == ["baseline", "softcap"]  # not the one-seed rotary record
    text = out.read_text()
    assert "| softcap" not in text.split("### Sittings")[0]
    assert "a copied or altered seed" in text.split("### Not ranked")[1]
