"""Benchmarks of the causal attention implementations (pytest-benchmark; not part of the unit
suite; reports only, asserts no times).

    python -m pytest tests/benchmarks/bench_attention.py --benchmark-only -s

One attention call, forward and forward+backward, ``jax.nn.dot_product_attention`` (XLA, the
reference) against ``speedrun.attention.blocked`` (the CPU formulation), at the byte-level
track's shape (B 16, T 256, 4 heads of 32), the ``wiki`` track's (8, 256, 4, 16) and a
GPT-2-small-like layer (1, 1024, 12, 64); prints a before/after table in milliseconds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from speedrun.core import attention

SHAPES = {"byte": (16, 256, 4, 32), "wiki": (8, 256, 4, 16), "gpt2s": (1, 1024, 12, 64)}
IMPLS = {"reference": attention.reference, "blocked": attention.blocked}
_results: dict = {}


def make(impl, shape, mode):
    B, T, H, hd = shape
    ks = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, g = (jax.random.normal(key, (B, T, H, hd), jnp.float32) for key in ks)
    fn = IMPLS[impl]
    if mode == "fwd":
        f = jax.jit(fn)
        args = (q, k, v)
    else:
        f = jax.jit(jax.grad(lambda q, k, v, g: jnp.sum(fn(q, k, v) * g), argnums=(0, 1, 2)))
        args = (q, k, v, g)
    jax.block_until_ready(f(*args))  # compile outside the measurement
    return lambda: jax.block_until_ready(f(*args))


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_attention(benchmark, impl, shape, mode):
    benchmark.group = f"{shape} {mode}"
    benchmark.pedantic(make(impl, SHAPES[shape], mode), rounds=15, warmup_rounds=2)
    _results[shape, mode, impl] = benchmark.stats.stats.median * 1e3


@pytest.fixture(scope="module", autouse=True)
def table():
    """After the module's benchmarks: the before/after table of their medians (shown with -s)."""
    yield
    if not _results:
        return
    print(f"\n{'shape (B,T,H,hd)':<24}{'mode':<9}{'reference':>11}{'blocked':>10}{'speed-up':>10}")
    for name, shape in SHAPES.items():
        for mode in ("fwd", "fwd+bwd"):
            ref = _results.get((name, mode, "reference"))
            new = _results.get((name, mode, "blocked"))
            if ref is not None and new is not None:
                print(f"{name + ' ' + str(shape):<24}{mode:<9}{ref:>9.2f}ms{new:>8.2f}ms"
                      f"{ref / new:>9.2f}x")
