"""Settings validation: one validator per config section, each problem naming its field."""

from __future__ import annotations

import dataclasses

import pytest

import tricks
from speedrun import config, tracks
from speedrun.config import ModelConfig, OptimConfig, PostConfig, RunConfig, TrainConfig
from speedrun.errors import SpeedrunError

BAD = {
    "model": {"vocab_size": 0, "n_layer": 0, "n_head": -1, "n_kv_head": -2, "d_model": 0,
              "mlp_ratio": 0, "seq_len": 0, "init_std": float("nan"), "compute_dtype": "fp8"},
    "optim": {"lr": float("nan"), "beta1": 1.0, "beta2": -0.1, "eps": 0.0,
              "weight_decay": float("inf"), "grad_clip": -1.0, "warmup_steps": -1,
              "decay": "exp", "min_lr_frac": 1.5},
    "train": {"batch_size": 0, "steps": 0, "eval_every": 0, "val_tokens": 0,
              "val_batch_size": -1, "target": float("inf"), "loss_chunk": 0, "log_every": 0, "align_docs": "yes",
              "sharding": "tp", "grad_accum": -1, "remat": "some"},
    "post": {"method": "dpo", "seq_len": 0, "heldout": 0, "samples": 1, "temperature": 0.0,
             "top_k": -1, "kl": -0.1, "lr_scale": float("nan")},
}
# post fields checked elsewhere: the task when it is looked up (an unknown name lists the
# tasks), the start checkpoint's hash against its file, and a flag that cannot be out of range
POST_CHECKED_ELSEWHERE = {"task", "start_sha256", "adv_norm"}


def test_every_field_is_validated():
    for section, cls in config.SECTIONS.items():
        unchecked = POST_CHECKED_ELSEWHERE if section == "post" else set()
        assert set(BAD[section]) | unchecked == {f.name for f in dataclasses.fields(cls)}, section


@pytest.mark.parametrize("section, name, value",
                         [(s, n, v) for s, fields in BAD.items() for n, v in fields.items()])
def test_each_out_of_range_field_is_rejected_by_name(section, name, value):
    cfg = RunConfig(post=PostConfig(method="rl", samples=2) if section == "post" else None)
    cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section),
                                                                   **{name: value})})
    with pytest.raises(SpeedrunError, match=rf"\b{section}\.{name}\b"):
        config.validate(cfg)
    assert len(config.problems(cfg)) == 1, config.problems(cfg)


def test_post_training_keeps_whole_models():
    cfg = RunConfig(train=TrainConfig(sharding="fsdp"), post=PostConfig())
    assert [p for p in config.problems(cfg) if "sharding" in p] == [
        "train.sharding=fsdp is for pretraining: sft and rl keep a whole copy of the model on "
        "every device (dp)"]


def test_post_training_takes_each_step_whole():
    cfg = RunConfig(train=TrainConfig(grad_accum=4, remat="full"), post=PostConfig())
    assert [p for p in config.problems(cfg) if "pretraining" in p] == [
        "train.grad_accum=4 is for pretraining: sft and rl take each step whole "
        "(train.grad_accum=1)",
        "train.remat=full is for pretraining: sft and rl take each step whole (train.remat=off)"]


def test_settings_added_later_keep_every_configurations_hash():
    """At their defaults the execution settings added after records existed are left out of
    the hash: a configuration hashes as it did before they existed."""
    cfg = tracks.TRACKS["wiki-bytes"].config
    d = cfg.to_dict()
    for key in ("sharding", "grad_accum", "remat"):
        del d["train"][key]
    del d["model"]["compute_dtype"]
    assert config.config_hash(cfg) == config.dict_hash(d)
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad_accum=2))
    assert config.config_hash(changed) != config.config_hash(cfg)


def test_every_execution_setting_is_left_out_of_the_identity():
    cfg = tracks.TRACKS["wiki-bytes"].config
    for section, key in config.EXECUTION:
        other = {"sharding": "fsdp", "remat": "full"}.get(key, 7)  # the rest are counts
        changed = dataclasses.replace(cfg, **{section: dataclasses.replace(
            getattr(cfg, section), **{key: other})})
        assert config.config_hash(changed) != config.config_hash(cfg), key
        assert config.identity_hash(changed) == config.identity_hash(cfg), key
    assert config.identity_hash(dataclasses.replace(cfg, optim=dataclasses.replace(
        cfg.optim, lr=1e-3))) != config.identity_hash(cfg)


def test_a_string_setting_is_taken_as_typed():
    cfg = config.apply_overrides(RunConfig(), ["train.remat=off", "train.sharding=fsdp"])
    assert (cfg.train.remat, cfg.train.sharding) == ("off", "fsdp")


def test_shapes_must_divide():
    assert config.validate_model(ModelConfig(d_model=65, n_head=4)) == [
        "model.d_model=65 must be divisible by model.n_head=4 (the heads split the width)"]
    assert "model.n_head=12 must be divisible by model.n_kv_head=5" in \
        config.validate_model(ModelConfig(n_kv_head=5))[0]
    assert config.validate_optim(OptimConfig()) == config.validate_train(TrainConfig()) == []


def test_trick_settings_must_be_finite():
    cfg = tricks.with_tricks(RunConfig(), ["softcap"])
    cfg = config.apply_overrides(cfg, ["softcap.cap=nan"])
    with pytest.raises(SpeedrunError, match=r"softcap\.cap must be a finite number"):
        config.validate(cfg)


def test_every_track_baseline_and_trick_is_valid():
    for track in tracks.TRACKS.values():
        assert config.problems(track.config) == [], track.name
        for name, trick in tricks.available().items():
            cfg = tricks.configure(tricks.with_tricks(track.config, [name, *trick.requires]))
            assert config.problems(cfg) == [], (track.name, name)
