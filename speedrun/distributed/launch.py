"""One training command as N processes on this machine (`python -m speedrun launch`), joined
through ``jax.distributed`` the way a cluster's processes are, each with K simulated CPU devices
(``--xla_force_host_platform_device_count``) and JAX's gloo collectives between them.

What each process is told (and what the processes of a cluster are told by hand, or find in
SLURM's, Open MPI's, Kubernetes' or a TPU slice's environment: docs/distributed.md): the
coordinator's address (``JAX_COORDINATOR_ADDRESS``), the number of processes and its own index
(``SPEEDRUN_NUM_PROCESSES``, ``SPEEDRUN_PROCESS_ID``), read by ``devices.maybe_initialize``.

Every process's output comes through the launcher a whole line at a time (so lines of two
processes never mix), process 0's as it is, every other process's prefixed ``[process i]``;
gloo's note that a process connected to its peers is left out, and so is another process's
``error:`` line that process 0 printed too (a refusal every process makes reads as one line).
The first process to fail ends the others (a process waiting in a collective for a dead peer
would otherwise wait out JAX's heartbeat timeout) and launch exits with its code, naming it in
one line unless its own ``error:`` line said why. This module imports no JAX: the launcher only
starts, watches and stops processes.
"""

from __future__ import annotations

import importlib.util
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


class Relay:
    """Every process's output, a whole line at a time, to the launcher's: process 0's as it is,
    the others' prefixed ``[process i]``. A one-line refusal (``error: ...``) of another process
    is held back until the end and shown only where process 0 did not say the same, so a
    refusal every process makes (a bad setting, or process 0's verdict on the records folder,
    which reaches them all) reads as one line."""

    def __init__(self):
        self.lock = threading.Lock()
        self.errors: dict[int, list[str]] = {}  # index -> its `error:` lines
        self.threads: list[threading.Thread] = []
        self.finished = False

    def start(self, index: int, p: subprocess.Popen) -> None:
        self.errors[index] = []
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
            t = threading.Thread(target=self._copy, args=(index, stream, out), daemon=True)
            self.threads.append(t)
            t.start()

    def _copy(self, index: int, stream, out) -> None:
        for line in iter(stream.readline, ""):
            if GLOO_NOTE.match(line):
                continue
            with self.lock:
                if line.startswith("error: "):
                    self.errors[index].append(line)
                    if index:
                        continue
                out.write(f"[process {index}] {line}" if index else line)
                out.flush()
        stream.close()

    def said_why(self, index: int) -> bool:
        return bool(self.errors.get(index))

    def finish(self) -> None:
        """The other processes' refusals that process 0 did not make (after every line; once)."""
        if self.finished:
            return
        self.finished = True
        for t in self.threads:
            if t.is_alive():
                t.join(timeout=GRACE_S)
        for index, lines in sorted(self.errors.items()):
            for line in lines if index else ():
                if line not in self.errors[0]:
                    sys.stderr.write(f"[process {index}] {line}")
        sys.stderr.flush()


def _stop(procs: list[subprocess.Popen]) -> int:
    """SIGTERM to every process still running, SIGKILL to any that outlives the grace: how many
    had to be stopped."""
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
    return len(alive)


def launch(count: int, devices: int, command: list[str], port: int | None = None,
           module: str = "speedrun") -> int:
    """Run ``python -m module *command`` as ``count`` joined processes: the first non-zero
    exit code (128 + N for a process killed by signal N), or 0."""
    if count < 1:
        raise SpeedrunError(f"--processes must be at least 1, got {count}")
    if devices < 1:
        raise SpeedrunError(f"--devices-per-process must be at least 1, got {devices}")
    command = check_command(command)
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        raise SpeedrunError(f"--module {module}: no such module here (each process runs "
                            f"python -m {module})")
    address = f"{HOST}:{free_port() if port is None else check_port(port)}"
    argv = [sys.executable, "-m", module, *command]
    procs, relay = [], Relay()
    try:
        for i in range(count):
            procs.append(subprocess.Popen(argv, env=child_env(dict(os.environ), i, count, devices,
                                                              address),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        print(f"launch: {count} process(es) x {devices} CPU device(s), coordinator {address}, "
              f"pids {' '.join(str(p.pid) for p in procs)}", file=sys.stderr, flush=True)
        ended: queue.Queue = queue.Queue()  # (index, return code) in the order they end
        for i, p in enumerate(procs):
            relay.start(i, p)
            threading.Thread(target=lambda i=i, p=p: ended.put((i, p.wait())), daemon=True).start()
        for _ in procs:
            i, code = _next(ended)
            if code != 0:
                return _failed(procs, relay, i, code)
        return 0
    finally:
        _stop(procs)  # Ctrl-C, SIGTERM, an error: no process outlives the launcher
        relay.finish()


def _failed(procs: list[subprocess.Popen], relay: Relay, i: int, code: int) -> int:
    """Process ``i`` ended with ``code``: stop the others, then say so in one line, unless it
    said why itself (exit code 1 after an ``error:`` line, a refusal)."""
    stopped = _stop(procs)
    relay.finish()  # its last lines first, then the one that says why
    status, how = exit_status(code)
    if code == 1 and relay.said_why(i):
        return status
    others = {0: "", 1: "; stopped the other process"}.get(stopped, "; stopped the other "
                                                                     "processes")
    print(f"error: process {i} of {len(procs)} failed ({how}){others}", file=sys.stderr,
          flush=True)
    return status


def _next(ended: queue.Queue) -> tuple[int, int]:
    while True:  # short waits, so Ctrl-C reaches the launcher at once
        try:
            return ended.get(timeout=0.2)
        except queue.Empty:
            pass
