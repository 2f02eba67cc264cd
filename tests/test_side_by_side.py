"""Seeds and sweep points trained side by side in one vmapped program: every trick's stack
trains to the same final losses as its seeds one after another (within TOLERANCE, measured);
sweep points that differ only in settings the step takes as inputs equal their own runs; which
settings can be inputs and why the others cannot; and the commands: an untimed record that
verifies and the leaderboard lists unranked, compare's loss side, sweep's programs, and every
refusal in one line (a timed claim, a setting that cannot be an input, a count that does not
fit in memory, fsdp).

Models are tiny (d_model 32, 2 layers, 16 bytes, 6 steps) on the tiny dataset taken as bytes.
"""

from __future__ import annotations

import re

import pytest

import tricks
from helpers import (byte_plan, on_devices, one_line_error, record_dirs, result,
                     run_cli, short_cfg, write, write_dataset)
from speedrun import cli
from speedrun.config import apply_overrides
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.records import leaderboard, record, verify
from speedrun.training import environment, side_by_side, step_inputs
from speedrun.training.evaluate import evaluate_checkpoint
from speedrun.training.seed import run_seed

# The largest difference between a seed's validation losses (every point of its curve, the final
# one included) side by side and one after another, over every trick alone and every stack
# below, on a 2-core CPU: computing in float32, 1e-6 (one unit of the 6 decimals a log keeps);
# the bound leaves room for an XLA that orders a batched sum otherwise. Computing in bfloat16
# (the bf16 trick), 7.1e-5 alone and 2.7e-4 in the stacks of 27 tricks: bfloat16 keeps 8 bits
# of mantissa, and XLA:CPU rounds a batched bfloat16 matmul otherwise than a 2-D one.
TOLERANCE = 1e-4
BF16_TOLERANCE = 1e-3


def tolerance(names) -> float:
    return BF16_TOLERANCE if "bf16" in names else TOLERANCE

REGISTRY = tricks.available()
STACKS = [
    ("muon", "rotary", "wsd-schedule"),  # the wiki-bytes track's best stack: the quick tier's
    *((name, *REGISTRY[name].requires) for name in sorted(REGISTRY)),
    # everything that composes at once, then what that leaves out
    tuple(sorted(set(REGISTRY) - {"value-residual", "untie-head", "fp8-head", "fp8-mlp"})),
    tuple(sorted(set(REGISTRY) - {"value-residual", "untie-head", "mtp", "moe"})),
    ("untie-head", "value-residual", "muon", "softcap"),
]


@pytest.fixture
def byte_data(tmp_path):
    return write_dataset(tmp_path / "data", vocab=256)


@pytest.fixture(autouse=True)
def fixed_probe(monkeypatch):
    """The speed probe is not the subject: a fixed figure, in no time."""
    monkeypatch.setattr(environment, "machine_gflops", lambda probe=None: 100.0)


def stack_cfg(names, *overrides):
    cfg = tricks.configure(tricks.with_tricks(short_cfg(), list(names)))
    return tricks.configure(apply_overrides(cfg, list(overrides))) if overrides else cfg


def gaps(together, alone) -> float:
    """The largest difference of two runs' validation curves (every point, the final loss
    included), after checking they are the same runs."""
    assert [r.seed for r in together] == [r.seed for r in alone]
    worst = 0.0
    for a, b in zip(together, alone):
        assert [p[0] for p in a.curve] == [p[0] for p in b.curve]
        worst = max(worst, *(abs(p[3] - q[3]) for p, q in zip(a.curve, b.curve)))
    return worst


@pytest.mark.parametrize("names", [
    pytest.param(n, id="+".join(n) if len(n) < 6 else f"{len(n)}-tricks",
                 marks=() if i == 0 else pytest.mark.slow) for i, n in enumerate(STACKS)])
