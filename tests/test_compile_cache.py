"""The persistent compilation cache: a run stores its compiled step under the data dir, and the
same configuration compiled again (after the in-memory caches are gone, as in a new process)
loads it from there instead of compiling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax._src import compilation_cache

from speedrun import cli
from speedrun.training import compile_cache


@pytest.fixture
def cache_on(monkeypatch, session_compilation_cache):
    monkeypatch.delenv("SPEEDRUN_NO_COMPILATION_CACHE")
    yield
    # later tests: the session's cache again
    jax.config.update("jax_compilation_cache_dir", str(session_compilation_cache))
    compilation_cache.reset_cache()


def _hits(fn) -> int:
    """Persistent-cache hits JAX reports while ``fn`` runs."""
    seen = []

    def listen(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            seen.append(event)

    jax.monitoring.register_event_listener(listen)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_listener(listen)
    return len(seen)


@pytest.mark.slow
def test_a_run_fills_the_cache_and_a_second_compile_loads_from_it(tiny, cache_on):
    args = ["run", "--track", "tiny", "--steps", "3", "--no-record", "--quiet"]
    assert cli.main(args) == 0
    folder = tiny / "data" / compile_cache.SUBDIR
    assert compile_cache.entries(folder) > 0
    assert any(p.name.startswith("jit_step") for p in folder.iterdir())
    jax.clear_caches()  # as a new process would start
    assert _hits(lambda: cli.main(args)) > 0


def test_opting_out_or_an_unwritable_dir_means_no_cache(tmp_path, monkeypatch, cache_on):
    monkeypatch.setenv("SPEEDRUN_NO_COMPILATION_CACHE", "1")
    assert compile_cache.enable(tmp_path) is None
    monkeypatch.delenv("SPEEDRUN_NO_COMPILATION_CACHE")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert compile_cache.enable(blocker) is None  # mkdir under a file fails: train uncached
    path = compile_cache.enable(tmp_path / "data")
    jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(7)).block_until_ready()
    assert path == tmp_path / "data" / compile_cache.SUBDIR and compile_cache.entries(path) >= 1
