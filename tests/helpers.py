"""What several test modules share: the tiny synthetic dataset and track, the unit track that
records of unit tests follow, record building, `run` through the command line, tiny trick
models with their training loop, tiny models (and checkpoints of them) for generation, and
Python run in child processes with several simulated devices or as the joined processes of a
multi-process run.

The tiny dataset's tokens follow a noisy deterministic chain (next = 5 * prev + 3 mod 61 nine
times in ten), so a 2-layer model's loss falls quickly from ln(vocab) toward the chain's entropy.
Trick models are tiny (d_model 32, 2-4 layers, vocab 256, 16 tokens): each one compiles and
trains in seconds on a small CPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tricks
from speedrun import cli, tracks
from speedrun.config import ModelConfig, OptimConfig, RunConfig, TrainConfig, apply_overrides
from speedrun.core import model
from speedrun.core import params as P
from speedrun.core.hooks import Ctx
from speedrun.data import loader, shards
from speedrun.inference import checkpoint
from speedrun.distributed import launch
from speedrun.inference import generate as G
from speedrun.records import logs, record
from speedrun.records.record import first_crossing
from speedrun.training import train as train_mod
from speedrun.training.state import init_state

def sweep(values, quick: int = 1, ids=None, unpack: bool = False) -> list:
    """The cases of an exhaustive sweep as pytest parameters: the first ``quick`` in the quick
    tier, the others marked ``slow`` (the full suite runs them all). ``unpack``: each value is
    a tuple of several arguments."""
    return [pytest.param(*(v if unpack else (v,)), marks=() if i < quick else pytest.mark.slow,
                         id=None if ids is None else ids(v)) for i, v in enumerate(values)]


# ----------------------------------------------------------------------------------------------
# the tiny dataset and track: small, learnable tokens (no network, seconds to train)
# ----------------------------------------------------------------------------------------------

EOT = 50256  # GPT-2's end of text: the tiny dataset's document separator
TINY_DATASET = "tiny"


def chain_tokens(n: int, seed: int, doc_len: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n, np.int64)
    prev = 0
    for i in range(n):
        if i % doc_len == 0:
            out[i] = EOT  # document separator, as in FineWeb shards
            prev = int(rng.integers(61))
            continue
        prev = (5 * prev + 3) % 61 if rng.random() < 0.9 else int(rng.integers(61))
        out[i] = prev
    return out


def write_dataset(data_dir: Path, train_tokens: int = 60_000, val_tokens: int = 4_096,
                  vocab: int | None = None) -> Path:
    """The tiny dataset under ``data_dir``; with ``vocab``, its ids taken modulo ``vocab`` (256:
    byte ids for the tiny trick models, where EOT becomes a plain byte)."""
    folder = Path(data_dir) / TINY_DATASET
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train_tokens, 1), ("val", val_tokens, 2)):
        ids = chain_tokens(n, seed)
        shards.write_shard(folder / f"{TINY_DATASET}_{split}_000000.bin",
                           ids if vocab is None else ids % vocab)
    (folder / "manifest.json").write_text('{"tokenizer": "gpt2"}\n')  # what the rules check
    return folder


def make_track(name: str, summary: str, data_command: str, optim: OptimConfig,
               train: TrainConfig, **pinned) -> tracks.Track:
    """A track of the tests: a 2-layer d32 model, target 3.0 on 1,024 validation tokens. EOT
    (50256) must be a valid id, so the vocabulary stays GPT-2's; the model is tiny elsewhere.
    ``pinned``: the rules' data fingerprints."""
    return tracks.Track(
        name=name, dataset=name, summary=summary, where="tests", data_command=data_command,
        config=RunConfig(track=name, model=ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=32),
                         optim=optim, train=train),
        rules=tracks.Rules(target=3.0, val_tokens=1024, tokenizer="gpt2", vocab=50257, **pinned))


TINY = make_track(
    TINY_DATASET, "synthetic chain tokens for tests", "(tests write it)",
    OptimConfig(lr=1e-2, warmup_steps=5, weight_decay=0.0, min_lr_frac=0.1),
    TrainConfig(batch_size=8, steps=40, eval_every=10, val_tokens=1024, val_batch_size=8,
                target=3.0, loss_chunk=64, log_every=5))


