"""A run that can be stopped and continued: `run --save DIR --checkpoint-every N` keeps its whole
training state in DIR, and `run --resume DIR` continues it where the last state was kept.

DIR holds:

    resume.json                              the run: configuration (as it ran: microbatches
                                             included), seeds, record name, how often, the data's
                                             fingerprints and the environment a log states
    <track>-<config hash>-seed<N>.train-state   a seed's state at its last checkpoint
    <track>-<config hash>-seed<N>.result.json   a seed that finished: its result and log

A state file (safetensors: named arrays and string metadata, nothing executed on reading)
holds the parameters and the optimizer state, the step, and what the seed's record needs of
the steps before it: the curve, the train time, the log's lines, the machine probe. The data's
position needs nothing more: a batch is a function of (seed, step) (speedrun/data/loader.py),
and so is every random draw (the seed's initialisation), so a resumed seed reads the very
batches the stopped one would have. Every file is written atomically (a temporary file, then a
rename), so a stop while writing leaves the last state whole; a file cut short afterwards (a
copy, a full disk) is refused with one line.

A checkpoint is taken with the clock stopped, like a validation. A resumed seed continues from
its last checkpoint: the same steps on the same machine give bit-identical parameters, curve
and final loss; the time between that checkpoint and the stop is lost to the clock, so its
record says ``untimed: resumed from step N`` and is not a timed claim (the leaderboard lists it
unranked, with the reason).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import jax
import numpy as np

from speedrun.config import RunConfig, config_hash, identity_hash
from speedrun.core import params as P
from speedrun.data.shards import atomic_write
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.records.logs import HEADER_ENVIRONMENT
from speedrun.training.train import RunResult

MANIFEST = "resume.json"
FORMAT, VERSION = "speedrun-resume", 1
STATE_SUFFIX, RESULT_SUFFIX = ".train-state", ".result.json"


@dataclasses.dataclass(frozen=True)
class Restored:
    """A seed's kept state, read back: arrays on the host, and where the seed stood."""

    step: int
    params: dict  # dotted name -> array
    opt_state: list  # the optimizer state's leaves, in tree order
    curve: list
    train_time: float
    lines: list  # the log so far
    machine_gflops: float | None
    resumes: list  # the steps the seed was resumed from before


class Folder:
    """DIR of a run kept for resuming: its manifest, each seed's state and result."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.cfg = RunConfig.from_dict(manifest["config"])
        self.every = int(manifest["checkpoint_every"])
        self.resumed: dict[int, list] = {}  # seed -> the steps it resumed from

    @property
    def seeds(self) -> list[int]:
        return list(self.manifest["seeds"])

    def file(self, seed: int, suffix: str) -> Path:
        return self.path / f"{self.cfg.track}-{config_hash(self.cfg)}-seed{seed}{suffix}"

    # --- a seed's state ------------------------------------------------------------------------

    def restored(self, seed: int) -> Restored | None:
        path = self.file(seed, STATE_SUFFIX)
        return read_state(path) if path.exists() else None

    def save(self, seed: int, step: int, params, opt_state, curve, train_time: float,
             lines: list, gflops: float | None, resumes: list) -> None:
        """Keep a seed's state (every process gathers it, process 0 writes it)."""
        params = checkpoint.tensors_of(params)  # a collective where arrays are split
        leaves = [checkpoint.host_array(x) for x in jax.tree_util.tree_leaves(opt_state)]
        if not devices.is_main_process():
            return
        meta = {"format": FORMAT, "format_version": str(VERSION), "seed": str(seed),
                "step": str(step), "train_time": repr(train_time), "curve": json.dumps(curve),
                "lines": json.dumps(lines), "machine_gflops": json.dumps(gflops),
                "resumes": json.dumps(resumes), "config_hash": config_hash(self.cfg)}
        write_state(self.file(seed, STATE_SUFFIX), params, leaves, meta)

    def keeper(self, seed: int, lines: list, gflops: float | None, kept: Restored | None):
        """What the training loop of ``seed`` calls (train.train's ``keep``); ``kept``: its
        state read back (``restored``), None to start it."""
        return SeedKeeper(self, seed, lines, gflops, kept)

    # --- a finished seed -----------------------------------------------------------------------

    def result(self, seed: int) -> RunResult | None:
        path = self.file(seed, RESULT_SUFFIX)
        if not path.exists():
            return None
        try:
            body = json.loads(path.read_text())
            out = body["result"]
            result = RunResult(**{**out, "curve": tuple(tuple(p) for p in out["curve"]),
                                  "first_reached": None if out["first_reached"] is None
                                  else tuple(out["first_reached"])})
        except (ValueError, KeyError, TypeError) as e:
            raise SpeedrunError(f"{path}: a finished seed's result, cut short or damaged ({e}); "
                                f"it cannot be resumed") from None
        self.resumed[seed] = body.get("resumed_from", [])
        return result

    def finish(self, result: RunResult) -> None:
        """A seed's result kept, its state no longer needed."""
        if devices.is_main_process():
            body = {"result": dataclasses.asdict(result),
                    "resumed_from": self.resumed.get(result.seed, [])}
            atomic_write(self.file(result.seed, RESULT_SUFFIX),
                         [json.dumps(body, indent=1).encode()])
            self.file(result.seed, STATE_SUFFIX).unlink(missing_ok=True)

    def untimed(self) -> str | None:
        """The record's ``untimed`` reason: which seeds resumed, from which steps."""
        resumed = {s: steps for s, steps in self.resumed.items() if steps}
        if not resumed:
            return None
        what = {s: f"resumed from step{'s' * (len(v) > 1)} {', '.join(map(str, v))}"
                for s, v in sorted(resumed.items())}
        if len(self.seeds) == 1:
            return next(iter(what.values()))
        return "; ".join(f"seed {s} {text}" for s, text in what.items())

    def done(self, record: str | None) -> None:
        if devices.is_main_process():
            write_manifest(self.path, {**self.manifest, "finished": record or "(no record)"})


