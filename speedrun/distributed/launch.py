"""`python -m speedrun launch`: one training command as N processes on this machine, joined
through ``jax.distributed`` the way a cluster's processes are, each with K simulated CPU devices
(``--xla_force_host_platform_device_count``) and JAX's gloo collectives between them.

What each process is told (and what the processes of a cluster are told by hand, or find in
SLURM's, Open MPI's, Kubernetes' or a TPU slice's environment: docs/distributed.md): the
coordinator's address (``JAX_COORDINATOR_ADDRESS``), the number of processes and its own index
(``SPEEDRUN_NUM_PROCESSES``, ``SPEEDRUN_PROCESS_ID``), read by ``devices.maybe_initialize``.

Every process's output comes through the launcher a whole line at a time (so lines of two
processes never mix), process 0's as it is, every other process's prefixed ``[process i]``;
gloo's note that a process connected to its peers is left out. The first process to fail ends the others (a process waiting in a
collective for a dead peer would otherwise wait out JAX's heartbeat timeout), launch names it
in one line and exits with its code. This module imports no JAX: the launcher only starts,
watches and stops processes.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from speedrun.errors import SpeedrunError

NUM_PROCESSES, PROCESS_ID = "SPEEDRUN_NUM_PROCESSES", "SPEEDRUN_PROCESS_ID"
LAUNCHABLE = ("run", "find-steps", "compare", "submit")  # the commands that join a run
DEVICE_FLAG = "--xla_force_host_platform_device_count"
HOST = "127.0.0.1"
GRACE_S = 5.0  # how long a stopped process may take to exit before it is killed


def free_port() -> int:
    """A port nothing listens on now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int) -> int:
    if not 0 < port < 65536:
        raise SpeedrunError(f"--port must be in 1..65535, got {port}")
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError as e:
            raise SpeedrunError(f"--port {port} is in use on this machine ({e.strerror or e}): "
                                f"pick another, or leave --port out to use a free one") from None
    return port


def check_command(command: list[str]) -> list[str]:
    """The command after ``--``: a speedrun command that joins a multi-process run."""
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise SpeedrunError("launch needs the command to run after --, e.g. launch --processes 2 "
                            "-- run --steps 100")
    if command[0] not in LAUNCHABLE:
        raise SpeedrunError(f"launch runs {', '.join(LAUNCHABLE)} (the commands that train), "
                            f"not {command[0]!r}")
    return command


def child_env(base: dict, index: int, count: int, devices: int, address: str) -> dict:
    """Process ``index``'s environment: the coordinator, its place, its CPU devices.

    JAX's preemption service is off: it takes SIGTERM as a cluster's notice of preemption and
    keeps running, so a process the launcher stops would go on until killed after GRACE_S."""
    flags = [f for f in base.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    return {**base, "JAX_COORDINATOR_ADDRESS": address, NUM_PROCESSES: str(count),
            PROCESS_ID: str(index), "JAX_PLATFORMS": "cpu",
            "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
            "JAX_ENABLE_PREEMPTION_SERVICE": "false",
            "XLA_FLAGS": " ".join([*flags, f"{DEVICE_FLAG}={devices}"]),
            "PYTHONUNBUFFERED": "1"}  # lines arrive as they are printed


def exit_status(code: int) -> tuple[int, str]:
    """(the launcher's exit code, how the process ended) for a process's return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return 128 - code, f"killed by {name}"
    return code, f"exit code {code}"


GLOO_NOTE = re.compile(r"\[Gloo\] Rank \d+ is connected to \d+ peer ranks")


def _relay(stream, out, tag: str, lock: threading.Lock) -> None:
    """Copy a process's lines to ``out`` whole, each prefixed with ``tag``."""
    for line in iter(stream.readline, ""):
        if GLOO_NOTE.match(line):
            continue
        with lock:
            out.write(f"{tag}{line}")
            out.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen], threads: list[threading.Thread]) -> None:
    """SIGTERM to every process still running, SIGKILL to any that outlives the grace; then
    every line they wrote relayed."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in alive:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for t in threads:
        if t.is_alive():
            t.join(timeout=GRACE_S)


def launch(count: int, devices: int, command: list[str], port: int | None = None,
           module: str = "speedrun") -> int:
    """Run ``python -m module *command`` as ``count`` joined processes: the first non-zero
    exit code (128 + N for a process killed by signal N), or 0."""
    if count < 1:
        raise SpeedrunError(f"--processes must be at least 1, got {count}")
    if devices < 1:
        raise SpeedrunError(f"--devices-per-process must be at least 1, got {devices}")
    command = check_command(command)
    address = f"{HOST}:{free_port() if port is None else check_port(port)}"
    argv = [sys.executable, "-m", module, *command]
    procs, threads, lock = [], [], threading.Lock()
    try:
        for i in range(count):
            procs.append(subprocess.Popen(argv, env=child_env(dict(os.environ), i, count, devices,
                                                              address),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        print(f"launch: {count} process(es) x {devices} CPU device(s), coordinator {address}, "
              f"pids {' '.join(str(p.pid) for p in procs)}", file=sys.stderr, flush=True)
        for i, p in enumerate(procs):
            tag = f"[process {i}] " if i else ""
            for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
                threads.append(threading.Thread(target=_relay, daemon=True,
                                                args=(stream, out, tag, lock)))
        ended: queue.Queue = queue.Queue()  # (index, return code) in the order they end
        for i, p in enumerate(procs):
            threads.append(threading.Thread(target=lambda i=i, p=p: ended.put((i, p.wait())),
                                            daemon=True))
        for t in threads:
            t.start()
        for _ in procs:
            i, code = _next(ended)
            if code != 0:
                _stop(procs, threads)  # their last lines first, then the one that says why
                status, how = exit_status(code)
                stopped = {1: "", 2: "; stopped the other process"}.get(
                    count, "; stopped the other processes")
                print(f"error: process {i} of {count} failed ({how}){stopped}", file=sys.stderr,
                      flush=True)
                return status
        return 0
    finally:
        _stop(procs, threads)  # Ctrl-C, SIGTERM, an error: no process outlives the launcher


def _next(ended: queue.Queue) -> tuple[int, int]:
    while True:  # short waits, so Ctrl-C reaches the launcher at once
        try:
            return ended.get(timeout=0.2)
        except queue.Empty:
            pass


def _terminated(signum, frame):
    raise KeyboardInterrupt  # a SIGTERM stops every process, as Ctrl-C does


def main(args) -> int:
    """`python -m speedrun launch --processes N [--devices-per-process K] -- COMMAND ...`."""
    signal.signal(signal.SIGTERM, _terminated)
    command = list(args.launched)
    if args.debug:  # the command line's --debug is meant for the processes too
        command = [*check_command(command), "--debug"]
    return launch(args.processes, args.devices_per_process, command, args.port, args.module)
