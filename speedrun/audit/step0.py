"""Each seed vouches for itself: its logged step-0 validation loss must be what its model,
re-initialised here from the record's configuration and seed, scores (no training).

The seed fixes the initialisation, so distinct seeds start at distinct losses (the committed
`wiki-bytes` baseline's five seeds start at 5.561, 5.592, 5.546, 5.567 and 5.598); a seed copied
from another, with or without jitter on its logged losses, starts at the other's loss and fails.
On another machine than the one that made them, with the same JAX build, all 256 seeds of the
committed pretraining records came back within 5e-7 of their logged six decimals
(docs/records.md), so float32 models get a tolerance of ``TOLERANCE["float32"]``;
lower-precision forward passes (bf16 on the GPU tracks), re-scored here on a CPU, get a looser
one, which no measurement has set yet.

Post-training records are not checked: every seed starts from the track's one start checkpoint,
so their step-0 scores are the same by design. Records accepted as committed (records/legacy.py)
were checked when they were pinned. Where the track's validation data is not on this machine
(FineWeb shards, say, in CI) step 0 cannot be checked: `verify` says so in a note, and the
record stands on its other checks.

Cost: one compilation of the validation pass per distinct forward pass (model settings and the
tricks that change the model) and one validation per seed: ~8 s a `wiki-bytes` record on a
2-core CPU, ~40 s a `wiki` record (docs/records.md).
"""

from __future__ import annotations

import jax

import tricks as registry
from speedrun import tracks
from speedrun.config import RunConfig
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.records import legacy
from speedrun.training import evaluate, plan

TOLERANCE = {"float32": 2e-6, "lower": 5e-3}


def tolerance(cfg: RunConfig) -> float:
    low = cfg.model.compute_dtype != "float32" or "bf16" in cfg.tricks
    return TOLERANCE["lower" if low else "float32"]


class Checker:
    """Re-scores step 0 of records, sharing validation sets and compiled passes between them."""

    def __init__(self, data_dir: str | None = None, pinned_too: bool = False):
        self.data_dir = data_dir
        self.pinned_too = pinned_too  # also the records accepted as committed (a re-check)
        self.unchecked: dict[str, str] = {}  # content hash -> why step 0 could not be checked
        self._val: dict = {}
        self._eval: dict = {}

    def validation(self, cfg: RunConfig):
        t = cfg.train
        key = (cfg.track, t.val_tokens, t.val_batch_size or t.batch_size, cfg.model.seq_len)
        if key not in self._val:
            _, val_files = plan.data_for(tracks.get(cfg.track), self.data_dir)
            self._val[key] = plan.validation_set(cfg, val_files)
        return self._val[key]

    def evaluator(self, cfg: RunConfig, hooks):
        """The validation pass, compiled once per forward pass (the model's settings and the
        settings of the tricks that change the model; optimizer tricks leave it alone)."""
        found = registry.available()
        model_tricks = tuple((n, tuple(sorted(hp.items()))) for n, hp in cfg.tricks.items()
                             if "model" in found[n].changes)
        key = (cfg.model, model_tricks, cfg.train.loss_chunk, cfg.train.steps)
        if key not in self._eval:
            self._eval[key] = evaluate.make_eval(cfg, hooks, devices.mesh())
        return self._eval[key]

    def problems(self, rec: dict) -> list[str]:
        """Every seed whose logged step-0 loss is not its re-initialised model's."""
        if legacy.accepted(rec) and not self.pinned_too:
            return []
        cfg = RunConfig.from_dict(rec["config"])
        if cfg.post is not None:
            return []
        cfg = registry.canonical(cfg)
        hooks = registry.build_hooks(cfg)
        try:
            val = self.validation(cfg)
        except SpeedrunError as e:  # the track's data is not here (FineWeb in CI): say so
            self.unchecked[rec["content_hash"]] = str(e)
            return []
        return [line for _, line in self.deviations(rec, cfg, hooks, val) if line]

    def deviations(self, rec: dict, cfg: RunConfig, hooks, val) -> list[tuple[float, str]]:
        """(|logged - re-scored|, the problem or "") for each seed."""
        score, tol, out = self.evaluator(cfg, hooks), tolerance(cfg), []
        for run in rec["runs"]:
            step, _, _, logged = run["curve"][0]
            if step != 0:
                out.append((float("inf"), f"runs (seed {run['seed']}): the curve does not "
                                          f"start at step 0"))
                continue
            params = hooks.init(jax.random.PRNGKey(int(run["seed"])), cfg.model)
            got = score(params, val, 0)
            d = abs(got - float(logged))
            out.append((d, "" if d <= tol else (
                f"runs (seed {run['seed']}): the logged step-0 val loss {logged:.6f} is not seed "
                f"{run['seed']}'s initial model's {got:.6f} (|Δ| {d:.2g} > {tol:g}): a copied "
                f"or altered seed")))
        return out
