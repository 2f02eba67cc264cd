"""Where each configuration stands: one entry per configuration, its claim pooled over every
verified seed of it, its time from the fitted scale (timescale.py).

A configuration (``config.identity_hash``: the run's settings, less how it was laid out on the
machine) may have several records: a claim, its re-runs beside later candidates, a later claim
of the same settings on another machine. They are measurements of one thing, so they make one
entry. Its **claim** pools the seeds: one final loss per distinct seed (the mean where several
records ran that seed, since a seed fixes initialisation and data order, so a second run of it
is the same sample, not a new one), tested as a record's seeds are (stats.summarize). Its
**time** is its estimate on the section's reference scale with a 95% interval, fitted from the
sittings that timed it; the fit reads every record of the sittings that timed a claimed
configuration (a sitting that timed no claim cannot move a ranked estimate; left out, its
noise would only widen everyone's). An entry is ranked when it is a claim and the scale places
it; otherwise it is listed with the reason.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from speedrun import tracks
from speedrun.config import RunConfig, identity_hash
from speedrun.records import sittings, timescale
from speedrun.records.record import summary


@dataclass(frozen=True)
class Entry:
    """One configuration of one section (track, hardware class)."""

    section: tuple
    identity: str
    records: tuple  # record ids, oldest first
    runs: tuple  # one pooled run per distinct seed (the mean where records share a seed)
    summary: dict  # record.summary over ``runs``: claim, p, reasons, means
    time: tuple | None  # (estimate, low, high) seconds on the scale, 95%; None: not placed
    sittings: tuple  # the sittings that timed it
    note: str  # why it is not ranked ("" when it is)

    @property
    def ranked(self) -> bool:
        return not self.note


def identity(rec: dict) -> str:
    return identity_hash(RunConfig.from_dict(rec["config"]))


def _oldest_first(rids, records) -> list[str]:
    return sorted(rids, key=lambda r: (str(records[r]["environment"].get("date")), r))


def pooled_runs(recs: list[dict], target: float) -> list[dict]:
    """One run per distinct seed over several records of one configuration: the mean of each
    number where records ran the same seed (their losses agree to float noise)."""
    by_seed: dict[int, list[dict]] = {}
    for rec in recs:
        for run in rec["runs"]:
            by_seed.setdefault(int(run["seed"]), []).append(run)
    out = []
    for seed, runs in sorted(by_seed.items()):
        mean = {k: statistics.fmean(float(r[k]) for r in runs)
                for k in ("train_time_s", "final_val_loss")}
        probes = [float(r["machine_gflops"]) for r in runs if r.get("machine_gflops") is not None]
        crossed = [r["first_reached"] for r in runs if r.get("first_reached")]
        out.append({"seed": seed, "steps": runs[0]["steps"], "tokens": runs[0]["tokens"],
                    "reached": mean["final_val_loss"] <= target, **mean,
                    "first_reached": crossed[0] if crossed else None,
                    "machine_gflops": statistics.fmean(probes) if probes else None})
    return out


def _observations(section, recs: dict[str, dict], timed_sittings: set,
                  reference: dict) -> list:
    out = []
    for rec in recs.values():
        sid = sittings.of(rec)[0]
        if sid in timed_sittings:
            out += [timescale.Observation(section, identity(rec), sid, bool(reference.get(sid)),
                                          float(run["train_time_s"])) for run in rec["runs"]]
    return out


def standings(records: dict[str, dict]) -> tuple[dict, dict]:
    """({section: [Entry, ...] ranked first by time, then the rest}, {section: Section fit})
    from verified records by id. Records marked ``untimed`` (their times are not one seed's
    uninterrupted wall clock) feed neither the scale nor a claim."""
    timed = {rid: rec for rid, rec in records.items() if not rec.get("untimed")}
    sections: dict[tuple, dict[str, list[str]]] = {}
    for rid, rec in timed.items():
        key = (rec["track"], rec["hardware_class"])
        sections.setdefault(key, {}).setdefault(identity(rec), []).append(rid)
    claims, observations = {}, []
    for key, configs in sections.items():
        for ident, rids in configs.items():
            recs = [timed[r] for r in rids]
            runs = pooled_runs(recs, float(recs[0]["target"]))
            claims[(key, ident)] = (runs, summary(runs, float(recs[0]["target"]), recs[0]["data"]))
        members = {rid: timed[rid] for rids in configs.values() for rid in rids}
        by_sitting: dict[str, list[dict]] = {}
        for rec in members.values():
            by_sitting.setdefault(sittings.of(rec)[0], []).append(rec)
        reference = {sid: sittings.on_reference_machine(*key, sittings.probe(recs))
                     for sid, recs in by_sitting.items()}
        claimed = {sittings.of(members[rid])[0] for ident, rids in configs.items()
                   if claims[(key, ident)][1]["claim"] for rid in rids}
        observations += _observations(key, members, claimed, reference)
    fits = timescale.fit(observations)
    out: dict[tuple, list[Entry]] = {}
    for key, configs in sections.items():
        fit = fits.get(key)
        entries = []
        for ident, rids in configs.items():
            runs, summ = claims[(key, ident)]
            placed = fit.time(ident) if fit is not None else None
            rids = _oldest_first(rids, timed)
            entries.append(Entry(key, ident, tuple(rids), tuple(runs), summ, placed,
                                 tuple(sorted({sittings.of(timed[r])[0] for r in rids})),
                                 _note(key, summ, placed, fit, ident)))
        entries.sort(key=lambda e: (not e.ranked, e.time[0] if e.time else float("inf"),
                                    e.records[0]))
        out[key] = entries
    return out, fits


def _note(section, summ: dict, placed, fit, ident: str) -> str:
    if not summ["claim"]:
        return "not a claim (" + "; ".join(summ["reasons"]) + ")"
    if tracks.reference_speed(*section) is None:
        return (f"a claim, not ranked: {section[1]} has no reference machine declared for "
                f"{section[0]} (speedrun/tracks.py, REFERENCE_SPEEDS), so it has no time scale")
    if placed is None:
        return ("a claim, not ranked: none of the sittings that timed it ran on the reference "
                "machine, nor timed a configuration that one did (time it beside the #1 with "
                "`python -m speedrun submit`, and commit both records it writes)")
    return ""
