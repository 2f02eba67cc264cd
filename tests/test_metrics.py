"""`run --log-to`: TensorBoard event files that TensorBoard's own reader loads, with every
metric (and the values the run's record and log hold); a resumed run writes on into the same
TensorBoard run; bad loggers and folders, and a missing package, are one line before anything
compiles."""

from __future__ import annotations

import re
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import one_line_error, record_dirs, run_cli
from speedrun.records.logs import parse_log
from speedrun.records.record import load_record
from speedrun.training import metrics

TAGS = {"train/loss", "train/lr", "perf/step_time_ms", "perf/tokens_per_s", "perf/mfu",
        "val/loss", "val/bpb"}


def scalars(folder) -> dict:
    """{tag: [(step, value), ...]} as TensorBoard reads the run in ``folder``."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_writes_every_metric_tensorboard_reads(tiny):
    assert run_cli(tiny, "--steps", "10", "--set", "train.eval_every=5",
                   "--log-to", f"tensorboard:{tiny / 'tb'}") == 0
    (run,) = (tiny / "tb").iterdir()
    assert run.name.endswith("-baseline-seed0")
    found = scalars(run)
    assert set(found) == TAGS
    (folder,) = record_dirs(tiny)
    rec = load_record(folder)
    curve = rec["runs"][0]["curve"]
    assert [s for s, _ in found["val/loss"]] == [s for s, *_ in curve] == [0, 5, 10]
    assert [v for _, v in found["val/loss"]] == pytest.approx([p[3] for p in curve], abs=1e-6)
    logged = parse_log((folder / "seed0.log").read_text())["train"]
    assert [s for s, _ in found["train/loss"]] == [s for s, _ in logged] == [5, 10]
    assert [v for _, v in found["train/loss"]] == pytest.approx([float(v) for _, v in logged],
                                                                abs=1e-4)
    assert all(v > 0 for tag in ("perf/step_time_ms", "perf/tokens_per_s", "perf/mfu",
                                 "train/lr") for _, v in found[tag])
    assert found["val/bpb"][0][1] > found["val/loss"][0][1]  # nats a token > bits a byte here


def watch(folder, resumed_at=None, bpb=2.0):
    sink = metrics.TensorBoard(folder, resumed_at)
    return metrics.Watch([sink], lrs=[0.1 * i for i in range(41)], flops_per_token=1e6,
                         peak=1e12, bpb_per_nat=bpb)


def test_each_progress_point_becomes_its_metrics(tmp_path):
    shown = []
    w = watch(tmp_path / "run")
    progress = w.around(lambda step, info: shown.append(step))
    progress(0, {"compiled": 3.0})
    progress(0, {"val": 5.0, "time": 0.0})
    progress(10, {"loss": 4.0, "val": 5.0, "time": 2.0, "tok_s": 5e5})
    progress(20, {"loss": 3.0, "val": 5.0, "time": 3.0, "tok_s": 6e5})
    progress(20, {"val": 2.5, "time": 3.0})
    w.close()
    assert shown == [0, 0, 10, 20, 20]  # the console still sees every point
    found = {tag: dict(points) for tag, points in scalars(tmp_path / "run").items()}
    assert found["val/loss"] == {0: 5.0, 20: 2.5} and found["val/bpb"] == {0: 10.0, 20: 5.0}
    assert found["train/loss"] == {10: 4.0, 20: 3.0}
    assert found["perf/step_time_ms"] == pytest.approx({10: 200.0, 20: 100.0})
    assert found["perf/tokens_per_s"] == pytest.approx({10: 5e5, 20: 6e5})
    assert found["train/lr"] == pytest.approx({10: 1.0, 20: 2.0})
    assert found["perf/mfu"] == pytest.approx({10: 0.5, 20: 0.6})  # 5e5 x 1e6 / 1e12


def test_a_resumed_run_writes_on_into_the_same_tensorboard_run(tmp_path):
    """The stopped run wrote steps 10..30; it resumes at its checkpoint of step 20: what it wrote
    after step 20 gives way to what the resumed run writes."""
    first = watch(tmp_path / "run")
    progress = first.around(lambda *_: None)
    for step in (10, 20, 30):
        progress(step, {"loss": float(step), "val": 0.0, "time": step / 10, "tok_s": 1.0})
    progress(30, {"val": 1.0, "time": 3.0})  # a validation: what was written is on disk
    again = watch(tmp_path / "run", resumed_at=20)
    progress = again.around(lambda *_: None)
    for step in (30, 40):
        progress(step, {"loss": step + 0.5, "val": 0.0, "time": step / 10, "tok_s": 1.0})
    again.close()
    assert len(list((tmp_path / "run").iterdir())) == 2  # one event file each
    assert scalars(tmp_path / "run")["train/loss"] == [(10, 10.0), (20, 20.0), (30, 30.5),
                                                       (40, 40.5)]


# --- bad input: one line, before anything compiles ----------------------------------------------


@pytest.mark.parametrize("spec, needle", [
    ("neptune:x", "--log-to neptune:x: unknown logger 'neptune'; use tensorboard:DIR or wandb"),
    ("tensorboard", "--log-to tensorboard needs a folder: --log-to tensorboard:DIR"),
])
def test_an_unknown_logger_is_one_line(tiny, capsys, no_training, spec, needle):
    assert run_cli(tiny, "--log-to", spec) == 1
    one_line_error(capsys, needle)
    assert not record_dirs(tiny)


def test_a_folder_under_a_file_is_one_line(tiny, capsys, no_training):
    (tiny / "a-file").write_text("not a folder")
    assert run_cli(tiny, "--log-to", f"tensorboard:{tiny / 'a-file' / 'tb'}") == 1
    one_line_error(capsys, f"{tiny / 'a-file'} is not a folder")


@pytest.mark.parametrize("spec, module, needle", [
    ("tensorboard:tb", "tensorboardX", "pip install tensorboardX"),
    ("wandb", "wandb", "pip install wandb (it runs offline with WANDB_MODE=offline)"),
])
def test_a_logger_not_installed_says_how_to_install_it(tiny, capsys, no_training, monkeypatch,
                                                       spec, module, needle):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` meets where it is missing
    assert run_cli(tiny, "--log-to", spec) == 1
    err = one_line_error(capsys, f"needs the {module} package, which is not installed", needle)
    assert re.match(rf"error: --log-to {spec.split(':')[0]} ", err)
