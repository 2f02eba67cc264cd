"""A grid of settings for `sweep`: its points, checked before anything runs, the points already
on record (to resume), and the table that pairs every point's final losses with a reference
point's by seed.

A point is one combination of the swept values (``--sweep KEY=V1,V2,...``; several keys make
every combination). Every bad input fails before anything runs: an unknown key, a value of the
wrong type or outside a trick's limits, an empty value list, a reference that is not a point, a
grid of more than ``MAX_POINTS`` points without ``--yes``. A point is on record when a record
under the records folder has its configuration hash, the same seeds and this hardware class,
and verifies. The table's paired differences cancel most of the seed-to-seed spread (the seed
fixes the initialization and the data order); the verdict names the best point with its margin,
and whether every seed's own difference agrees in sign.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from speedrun.config import (RunConfig, apply_overrides, config_hash, identity_hash,
                             split_override)
from speedrun.errors import SpeedrunError
from speedrun.records import stats
from speedrun.records.record import SLUG_CHARS, load_record, record_id, slugify
from speedrun.records.verify import find_records, verify
from speedrun.training.plan import config_for

MAX_POINTS = 50  # a larger grid needs --yes: it runs for a long time, one point after another


@dataclass(frozen=True)
class Point:
    """One combination of the swept values, and the configuration it runs."""

    number: int  # 1-based, in grid order
    settings: tuple[tuple[str, Any], ...]  # (key, value) in --sweep order
    cfg: RunConfig

    def label(self) -> str:
        return ", ".join(f"{k}={show(v)}" for k, v in self.settings)

    def name(self, prefix: str) -> str:
        """The record's name: its folder is <date>_<prefix>-<key>-<value>-... (slugified, at
        most 60 characters). Where that would cut a value off, a key is named by its last part
        (``embed_std`` for ``untie-head.embed_std``) if no other key ends alike."""
        def joined(keys):
            return "-".join([prefix, *(f"{k}={show(v)}" for k, (_, v) in zip(keys, self.settings))])

        full = joined([k for k, _ in self.settings])
        last = [k.rsplit(".", 1)[-1] for k, _ in self.settings]
        fits = len(slugify(full, limit=None)) <= SLUG_CHARS
        return full if fits or len(set(last)) < len(last) else joined(last)


@dataclass(frozen=True)
class Outcome:
    """A point's final val losses by seed, as its record stores them, and which record; or,
    for a point that diverged, where (and no losses, no record)."""

    point: Point
    losses: dict[int, float]
    record: str | None  # '<track>/<folder>'; None where this process writes no record
    reused: bool = False  # read back from a record of an earlier sweep
    diverged: str | None = None  # 'seed S diverged at step N: ...'

    @property
    def mean(self) -> float:
        return statistics.fmean(self.losses.values())


def show(value: Any) -> str:
    """A value as briefly as it reads back exactly: 30.0 -> 30, 0.001 -> 0.001."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def setting(cfg: RunConfig, key: str) -> Any:
    """The value of ``section.key`` (a config section's or an enabled trick's) in ``cfg``."""
    section, _, name = key.partition(".")
    if section in cfg.tricks:
        return cfg.tricks[section][name]
    return getattr(getattr(cfg, section), name)


# --- the grid, checked before anything runs ---------------------------------------------------


def parse_sweep(item: str) -> tuple[str, list[str]]:
    """``--sweep softcap.cap=10,15,30`` -> ('softcap.cap', ['10', '15', '30'])."""
    key, sep, text = item.partition("=")
    key = key.strip()
    section, dot, name = key.partition(".")
    if not sep or not dot or not section or not name:
        raise SpeedrunError(f"--sweep expects section.key=V1,V2,... (e.g. softcap.cap=10,15,30), "
                            f"got {item!r}")
    texts = [t.strip() for t in text.split(",")]
    if texts == [""]:
        raise SpeedrunError(f"--sweep {key}= names no value: give one or more, e.g. {key}=V1,V2")
    if "" in texts:
        raise SpeedrunError(f"--sweep {item!r} has an empty entry: separate the values with "
                            f"single commas")
    return key, texts


def value_of(base: RunConfig, key: str, text: str, flag: str) -> Any:
    """``text`` read as ``key``'s type; an unknown key or a value of the wrong type fails here."""
    return setting(apply_overrides(base, [f"{key}={text}"], flag=flag), key)


