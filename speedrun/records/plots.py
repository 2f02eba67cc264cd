"""Headless, byte-reproducible plots (matplotlib Agg, fixed size, no timestamps in the PNG)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG_META = {"Software": None}  # matplotlib otherwise stamps its version into the file


def _save(fig, out: Path, outside_legend: bool = False) -> None:
    """Write atomically: a reader never sees half a PNG. A figure with its legend outside the
    axes is laid out by matplotlib's constrained layout (set when it was made)."""
    if not outside_legend:
        fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
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
    """The speedrun's record progression: every ranked entry's estimated time with its 95%
    interval, in the order the entries were first recorded (``when``, an ISO timestamp), the
    running best as a step line, each point numbered by its leaderboard rank (the table says
    what it is: long trick lists as labels collide). ``points``: dicts with when, date, time
    (estimate, low, high), rank."""
    points = sorted(points, key=lambda p: (p["when"], p["rank"]))
    xs = list(range(1, len(points) + 1))
    best, running = [], float("inf")
    for p in points:
        running = min(running, p["time"][0])
        best.append(running)
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    est = [p["time"][0] for p in points]
    err = [[p["time"][0] - p["time"][1] for p in points],
           [p["time"][2] - p["time"][0] for p in points]]
    ax.errorbar(xs, est, yerr=err, fmt="o", color="tab:gray", markersize=4, capsize=2,
                linewidth=1, label="entry: estimated time, 95% interval", zorder=3)
    ax.step(xs, best, where="post", color="tab:blue", label="best estimate so far")
    for x, p in zip(xs, points):
        ax.annotate(f"#{p['rank']}", (x, p["time"][2]), fontsize=7, textcoords="offset points",
                    xytext=(0, 3), ha="center")
    ax.set_yscale("log")  # a 200 s baseline and 25 s stacks: ratios read evenly
    ax.set_ylim(min(p["time"][1] for p in points) / 1.3, max(p["time"][2] for p in points) * 1.4)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:g}"[0] in "235" else ""))
    ax.set_xlim(0.5, len(points) + 0.5)
    ax.set_xlabel(f"entry, in the order first recorded ({points[0]['date']} to "
                  f"{points[-1]['date']}); numbers are leaderboard ranks")
    ax.set_ylabel("train time on the scale (s, log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    _save(fig, Path(out_png), outside_legend=True)


def compare_curves(points: list[dict], target: float, title: str, out_png: Path) -> None:
    """Val loss vs train time of the top entries (every seed of each entry's first record, one
    colour per entry), on the leaderboard's time scale: a record's times are multiplied by its
    entry's estimate over the record's own mean time. The legend sits beside the axes,
    numbered by rank. ``points``: dicts with record, rank, time (estimate, low, high), label."""
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(points):
        rec = p["record"]
        factor = p["time"][0] / rec["summary"]["mean_time_s"]
        label = f"#{p['rank']} {_short(p['label'])}"
        for j, run in enumerate(rec["runs"]):
            curve = run["curve"][1:]  # step 0 (untrained) would flatten the interesting part
            ax.plot([q[1] * factor for q in curve], [q[3] for q in curve],
                    color=colors[i % len(colors)],
                    alpha=0.7, linewidth=1, label=label if j == 0 else None)
    ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("train time on the leaderboard's time scale (s)")
    ax.set_ylabel("val loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside right center")
    _save(fig, Path(out_png), outside_legend=True)


def _short(description: str, width: int = 34) -> str:
    return description if len(description) <= width else description[: width - 3] + "..."
