"""find-steps: the search over fixed-length runs, and compare: two configurations interleaved."""

from __future__ import annotations

import re

import pytest

from helpers import record_dirs
from speedrun import cli
from speedrun.records import record, verify
from speedrun.training import plan as P
from speedrun.training import step_search
from speedrun.training.seed import run_seed


@pytest.mark.parametrize("answer, start", [(137, 100), (137, 400), (10, 50), (700, 30)])
def test_search_finds_the_fewest_passing_multiple(answer, start):
    calls = []

    def passes(steps):
        calls.append(steps)
        return steps >= answer

    best, seen = step_search.search(passes, start, 10, max_probes=12, log=lambda _: None)
    assert best == -(-answer // 10) * 10  # the first multiple of 10 at or above the answer
    assert len(calls) == len(set(calls)) <= 12  # every probe is run once
    assert all(s % 10 == 0 for s in calls)


def test_search_stops_at_the_probe_budget():
    best, seen = step_search.search(lambda s: s >= 1000, 10, 1, max_probes=3, log=lambda _: None)
    assert best is None and len(seen) == 3


@pytest.mark.slow
def test_find_steps_agrees_with_a_direct_sweep(tiny, capsys):  # noqa: F811
    """On the tiny track, with one seed: run every candidate length directly, then let
    find-steps search the same grid; it must name the first length whose run ends below 3.0."""
    cfg = P.config_for("tiny", "", [])
    plan = P.prepare(cfg, None, "test")
    finals = {}
    for steps in (20, 30, 40, 50):
        p = plan.with_steps(steps)
        finals[steps] = run_seed(p, 0, quiet=True).final_val_loss
    passing = [s for s, loss in finals.items() if loss <= 3.0]
    assert passing and passing == sorted(finals)[-len(passing):], finals  # monotone here
    capsys.readouterr()
    assert cli.main(["find-steps", "--track", "tiny", "--seeds", "1", "--start", "20",
                     "--multiple", "10", "--max-probes", "5", "--record",
                     "--records-dir", str(tiny / "records")]) == 0
    out = capsys.readouterr().out
    assert f"fewest steps found: {passing[0]}." in out
    assert f"--steps {passing[0]} --seeds 3" in out  # the claim needs 3 seeds
    # --record keeps the best passing probe as a record (the other probes write none): the
    # same run as the sweep's
    (folder,) = record_dirs(tiny)
    rec = record.load_record(folder)
    assert verify.verify(folder) == [] and rec["runs"][0]["steps"] == passing[0]
    assert rec["runs"][0]["final_val_loss"] == pytest.approx(finals[passing[0]], abs=1e-6)


@pytest.mark.slow
def test_compare_interleaves_and_writes_both_records(tiny, capsys):  # noqa: F811
    code = cli.main(["compare", "--track", "tiny", "--b", "softcap", "--steps-a", "8",
                     "--steps-b", "6", "--set-a", "train.eval_every=4", "--set-b",
                     "train.eval_every=3", "--seeds", "2", "--quiet",
                     "--records-dir", str(tiny / "records")])
    assert code == 0
    out = capsys.readouterr().out
    order = re.findall(r"^([AB]) seed (\d+): (\d+) steps", out, re.M)
    assert order == [("A", "0", "8"), ("B", "0", "6"), ("A", "1", "8"), ("B", "1", "6")]
    assert re.search(r"time ratio B/A: [\d.]+x \(95% CI [\d.-]+-[\d.]+\), steps 6 vs 8", out)
    folders = record_dirs(tiny)
    assert len(folders) == 2 and all(verify.verify(f) == [] for f in folders)
    recs = sorted((record.load_record(f) for f in folders), key=lambda r: r["description"])
    assert [r["description"] for r in recs] == ["baseline", "softcap"]
    assert [r["config"]["train"]["steps"] for r in recs] == [8, 6]
