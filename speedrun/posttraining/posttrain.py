"""A post-training run, `sft` or `rl` alike: the start checkpoint and the configuration resolved
(a track's, or a checkpoint's with a task), every seed timed like pretraining, and on a track
its record.

On a post-training track (``--track``) the start checkpoint, the task, the held-out set and the
target are the track's, and every run writes a record timed like pretraining; without one, any
checkpoint (trick stacks included) is fine-tuned on any task and no record is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax
import optax

import tricks as trick_registry
from speedrun import tracks
from speedrun.config import RunConfig, apply_overrides, validate
from speedrun.distributed import devices
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.inference import generate as G
from speedrun.posttraining import chat, loop, rl, scoring, sft
from speedrun.posttraining import tasks as task_registry
from speedrun.posttraining.tasks.base import fingerprint
from speedrun.records import logs, provenance, sittings
from speedrun.records.record import claim_line
from speedrun.training import environment, saving, train
from speedrun.training import plan as plans
from speedrun.training.console import Console


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_config(ck: checkpoint.Checkpoint, method: str, task: str, sha: str) -> RunConfig:
    """A post-training run of a checkpoint outside any track: its model, tricks and optimizer as
    trained, the train and post settings of the post-training baselines (speedrun/tracks.py)."""
    base = tracks.get(f"{method}-addition").config
    return dataclasses.replace(
        ck.cfg, train=base.train,
        post=dataclasses.replace(base.post, method=method, task=task, start_sha256=sha,
                                 seq_len=min(ck.cfg.model.seq_len, base.post.seq_len)))


def resolve(args, method: str) -> tuple[RunConfig, checkpoint.Checkpoint, tracks.Track | None]:
    """The run's configuration, its start checkpoint and its track (None outside one)."""
    track = None
    if args.track:
        track = tracks.get(args.track)
        post = track.config.post
        if post is None:
            raise SpeedrunError(f"{track.name} is a pretraining track: `{method}` runs on a "
                                f"post-training track ({', '.join(post_tracks())})")
        if post.method != method:
            raise SpeedrunError(f"{track.name} is a track of `{post.method}`, not `{method}`")
        if args.task and args.task != post.task:
            raise SpeedrunError(f"{track.name} fixes the task {post.task!r}; drop --task")
        ck_path = args.checkpoint or tracks.start_checkpoint(track)
    else:
        if not args.checkpoint or not args.task:
            raise SpeedrunError(f"`{method}` needs a CHECKPOINT and --task (or --track NAME, "
                                f"which fixes both: {', '.join(post_tracks())})")
        ck_path = args.checkpoint
    ck = checkpoint.load(ck_path)
    sha = file_sha256(ck.path)
    if track is not None:
        if sha != track.rules.start_sha256:
            raise SpeedrunError(f"{ck.path} is not {track.name}'s start checkpoint (sha256 "
                                f"{sha[:12]}..., the track's {track.rules.start_sha256[:12]}...)")
        cfg = dataclasses.replace(track.config, tricks=ck.cfg.tricks)
        if args.steps is not None:
            cfg = plans.with_steps(cfg, args.steps)
    else:
        task_registry.get(args.task)  # an unknown task fails here, naming the tasks
        cfg = plans.with_steps(default_config(ck, method, args.task, sha), args.steps)
    cfg = apply_overrides(cfg, args.overrides)
    if cfg.post.method != method:
        raise SpeedrunError(f"post.method is {cfg.post.method!r}; this is `{method}`")
    chat.specials(ck.tokenizer, cfg.model.vocab_size)  # the vocabulary must carry the chat tokens
    return cfg, ck, track


def post_hooks(hooks, cfg: RunConfig):
    """The checkpoint's hooks with post-training's learning-rate schedule: every parameter
    group's peak lr (the model's own optimizer: AdamW's optim.lr, Muon's per-group lrs) times
    ``post.lr_scale``, decaying linearly to 0 over the run, without warm-up (nanochat's SFT and
    RL schedule; the pretraining warm-up and cool-down are for a run from scratch)."""
    scale = cfg.post.lr_scale
    return hooks.replace(lr_schedule=lambda c: optax.linear_schedule(scale, 0.0, c.train.steps))


def post_tracks() -> list[str]:
    return [t.name for t in tracks.TRACKS.values() if t.config.post is not None]


