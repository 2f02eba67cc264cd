"""Shared fixtures: the unit track (whose rules the records of unit tests follow) registered for
every test, no persistent compilation cache, and on request the tiny dataset and track, and a
train() that fails the test if anything reaches it."""

from __future__ import annotations

import pytest

from helpers import TINY, UNIT, write_dataset
from speedrun import tracks
from speedrun.training import train


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
    write_dataset(data_dir)
    monkeypatch.setitem(tracks.TRACKS, "tiny", TINY)
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(data_dir))
    return tmp_path


@pytest.fixture
def no_training(monkeypatch):
    """A check that fails before compilation never reaches train()."""
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained anyway"))