def tiny_config(**train_changes) -> RunConfig:
    cfg = TINY.config
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_changes))


def train_tiny(cfg, data_dir, seed=0, finished=None):
    """Train ``cfg`` on the tiny dataset under ``data_dir`` (the harness's train, no record);
    ``finished(params)`` receives the final parameters, as `run --save` does."""
    folder = Path(data_dir) / TINY_DATASET
    tr = sorted(folder.glob("*_train_*.bin"))
    va = sorted(folder.glob("*_val_*.bin"))
    t = cfg.train
    val = loader.val_batches(va, t.val_tokens, t.val_batch_size, cfg.model.seq_len)
    batches = loader.TrainLoader(tr, t.batch_size, cfg.model.seq_len, seed)
    return train_mod.train(cfg, seed, tricks.build_hooks(cfg), batches, val, log=lambda _: None,
                           finished=finished)


def run_cli(tmp_path, *extra):
    """`run` on the tiny track, its records under ``tmp_path / "records"``."""
    return cli.main(["run", "--track", "tiny", "--records-dir", str(tmp_path / "records"),
                     "--quiet", *extra])


def record_dirs(tmp_path):
    return sorted(p.parent for p in (tmp_path / "records").rglob("record.yaml"))


def one_line_error(capsys, *needles) -> str:
    """The command's stderr: exactly one line, ``error: ...``, holding every needle."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ----------------------------------------------------------------------------------------------
# the unit track (no data) and records built without training
# ----------------------------------------------------------------------------------------------

TRAIN_SHA = "a" * 64
VAL_SHA = "b" * 64
UNIT = make_track("unit", "records written by unit tests (no data)", "(none)", OptimConfig(),
                  TrainConfig(batch_size=8, steps=100, val_tokens=1024, target=3.0),
                  val_sha256=VAL_SHA, train_sha256=TRAIN_SHA)
UNIT_DATA = {"dataset": "unit", "tokenizer": "gpt2", "train_sha256": TRAIN_SHA,
             "val_tokens": 1024, "val_sha256": VAL_SHA}

ENV = {"hardware_class": "cpu-2core", "platform": "cpu", "device_kind": "cpu", "device_count": 1,
       "cpu_count": 2, "process_count": 1, "command": "test", "jax_version": "0.10.2",
       "host": "vm", "host_id": "host-a"}
TOKENS_PER_STEP = 8 * 32  # the unit track's batch x seq_len
START = "2026-11-24T10:00:00+00:00"  # when the unit records' sittings begin, unless told


def result(seed: int, loss: float, time_s: float = 10.0, steps: int = 100, target: float = 3.0,
           probe: float = 400.0):
    """A seed's outcome and the log that a real run would have written for it (its header,
    wall-clock start and end are added by ``write``, which knows the config and the sitting)."""
    curve = ((0, 0.0, 0, 10.8 + seed / 100),  # distinct seeds start at distinct losses
             (steps // 2, time_s / 2, steps // 2 * TOKENS_PER_STEP, 5.0),
             (steps, time_s, steps * TOKENS_PER_STEP, loss))
    log = "\n".join([logs.machine_line(probe),
                     *(logs.val_line(s, steps, v, t) for s, t, _, v in curve)]) + "\n"
    return train_mod.RunResult(seed=seed, steps=steps, train_time_s=time_s,
                               tokens=steps * TOKENS_PER_STEP, final_val_loss=loss,
                               reached=loss <= target, first_reached=first_crossing(curve, target),
                               compile_time_s=2.0, machine_gflops=probe, curve=curve, log=log)


def config(trick_names=(), steps=100):
    """The unit track's config with ``trick_names`` and ``steps``."""
    cfg = UNIT.config
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    return tricks.configure(tricks.with_tricks(cfg, list(trick_names)))


def timed(results, start: str = START, gap_s: float = 5.0):
    """The results with wall-clock starts and ends, one seed after another from ``start``
    (each seed its compile and train time, then ``gap_s``), as one machine times them."""
    t = datetime.datetime.fromisoformat(start)
    out = []
    for r in results:
        end = t + datetime.timedelta(seconds=r.compile_time_s + r.train_time_s)
        out.append(dataclasses.replace(r, started=t.isoformat(timespec="milliseconds"),
                                       ended=end.isoformat(timespec="milliseconds")))
        t = end + datetime.timedelta(seconds=gap_s)
    return out