def posttrain(args, method: str) -> int:
    """`sft` or `rl` (``method``) as the command line asks: every seed, then the record on a
    track."""
    devices.maybe_initialize()
    if jax.process_count() > 1:
        raise SpeedrunError(f"`{method}` runs in one process (on all of its devices); `launch` "
                            f"joins processes for pretraining only")
    cfg, ck, track = resolve(args, method)
    seeds = plans.parse_seeds(args.seed, args.seeds)
    plans.check_name(args.name)
    records_dir = None if track is None or args.no_record else args.records_dir
    writes = records_dir is not None and devices.is_main_process()
    if args.save:
        saving.check_save_dir(args.save, args.records_dir)
    validate(cfg, trick_registry.setting_problems(cfg))
    if records_dir is not None:
        plans.check_records_dir(records_dir, cfg.track)
    task = task_registry.get(cfg.post.task)
    heldout = task.examples("heldout", 0, cfg.post.heldout)
    scoring.check_room(task, heldout, ck.tokenizer, cfg.model.vocab_size, cfg.model.seq_len)
    data = {"dataset": f"task:{task.name}", "tokenizer": ck.tokenizer,
            "train_sha256": fingerprint(task.examples("train", 0, 256)),
            "val_tokens": len(heldout), "val_sha256": fingerprint(heldout),
            "start_sha256": cfg.post.start_sha256, "val_bytes": None, "metric": "heldout_error"}
    env = environment.environment(command=plans.command_line())
    env["attention"] = plans.attention_implementation(cfg)
    env["sources"] = provenance.sources(cfg.trick_names)
    env["packages"] = provenance.packages()
    plan = plans.Plan(cfg, track, post_hooks(ck.hooks, cfg), [], [], data, env)
    print(f"{method} {ck.path.name} on {task.name}: {cfg.train.steps} steps x "
          f"{cfg.train.batch_size} rows of {cfg.post.seq_len} tokens, held-out {len(heldout)} "
          f"examples, seeds {seeds}" + (f", track {track.name} (target pass@1 above "
                                       f"{1 - track.target:.2f})" if track else ", no track: no record"))
    results = [seed_run(plan, ck, task, heldout, seed, args) for seed in seeds]
    if writes:
        name = args.name or f"{method}-{task.name.split('/')[-1].split('.')[0]}"
        where, rec = saving.save(plan, results, records_dir, name)
        print(f"record written: {where}")
        print(claim_line(rec))
    return 0


def seed_run(plan: plans.Plan, ck: checkpoint.Checkpoint, task, heldout, seed: int, args):
    """One seed: the machine probe, then the timed loop from the start checkpoint."""
    cfg = plan.cfg
    started = sittings.now()
    gflops = environment.machine_gflops()
    console = Console(cfg.train.steps, args.quiet, f"seed {seed}")
    console.lines += logs.header(cfg, seed, plan.env, started)
    console.log(logs.machine_line(gflops))
    params = jax.device_put(ck.params, devices.replicated(devices.mesh()))
    model = G.Model(params, cfg, plan.hooks, ck.tokenizer)
    if cfg.post.method == "sft":
        next_batch = sft.batches(task, seed, ck.tokenizer, cfg.model.vocab_size,
                                 cfg.train.batch_size, cfg.post.seq_len)
    else:
        next_batch = rl.batches(task, seed, model, params, cfg)
    saved = []

    def finished(final):
        if args.save and devices.is_main_process():
            saved.append(saving.save_checkpoint(plan, final, seed, args.save)[1])

    try:
        out = loop.run(cfg, seed, plan.hooks, params, ck.tokenizer, task, heldout, next_batch,
                       console.log, console.progress, finished, gflops)
    finally:
        console.close()
    ended = sittings.now()
    console.lines.append(logs.ended_line(ended))
    for line in saved:
        print(f"seed {seed}: {line}")
    line = (f"seed {seed}: {out.steps} steps in {out.train_time_s:.1f}s train time, held-out "
            f"pass@1 {1 - out.final_val_loss:.4f} (from {1 - out.curve[0][3]:.4f}; machine "
            f"{gflops} GFLOP/s)")
    console.lines.append(line)
    print(line)
    return train.RunResult(**vars(out), log="\n".join(console.lines) + "\n", started=started,
                           ended=ended)
