"""Where parameters and optimizer state live on the mesh: one table, from parameter kind to
``PartitionSpec``, per sharding strategy (``train.sharding``).

    dp    every array replicated on every device; only the batch is split (data parallelism)
    fsdp  parameters and optimizer state split over the data axis (ZeRO-3 / FSDP): the step
          gathers the parameters for the forward and backward pass and constrains the gradients
          back to the split (summed, each device keeping its slice: on CPU XLA compiles that to
          an all-reduce and a slice, where GPU and TPU compilers can form a reduce-scatter), and
          each device updates its own slice

A strategy is a column of ``TABLE``, keyed by the kinds of speedrun/core/params.py, so a trick
that adds a parameter gets a sharding without edits; an optimizer-state array is named after
the parameter it follows (optax keeps the parameters' tree inside its state), so it gets that
parameter's kind. A dimension that does not divide over the devices stays replicated, as do
vectors and scalars (small, and read whole by every norm). Another strategy (tensor
parallelism) is another column, with the model axis it splits over.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from speedrun.core import params as P
from speedrun.distributed.devices import AXIS

REPLICATED = PartitionSpec()
TABLE = {
    "dp": {"embedding": REPLICATED, "head": REPLICATED, "matrix": REPLICATED,
           "vector": REPLICATED},
    # Tables (vocab, d) split by token, the head (d, vocab) by output, matrices (in, out) by input.
    "fsdp": {"embedding": PartitionSpec(AXIS, None), "head": PartitionSpec(None, AXIS),
             "matrix": PartitionSpec(AXIS, None), "vector": REPLICATED},
}


def spec_for(name: str, leaf: Any, strategy: str, n_devices: int) -> PartitionSpec:
    """The table's spec for this array, with every split that does not divide dropped (on one
    device nothing is split: fsdp is then dp, the same program)."""
    spec = tuple(TABLE[strategy][P.kind(name, leaf)])[:leaf.ndim]
    return PartitionSpec(*(axis if n_devices > 1 and leaf.shape[d] % n_devices == 0 else None
                           for d, axis in enumerate(spec)))


def shardings(tree: Any, mesh: jax.sharding.Mesh, strategy: str) -> Any:
    """A NamedSharding for every array of a parameter or optimizer-state tree."""
    n = mesh.shape[AXIS]
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, spec_for(P.path_name(p), x, strategy, n)), tree)


@dataclass(frozen=True)
class Layout:
    """Where a run's state lives: ``params`` and ``opt_state`` are trees of NamedShardings;
    ``sharded``: some array is split (else every constraint below is left out of the step)."""

    params: Any
    opt_state: Any
    replicated: NamedSharding
    sharded: bool

    def gather(self, params):
        """The whole parameters on every device, for the forward and backward pass."""
        return self._constrain(params, self.replicated)

    def split_params(self, tree):
        """Parameters, or their gradients, back on the parameters' split."""
        return self._constrain(tree, self.params)

    def split_state(self, opt_state):
        return self._constrain(opt_state, self.opt_state)

    def _constrain(self, tree, where):
        return jax.lax.with_sharding_constraint(tree, where) if self.sharded else tree


UNSPLIT = Layout(None, None, None, False)  # nothing split: every constraint a no-op


def layout(params, opt_state_shapes, mesh: jax.sharding.Mesh, strategy: str) -> Layout:
    """The layout of a parameter tree and its optimizer state (shapes suffice)."""
    ps = shardings(params, mesh, strategy)
    sharded = any(axis is not None for s in jax.tree_util.tree_leaves(ps) for axis in s.spec)
    return Layout(ps, shardings(opt_state_shapes, mesh, strategy),
                  NamedSharding(mesh, REPLICATED), sharded)


def bytes_per_device(tree: Any) -> int:
    """Bytes of ``tree``'s arrays held by the fullest of this process's devices."""
    held: Counter = Counter()
    for x in jax.tree_util.tree_leaves(tree):
        for shard in x.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return max(held.values(), default=0)