def test_every_trick_trains_the_same_side_by_side(names, byte_data):
    plan = byte_plan(stack_cfg(names), byte_data)
    alone = [run_seed(plan, seed, quiet=True) for seed in (0, 1)]
    together = side_by_side.seeds_of(plan, [0, 1], quiet=True)
    assert gaps(together, alone) <= tolerance(names)
    assert alone[0].final_val_loss != alone[1].final_val_loss  # two seeds, two runs
    for r in together:  # each seed's log says how it trained, and that its time is not its own
        assert "side by side: 2 models in one program" in r.log
        assert r.train_time_s == together[0].train_time_s


POINTS = {  # stack: settings of points that differ only in inputs of the step
    ("softcap",): ("optim.lr=0.01", "softcap.cap=5"),
    ("muon", "rotary", "wsd-schedule", "value-embeds"): (
        "muon.lr=0.01", "muon.momentum=0.8", "muon.embed_lr=0.1", "rotary.base=100.0",
        "wsd-schedule.final=0.3", "value-embeds.lambda_init=0.1", "model.init_std=0.05"),
}


@pytest.mark.parametrize("names", [
    pytest.param(n, marks=pytest.mark.slow) for n in POINTS])
def test_sweep_points_side_by_side_equal_their_own_runs(names, byte_data):
    plans = [byte_plan(stack_cfg(names), byte_data)]
    plans += [byte_plan(stack_cfg(names, o), byte_data) for o in POINTS[names]]
    seeds = (0,) if len(plans) < 4 else (0, 1)  # the quick tier's: three models
    lanes = [side_by_side.Lane(p, seed) for p in plans for seed in seeds]
    together = side_by_side.train_side_by_side(lanes, quiet=True, stop_on_divergence=False)
    alone = [run_seed(lane.plan, lane.seed, quiet=True) for lane in lanes]
    assert gaps(together, alone) <= TOLERANCE
    finals = {round(r.final_val_loss, 6) for r in alone}
    assert len(finals) == len(lanes)  # every setting changed the run


TWO_DEVICES = """
import json, tempfile
from pathlib import Path
import jax
from helpers import byte_plan, short_cfg, write_dataset
from speedrun.training import environment, side_by_side
from speedrun.training.seed import run_seed
environment.machine_gflops = lambda probe=None: 100.0
plan = byte_plan(short_cfg(), write_dataset(Path(tempfile.mkdtemp()), vocab=256))
alone = [run_seed(plan, s, True).final_val_loss for s in (0, 1)]
together = [r.final_val_loss for r in side_by_side.seeds_of(plan, [0, 1], True)]
print(json.dumps({"devices": jax.device_count(), "alone": alone, "together": together}))
"""


@pytest.mark.slow
def test_seeds_side_by_side_split_their_batches_over_the_devices():
    (out,) = on_devices([TWO_DEVICES], 2).wait()
    assert out["devices"] == 2
    assert out["together"] == pytest.approx(out["alone"], abs=TOLERANCE)


@pytest.mark.slow
def test_a_diverging_model_stops_alone_unless_told_to_stop_all(byte_data):
    good, bad = (byte_plan(stack_cfg((), f"optim.lr={lr}", "optim.grad_clip=0"), byte_data)
                 for lr in (0.01, 1e30))
    lanes = [side_by_side.Lane(good, 0), side_by_side.Lane(bad, 0, "point 2/2 ")]
    out = side_by_side.train_side_by_side(lanes, quiet=True, stop_on_divergence=False)
    assert out[0].final_val_loss == pytest.approx(run_seed(good, 0, True).final_val_loss,
                                                  abs=TOLERANCE)
    assert re.fullmatch(r"diverged at step \d+: train loss is nan", str(out[1]))
    with pytest.raises(side_by_side.train.Diverged, match=r"point 2/2 seed 0 diverged at step"):
        side_by_side.train_side_by_side(lanes, quiet=True)


# --- which settings can be inputs ---------------------------------------------------------------


