"""`python -m speedrun launch --processes N [--devices-per-process K] -- COMMAND ...`: a
training command as N processes on this machine, joined through jax.distributed as a cluster's
processes are (speedrun/distributed/launch.py starts, watches and stops them; it imports no
JAX)."""

from __future__ import annotations

import argparse
import signal


def add_parser(sub) -> argparse.ArgumentParser:
    ln = sub.add_parser(
        "launch", help="run a training command as N processes on this machine, joined through "
        "jax.distributed",
        description="Start N processes of a training command (run, find-steps, compare, submit) "
        "on this machine, joined through jax.distributed as a cluster's processes are: each with "
        "K simulated CPU devices and JAX's gloo collectives between them, so the run sees N x K "
        "devices. Process 0's lines are shown as they are, every other process's prefixed "
        "[process i] (no progress bar: the lines go through the launcher whole); the "
        "first process to fail ends the others and launch exits with its code. Example: launch "
        "--processes 2 --devices-per-process 2 -- run --steps 100. On a cluster (SLURM, "
        "Kubernetes, a TPU slice) JAX's own environment joins the processes instead: see "
        "docs/distributed.md.")
    ln.add_argument("--processes", type=int, required=True, metavar="N",
                    help="how many processes to start")
    ln.add_argument("--devices-per-process", type=int, default=1, metavar="K",
                    help="simulated CPU devices in each process (default 1)")
    ln.add_argument("--port", type=int, default=None, metavar="P",
                    help="the coordinator's port on 127.0.0.1 (default: a free one)")
    ln.add_argument("--module", default="speedrun", metavar="M",
                    help="the module each process runs with python -m (default: speedrun; a "
                    "module of your own that registers tracks and calls speedrun.cli.main)")
    ln.add_argument("launched", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                    help="the speedrun command and its flags, after --")
    return ln


def _terminated(signum, frame):
    raise KeyboardInterrupt  # a SIGTERM stops every process, as Ctrl-C does


def main(args) -> int:
    from speedrun.distributed import launch

    signal.signal(signal.SIGTERM, _terminated)
    command = list(args.launched)
    if args.debug:  # the command line's --debug is meant for the processes too
        command = [*launch.check_command(command), "--debug"]
    return launch.launch(args.processes, args.devices_per_process, command, args.port,
                         args.module)