def with_headers(results, cfg, env=ENV):
    """The results with each log's header (and last line) stating what ran and when, as a run
    writes them."""
    return [dataclasses.replace(r, log="\n".join(logs.header(cfg, r.seed, env, r.started))
                                + "\n" + r.log + logs.ended_line(r.ended) + "\n")
            for r in results]


SITTINGS = itertools.count()


def write(tmp_path, results, trick_names=(), name=None, start=None, data=None, cfg=None,
          env=ENV, sitting=None, **optional):
    """A record of ``results`` (their logs given the header and wall clock a run writes), timed
    from ``start`` in ``sitting`` (default: a sitting of its own, in an hour of its own from
    START, so that no two default records overlap on the one host), written under
    ``tmp_path / "records"``: its folder. ``optional``: record.OPTIONAL_FIELDS."""
    cfg = cfg or config(trick_names, steps=results[0].steps)
    n = next(SITTINGS)
    env = {**env, "sitting": sitting or f"unit-sitting-{n}"}
    if start is None:
        start = (datetime.datetime.fromisoformat(START) + datetime.timedelta(hours=n)).isoformat()
    if results[0].started is None:
        results = timed(results, start)
    results = with_headers(results, cfg, env)
    rec = record.build_record(cfg, results, env, data or UNIT_DATA, name=name, **optional)
    return record.write_record(tmp_path / "records", rec, results=results)


# ----------------------------------------------------------------------------------------------
# tiny trick models: built the way the harness builds them, trained on one fixed batch
# ----------------------------------------------------------------------------------------------

VOCAB, SEQ, BATCH, CHUNK = 256, 16, 4, 64


def tiny_cfg(n_layer=2, n_head=4, d_model=32, steps=8) -> RunConfig:
    return RunConfig(
        track="wiki-bytes",  # a real track: its document separator (byte 0) is known
        model=ModelConfig(vocab_size=VOCAB, n_layer=n_layer, n_head=n_head, d_model=d_model,
                          seq_len=SEQ),
        optim=OptimConfig(lr=3e-3, warmup_steps=0, decay="constant", weight_decay=0.0),
        train=TrainConfig(batch_size=BATCH, steps=steps, loss_chunk=CHUNK),
    )


def short_cfg(sharding: str = "dp") -> RunConfig:
    """tiny_cfg trained for 6 steps of 8 rows under train.sharding ``sharding``, validated every
    3 on 32 rows (``train_tiny`` trains it on a tiny dataset of byte ids)."""
    cfg = tiny_cfg()
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, batch_size=8, steps=6, eval_every=3, val_tokens=512, val_batch_size=8,
        log_every=3, sharding=sharding))


def byte_plan(cfg, folder):
    """A plan of ``cfg`` (e.g. ``short_cfg``) on the tiny dataset written as bytes in
    ``folder`` (``write_dataset(..., vocab=256)``), as `prepare` makes one."""
    from speedrun.training.plan import Plan

    t, files = cfg.train, {s: sorted(Path(folder).glob(f"*_{s}_*.bin")) for s in ("train", "val")}
    val = loader.val_batches(files["val"], t.val_tokens, t.val_batch_size, cfg.model.seq_len)
    return Plan(cfg, tracks.get(cfg.track), tricks.build_hooks(cfg), files["train"], val,
                {"tokenizer": "bytes", "val_tokens": t.val_tokens}, {"command": "test"})


def setup(names=(), overrides=(), **cfg_kw):
    """(cfg, hooks, params) the way the harness builds them, every trick at its record's
    constants (a trick's tests check those; tiny_cfg's track may tune some, see test_tuning)."""
    cfg = tricks.with_tricks(tiny_cfg(**cfg_kw), list(names))
    registry = tricks.available()
    cfg = dataclasses.replace(cfg, tricks={n: dict(registry[n].params) for n in cfg.tricks})
    cfg = apply_overrides(cfg, list(overrides))
    cfg = tricks.configure(cfg)
    hooks = tricks.build_hooks(cfg)
    return cfg, hooks, hooks.init(jax.random.PRNGKey(0), cfg.model)


def tokens(seed=0, shape=(BATCH, SEQ)):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, VOCAB, shape), jnp.int32)


