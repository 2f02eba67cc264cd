"""A persistent compilation cache under the data dir, so a second run of the same configuration
(same shapes, tricks, JAX version and device) loads its compiled step instead of compiling again.
Compile time is outside the clock either way; the cache only saves the wait.

JAX decides whether to cache when it first compiles, so ``enable`` resets that decision: it may
be called again (a test with another data dir) and takes effect from the next compilation.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

SUBDIR = "jax-compilation-cache"


def enable(data_root: Path) -> Path | None:
    """Cache compiled programs in ``data_root``/jax-compilation-cache (None, and no cache, when
    SPEEDRUN_NO_COMPILATION_CACHE is set or the folder cannot be made)."""
    if os.environ.get("SPEEDRUN_NO_COMPILATION_CACHE"):
        return None
    path = Path(data_root) / SUBDIR
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only data dir still trains; it only compiles every time
    from jax._src import compilation_cache  # reset_cache: not in the public API yet

    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every step program, even the tiny ones tests compile in well under a second.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()
    return path


def entries(path: Path) -> int:
    """Number of compiled programs stored in a cache folder."""
    return sum(1 for p in Path(path).iterdir() if p.is_file()) if Path(path).is_dir() else 0
