"""`bench`: the step's figures, the breakdown of where its time goes, and a profiler trace."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jax
import pytest

import tricks
from speedrun import cli
from speedrun.core import params as P
from speedrun.training.plan import config_for
from speedrun.training import speed as bench
from speedrun.training.environment import datasheet_peak


@pytest.mark.slow
def test_bench_breakdown_and_profile(tmp_path, capsys):
    code = cli.main(["bench", "--track", "unit", "--set", "model.vocab_size=256", "--steps", "2",
                     "--breakdown", "--profile", str(tmp_path / "prof")])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"MFU: \d+\.\d%", out), out
    # float32 parameters and Adam's two moments, all on the one device
    state = re.search(r"parameters \+ optimizer state: ([\d.]+) MiB per device "
                      r"\(train.sharding=dp over 1 device\)", out)
    cfg = config_for("unit", "", ["model.vocab_size=256"])
    expected = 3 * 4 * P.count(tricks.build_hooks(cfg).init(jax.random.PRNGKey(0), cfg.model))
    assert state and float(state.group(1)) * 2**20 == pytest.approx(expected, rel=0.03), out
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


def test_datasheet_peaks_match_device_kinds():
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == (989e12, "H100")  # SXM
    assert datasheet_peak("NVIDIA H100 PCIe")[0] == 756e12  # not the SXM figure
    assert datasheet_peak("NVIDIA H200")[0] == 989e12
    assert datasheet_peak("TPU v5 lite")[0] == 197e12  # v5e, not v5p
    assert datasheet_peak("AMD EPYC 7B13") is None


def test_mfu_peak_uses_datasheet_bf16_on_accelerators(monkeypatch):
    class Dev:
        def __init__(self, platform, kind):
            self.platform, self.device_kind = platform, kind

    monkeypatch.setattr(bench, "matmul_peak", lambda n=2048, dtype=None, repeats=10: 5e14)
    peak, label = bench.mfu_peak(Dev("gpu", "NVIDIA H100 80GB HBM3"), "bfloat16")
    assert peak == 989e12 and "datasheet dense bf16, H100" in label and "500 TFLOP/s" in label
    # float32 on a GPU, or an unknown accelerator: the measured matmul, labelled as such
    assert bench.mfu_peak(Dev("gpu", "NVIDIA H100 80GB HBM3"), "float32") == \
        (5e14, "measured, float32 8192^3")
    assert bench.mfu_peak(Dev("gpu", "Some Future GPU"), "bfloat16")[1] == \
        "measured, bfloat16 8192^3"
    assert bench.mfu_peak(Dev("cpu", "cpu"), "float32")[1] == "measured, float32 2048^3"


def trick_costs():
    """tests/benchmarks/trick_costs.py (a script, not a package module)."""
    path = Path(__file__).parent / "benchmarks" / "trick_costs.py"
    spec = importlib.util.spec_from_file_location("trick_costs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_trick_costs_table_gives_each_trick_as_ratios_to_the_baseline(tmp_path, capsys):
    costs = trick_costs()
    order = [label for label, _ in costs.configurations()]
    assert order[:3] == ["baseline", "fp8-head", "fp8-mlp"] and order[-1] == "baseline, again"
    assert len(order) == len(tricks.available()) + 2
    assert "momentum-warmup (+muon)" in order  # a trick alone comes with what it requires
    code = costs.main(["--track", "unit", "--set", "model.vocab_size=256", "--steps", "1",
                       "--out", str(tmp_path), "--only", "fp8-head,momentum-warmup"])
    assert code == 0
    text = (tmp_path / "trick-costs.md").read_text()
    rows = re.findall(r"^\| (.+?) \| ([\d.]+) ms \| ([\d.]+)x \| ([\d,]+) MiB \| ([\d.]+)x \|",
                      text, re.M)
    assert [r[0] for r in rows] == ["baseline", "fp8-head", "momentum-warmup (+muon)",
                                    "baseline, again"], text
    assert rows[0][2] == rows[0][4] == "1.00"  # the baseline against itself
    data = json.loads((tmp_path / "trick-costs.json").read_text())
    base, head = data["rows"][0], data["rows"][1]
    assert float(rows[1][2]) == pytest.approx(head["step_ms"] / base["step_ms"], abs=0.006)
    assert head["tricks"] == ["fp8-head"] and base["peak_mib"] > 0 and not data["skipped"]


def test_trick_costs_stops_at_its_time_budget_and_lists_the_rest(tmp_path):
    costs = trick_costs()
    costs.main(["--track", "unit", "--steps", "1", "--out", str(tmp_path), "--budget-s", "0.01",
                "--only", "softcap,relu2"])
    data = json.loads((tmp_path / "trick-costs.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["baseline"]  # the first always runs
    assert data["skipped"] == ["softcap", "relu2", "baseline, again"]
    assert "Skipped (the time budget was spent): softcap, relu2, baseline, again." in \
        (tmp_path / "trick-costs.md").read_text()
