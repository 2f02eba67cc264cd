"""On a GPU: does ``attention.masked`` (documents + sliding window, the window-attention trick's
kernel) give the same loss and gradients through cuDNN as through XLA? Prints both; bf16 inputs
at GPT-2 small's head shape. On a CPU it compares the blocked formulation with XLA instead.

    PYTHONPATH=. python tests/benchmarks/gpu_masked_attention.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.core import attention as A
from tricks import window_attention as wa

B, T, H, HD, WINDOW = 4, 1024, 12, 64, 256


def loss_and_grads(q, k, v, allowed):
    def loss(q, k, v):
        return jnp.sum(A.masked(q, k, v, allowed).astype(jnp.float32) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)
    return A.implementation_name(), float(value), [np.asarray(g, np.float32) for g in grads]


def main():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v = (jax.random.normal(key, (B, T, H, HD), jnp.bfloat16) for key in keys[:3])
    tokens = jax.random.randint(keys[3], (B, T), 0, 200)  # separator 0: ~5 documents a row
    allowed = wa.mask(tokens, 0, WINDOW)
    os.environ.pop(A.ENV, None)
    name, value, grads = loss_and_grads(q, k, v, allowed)
    os.environ[A.ENV] = "xla"
    _, ref_value, ref_grads = loss_and_grads(q, k, v, allowed)
    print(f"masked attention: {name} vs xla, loss {value:.2f} vs {ref_value:.2f} "
          f"(relative difference {abs(value - ref_value) / abs(ref_value):.1e})")
    for n, g, r in zip("qkv", grads, ref_grads):
        print(f"grad {n}: max abs difference {np.abs(g - r).max():.4f} "
              f"(max abs {np.abs(r).max():.2f})")


if __name__ == "__main__":
    main()