@pytest.mark.parametrize("key, why", [
    ("optim.lr", None), ("optim.beta2", None), ("optim.weight_decay", None),
    ("model.init_std", None), ("muon.lr", None), ("muon.momentum", None),
    ("softcap.cap", None), ("wsd-schedule.final", None),
    ("optim.grad_clip", "branches on it in Python"),  # 0 leaves clipping out of the program
    ("wsd-schedule.cooldown_frac", "branches on it in Python"),  # a count of steps
    ("moe.capacity_factor", "needs its value as a Python number"),  # a capacity: a shape
    ("model.n_layer", "an integer"), ("muon.nesterov", "a flag"), ("bf16.dtype", "a str"),
    ("train.batch_size", "the training loop reads it"),
])
def test_which_settings_the_step_takes_as_inputs(key, why):
    cfg = stack_cfg(("muon", "softcap", "wsd-schedule", "moe", "bf16"))
    found = step_inputs.problem(cfg, tricks.build_hooks(cfg), key)
    assert found is None if why is None else why in found, found


def test_configurations_that_differ_otherwise_cannot_share_a_program():
    a, b = stack_cfg(("softcap",)), stack_cfg(("softcap",), "optim.grad_clip=0")
    hooks = [tricks.build_hooks(c) for c in (a, b)]
    with pytest.raises(SpeedrunError, match="optim.grad_clip cannot be an input of the step"):
        step_inputs.check([a, b], hooks)
    with pytest.raises(SpeedrunError, match="different tracks or tricks"):
        step_inputs.differing([a, stack_cfg(("rotary",))])
    assert step_inputs.check([a, stack_cfg(("softcap",), "softcap.cap=3")], hooks) == \
        ("softcap.cap",)


# --- the commands --------------------------------------------------------------------------------

SHORT = ("--steps", "4", "--set", "train.eval_every=2")
QUICK = (*SHORT, "--set", "model.n_layer=1")


def sweep(tmp_path, *extra):
    return cli.main(["sweep", "--track", "tiny", "--records-dir", str(tmp_path / "records"),
                     "--quiet", *QUICK, *extra])


@pytest.mark.slow
def test_run_side_by_side_writes_an_untimed_record_listed_never_ranked(tiny, capsys):
    assert run_cli(tiny, *QUICK, "--side-by-side", "--seeds", "2",
                   "--save", str(tiny / "models")) == 0
    (folder,) = record_dirs(tiny)
    rec = record.load_record(folder)
    for run in rec["runs"]:  # each seed's own model saved: it scores its own final loss
        (saved,) = (tiny / "models").glob(f"*-seed{run['seed']}.safetensors")
        loss = evaluate_checkpoint(checkpoint.load(saved), None)["val_loss"]
        assert loss == pytest.approx(run["final_val_loss"], abs=1e-5)
    assert rec["untimed"] == "2 seeds trained side by side in one program"
    assert verify.verify(folder) == []
    assert "untimed (2 seeds trained side by side in one program)" in capsys.readouterr().out
    assert "side by side: 2 models" in (folder / "seed1.log").read_text()


def test_an_untimed_claim_is_listed_with_its_reason_never_ranked(tmp_path):
    runs = [result(s, loss) for s, loss in enumerate((2.5, 2.51, 2.49))]
    write(tmp_path, runs, untimed="3 seeds trained side by side in one program")
    board = leaderboard.load_all(tmp_path / "records")
    (row,) = board.rows.to_dict("records")
    assert row["claim"] and row["problem"] == ""  # p < 0.01 and verified, yet not ranked
    assert not any(e.ranked for entries in board.entries.values() for e in entries)
    text = leaderboard.render(tmp_path / "records", board)
    assert "untimed (3 seeds trained side by side in one program)" in text.split("Not ranked")[1]


@pytest.mark.slow
def test_compare_side_by_side_compares_losses_not_times(tiny, capsys):
    assert cli.main(["compare", "--track", "tiny", "--b", "softcap", "--seeds", "2",
                     "--side-by-side", "--records-dir", str(tiny / "records"), "--quiet",
                     "--steps-a", "4", "--steps-b", "4", "--set-a", "model.n_layer=1",
                     "--set-b", "model.n_layer=1"]) == 0
    out = capsys.readouterr().out
    assert "time ratio" not in out and "times not compared" in out
    assert re.search(r"final val loss B - A, paired by seed: [+-]\d\.\d{4} \(B lower on \d of 2",
                     out)
    for folder in record_dirs(tiny):
        assert record.load_record(folder)["untimed"].startswith("2 seeds")


