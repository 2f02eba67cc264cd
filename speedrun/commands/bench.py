"""`python -m speedrun bench`: train-step time, tokens/s and model FLOPs utilisation (MFU), where
the step's time goes (``--breakdown``), a ``jax.profiler`` trace of a few steps (``--profile
DIR``); with ``--decode``, inference: prefill and decode tokens/s at batch 1 and 8. What each
figure measures: speedrun/training/speed.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    bench = sub.add_parser("bench", help="measure step time, tokens/s and MFU on this machine",
                           description="Benchmark the training step of a track's config against "
                           "this machine's measured matmul peak; with --decode, inference "
                           "(prefill and decode tokens/s at batch 1 and 8).")
    flags.configuration(bench)
    bench.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    bench.add_argument("--breakdown", action="store_true",
                       help="also time the step's pieces: attention, head + loss, the rest of "
                            "the forward/backward pass, optimizer, batch transfer, host sync")
    bench.add_argument("--profile", metavar="DIR",
                       help="write a jax.profiler trace of --steps more steps under DIR")
    bench.add_argument("--decode", action="store_true",
                       help="benchmark inference instead: prefill and KV-cache decode tokens/s")
    bench.add_argument("--checkpoint", default=None, metavar="CHECKPOINT",
                       help="with --decode: a saved (float or int8) model instead of the track's "
                       "config with random weights")
    bench.add_argument("--batch", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8],
                       metavar="A,B", help="with --decode: batch sizes (default 1,8)")
    bench.add_argument("--prompt-len", type=int, default=0, metavar="N",
                       help="with --decode: prompt tokens per row (default seq_len / 4)")
    bench.add_argument("--new-tokens", type=int, default=0, metavar="N",
                       help="with --decode: new tokens per row (default seq_len / 2)")
    return bench


def check_counts(args) -> None:
    """Counts a benchmark cannot run with, and a --profile folder it cannot write."""
    from speedrun.data import paths
    from speedrun.errors import SpeedrunError

    if args.steps < 1:
        raise SpeedrunError(f"--steps must be at least 1, got {args.steps}")
    if min(args.batch) < 1:
        raise SpeedrunError(f"--batch sizes must be at least 1, got {min(args.batch)}")
    if args.prompt_len < 0 or args.new_tokens < 0:
        raise SpeedrunError("--prompt-len and --new-tokens must be 0 (the default) or more")
    if args.profile:
        paths.probe_writable(Path(args.profile), "--profile folder",
                             "pass --profile DIR in a writable place")


def main(args) -> int:
    from speedrun.errors import SpeedrunError

    check_counts(args)
    if getattr(args, "decode", False):
        return decode_main(args)
    if getattr(args, "checkpoint", None):
        raise SpeedrunError("--checkpoint goes with --decode (the train step benchmark uses the "
                            "track's config)")
    return step_main(args)


def step_main(args) -> int:
    """The train step: time, throughput, MFU, memory; the breakdown and the profile."""
    import jax

    import tricks as trick_registry
    from speedrun.config import validate
    from speedrun.core import attention
    from speedrun.training import accumulate, speed
    from speedrun.training.plan import config_for

    cfg = config_for(args.track, args.tricks, args.overrides)
    validate(cfg, trick_registry.setting_problems(cfg))  # e.g. a train.sharding that is none
    cfg, chosen = accumulate.resolve(cfg, trick_registry.build_hooks(cfg))
    if chosen:
        print(chosen)
    dev = jax.devices()[0]
    peak, peak_label = speed.mfu_peak(dev, cfg.model.compute_dtype)
    profile = Path(args.profile) if args.profile else None
    r = speed.measure_step(cfg, steps=args.steps, profile_dir=profile, activations=True)
    m = cfg.model
    print(f"device: {jax.device_count()} x {dev.device_kind}")
    print(f"model: {m.n_layer}L d{m.d_model} h{m.n_head} seq{m.seq_len} vocab{m.vocab_size}, "
          f"{r['params'] / 1e6:.2f}M params, batch {cfg.train.batch_size}, tricks: "
          f"{','.join(cfg.trick_names) or 'baseline'}")
    print(f"matmul peak ({peak_label}): {peak / 1e9:,.1f} GFLOP/s")
    print(f"attention: {attention.implementation_name()} ({m.compute_dtype}, head size "
          f"{m.head_dim})")
    print(f"step time: {r['step_s'] * 1e3:.1f} ms (median of {args.steps}), "
          f"compile {r['compile_s']:.1f}s")
    print(f"throughput: {r['tokens_per_s']:,.0f} tokens/s, "
          f"{r['flops_per_token'] / 1e6:.1f} MFLOP/token")
    print(f"MFU: {r['achieved_flops'] / peak:.1%} ({r['achieved_flops'] / 1e9:.1f} GFLOP/s)")
    n = jax.device_count()
    print(f"parameters + optimizer state: {r['state_bytes_per_device'] / 2**20:,.2f} MiB per "
          f"device (train.sharding={cfg.train.sharding} over {n} device{'s' * (n > 1)})")
    if r["peak_memory_bytes"]:
        where = "device" if jax.devices()[0].platform != "cpu" else "process RSS"
        print(f"peak memory ({where}): {r['peak_memory_bytes'] / 2**20:,.0f} MiB")
    if r["step_peak_bytes"]:
        print(f"step program's peak (XLA's buffer plan): {r['step_peak_bytes'] / 2**20:,.0f} MiB")
    t = cfg.train
    print(f"microbatches: {t.grad_accum} of {t.batch_size // n // t.grad_accum} sequences a "
          f"device (train.grad_accum); remat: {t.remat} (train.remat)")
    if r["kept_activation_bytes"] is not None:
        print(f"activations kept for the backward pass: {r['kept_activation_bytes'] / 2**20:,.1f} "
              f"MiB a microbatch (as JAX traces it, train.remat={t.remat})")
    if args.breakdown:
        print("\nwhere the step goes (each piece compiled on its own, median of "
              f"{args.steps}):")
        print(speed.breakdown_table(speed.breakdown(cfg, steps=args.steps),
                                    r["step_s"] - r["pipelined_s"]))
    if profile:
        print(f"\nprofile written under {profile} (open with TensorBoard's profile plugin or "
              "Perfetto: xprof/tensorboard --logdir)")
    return 0


def decode_main(args) -> int:
    """`bench --decode`: prefill and decode tokens/s at each batch size."""
    import jax

    import tricks as trick_registry
    from speedrun import tracks
    from speedrun.core import params as P
    from speedrun.inference import checkpoint
    from speedrun.inference import generate as G
    from speedrun.training import speed
    from speedrun.training.plan import config_for

    if args.checkpoint:
        ck = checkpoint.load(args.checkpoint)
        m = ck.model()
        what = f"{ck.path.name}{' (int8)' if ck.quantization == 'int8' else ''}"
    else:
        cfg = config_for(args.track, args.tricks, args.overrides)
        hooks = trick_registry.build_hooks(cfg)
        tokenizer = tracks.get(cfg.track).rules.tokenizer
        m = G.Model(hooks.init(jax.random.PRNGKey(0), cfg.model), cfg, hooks, tokenizer)
        what = f"{cfg.track} {','.join(cfg.trick_names) or 'baseline'} (random weights)"
    m = G.Model(jax.device_put(m.params), m.cfg, m.hooks, m.tokenizer)
    c = m.cfg.model
    prompt_len = args.prompt_len or max(1, c.seq_len // 4)
    new_tokens = args.new_tokens or max(2, c.seq_len // 2)
    print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind}")
    print(f"model: {what}, {c.n_layer}L d{c.d_model} h{c.n_head} kv{c.kv_heads} "
          f"seq{c.seq_len} vocab{c.vocab_size}, {P.count(m.params) / 1e6:.2f}M parameters")
    for batch in args.batch:
        r = speed.measure_decode(m, batch, prompt_len, new_tokens)
        print(f"batch {batch}: prefill {r['prompt_len']} tokens/row {r['prefill_tokens_per_s']:,.0f} "
              f"tokens/s ({r['prefill_s'] * 1e3:.1f} ms); decode {r['new_tokens']} tokens/row "
              f"{r['decode_tokens_per_s']:,.0f} tokens/s ({r['ms_per_step']:.2f} ms/step); "
              f"compile {r['compile_s']:.1f}s")
    return 0
