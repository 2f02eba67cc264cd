"""A seed's log: the lines a run writes, and the parser that reads them back.

A log is the evidence behind a record's numbers: ``verify`` re-derives every run's curve, steps,
train time, final loss and machine probe from it. So the lines a run writes and the parser that
reads them live here together, at the precision the record stores.

    # seed: 0                    the header: a YAML block of '# ' lines (seed, sitting, the
    # sitting: 20261207T...      wall-clock start, command, config, environment), written
    # started: 2026-12-07T...    before training
    # config: ...
    machine: float32 matmul 487.1 GFLOP/s (...)                the speed probe before the seed
    step:50/1000 val_loss:2.512345 train_time:10234.5ms ...    one line per validation
    ended: 2026-12-07T10:31:02.113+00:00                        the seed's wall-clock end
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from speedrun.config import RunConfig
from speedrun.records import provenance

_VAL_LINE = re.compile(r"^step:(\d+)/(\d+) val_loss:(\S+) train_time:([0-9.]+)ms\b")
_TRAIN_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+) ")
_MACHINE_LINE = re.compile(r"^machine: float32 matmul ([0-9.]+) GFLOP/s")
_SEED_LINE = re.compile(r"^# seed: (\d+)$")
_ENDED_LINE = re.compile(r"^ended: (\S+)$")
# The environment a header states, each compared with the record's by ``verify`` (logs written
# before a field existed lack it; the first four every header has).
HEADER_ENVIRONMENT = ("hardware_class", "device_kind", "device_count", "jax_version",
                      "git_commit", "git_dirty", "attention", "jaxlib_version", "optax_version",
                      "numpy_version", "python_version", "sources", "platform", "cpu_count",
                      "process_count", "host_id")
HEADER_REQUIRED = ("seed", "config", "environment.hardware_class", "environment.jax_version")


def header(cfg: RunConfig, seed: int, env: dict, started: str | None = None) -> list[str]:
    """The log's first lines: what ran (seed, its sitting and wall-clock start, command,
    resolved config with the tricks in their application order, environment with the device
    facts and host fingerprint, the code's sha256 and a digest of the installed packages)."""
    environment = {k: env.get(k) for k in HEADER_ENVIRONMENT if k in env}
    if isinstance(env.get("packages"), dict):
        environment["packages_sha256"] = provenance.digest(env["packages"])
    when = {"sitting": env["sitting"], "started": started} if env.get("sitting") else {}
    body = {"seed": seed, **when, "command": env.get("command"), "config": cfg.to_dict(),
            "environment": environment}
    return ["# " + line for line in yaml.safe_dump(body, sort_keys=False).splitlines()]


def parse_header(text: str) -> dict | None:
    """The header block of a log as a mapping (None if the log has none or it is not YAML)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    try:
        body = yaml.safe_load("\n".join(lines)) if lines else None
    except yaml.YAMLError:
        return None
    return body if isinstance(body, dict) else None


def ended_line(when: str) -> str:
    return f"ended: {when}"


def machine_line(gflops: float | None) -> str:
    return f"machine: float32 matmul {gflops} GFLOP/s (speed probe before the seed, untimed)"


def val_line(step: int, steps: int, val_loss: float, train_time: float,
             bpb_per_nat: float | None = None) -> str:
    """A validation line, at the precision the record stores."""
    avg = train_time / step * 1e3 if step else 0.0
    bpb = "" if bpb_per_nat is None else f" val_bpb:{val_loss * bpb_per_nat:.4f}"
    return (f"step:{step}/{steps} val_loss:{val_loss:.6f} train_time:{train_time * 1e3:.1f}ms "
            f"step_avg:{avg:.2f}ms{bpb}")


def parse_log(text: str) -> dict:
    """What a seed's log says: its seed, the machine probe, every validation (step,
    train_time_s, val_loss) at the precision the record stores, every logged train loss, and
    when the seed ended (wall clock)."""
    out: dict[str, Any] = {"seed": None, "machine_gflops": None, "steps_total": None, "vals": [],
                           "train": [], "ended": None}
    for line in text.splitlines():
        if m := _SEED_LINE.match(line):
            out["seed"] = int(m.group(1))
        elif m := _MACHINE_LINE.match(line):
            out["machine_gflops"] = float(m.group(1))
        elif m := _VAL_LINE.match(line):
            out["steps_total"] = int(m.group(2))
            out["vals"].append((int(m.group(1)), float(m.group(4)) / 1e3, float(m.group(3))))
        elif m := _TRAIN_LINE.match(line):
            out["train"].append((int(m.group(1)), m.group(2)))
        elif m := _ENDED_LINE.match(line):
            out["ended"] = m.group(1)
    return out