@pytest.mark.slow
def test_sweep_trains_input_points_in_one_program_and_others_apart(tiny, capsys, monkeypatch):
    monkeypatch.setattr(side_by_side, "FASTER_ON", frozenset({"cpu"}))  # the default, here
    assert sweep(tiny, "--sweep", "optim.lr=0.01,0.02", "--sweep", "optim.grad_clip=0,1",
                 "--seeds", "1") == 0
    out = capsys.readouterr().out
    assert "note: optim.grad_clip cannot be an input of the step" in out
    assert "points 1, 3: 2 models side by side in one program" in out
    assert "points 2, 4: 2 models side by side in one program" in out
    assert len(record_dirs(tiny)) == 4
    untimed = {record.load_record(f)["untimed"] for f in record_dirs(tiny)}
    assert untimed == {"1 seed trained side by side in one program of 2 models"}


@pytest.mark.slow
def test_find_steps_probes_train_their_seeds_side_by_side(tiny, capsys):
    assert cli.main(["find-steps", "--track", "tiny", "--seeds", "2", "--start", "4",
                     "--multiple", "2", "--max-probes", "2", "--side-by-side",
                     "--set", "model.n_layer=1", "--set", "train.eval_every=2"]) == 1
    out = capsys.readouterr().out
    assert "seeds [0, 1] side by side" in out and "no probe passed" in out
    for steps in (4, 8):  # one program a probe: one line of both seeds' losses a validation
        assert re.search(rf"\[{steps} steps\] step:{steps}/{steps} val_loss [\d.]+ [\d.]+ "
                         rf"train_time", out)
        assert f"[{steps} steps] seed 1: {steps} steps in" in out


@pytest.mark.parametrize("command, needles", [
    (["submit", "--side-by-side"], ("submit times a claim", "--side-by-side is for untimed")),
    (["run", *QUICK, "--side-by-side", "--set", "train.sharding=fsdp"],
     ("needs train.sharding=dp",)),
    (["sweep", *SHORT, "--side-by-side", "--sweep", "model.n_layer=1,2"],
     ("model.n_layer cannot be an input of the step: it is an integer",
      "--side-by-side seeds")),
    (["sweep", *QUICK, "--side-by-side", "points", "--sweep", "optim.grad_clip=0,1"],
     ("optim.grad_clip cannot be an input", "branches on it in Python")),
    (["sweep", *QUICK, "--side-by-side", "--max-side-by-side", "0", "--sweep", "optim.lr=1,2"],
     ("--max-side-by-side must be at least 1",)),
])
def test_bad_input_is_one_line_before_anything_trains(tiny, capsys, no_training, monkeypatch,
                                                      command, needles):
    monkeypatch.setattr(side_by_side, "train_side_by_side", lambda *a, **k: pytest.fail("ran"))
    assert cli.main([command[0], "--track", "tiny", "--records-dir", str(tiny / "records"),
                     *command[1:]]) == 1
    one_line_error(capsys, *needles)
    assert not record_dirs(tiny)


def test_a_count_that_does_not_fit_says_how_many_would(tiny, capsys, monkeypatch):
    planned = {}

    def small(compiled, n):  # a device with room for a little over one model's program
        need = side_by_side.speed.program_peak_bytes(compiled)
        monkeypatch.setattr(side_by_side, "device_memory_bytes", lambda: int(need / n * 1.5))
        planned["need"] = need
        return check(compiled, n)

    check = side_by_side.check_memory
    monkeypatch.setattr(side_by_side, "check_memory", small)
    assert run_cli(tiny, *QUICK, "--side-by-side", "--seeds", "3") == 1
    one_line_error(capsys, "3 models side by side need about", "at most 1 would fit")
    assert planned["need"] > 0 and not record_dirs(tiny)
