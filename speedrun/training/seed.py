"""One seed of a plan, as every training command runs it: the machine-speed probe (untimed),
the timed loop with its progress bar and log lines, the final parameters (saved, or handed on)
after the clock, the seed's wall-clock start and end (its log's header and last lines: the
sitting's evidence), and the seed's summary line. `run`, `find-steps`, `compare`, `submit` and
`sweep` run their seeds through ``run_seed``.
"""

from __future__ import annotations

from speedrun.data import bytelevel, loader
from speedrun.distributed import devices
from speedrun.inference import checkpoint
from speedrun.records import logs, sittings
from speedrun.training import environment, metrics, saving, train
from speedrun.training.console import Console
from speedrun.training.plan import Plan


def run_seed(plan: Plan, seed: int, quiet: bool, tag: str = "", save_dir: str | None = None,
             save_failures: list | None = None, after=None, folder=None,
             log_to: tuple | None = None) -> train.RunResult:
    """One fixed-length run: the machine-speed probe (untimed), then training, then its log.
    ``save_dir``: write the final parameters there (``saving.checkpoint_path``), after the
    clock; a checkpoint that cannot be written is reported and appended to ``save_failures``.
    ``after(seed, params)``: more work on the final parameters, also after the clock.
    ``folder`` (resume.Folder): keep the seed's state there, and continue from it if kept.
    ``log_to``: (metrics.Target list, the run's name): where its metrics are watched."""
    cfg = plan.cfg
    kept = folder.restored(seed) if folder is not None else None
    gflops = kept.machine_gflops if kept else environment.machine_gflops()
    # One progress bar: the other processes of a multi-process run show only validations.
    console = Console(cfg.train.steps, quiet or not devices.is_main_process(), f"{tag}seed {seed}")
    if kept:  # the log so far: its header says when the seed first started, then its probe
        console.lines += kept.lines
        started = (logs.parse_header("\n".join(kept.lines)) or {}).get("started")
    else:
        started = sittings.now()  # the seed's wall clock, as its log and record state it
        console.lines += logs.header(cfg, seed, plan.env, started)
        console.log(logs.machine_line(gflops))
    keep = folder.keeper(seed, console.lines, gflops, kept) if folder is not None else None
    tokenizer = plan.data["tokenizer"] or "gpt2"
    batches = loader.TrainLoader(plan.train_files, cfg.train.batch_size, cfg.model.seq_len, seed,
                                 align_docs=cfg.train.align_docs,
                                 doc_sep=bytelevel.separator(tokenizer))
    n_bytes = plan.data.get("val_bytes")
    bpb_per_nat = bytelevel.bits_per_byte(1.0, plan.data["val_tokens"], n_bytes) if n_bytes else None
    saved: list[str] = []
    watch = metrics.open_watch(*log_to, plan, seed, gflops, bpb_per_nat,
                               None if kept is None else kept.step) if log_to else None
    progress = console.progress if watch is None else watch.around(console.progress)

    def finished(params):
        if save_dir is None and after is None:
            return
        params = checkpoint.to_host(params)  # in every process: gathering split ones is collective
        if save_dir is not None and devices.is_main_process():
            ok, line = saving.save_checkpoint(plan, params, seed, save_dir)
            saved.append(line)
            if not ok and save_failures is not None:
                save_failures.append(line)
        if after is not None:
            after(seed, params)

    try:
        out = train.train(cfg, seed, plan.hooks, batches, plan.val, console.log, progress,
                          machine_gflops=gflops, bpb_per_nat=bpb_per_nat, finished=finished,
                          keep=keep)
    finally:
        console.close()
        if watch is not None:
            watch.close()
    ended = sittings.now()
    console.lines.append(logs.ended_line(ended))
    for line in saved:
        print(f"{tag}seed {seed}: {line}")
    summary = summary_line(out, cfg.train.target, gflops, tag)
    console.lines.append(summary)
    print(summary)
    return train.RunResult(**vars(out), log="\n".join(console.lines) + "\n", started=started,
                           ended=ended)


def summary_line(out: train.Outcome, target: float, gflops: float, tag: str = "") -> str:
    crossed = ("never crossed the target" if out.first_reached is None else
               f"first at or below the target at step {out.first_reached[0]} "
               f"({out.first_reached[1]:.1f}s)")
    return (f"{tag}seed {out.seed}: {out.steps} steps in {out.train_time_s:.1f}s train time, "
            f"final val loss {out.final_val_loss:.4f} "
            f"({'below' if out.reached else 'NOT below'} the target {target}; "
            f"{crossed}; compile {out.compile_time_s:.1f}s; machine {gflops} GFLOP/s)")
