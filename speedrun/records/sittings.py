"""Sittings: which seeds one machine timed in one stretch of time, as the logs say.

A command that trains (`run`, `compare`, `submit`, `sweep`, `find-steps --record`, `sft`/`rl`
on a track) draws a sitting id when it starts and writes it into every seed's log header, with
the host's fingerprint (``environment.host_id``: it differs between machines, and between boots
of one) and the wall-clock time the seed started; the seed's last log line says when it ended.
A record repeats them (``sitting``, each run's ``started``/``ended``), and ``verify`` holds the
record to its logs. Across records, the seeds of one sitting must come from one host, follow
one another without overlapping or long pauses, and read the machine's speed alike (each
record's median probe within ``tracks.SPEED_TOLERANCE`` of the median of the sitting's records):
two runs that fail any of these were not one sitting, whatever their ids say.

Records written before sittings were logged (schema 2) carry a ``sitting`` that a migration
derived from their same-sitting links; their logs cannot vouch for it, so they are accepted only
as committed (``legacy``).
"""

from __future__ import annotations

import datetime
import secrets
import statistics
from dataclasses import dataclass

from speedrun import tracks

MAX_PAUSE_S = 1800.0  # the longest pause between consecutive seeds of one sitting


def new_id() -> str:
    """A sitting id: the UTC start time (readable, sortable) and 8 random hex digits."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(4)}"


_current: list[str] = []


def begin() -> str:
    """Start a new sitting: the command line does this once per command."""
    _current[:] = [new_id()]
    return _current[0]


def current() -> str:
    """The sitting this process is in (one is begun if none was)."""
    return _current[0] if _current else begin()


def now() -> str:
    """The wall clock as a log states it: UTC, ISO 8601, to the millisecond."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text) -> datetime.datetime | None:
    try:
        t = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


@dataclass(frozen=True)
class Seed:
    """One timed seed of a sitting, as its record states it."""

    record: str  # the record's id ('<track>/<folder>')
    seed: int
    started: datetime.datetime | None
    ended: datetime.datetime | None
    probe: float | None


def of(rec: dict) -> tuple[str | None, str | None]:
    """(sitting id, host fingerprint) a record states (None where absent)."""
    s = rec.get("sitting")
    if not isinstance(s, dict):
        return None, None
    return s.get("id"), s.get("host_id")


def seeds_of(rid: str, rec: dict) -> list[Seed]:
    return [Seed(rid, int(r["seed"]), parse_time(r.get("started")), parse_time(r.get("ended")),
                 r.get("machine_gflops")) for r in rec.get("runs") or [] if isinstance(r, dict)]


def problems(records: dict[str, dict]) -> dict[str, list[str]]:
    """{record id: problems} of the records (by id, each already verified alone): those that
    share a sitting id must have been one sitting (``sitting_problems``), and records of one
    host whose seeds interleave in time must share one (``split_problems``). Untimed records
    (resumed, seeds side by side) are no evidence of time: their seeds may overlap and pause."""
    records = {rid: rec for rid, rec in records.items() if not rec.get("untimed")}
    by_sitting: dict[str, list[str]] = {}
    for rid, rec in records.items():
        sid, _ = of(rec)
        if sid is not None:
            by_sitting.setdefault(sid, []).append(rid)
    out: dict[str, list[str]] = {}
    for sid, members in by_sitting.items():
        found = sitting_problems(sid, {rid: records[rid] for rid in members})
        for rid in members:
            if found:
                out.setdefault(rid, []).extend(found)
    for rid, found in split_problems(records).items():
        out.setdefault(rid, []).extend(found)
    return out


def split_problems(records: dict[str, dict]) -> dict[str, list[str]]:
    """One host runs one sitting at a time: two records of one host whose seeds' spans overlap
    in time were timed side by side, so they must name one sitting (a record renamed out of
    the sitting it shared with a re-run of the #1 would otherwise rank on its own luck)."""
    spans = []
    for rid, rec in records.items():
        sid, host = of(rec)
        times = [(s.started, s.ended) for s in seeds_of(rid, rec) if s.started and s.ended]
        if host and times:
            spans.append((host, min(a for a, _ in times), max(b for _, b in times), sid, rid))
    out: dict[str, list[str]] = {}
    for i, (host, a0, a1, sa, ra) in enumerate(spans):
        for host_b, b0, b1, sb, rb in spans[i + 1:]:
            if host == host_b and sa != sb and a0 < b1 and b0 < a1:
                line = (f"{ra.split('/')[-1]} (sitting {sa}) and {rb.split('/')[-1]} (sitting "
                        f"{sb}) ran on one host at overlapping times: one sitting, named two")
                out.setdefault(ra, []).append(line)
                out.setdefault(rb, []).append(line)
    return out


def sitting_problems(sid: str, records: dict[str, dict]) -> list[str]:
    """Why the records claiming sitting ``sid`` were not one sitting (empty: they were)."""
    names = ", ".join(sorted(r.split("/")[-1] for r in records))
    out = []
    hosts = {of(rec)[1] for rec in records.values()}
    if len(hosts) > 1:
        out.append(f"sitting {sid} ({names}) names {len(hosts)} hosts: one sitting is one "
                   f"machine")
    seeds = [s for rid, rec in records.items() for s in seeds_of(rid, rec)]
    timed = sorted((s for s in seeds if s.started and s.ended), key=lambda s: s.started)
    for a, b in zip(timed, timed[1:]):
        if b.started < a.ended:
            out.append(f"sitting {sid}: {b.record} seed {b.seed} started before {a.record} "
                       f"seed {a.seed} ended: one machine times one seed at a time")
            break
        if (b.started - a.ended).total_seconds() > MAX_PAUSE_S:
            out.append(f"sitting {sid}: {(b.started - a.ended).total_seconds() / 60:.0f} min "
                       f"pass between {a.record} seed {a.seed} and {b.record} seed {b.seed} "
                       f"(at most {MAX_PAUSE_S / 60:.0f}): not one stretch of time")
            break
    medians = {rid: probe([rec]) for rid, rec in records.items()}
    medians = {rid: m for rid, m in medians.items() if m is not None}
    if len(medians) > 1:
        mid = statistics.median(medians.values())
        off = [m for m in medians.values() if abs(m / mid - 1) > tracks.SPEED_TOLERANCE]
        if off:
            shown = ", ".join(f"{rid.split('/')[-1]} {m:.0f}" for rid, m in sorted(medians.items()))
            out.append(f"sitting {sid}: the records' machine probes ({shown} GFLOP/s) differ by "
                       f"more than {tracks.SPEED_TOLERANCE:.0%} from their median {mid:.0f}: "
                       f"not one machine at one speed")
    return out


def probe(records: list[dict]) -> float | None:
    """The median machine probe over every seed of the records: one probe disturbed by a
    passing process (it happens: one seed reading 108 GFLOP/s among 192-206) moves it little."""
    probes = [float(r["machine_gflops"]) for rec in records for r in rec.get("runs") or []
              if isinstance(r, dict) and r.get("machine_gflops") is not None]
    return statistics.median(probes) if probes else None


def on_reference_machine(track: str, hardware: str, median_probe: float | None) -> bool | None:
    """Whether a sitting ran on the section's reference machine (its median probe within the
    tolerance of the declared speed); None where the class declares no reference machine."""
    speed = tracks.reference_speed(track, hardware)
    if speed is None:
        return None
    return median_probe is not None and abs(median_probe / speed - 1) <= tracks.SPEED_TOLERANCE