@dataclasses.dataclass
class SeedKeeper:
    """One seed's checkpoints and restore, for train.train: ``every`` steps, ``save`` (with
    the clock stopped), ``restore`` (the state to continue from, or None)."""

    folder: Folder
    seed: int
    lines: list  # the seed's log, as it grows
    gflops: float | None
    kept: Restored | None

    @property
    def every(self) -> int:
        return self.folder.every

    def restore(self, state):
        """(state, step, curve, train time) continued from the kept state, or None to start."""
        kept = self.kept
        if kept is None:
            return None
        self.folder.resumed[self.seed] = [*kept.resumes, kept.step]
        params, opt_state = placed(kept, state, self.folder.file(self.seed, STATE_SUFFIX))
        state = dataclasses.replace(state, params=params, opt_state=opt_state)
        return state, kept.step, [tuple(p) for p in kept.curve], kept.train_time

    def save(self, step: int, params, opt_state, curve, train_time: float) -> None:
        self.folder.save(self.seed, step, params, opt_state, list(curve), train_time,
                         list(self.lines), self.gflops, self.folder.resumed.get(self.seed, []))


# --- the files -----------------------------------------------------------------------------------


def write_state(path: Path, params: dict, opt_leaves: list, meta: dict) -> None:
    from safetensors.numpy import save

    tensors = {f"params/{k}": np.array(v, order="C") for k, v in params.items()}
    tensors |= {f"opt/{i}": np.array(v, order="C") for i, v in enumerate(opt_leaves)}
    atomic_write(path, [save(tensors, metadata=meta)])


def read_state(path: Path) -> Restored:
    meta, tensors = checkpoint.read_file(path, "training state")  # a file cut short: one line
    if meta.get("format") != FORMAT or meta.get("format_version") != str(VERSION):
        raise SpeedrunError(f"{path}: not a training state this harness keeps")
    n_opt = sum(k.startswith("opt/") for k in tensors)
    return Restored(
        step=int(meta["step"]),
        params={k[len("params/"):]: v for k, v in tensors.items() if k.startswith("params/")},
        opt_state=[tensors[f"opt/{i}"] for i in range(n_opt)],
        curve=json.loads(meta["curve"]), train_time=float(meta["train_time"]),
        lines=json.loads(meta["lines"]), machine_gflops=json.loads(meta["machine_gflops"]),
        resumes=json.loads(meta["resumes"]))


def placed(kept: Restored, state, path: Path):
    """The kept parameters and optimizer state, checked against the run's own (names, shapes,
    dtypes) and placed where the run's layout puts them."""
    named = jax.tree_util.tree_leaves_with_path(state.params)
    leaves, treedef = jax.tree_util.tree_flatten(state.opt_state)
    want = {P.path_name(p): x for p, x in named}
    if set(want) != set(kept.params) or len(leaves) != len(kept.opt_state) or any(
            _shape(a) != _shape(b) for a, b in [*((want[k], kept.params[k]) for k in want),
                                                 *zip(leaves, kept.opt_state)]):
        raise SpeedrunError(f"{path}: its parameters or optimizer state do not match this "
                            f"configuration's; it cannot be resumed")

    def put(x, like):
        return jax.make_array_from_callback(x.shape, like.sharding, lambda i: x[i])

    params = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(state.params),
        [put(kept.params[P.path_name(p)], x) for p, x in named])
    opt_state = jax.tree_util.tree_unflatten(treedef, [put(np.asarray(k), x) for k, x in
                                                       zip(kept.opt_state, leaves)])
    return params, opt_state