def axes(base: RunConfig, sweeps: list[str], overrides: list[str],
         steps: int | None) -> dict[str, list[tuple[Any, str]]]:
    """Every swept key's values, read as its type, in the order given: {key: [(value, text)]}."""
    fixed = {".".join(split_override(o)[:2]) for o in overrides}
    if steps is not None:
        fixed.add("train.steps")
    out: dict[str, list[tuple[Any, str]]] = {}
    for item in sweeps:
        key, texts = parse_sweep(item)
        if key in out:
            raise SpeedrunError(f"--sweep {key} is given twice: list all its values in one --sweep")
        if key in fixed:
            raise SpeedrunError(f"{key} is both swept and fixed (--set or --steps): give it once")
        values = [value_of(base, key, t, "--sweep") for t in texts]
        twice = sorted({show(v) for v in values if values.count(v) > 1})
        if twice:
            raise SpeedrunError(f"--sweep {key} lists {', '.join(twice)} more than once")
        out[key] = list(zip(values, texts))
    return out


def check_size(grid_axes: dict, n_seeds: int, yes: bool) -> int:
    """The number of points; more than MAX_POINTS only with --yes."""
    n = math.prod(len(v) for v in grid_axes.values())
    if n > MAX_POINTS and not yes:
        raise SpeedrunError(f"this grid has {n} points ({n * n_seeds} runs): pass --yes to run it")
    return n


def grid(grid_axes: dict, track: str, trick_names: str, overrides: list[str],
         steps: int | None) -> list[Point]:
    """Every combination, the last key varying fastest, each with its configuration."""
    points = []
    for number, combo in enumerate(itertools.product(*grid_axes.values()), 1):
        items = tuple(f"{k}={text}" for k, (_, text) in zip(grid_axes, combo))
        cfg = config_for(track, trick_names, overrides, steps, swept=list(items))
        points.append(Point(number, tuple((k, v) for k, (v, _) in zip(grid_axes, combo)), cfg))
    seen: dict[str, Point] = {}
    for p in points:
        same = seen.setdefault(config_hash(p.cfg), p)
        if same is not p:
            raise SpeedrunError(f"points {same.number} ({same.label()}) and {p.number} "
                                f"({p.label()}) resolve to the same configuration: sweep a "
                                f"setting that changes the run")
    return points


def reference_of(points: list[Point], base: RunConfig, grid_axes: dict, text: str | None) -> Point:
    """The point ``--reference KEY=V,...`` names (a value for every swept key), else the first."""
    if text is None:
        return points[0]
    wanted: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in grid_axes or key in wanted:
            raise SpeedrunError(f"--reference expects KEY=V once for each swept setting "
                                f"({', '.join(grid_axes)}), got {text!r}")
        wanted[key] = value_of(base, key, value.strip(), "--reference")
    missing = [k for k in grid_axes if k not in wanted]
    if missing:
        raise SpeedrunError(f"--reference {text!r} gives no value for {', '.join(missing)}: name "
                            f"one point of the grid, every swept setting's value")
    for p in points:
        if dict(p.settings) == wanted:
            return p
    takes = "; ".join(f"{k} takes {', '.join(show(v) for v, _ in vals)}"
                      for k, vals in grid_axes.items())
    raise SpeedrunError(f"--reference {text} is not a point of the grid ({takes})")


# --- side by side: which points share a program ------------------------------------------------


