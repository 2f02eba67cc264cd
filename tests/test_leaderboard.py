"""leaderboard.md: ranking, unranked records, ablations, byte-identical regeneration, --check."""

from __future__ import annotations

import re

import dataclasses

from test_records import ENV, config, result, write

from speedrun import cli, records


def build(tmp_path):
    write(tmp_path, [result(0, 2.99, 20.0), result(1, 2.98, 22.0)], name="baseline")
    write(tmp_path, [result(0, 2.97, 10.0), result(1, 2.96, 12.0)], ["softcap"])
    write(tmp_path, [result(0, 3.2, 30.0)], ["rotary"])  # did not reach: never ranked


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
    ranked = text.split("### Not ranked")[0]
    assert ranked.index("| softcap") < ranked.index("| baseline")  # faster first
    assert re.search(r"\| 1\s+\| 11\.0 ± 1\.4 s", ranked)
    assert "rotary" not in ranked
    assert "target not reached by every seed (0/1 reached; mean final val loss 3.2000" \
        in text.split("### Not ranked")[1]
    ablation = text.split("### Ablations")[1]
    assert re.search(r"\| softcap\s+\| baseline\s+\| 21\.0 s → 11\.0 s\s+\| 0\.52x", ablation)


def test_regeneration_is_identical_and_check_detects_staleness(tmp_path):
    build(tmp_path)
    _, out = render(tmp_path)
    first = out.read_bytes()
    render(tmp_path)
    assert out.read_bytes() == first
    assert render(tmp_path, "--check")[0] == 0
    write(tmp_path, [result(0, 2.95, 5.0), result(1, 2.95, 6.0)], ["softcap", "rotary"])
    assert render(tmp_path, "--check")[0] == 1
    assert out.read_bytes() == first  # --check never writes


def test_failed_verification_is_listed_not_ranked(tmp_path):
    folder = write(tmp_path, [result(0, 2.97, 10.0), result(1, 2.96, 12.0)], ["softcap"])
    (folder / "seed0.log").unlink()
    _, out = render(tmp_path)
    text = out.read_text()
    assert "_No ranked records._" in text and "seed0.log is missing" in text


def test_plots_are_written_linked_and_checked(tmp_path):
    build(tmp_path)
    _, out = render(tmp_path)
    prog = tmp_path / "records" / "wiki" / "progression_cpu-2core.png"
    top = tmp_path / "records" / "wiki" / "top-curves_cpu-2core.png"
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
    runs = [result(0, 2.95, 8.0), result(1, 2.95, 9.0)]
    records.write_record(tmp_path / "records", records.build_record(cfg, runs, ENV,
                                                                    date="2026-11-24"), results=runs)
    _, out = render(tmp_path)
    text = out.read_text()
    assert "rotary + softcap (softcap.cap=30.0)" in text.split("### Ablations")[0]
    ablation = text.split("### Ablations")[1]
    assert re.search(r"\| softcap\s+\| baseline\s+\|", ablation)
    # softcap at cap 30 + rotary is not "rotary on top of softcap (cap 15)": no such row
    assert not re.search(r"\| rotary\s+\|", ablation)


def test_ablation_uses_the_closest_record_in_time(tmp_path):
    def rec(trick_names, seconds, when):
        runs = [result(0, 2.95, seconds), result(1, 2.96, seconds + 1)]
        r = records.build_record(config(trick_names), runs, {**ENV, "date": when},
                                 name="-".join(trick_names) or f"baseline-{when[11:13]}",
                                 date="2026-11-24")
        return records.write_record(tmp_path / "records", r, results=runs)

    rec([], 30.0, "2026-11-24T01:00:00+00:00")  # a slow session
    rec(["softcap"], 27.0, "2026-11-24T02:00:00+00:00")
    rec([], 20.0, "2026-11-24T09:00:00+00:00")  # a fast one, later
    rec(["rotary"], 19.0, "2026-11-24T10:00:00+00:00")
    _, out = render(tmp_path)
    ablation = out.read_text().split("### Ablations")[1]
    assert re.search(r"\| softcap\s+\| baseline\s+\| 30\.5 s → 27\.5 s", ablation)
    assert re.search(r"\| rotary\s+\| baseline\s+\| 20\.5 s → 19\.5 s", ablation)
