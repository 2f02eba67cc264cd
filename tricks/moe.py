"""Mixture-of-experts MLP: each block's MLP becomes E experts (default 4) and a router; every
token goes to its top-k experts (default 1, Switch Transformer routing), with a fixed capacity
so every shape is static under jit.

Per block, for the N = B*T tokens x of the batch:

    p = softmax(x @ W_router)                                   (N, E), float32
    top-k experts e_1..e_k of p;  gates g = p[e_j] (k = 1, Switch) or p[e_j] / sum_j p[e_j] (k >= 2)
    capacity C = ceil(capacity_factor * k * N / E)              capacity_factor 1.25 (Switch)
    slots: choice-major (every token's first choice, in token order, then every second
           choice), an expert's first C assignments are kept and the rest dropped: a dropped
           assignment contributes 0 (the token's residual stream passes it by)
    y = sum_j g_j * expert_{e_j}(x),   expert_e(x) = act(x @ Wfc_e + bfc_e) @ Wproj_e + bproj_e

Load balancing: the Switch Transformer auxiliary loss (Fedus et al. 2021, eq. 4),

    aux = alpha * E * sum_e f_e * P_e,    f_e = fraction of tokens whose first choice is e,
                                          P_e = mean router probability of e,  alpha = 0.01

added per block to the training loss (``ctx.aux_loss``; validation scores the plain loss). It is
1 * alpha at perfect balance. Capacity, queues and both means are over the whole batch (every
device's rows together), so microbatches would route differently: a run refuses
``train.grad_accum`` above 1 with moe (``whole_batch``).

Experts have hidden width Fe = round(hidden_frac * mlp_ratio * D). ``hidden_frac`` 1 (default)
keeps each expert the dense MLP's size: at top-1 the *active* parameters per token equal the
dense model's (plus the router), the total is E times the MLP's; ``hidden_frac`` = 1/E (0.25)
gives equal *total* parameters. ``param_counts`` gives both (active per token, total); a run
prints them when it starts, and ``python -m speedrun tricks moe`` shows them for the default
track.

Parameters: ``blocks.i.mlp.router`` (D, E) and ``blocks.i.mlp.experts`` (a list of E dicts with
the dense MLP's keys), all 2-D weights kind 'matrix' (Muon under the muon trick). Expert 0 is
the dense MLP's initial weights (sliced to Fe), the others fresh draws with the same standard
deviation, so whatever an earlier trick did to the MLP's init (zero-init's zero output
projection) holds for every expert; ordered after zero-init. The router is N(0, init_std).

Not from the speedrun (its MLP stayed dense); the project this harness grew from lists an MoE
MLP as a goal. Routing and capacity as Switch (k = 1) and GShard (k = 2: top-2, renormalised
gates, but Switch's auxiliary loss rather than GShard's, which is the same up to its constant).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from speedrun.errors import SpeedrunError
from tricks import POSITIVE, Trick, at_least, between

_KEY = 0x30E


def expert_hidden(cfg, hp) -> int:
    return max(1, round(hp.hidden_frac * cfg.mlp_ratio * cfg.d_model))


def capacity(n_tokens: int, hp) -> int:
    return max(1, math.ceil(hp.capacity_factor * hp.top_k * n_tokens / hp.experts))


def param_counts(cfg, hp) -> tuple[int, int]:
    """(MLP parameters active per token, MLP parameters in total), summed over the blocks
    (biases included, as the baseline has them)."""
    D, F, E, k = cfg.d_model, expert_hidden(cfg, hp), hp.experts, hp.top_k
    expert = 2 * D * F + F + D
    return cfg.n_layer * (D * E + k * expert), cfg.n_layer * (D * E + E * expert)


def route(probs, k: int, cap: int):
    """probs (N, E) -> (expert (k*N,), kept (k*N,), slot (k*N,), gate (k*N,)), choice-major.
    slot = expert * cap + position in that expert's queue, or E * cap (a dump row) if dropped."""
    N, E = probs.shape
    top_p, top_e = jax.lax.top_k(probs, k)  # (N, k)
    gates = top_p if k == 1 else top_p / jnp.sum(top_p, axis=-1, keepdims=True)
    expert = top_e.T.reshape(-1)
    onehot = jax.nn.one_hot(expert, E, dtype=jnp.int32)
    position = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)
    kept = position < cap
    slot = jnp.where(kept, expert * cap + position, E * cap)
    return expert, kept, slot, gates.T.reshape(-1)