def programs(points: list[Point], fixed: set[str], per_program: int) -> list[list[Point]]:
    """``points`` in programs of at most ``per_program`` points (at least one), each program's
    points alike in the swept settings of ``fixed`` (those the step cannot take as inputs),
    in grid order."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        groups.setdefault(tuple((k, v) for k, v in p.settings if k in fixed), []).append(p)
    size = max(1, per_program)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


# --- resuming: points already on record ---------------------------------------------------------


def records_by_point(records_dir: str, track: str, points: list[Point], prefix: str
                     ) -> dict[tuple, list[Path]]:
    """The track's records under ``records_dir`` by (configuration's identity_hash, seeds,
    hardware class). A record named as one of ``points`` that cannot be read is refused: the
    sweep could neither read it back nor tell whether it ran that point."""
    folder = Path(records_dir) / track
    index: dict[tuple, list[Path]] = {}
    names = {slugify(p.name(prefix)): p for p in points}
    for f in find_records([folder]) if folder.is_dir() else []:
        try:
            rec = load_record(f)
            key = (identity_hash(RunConfig.from_dict(rec["config"])),
                   tuple(sorted(int(r["seed"]) for r in rec["runs"])), rec["hardware_class"])
        except (SpeedrunError, KeyError, TypeError, ValueError) as e:
            name = f.name.partition("_")[2]  # <date>_<name>, or <date>_<name>-2 beside it
            point = names.get(name) or names.get(re.sub(r"-\d+$", "", name))
            if point is None:
                continue  # not this sweep's: `verify` says why it is unreadable
            raise SpeedrunError(f"{record_id(f)}, the record of point {point.number} "
                                f"({point.label()}) by its name, cannot be read back "
                                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                                f"mend it (`python -m speedrun verify {f}` says what is "
                                f"wrong) or move it out of {records_dir}, then run the sweep "
                                f"again") from None
        index.setdefault(key, []).append(f)
    return index


def on_record(index: dict, cfg: RunConfig, seeds: list[int], hw: str) -> tuple[Path, dict] | None:
    """The latest record of this configuration over these seeds on this hardware class that
    verifies, or None."""
    # by identity: how the record's steps were carried out (its microbatches, say) may differ
    for folder in reversed(index.get((identity_hash(cfg), tuple(sorted(seeds)), hw), [])):
        problems = verify(folder)
        if not problems:
            return folder, load_record(folder)
        print(f"note: {record_id(folder)} ran this configuration but fails verify "
              f"({problems[0]}): not read back")
    return None


def losses_of(runs: list[dict]) -> dict[int, float]:
    return {int(r["seed"]): float(r["final_val_loss"]) for r in runs}


# --- the table ----------------------------------------------------------------------------------


def agreement(diffs: list[float]) -> str:
    """Whether a margin (the best point's differences, seed by seed) holds on every seed."""
    n, lower = len(diffs), sum(d < 0 for d in diffs)
    if n < 2:
        return "one seed: how far seeds disagree is unknown (run 2 or more)"
    if lower == n:
        return (f"every seed's own difference is negative ({n} of {n}): the margin is beyond "
                f"the seeds' disagreement")
    return (f"the seeds' own differences disagree in sign (negative on {lower} of {n}): the "
            f"margin is within the seeds' disagreement")


def best_of(outcomes: list[Outcome]) -> Outcome | None:
    """The finished point with the lowest mean final loss (None if every point diverged)."""
    return min((o for o in outcomes if o.losses), key=lambda o: o.mean, default=None)


def verdict(outcomes: list[Outcome], ref: Outcome) -> str:
    """The best point and its margin: over the reference, or, when the reference is best (or
    diverged), over the next best; paired by seed."""
    best = best_of(outcomes)
    if best is None:
        return "every point diverged: nothing to compare"
    if best is not ref and ref.losses:
        other, what = ref, f"the reference #{ref.point.number} ({ref.point.label()})"
    else:
        other = best_of([o for o in outcomes if o is not best])
        if other is None:
            return f"one point finished, #{best.point.number} ({best.point.label()}): " \
                   f"nothing to compare it with"
        what = f"the next best, #{other.point.number} ({other.point.label()})"
    diffs = stats.paired_differences(best.losses, other.losses)
    where = f", record {best.record}" if best.record else ""
    return (f"best: #{best.point.number} ({best.point.label()}"
            f"{', the reference' if best is ref else ''}{where}), mean final val loss "
            f"{best.mean:.4f}: {-statistics.fmean(diffs):.4f} below {what} over {len(diffs)} "
            f"shared seed(s); {agreement(diffs)}")


def table(outcomes: list[Outcome], ref: Outcome, seeds: list[int]) -> str:
    """Per point: its settings, final val loss per seed and their mean, its paired difference
    from the reference, and its record."""
    best = best_of(outcomes)
    keys = [k for k, _ in outcomes[0].point.settings]
    rows = []
    for o in outcomes:
        mark = ", ".join(m for m, on in (("ref", o is ref), ("best", o is best)) if on)
        diffs = stats.paired_differences(o.losses, ref.losses)
        delta = ("-" if o is ref or not diffs else f"{statistics.fmean(diffs):+.4f} "
                 f"({sum(d < 0 for d in diffs)}/{len(diffs)} seeds lower)")
        record = (o.record or "-") + (" (from record)" if o.reused else "")
        rows.append([mark, o.point.number, *(show(v) for _, v in o.point.settings),
                     *(f"{o.losses[s]:.4f}" if s in o.losses else "-" for s in seeds),
                     f"{o.mean:.4f}" if o.losses else "-", delta, o.diverged or record])
    headers = ["", "#", *keys, *(f"seed {s}" for s in seeds), "mean",
               f"vs #{ref.point.number}, paired", "record"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
