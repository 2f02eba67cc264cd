"""What a run ran on and with, as a record's ``environment`` stores it: the devices and the
hardware class, the machine-speed probe (and the datasheet peaks MFU is quoted against on
accelerators), the host, library versions and git state. speedrun/records/provenance.py adds
the sha256 of the code that ran and every installed package's version. The environment also
names the command's sitting and the host's fingerprint (speedrun/records/sittings.py)."""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.errors import SpeedrunError
from speedrun.records import hardware_class, sittings

REPO = Path(__file__).resolve().parents[2]  # the repository: git runs here


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
    """Best observed FLOP/s of an n x n matmul on the default device."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


# Dense (no sparsity) bfloat16 peak FLOP/s from the vendors' datasheets, the figure MFU is quoted
# against on accelerators (llm.c and modded-nanogpt use the H100 SXM's 989 TFLOP/s). Matched in
# order against ``device_kind`` (e.g. 'NVIDIA H100 80GB HBM3' is the SXM part; the PCIe and NVL
# parts name themselves).
DENSE_BF16_PEAK = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5
    ("H200", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports itself as 'TPU v5'
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
)


def datasheet_peak(device_kind: str) -> tuple[float, str] | None:
    """(dense bf16 FLOP/s, the datasheet entry matched) for a known accelerator, else None."""
    for name, flops in DENSE_BF16_PEAK:
        if name.lower() in device_kind.lower():
            return flops, name
    return None


def machine_gflops(probe=None) -> float:
    """The machine-speed probe stored with every seed (untimed, just before it): float32
    2048^3 matmul GFLOP/s, best of 5. On a shared machine the speed drifts between days; this
    figure, shown next to a record's times, makes that drift visible, and the leaderboard ranks
    a claim without a same-sitting reference only when it is near its track's reference
    machine's. A probe that fails or measures nothing usable stops the run before it trains.

    In a multi-process run only process 0 probes, and every process reports its figure: the
    processes of one host share its cores, and probed side by side each would read a fraction
    of the machine (a third, for 2 processes on 2 cores)."""
    flops = _probe(probe) if jax.process_index() == 0 else 0.0
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        flops = float(multihost_utils.broadcast_one_to_all(np.float32(flops)))
    return round(flops / 1e9, 1)


def _probe(probe=None) -> float:
    try:
        flops = (probe or (lambda: matmul_peak(2048, jnp.float32, repeats=5)))()
    except Exception as e:  # noqa: BLE001 - any failure of the device here is the user's to see
        raise SpeedrunError(f"the machine-speed probe (a float32 2048^3 matmul) failed: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops > 0):
        raise SpeedrunError(f"the machine-speed probe measured {flops!r} FLOP/s: the device's "
                            f"timer or matmul is broken; no run is timed without it")
    return flops


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_id() -> str:
    """This machine's fingerprint as a log states it: a sha256 of what tells machines (and
    boots of one) apart: the machine id, the kernel's boot id, the network card's address, the
    CPU's name and cores and the memory size. Two machines never share it; one machine keeps it
    until it reboots (a sitting never spans a reboot)."""
    parts = [platform.node(), _cpu_name(), str(os.cpu_count()), str(uuid.getnode())]
    for f in ("/etc/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            parts.append(Path(f).read_text().strip())
        except OSError:
            parts.append("")
    try:
        parts.append(str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")))
    except (ValueError, OSError, AttributeError):
        parts.append("")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def describe() -> dict:
    """The devices and host; the hardware class derived from them (records/hardware_class.py),
    as ``verify`` derives it again from what a record states."""
    dev = jax.devices()[0]
    cores = os.cpu_count() or 1
    return {
        "hardware_class": hardware_class.derive(dev.platform, dev.device_kind,
                                                jax.device_count(), cores),
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "host": platform.node(),
        "host_id": host_id(),
        "cpu": _cpu_name(),
        "cpu_count": cores,
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(command: str) -> dict:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        **describe(),
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "optax_version": _version("optax"),
        "numpy_version": _version("numpy"),
        "python_version": sys.version.split()[0],
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "sitting": sittings.current(),  # this command's: every seed it times shares it
    }