def loss_of(cfg, hooks, params, seed=0):
    x, y = tokens(seed), tokens(seed + 1)
    return float(jax.jit(lambda p: model.loss(p, x, y, cfg.model, hooks, CHUNK))(params))


def train_steps(cfg, hooks, params, steps):
    """(loss, params, optimizer state) after each of `steps` updates on one fixed batch of random
    tokens (each update's index of train.steps reaches the hooks, as in train.py)."""
    x, y = tokens(0), tokens(1)
    tx = hooks.optimizer(params, cfg, hooks)

    @jax.jit
    def step(params, state, i):
        loss, grads = jax.value_and_grad(model.loss)(params, x, y, cfg.model, hooks, CHUNK, i,
                                                     cfg.train.steps)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state, seen = tx.init(params), []
    for i in range(steps):
        params, state, loss = step(params, state, jnp.int32(i))
        seen.append((float(loss), params, state))
    return seen


def train(cfg, hooks, params, steps=6):
    """Losses of `steps` optimizer steps (see ``train_steps``)."""
    return [loss for loss, _, _ in train_steps(cfg, hooks, params, steps)]


def flat(params) -> dict:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {P.path_name(path): leaf for path, leaf in leaves}


def ctx(cfg, hooks, params, layer=0, toks=None):
    return Ctx(params=hooks.cast(params), tokens=tokens() if toks is None else toks,
               cfg=cfg.model, layer=layer)


def mesh_steps(names, strategy: str, k: int, mesh, rows: int = BATCH * 2, overrides=()):
    """k updates of the harness's step (train.sharding ``strategy`` over ``mesh``, and
    ``overrides``) on one fixed batch of ``rows`` rows: the losses, the final params, and
    whether the step returned every array on the split its layout declares."""
    cfg, hooks, _ = setup(names, [f"train.sharding={strategy}", f"train.batch_size={rows}",
                                  *overrides])
    state = init_state(cfg, hooks, 0, mesh)
    feed = train_mod.Feed(mesh)
    x, y = (np.asarray(tokens(s, (rows, SEQ))) for s in (0, 1))
    step = jax.jit(train_mod.make_step(cfg, hooks, state.tx, state.layout))
    params, opt_state, losses = state.params, state.opt_state, []
    for i in range(k):
        params, opt_state, loss = step(params, opt_state, feed.batch(x), feed.batch(y),
                                       feed.step(i))
        losses.append(float(loss))
    placed = [a.sharding.is_equivalent_to(want, a.ndim) for a, want in zip(
        jax.tree_util.tree_leaves((params, opt_state)),
        jax.tree_util.tree_leaves((state.layout.params, state.layout.opt_state)))]
    return losses, params, all(placed)


def param_gaps(a: dict, b: dict) -> dict:
    """The largest |a - b| of each parameter two runs share by name, key biases left out: adding
    one number to every key of a query leaves its softmax as it was, so their gradient is
    rounding noise, which Adam scales up to steps of its learning rate."""
    return {name: float(np.max(np.abs(np.subtract(b[name], value))))
            for name, value in a.items() if not name.endswith("attn.bk")}


def normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


# ----------------------------------------------------------------------------------------------
# tiny models for generation: parameters jittered away from the init (a zero-init head or
# projection would make every comparison trivially equal)
# ----------------------------------------------------------------------------------------------

GEN_VOCAB, GEN_SEQ = 256, 24
PROMPTS = [[0, 72, 101, 108, 108, 111], [0, 84], [0, 65, 32, 99, 97, 116, 32, 115, 97, 116, 32]]


def tiny_checkpoint(path, names: str = "", tokenizer: str = "bytes", seed: int = 0):
    """(A checkpoint file, the model in it): a jittered tiny model of ``tiny_model``, with
    GPT-2's padded vocabulary for "gpt2" tokens."""
    vocab = GEN_VOCAB if tokenizer == "bytes" else 50304
    m = tiny_model(names, seed=seed, vocab=vocab, tokenizer=tokenizer)
    return checkpoint.save(path, m.params, m.cfg, tokenizer, seed=seed), m


