"""A record's hardware class, derived from the device facts its logs state, never typed.

Records rank within a track and a hardware class, so the class must follow from what the run
saw: the platform, the accelerator's kind and count, and on a CPU the cores. A class string that
disagrees with the facts fails ``verify``.
"""

from __future__ import annotations

import re

# The facts the class follows from: every log header states them (environment.*).
FACTS = ("platform", "device_kind", "device_count", "cpu_count")


def short_device_name(kind: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; 'TPU v5 lite' -> 'TPUv5lite'."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Za-z]?)\b", kind)
    if m:
        return m.group(1)
    return re.sub(r"\s+", "", kind) or "device"


def derive(platform: str, device_kind: str, device_count: int, cpu_count: int) -> str:
    """'cpu-2core' on a CPU (its cores, whatever the simulated device count), '8xH100' on
    accelerators."""
    if platform == "cpu":
        return f"cpu-{cpu_count}core"
    return f"{device_count}x{short_device_name(device_kind)}"


def of_environment(env: dict) -> str | None:
    """The class an environment's facts give (None when a fact is missing)."""
    values = [env.get(k) for k in FACTS]
    if any(v is None for v in values):
        return None
    platform, kind, count, cores = values
    if not (isinstance(count, int) and isinstance(cores, int)):
        return None
    return derive(str(platform), str(kind), count, cores)