def _shape(x) -> tuple:
    return tuple(np.shape(x)), np.dtype(x.dtype)


def write_manifest(path: Path, manifest: dict) -> None:
    atomic_write(path / MANIFEST, [json.dumps(manifest, indent=1, default=str).encode()])


def read_manifest(path: Path) -> dict:
    f = path / MANIFEST
    if not f.is_file():
        raise SpeedrunError(f"--resume {path}: no run is kept there (no {MANIFEST}); keep one "
                            f"with run --save DIR --checkpoint-every N")
    try:
        manifest = json.loads(f.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        RunConfig.from_dict(manifest["config"])
    except (ValueError, KeyError, TypeError, AttributeError, SpeedrunError) as e:
        raise SpeedrunError(f"--resume {path}: {MANIFEST} is cut short or damaged ({e}); it "
                            f"cannot be resumed") from None
    return manifest


# --- starting and resuming -----------------------------------------------------------------------


def start(path: Path, cfg: RunConfig, seeds: list[int], every: int, name: str | None,
          data: dict, env: dict) -> Folder:
    """A new run kept in ``path`` (checked empty of another by ``check_new``)."""
    manifest = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
                "config_hash": config_hash(cfg), "seeds": list(seeds),
                "checkpoint_every": every, "name": name,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "data": {k: data.get(k) for k in ("train_sha256", "val_sha256")},
                "environment": {k: env.get(k) for k in HEADER_ENVIRONMENT if k in env},
                "command": env.get("command"), "finished": None}
    if devices.is_main_process():
        path.mkdir(parents=True, exist_ok=True)
        write_manifest(path, manifest)
    return Folder(path, manifest)


def check_new(path: Path) -> None:
    """``--save DIR --checkpoint-every N``: DIR keeps no other run (never overwritten)."""
    if (path / MANIFEST).exists():
        raise SpeedrunError(f"--save {path} already keeps a run (its {MANIFEST}): continue it "
                            f"with --resume {path}, or keep this one in another folder")


def open_folder(path: Path, cfg: RunConfig | None, seeds: list[int] | None) -> Folder:
    """The kept run of ``--resume DIR``, checked before anything is built or compiled: it is
    unfinished, of ``cfg`` (when the command names a configuration) and ``seeds`` (when it
    names them), and every seed's result or state file is whole."""
    manifest = read_manifest(path)
    folder = Folder(path, manifest)
    if manifest.get("finished"):
        raise SpeedrunError(f"--resume {path}: that run has finished (record: "
                            f"{manifest['finished']}); nothing is left to resume")
    kept = folder.cfg
    if cfg is not None and (cfg.track != kept.track or identity_hash(cfg) != identity_hash(kept)):
        what = f"track {kept.track}" if cfg.track != kept.track else \
            f"another configuration of {kept.track} ({identity_hash(kept)}, tricks " \
            f"{','.join(kept.trick_names) or 'none'})"
        raise SpeedrunError(f"--resume {path} keeps a run of {what}, not the one this command "
                            f"names; resume it without --track/--tricks/--set/--steps, or start "
                            f"this one with another --save folder")
    if seeds is not None and list(seeds) != folder.seeds:
        raise SpeedrunError(f"--resume {path} keeps seeds {folder.seeds}, not {list(seeds)}; "
                            f"leave --seed/--seeds out")
    for seed in folder.seeds:
        state = folder.file(seed, STATE_SUFFIX)
        if folder.result(seed) is None and state.exists():
            checkpoint.read_file(state, "training state", tensors=False)
    return folder


def check_same(folder: Folder, data: dict, env: dict) -> None:
    """The data and the environment a log states are the kept run's: else its record could not
    vouch for one run (and the steps would not be the same)."""
    for key, value in folder.manifest["data"].items():
        if data.get(key) != value:
            raise SpeedrunError(f"--resume {folder.path}: the data's {key} is not the kept "
                                f"run's ({str(value)[:12]}...): it cannot continue on other data")
    for key, value in folder.manifest["environment"].items():
        if env.get(key) != value:
            raise SpeedrunError(f"--resume {folder.path}: environment.{key} is {env.get(key)!r} "
                                f"here, the kept run's was {value!r}: a run continues on the "
                                f"machine and code it started on")