def tiny_model(names: str, seed: int = 0, jitter: float = 0.3, vocab: int = GEN_VOCAB,
               tokenizer: str = "bytes", **model_changes) -> G.Model:
    shape = {"vocab_size": vocab, "n_layer": 4, "n_head": 4, "d_model": 32, "seq_len": GEN_SEQ,
             **model_changes}
    base = RunConfig(track="unit", model=ModelConfig(**shape),
                     train=TrainConfig(batch_size=4, loss_chunk=64))
    cfg = tricks.configure(tricks.with_tricks(base, tricks.parse_names(names)))
    hooks = tricks.build_hooks(cfg)
    params = hooks.init(jax.random.PRNGKey(seed), cfg.model)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [x + jitter * jax.random.normal(k, x.shape) * (1 if x.ndim else 0.3)
              for x, k in zip(leaves, keys)]
    return G.Model(jax.tree_util.tree_unflatten(tree, leaves), cfg, hooks, tokenizer)


# ----------------------------------------------------------------------------------------------
# child processes: several simulated CPU devices, or the joined processes of a multi-process run
# ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# the repository's own files: what git tracks, never a virtual environment or a build inside it
# ----------------------------------------------------------------------------------------------

# Folders that are never the project's, where git cannot say (an unpacked release): caches,
# builds, and any virtual environment (a folder holding pyvenv.cfg, whatever its name).
NOT_THE_PROJECTS = {".git", "__pycache__", ".pytest_cache", ".benchmarks", "build", "dist"}


def tracked_files(*under: str, root: Path = ROOT) -> list[Path]:
    """The files git tracks (under ``under``, else all), that exist in the working tree. Without
    git (not a checkout), every file there but in caches, builds and virtual environments."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", *under], cwd=root, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(walk(root, under))
    return sorted(p for p in (root / f for f in listed.split("\0") if f) if p.is_file())


def walk(root: Path, under=()) -> list[Path]:
    out = []
    for top in [root / u for u in under] or [root]:
        if top.is_file():
            out.append(top)
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in NOT_THE_PROJECTS and not d.endswith(
                ".egg-info") and not (Path(folder) / d / "pyvenv.cfg").exists()]
            out += [Path(folder) / f for f in files]
    return out


def child_env(**changes) -> dict:
    """This environment for a child process that imports this checkout's harness and the test
    helpers (``python -m tiny_cli`` is `python -m speedrun` with the tiny track)."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **changes}


def last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


class Started:
    """Python scripts started in child processes and not yet waited for, so that other work can
    run beside them (much of a small JAX program's time is one core compiling): ``wait()`` gives
    each one's last printed line as JSON; ``stop()`` ends them."""

    def __init__(self, runs: list[tuple[str, dict]]):
        self.files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in runs]
        self.procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                                       env=env, stdout=out, stderr=err)
                      for (script, env), (out, err) in zip(runs, self.files)]
        self.result = None

    def wait(self, timeout: float = 600) -> list:
        if self.result is None:
            try:
                codes = [p.wait(timeout=timeout) for p in self.procs]
            finally:
                self.stop()
            texts = []
            for files in self.files:
                for f in files:
                    f.seek(0)
                texts.append(tuple(f.read() for f in files))
                for f in files:
                    f.close()
            assert codes == [0] * len(codes), "\n".join((o + e)[-2000:] for o, e in texts)
            self.result = [last_json(out) for out, _ in texts]
        return self.result

    def stop(self) -> None:
        for p in self.procs:
            p.kill()


def with_devices(devices: int) -> dict:
    """XLA_FLAGS (as the tests run: tests/conftest.py's quick compiles) and JAX_PLATFORMS for a
    process of ``devices`` simulated CPU devices."""
    return {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                         f"--xla_force_host_platform_device_count={devices}".strip(),
            "JAX_PLATFORMS": "cpu"}


def on_devices(scripts: list[str], devices: int) -> Started:
    """Each of ``scripts`` started in a process of its own with ``devices`` simulated CPU
    devices."""
    env = child_env(**with_devices(devices))
    return Started([(script, env) for script in scripts])


def on_processes(script: str, processes: int, devices: int) -> Started:
    """``script`` started as ``processes`` processes joined through jax.distributed with the
    environment `launch` gives them (``devices`` CPU devices each)."""
    address = f"{launch.HOST}:{launch.free_port()}"
    return Started([(script, launch.child_env(child_env(), i, processes, devices, address))
                    for i in range(processes)])
