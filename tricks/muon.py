"""Muon (MomentUm Orthogonalized by Newton-Schulz) for the hidden weight matrices; Adam for the
rest.

For every parameter of kind 'matrix' (the 2-D weights inside the blocks), with gradient G and
momentum m (``muon_momentum`` schedule if a trick provides one, else ``momentum``):

    B  <- m * B + (1 - m) * G                 momentum buffer (EMA form, ``buf.lerp_(g, 1 - m)``)
    U  =  (1 - m) * G + m * B                 Nesterov (``g.lerp_(buf, m)``); U = B without it
    X  =  U / (||U||_F + 1e-7)                then 5 quintic Newton-Schulz steps
    X  <- a X + (b A + c A A) X,  A = X X^T,  (a, b, c) = (3.4445, -4.7750, 2.0315)
    W  <- W - lr * s(t) * sqrt(max(1, fan_out / fan_in)) * X

(X is transposed while iterating when it is taller than wide.) Our weights are (in, out), so
fan_out / fan_in = shape[1] / shape[0], PyTorch's rows / cols. s(t) is the run's lr schedule
(``hooks.lr_schedule``). For a constant m the EMA form is the record-9 form (B <- m B + G,
U = G + m B) scaled by (1 - m), which the normalisation removes; it is what the speedrun used
from record 15 on, and how a momentum schedule enters it.

Adam (betas (0.9, 0.95), eps 1e-8, no weight decay) takes the other groups, each at its own
peak lr times s(t): embedding tables (token, position, value) ``embed_lr`` (0.3), the untied
head ``head_lr`` (0.002), vectors and scalars ``scalar_lr`` (0.02), as in record 9 (11/06/24),
whose Muon lr is 0.02. With the head still tied (no untie-head) ``wte`` (and ``wpe``) use ``tied_lr`` (0.0036,
the tied embedding/head's Adam lr of records 5-7). Gradients are clipped first per
``optim.grad_clip`` (the records did not clip: ``--set optim.grad_clip=0``). ``optim.lr`` and
``optim.weight_decay`` are not used.

optax.contrib.muon is close but not the same: it bias-corrects the momentum (changing the
weight of the newest gradient in the first tens of steps), takes beta as a constant rather than
a schedule, and gives non-2-D leaves its own Adam with a shared lr. So the transform is here.
The record ran Newton-Schulz in bfloat16 for speed; ``ns_dtype`` defaults to float32 (exact on
CPU, where bf16 matmuls are slower) and can be set to bfloat16.

Extension points for second-wave tricks (``hooks.extras``): ``muon_orthogonalize`` (x, muon hp)
-> x replaces Newton-Schulz (polar-express); ``muon_precondition`` RunConfig -> transform runs
on the orthogonalised, shape-scaled directions before the lr (normuon); ``muon_decay``
(RunConfig, lr(step)) -> transform runs on the final updates, with the parameters (cautious-wd).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from speedrun.core import optim
from speedrun.core import params as P
from tricks import ANY, BETA, POSITIVE, Trick, at_least, one_of

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7
NS_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def orthogonalize(g, steps: int = 5, dtype=jnp.float32, coeffs=NS_COEFFS, eps: float = NS_EPS):
    """Approximately U V^T for G = U S V^T (singular values land in about [0.7, 1.2])."""
    if g.ndim != 2:
        raise ValueError(f"Muon orthogonalises 2-D matrices, got shape {g.shape}")
    a, b, c = coeffs
    x = g.astype(jnp.float32)
    x = (x / (jnp.linalg.norm(x) + eps)).astype(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * (A @ A)) @ x
    if tall:
        x = x.T
    return x.astype(g.dtype)


def shape_scale(shape) -> float:
    """sqrt(max(1, fan_out / fan_in)) for an (in, out) matrix."""
    return max(1.0, shape[1] / shape[0]) ** 0.5


class MuonState(NamedTuple):
    count: jax.Array  # updates done so far (the step the momentum schedule reads)
    buf: Any  # momentum buffers, like the parameters


def scale_by_muon(
    momentum: Callable[[jax.Array], jax.Array] | float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    ns_dtype=jnp.float32,
    ortho: Callable | None = None,
) -> optax.GradientTransformation:
    """Momentum, then orthogonalised and shape-scaled update directions (no lr, no sign flip).
    ``ortho(x)``: the orthogonalisation (default: ``ns_steps`` Newton-Schulz steps)."""
    mom = momentum if callable(momentum) else (lambda count: momentum)
    ortho = ortho or (lambda x: orthogonalize(x, ns_steps, ns_dtype))

    def init(params):
        return MuonState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        m = mom(state.count)
        buf = jax.tree_util.tree_map(lambda b, g: m * b + (1 - m) * g, state.buf, updates)
        if nesterov:
            u = jax.tree_util.tree_map(lambda g, b: (1 - m) * g + m * b, updates, buf)
        else:
            u = buf
        u = jax.tree_util.tree_map(lambda x: shape_scale(x.shape) * ortho(x), u)
        return u, MuonState(state.count + 1, buf)

    return optax.GradientTransformation(init, update)


def labels(params):
    """Optimizer group of every parameter: muon | embed | tied | head | scalar."""
    tied = "lm_head" not in params

    def label(name, leaf):
        kind = P.kind(name, leaf)
        if kind == "matrix":
            return "muon"
        if kind == "embedding":
            return "tied" if tied and name in ("wte", "wpe") else "embed"
        return {"head": "head", "vector": "scalar"}[kind]

    return label


def apply(hooks, hp):
    def optimizer(params, cfg, hooks):
        sched = hooks.lr_schedule(cfg)

        def peak(lr):
            return lambda step: lr * sched(step)

        def adam(lr):
            return optax.adam(peak(lr), hp.adam_beta1, hp.adam_beta2, hp.adam_eps)

        schedule = hooks.extra("muon_momentum")  # RunConfig -> step -> momentum
        momentum = hp.momentum if schedule is None else schedule(cfg)
        ortho = hooks.extra("muon_orthogonalize")  # (x, muon hp) -> x, e.g. Polar Express
        precondition = hooks.extra("muon_precondition")  # RunConfig -> transform (NorMuon)
        decay = hooks.extra("muon_decay")  # (RunConfig, lr(step)) -> transform
        groups = {
            "muon": optax.chain(
                scale_by_muon(momentum, hp.nesterov, hp.ns_steps, NS_DTYPES[hp.ns_dtype],
                              None if ortho is None else (lambda x: ortho(x, hp))),
                optax.identity() if precondition is None else precondition(cfg),
                optax.scale_by_learning_rate(peak(hp.lr)),
                optax.identity() if decay is None else decay(cfg, peak(hp.lr)),
            ),
            "embed": adam(hp.embed_lr),
            "tied": adam(hp.tied_lr),
            "head": adam(hp.head_lr),
            "scalar": adam(hp.scalar_lr),
        }
        return optim.grouped(params, labels(params), groups, cfg)

    return hooks.replace(optimizer=optimizer)


TRICK = Trick(
    name="muon",
    summary="Muon (Nesterov momentum, Newton-Schulz orthogonalised) for hidden matrices, Adam else",
    changes=("optimizer",),
    params={
        "lr": 0.02,
        "momentum": 0.95,
        "nesterov": True,
        "ns_steps": 5,
        "ns_dtype": "float32",
        "embed_lr": 0.3,
        "head_lr": 0.002,
        "tied_lr": 0.0036,
        "scalar_lr": 0.02,
        "adam_beta1": 0.9,
        "adam_beta2": 0.95,
        "adam_eps": 1e-8,
    },
    limits={
        "lr": POSITIVE, "momentum": BETA, "nesterov": ANY, "ns_steps": at_least(1),
        "ns_dtype": one_of(*NS_DTYPES), "embed_lr": POSITIVE, "head_lr": POSITIVE,
        "tied_lr": POSITIVE, "scalar_lr": POSITIVE, "adam_beta1": BETA, "adam_beta2": BETA,
        "adam_eps": POSITIVE,
    },
    apply=apply,
    replaces=("optimizer",),
    source="modded-nanogpt records 3-4 (10/04/24, 10/11/24), lrs of record 9 (11/06/24); "
    "Jordan et al. 2024 (kellerjordan.github.io/posts/muon)",
)