def aux_loss(probs, first_choice, alpha: float):
    E = probs.shape[-1]
    f = jnp.mean(jax.nn.one_hot(first_choice, E, dtype=jnp.float32), axis=0)
    P = jnp.mean(probs, axis=0)
    return alpha * E * jnp.sum(f * P)


def moe_mlp(mp, h, act, hp):
    """(out (B, T, D), aux loss)."""
    B, T, D = h.shape
    N, E, k = B * T, hp.experts, hp.top_k
    x = h.reshape(N, D)
    probs = jax.nn.softmax((x @ mp["router"]).astype(jnp.float32), axis=-1)
    cap = capacity(N, hp)
    expert, kept, slot, gate = route(probs, k, cap)
    xs = jnp.tile(x, (k, 1))
    buf = jnp.zeros((E * cap + 1, D), x.dtype).at[slot].add(xs)[:-1].reshape(E, cap, D)
    ex = mp["experts"]
    stack = {name: jnp.stack([e[name] for e in ex]) for name in ex[0]}
    hid = jnp.einsum("ecd,edf->ecf", buf, stack["wfc"])
    if "bfc" in stack:
        hid = hid + stack["bfc"][:, None]
    out = jnp.einsum("ecf,efd->ecd", act(hid), stack["wproj"])
    if "bproj" in stack:
        out = out + stack["bproj"][:, None]
    out = jnp.concatenate([out.reshape(E * cap, D), jnp.zeros((1, D), out.dtype)])
    y = out[slot] * (gate * kept).astype(out.dtype)[:, None]
    y = y.reshape(k, N, D).sum(0).reshape(B, T, D)
    return y, aux_loss(probs, expert[:N], hp.aux_alpha)


def configure(cfg, hp):
    if hp.top_k > hp.experts:
        raise SpeedrunError(f"moe.top_k ({hp.top_k}) must not exceed moe.experts ({hp.experts})")
    return cfg


def apply(hooks, hp):
    prev_init = hooks.init

    def init(key, cfg):
        params = dict(prev_init(key, cfg))
        Fe = expert_hidden(cfg, hp)
        keys = jax.random.split(jax.random.fold_in(key, _KEY), cfg.n_layer)
        blocks = []
        for i, b in enumerate(params["blocks"]):
            dense = b["mlp"]
            sliced = {name: (w[:, :Fe] if name == "wfc" else w[:Fe] if name in ("wproj", "bfc")
                             else w) for name, w in dense.items()}
            ks = iter(jax.random.split(keys[i], 1 + len(sliced) * hp.experts))
            router = cfg.init_std * jax.random.normal(next(ks), (cfg.d_model, hp.experts))
            experts = [dict(sliced)]
            for _ in range(1, hp.experts):
                experts.append({name: (jnp.std(dense[name]) * jax.random.normal(next(ks), w.shape)
                                       if w.ndim == 2 else w + 0) for name, w in sliced.items()})
            blocks.append({**b, "mlp": {"router": router, "experts": experts}})
        params["blocks"] = blocks
        return params

    def mlp(mp, h, act, ctx):
        y, aux = moe_mlp(mp, h, act, hp)
        ctx.aux_loss.append(aux)
        return y

    return hooks.replace(init=init, mlp=mlp)


def report(cfg, hp) -> str:
    m = cfg.model
    active, total = param_counts(m, hp)
    dense = m.n_layer * (2 * m.d_model * m.mlp_ratio * m.d_model + m.mlp_ratio * m.d_model
                         + m.d_model)
    return (f"{hp.experts} experts of hidden width {expert_hidden(m, hp)}, top-{hp.top_k}: "
            f"{active:,} MLP parameters active per token, {total:,} in total "
            f"(the dense MLPs: {dense:,})")


TRICK = Trick(
    name="moe",
    summary="mixture-of-experts MLP: 4 experts, top-1 (Switch) routing, capacity 1.25, "
    "Switch load-balancing loss 0.01",
    changes=("model",),
    params={"experts": 4, "top_k": 1, "capacity_factor": 1.25, "aux_alpha": 0.01,
            "hidden_frac": 1.0},
    limits={"experts": at_least(1), "top_k": at_least(1), "capacity_factor": POSITIVE,
            "aux_alpha": at_least(0.0), "hidden_frac": between(0.0, 1.0, lo_open=True)},
    apply=apply,
    configure=configure,
    replaces=("mlp",),
    after=("zero-init",),
    report=report,
    source="not a speedrun record: Switch Transformer (Fedus et al. 2021, arXiv:2101.03961); "
    "GShard (Lepikhin et al. 2020) for top-2",
    cached_decoding=False,
    whole_batch=True,
)
