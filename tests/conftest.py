"""Shared fixtures: a synthetic track 'unit' whose rules the records of unit tests follow."""

from __future__ import annotations

import pytest

import tinydata
from speedrun import tracks
from speedrun.config import ModelConfig, OptimConfig, RunConfig, TrainConfig

TRAIN_SHA = "a" * 64
VAL_SHA = "b" * 64
UNIT = tracks.Track(
    name="unit",
    dataset="unit",
    summary="records written by unit tests (no data)",
    where="tests",
    data_command="(none)",
    config=RunConfig(
        track="unit",
        model=ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=32),
        optim=OptimConfig(),
        train=TrainConfig(batch_size=8, steps=100, val_tokens=1024, target=3.0),
    ),
    rules=tracks.Rules(target=3.0, val_tokens=1024, tokenizer="gpt2", vocab=50257,
                       val_sha256=VAL_SHA, train_sha256=TRAIN_SHA),
)
UNIT_DATA = {"dataset": "unit", "tokenizer": "gpt2", "train_sha256": TRAIN_SHA,
             "val_tokens": 1024, "val_sha256": VAL_SHA}


@pytest.fixture(autouse=True)
def unit_track(monkeypatch):
    monkeypatch.setitem(tracks.TRACKS, "unit", UNIT)


@pytest.fixture(autouse=True)
def no_compilation_cache(monkeypatch):
    """Tests stay hermetic: no persistent compilation cache (tests/test_compile_cache.py turns
    it on where it is the subject)."""
    monkeypatch.setenv("SPEEDRUN_NO_COMPILATION_CACHE", "1")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A data dir holding the tiny dataset, the tiny track registered, records under tmp."""
    data_dir = tmp_path / "data"
    tinydata.write_dataset(data_dir)
    monkeypatch.setitem(tracks.TRACKS, "tiny", tinydata.TINY)
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(data_dir))
    return tmp_path
