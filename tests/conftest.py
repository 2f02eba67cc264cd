"""Quick compiles for every test (XLA_FLAGS), and the shared fixtures: the unit track (whose
rules the records of unit tests follow) registered for every test, one compilation cache for
the session, and on request the tiny dataset and track, and a train() that fails the test if
anything reaches it."""

from __future__ import annotations

import os
import sys

# Tests compile many small programs that then run for milliseconds, so they skip XLA's backend
# (LLVM) optimisation: that takes ~40% off every compile. The HLO passes (sharding propagation,
# SPMD partitioning, collectives) run as in any run. Set before JAX is imported (below); the
# tests' child processes inherit it.
# The benchmarks (tests/benchmarks/, run by path) time the code as a run compiles it: not there.
QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if not any("benchmarks" in arg for arg in sys.argv[1:]):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {QUICK_COMPILE}".strip()

import jax
import pytest
from jax._src import compilation_cache

from helpers import TINY, UNIT, write_dataset
from speedrun import tracks
from speedrun.training import train


@pytest.fixture(autouse=True)
def unit_track(monkeypatch):
    """The unit track, whose cpu-2core reference machine probes 400 GFLOP/s (what
    helpers.result's seeds probe unless told otherwise)."""
    monkeypatch.setitem(tracks.TRACKS, "unit", UNIT)
    monkeypatch.setitem(tracks.REFERENCE_SPEEDS, ("unit", "cpu-2core"), 400.0)


@pytest.fixture(scope="session", autouse=True)
def session_compilation_cache(tmp_path_factory):
    """Programs compiled once are loaded, not compiled again, for the rest of the session (most
    tests train the same tiny configurations). The cache is the session's own folder, empty at
    its start, so tests stay hermetic; a compiled program is the one a compile would give."""
    path = tmp_path_factory.mktemp("jax-compilation-cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()
    return path


@pytest.fixture(autouse=True)
def no_data_dir_compilation_cache(monkeypatch):
    """Runs leave the session's cache in place of one under their data dir
    (tests/test_compile_cache.py turns that on where it is the subject)."""
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
