"""Headless, byte-reproducible plots (matplotlib Agg, fixed size, no timestamps in the PNG)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG_META = {"Software": None}  # matplotlib otherwise stamps its version into the file


def _save(fig, out: Path) -> None:
    """Write atomically: a reader never sees half a PNG."""
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, dpi=100, metadata=PNG_META, format="png")
    plt.close(fig)
    os.replace(tmp, out)


def record_curve(record: dict, out_png: Path) -> None:
    """Val loss vs train time for every seed of a record, with the target dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in record["runs"]:
        curve = run["curve"][1:]  # step 0 (untrained, ~10.8) would flatten the interesting part
        ax.plot([p[1] for p in curve], [p[3] for p in curve], marker=".", label=f"seed {run['seed']}")
    ax.axhline(record["target"], color="k", linestyle="--", linewidth=1, label=f"target {record['target']}")
    ax.set_xlabel("train time (s)")
    ax.set_ylabel("val loss")
    ax.set_title(f"{record['track']}: {record['description']} ({record['hardware_class']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, Path(out_png))


def progression(points: list[dict], title: str, out_png: Path) -> None:
    """The speedrun's record progression: every ranked claim's mean train time in the
    order the records were made (``when``, an ISO timestamp), the running best as a step line,
    and each new best labelled. ``points``: dicts with when, date, time, description."""
    points = sorted(points, key=lambda p: (p["when"], p["description"]))
    xs = range(1, len(points) + 1)
    best, running, labels = [], float("inf"), []
    for x, p in zip(xs, points):
        if p["time"] < running:
            running = p["time"]
            labels.append((x, p))
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(xs, [p["time"] for p in points], color="tab:gray", s=18, label="ranked records")
    ax.step(xs, best, where="post", color="tab:blue", label="best so far")
    for i, (x, p) in enumerate(labels):  # inwards, alternately above and below: no overlaps
        right = x > len(points) / 2
        ax.annotate(f"{p['description']} ({p['time']:.0f} s)", (x, p["time"]), fontsize=7,
                    textcoords="offset points", xytext=(-4 if right else 4, 4 if i % 2 else -10),
                    ha="right" if right else "left")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"record, in order made ({points[0]['date']} to {points[-1]['date']})")
    ax.set_ylabel("mean train time of the claim (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, Path(out_png))


def compare_curves(records: list[dict], target: float, title: str, out_png: Path) -> None:
    """Val loss vs train time of several records (every seed, one colour per record)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, rec in enumerate(records):
        color = colors[i % len(colors)]
        for j, run in enumerate(rec["runs"]):
            curve = run["curve"][1:]
            ax.plot([p[1] for p in curve], [p[3] for p in curve], color=color, alpha=0.7,
                    linewidth=1, label=rec["description"] if j == 0 else None)
    ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("train time (s)")
    ax.set_ylabel("val loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, Path(out_png))
