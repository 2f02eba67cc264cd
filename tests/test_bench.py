"""`bench`: the step's figures, the breakdown of where its time goes, and a profiler trace."""

from __future__ import annotations

import re

from speedrun import bench, cli


def test_bench_breakdown_and_profile(tmp_path, capsys):
    code = cli.main(["bench", "--track", "unit", "--set", "model.vocab_size=256", "--steps", "2",
                     "--breakdown", "--profile", str(tmp_path / "prof")])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"MFU: \d+\.\d%", out), out
    rows = dict(re.findall(r"^(attention|head \+ loss|rest of fwd/bwd|optimizer|batch to device"
                           r"|host \(sync per step\)|step)\s+(\d+\.\d)\s", out, re.M))
    assert len(rows) == 7, out
    assert float(rows["step"]) > 0 and float(rows["attention"]) > 0
    # jax.profiler wrote a trace a profile viewer opens
    assert list((tmp_path / "prof").rglob("*.xplane.pb")), list((tmp_path / "prof").rglob("*"))


def test_breakdown_table_shares_are_of_the_step():
    parts = {"attention": 0.02, "head + loss": 0.01, "rest of fwd/bwd": 0.05, "optimizer": 0.01,
             "batch to device": 0.0, "step (all of it)": 0.1}
    text = bench.breakdown_table(parts, host_s=0.01)
    assert re.search(r"attention\s+20\.0\s+20%", text), text
    assert re.search(r"host \(sync per step\)\s+10\.0\s+10%", text), text
    assert re.search(r"sum of pieces\s+100\.0\s+100%", text), text
