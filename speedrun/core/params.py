"""Parameter pytree helpers: dotted names and the *kind* of each parameter.

Optimizers group parameters by kind, not by hard-coded paths, so a trick that adds a
parameter only has to name it by the convention below to land in the right group:

- ``embedding``: token/position/value embedding tables (key ``wte``, ``wpe`` or containing "embed")
- ``head``: the untied output head (key ``lm_head``)
- ``matrix``: every other parameter with 2 or more dimensions (the hidden weight matrices)
- ``vector``: 1-D and 0-D parameters (norm gains, biases, learned scalars)
"""

from __future__ import annotations

from typing import Any, Callable

import jax

Params = Any  # nested dicts/lists of arrays


def key_name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_name(path: tuple) -> str:
    """jax tree path -> 'blocks.0.attn.wq'."""
    return ".".join(key_name(e) for e in path)


def kind(name: str, leaf: Any) -> str:
    last = name.rsplit(".", 1)[-1]
    if getattr(leaf, "ndim", 0) < 2:
        return "vector"
    if last in ("wte", "wpe") or "embed" in last:
        return "embedding"
    if last == "lm_head":
        return "head"
    return "matrix"


def label_tree(params: Params, label: Callable[[str, Any], str]) -> Params:
    """Map every leaf to label(dotted name, leaf): the labels pytree optax.multi_transform wants."""
    return jax.tree_util.tree_map_with_path(lambda p, x: label(path_name(p), x), params)


def kinds(params: Params) -> Params:
    return label_tree(params, kind)


def count(params: Params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
