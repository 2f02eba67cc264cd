"""Headless, byte-reproducible plots (matplotlib Agg, fixed size, no timestamps in the PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG_META = {"Software": None}  # matplotlib otherwise stamps its version into the file


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata=PNG_META)
    plt.close(fig)


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
