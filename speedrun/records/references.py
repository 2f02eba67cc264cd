"""Same-sitting references: how a claim made on any machine ranks on its track's one time scale.

Machines of one hardware class differ ~3x in speed, and a machine-speed probe predicts a run's
time only roughly (docs/records.md has the measurements). So a claim is timed against a
*reference*: the configuration of a ranked record, re-run on the same machine in the same sitting
(interleaved with it, A B A B, by `submit`). The candidate's record then says

    reference:
      record: wiki-bytes/2026-11-26_muon-rotary    # the ranked record whose configuration was re-run
      rerun: wiki-bytes/2026-11-27_muon-rotary-2   # that re-run, beside the candidate
      time_ratio: 0.9213                           # mean train time, candidate / re-run
      ci95: [0.861, 0.982]                         # its 95% confidence interval (null: one seed)

and the re-run's record says ``rerun_of: wiki-bytes/2026-11-26_muon-rotary``: it is a time
reference, never a leaderboard entry of its own. Paths are relative to the records folder.

Each (track, hardware class) ranks on the time scale of its reference machine (``tracks``). A
claim with a reference ranks at ``time_ratio x`` the reference record's ranked time (chains
resolve: C against B against A), shown as scaled; a claim without one ranks at its own time when
its machine probe is within ``tracks.SPEED_TOLERANCE`` of the reference machine's, and is listed,
not ranked, when it is not.
"""

from __future__ import annotations

import datetime
import statistics
from dataclasses import dataclass
from pathlib import Path

from speedrun import tracks
from speedrun.config import RunConfig, config_hash
from speedrun.errors import SpeedrunError
from speedrun.records import stats
from speedrun.records.record import load_record

SAME_SITTING_HOURS = 3.0  # a candidate and its re-run must start this close, on one host


def record_id(folder: Path) -> str:
    """A record's name relative to the records folder: '<track>/<folder name>'."""
    folder = Path(folder)
    return f"{folder.parent.name}/{folder.name}"


def root_of(folder: Path) -> Path:
    return Path(folder).parent.parent


def time_ratio(candidate_runs: list[dict], rerun_runs: list[dict]) -> tuple[float, list | None]:
    """Mean train time of the candidate over the re-run's, rounded as records store it, with
    its 95% confidence interval (None with fewer than two seeds on either side)."""
    a = [float(r["train_time_s"]) for r in candidate_runs]
    b = [float(r["train_time_s"]) for r in rerun_runs]
    ratio = round(statistics.fmean(a) / statistics.fmean(b), 4)
    if len(a) < 2 or len(b) < 2:
        return ratio, None
    _, lo, hi = stats.time_ratio(a, b)
    return ratio, [round(lo, 4), round(hi, 4)]


def link(candidate: dict, reference_id: str, rerun_id: str, rerun: dict) -> dict:
    """The ``reference`` section a candidate's record stores."""
    ratio, ci = time_ratio(candidate["runs"], rerun["runs"])
    return {"record": reference_id, "rerun": rerun_id, "time_ratio": ratio, "ci95": ci}


def _when(rec: dict) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str((rec.get("environment") or {}).get("date")))
    except ValueError:
        return None


def _load(root: Path, rid, what: str) -> tuple[dict | None, str | None]:
    if not isinstance(rid, str) or rid.count("/") != 1:
        return None, f"{what} {rid!r} is not '<track>/<record folder>'"
    try:
        return load_record(root / rid), None
    except SpeedrunError:
        return None, f"{what} {rid} does not exist (no {rid}/record.yaml beside this record's track)"


def _same_config(a: dict, b: dict) -> bool:
    try:
        return config_hash(RunConfig.from_dict(a["config"])) == config_hash(
            RunConfig.from_dict(b["config"]))
    except (SpeedrunError, KeyError, TypeError):
        return False


def problems(rec: dict, folder: Path) -> list[str]:
    """Every broken link of a record's ``rerun_of`` and ``reference`` (empty for a record
    without them): a reference that is missing, on another track or hardware class, not a
    claim, or a cycle; a re-run of another configuration; a ratio that is not the runs'."""
    root, out = root_of(folder), []
    target_id = rec.get("rerun_of")
    if target_id is not None:
        target, err = _load(root, target_id, "rerun_of")
        if err:
            out.append(err)
        else:
            out += _pair_problems(rec, target, target_id, "rerun_of")
            if not _same_config(rec, target):
                out.append(f"rerun_of {target_id}: this record's configuration is not that "
                           f"record's (a re-run repeats it exactly)")
    ref = rec.get("reference")
    if ref is None:
        return out
    if not isinstance(ref, dict) or not {"record", "rerun", "time_ratio", "ci95"} <= set(ref):
        return out + ["reference must hold record, rerun, time_ratio and ci95"]
    if target_id is not None:
        out.append("a record is a re-run (rerun_of) or a candidate with a reference, not both")
    reference, err = _load(root, ref["record"], "reference")
    if err:
        return out + [err]
    out += _pair_problems(rec, reference, ref["record"], "reference")
    rerun, err = _load(root, ref["rerun"], "reference re-run")
    if err:
        return out + [err]
    if rerun.get("rerun_of") != ref["record"]:
        out.append(f"reference re-run {ref['rerun']} is not marked as a re-run of "
                   f"{ref['record']} (its rerun_of is {rerun.get('rerun_of')!r})")
    if (rec.get("environment") or {}).get("host") != (rerun.get("environment") or {}).get("host") \
            or rec.get("hardware_class") != rerun.get("hardware_class"):
        out.append(f"reference re-run {ref['rerun']} ran on another machine: a time ratio only "
                   f"holds between runs on the same one")
    a, b = _when(rec), _when(rerun)
    if a is None or b is None or abs((a - b).total_seconds()) > SAME_SITTING_HOURS * 3600:
        out.append(f"reference re-run {ref['rerun']} was not made in the same sitting (started "
                   f"{b} against {a}; at most {SAME_SITTING_HOURS:g} hours apart)")
    ratio, ci = time_ratio(rec["runs"], rerun["runs"])
    if ref["time_ratio"] != ratio or ref["ci95"] != ci:
        out.append(f"reference time_ratio {ref['time_ratio']} (ci95 {ref['ci95']}) is not the "
                   f"runs' {ratio} (ci95 {ci})")
    cycle = _cycle(root, record_id(folder), rec)
    if cycle:
        out.append("references run in a circle: " + " -> ".join(cycle))
    return out


def _pair_problems(rec: dict, other: dict, other_id: str, what: str) -> list[str]:
    out = []
    if other.get("track") != rec.get("track"):
        out.append(f"{what} {other_id} is on another track ({other.get('track')})")
    if other.get("hardware_class") != rec.get("hardware_class"):
        out.append(f"{what} {other_id} is of another hardware class "
                   f"({other.get('hardware_class')}, this record {rec.get('hardware_class')})")
    if not (other.get("summary") or {}).get("claim"):
        out.append(f"{what} {other_id} is not a claim: only a ranked claim can be a reference")
    if other.get("rerun_of") is not None:
        out.append(f"{what} {other_id} is itself a re-run: name the record it re-runs instead")
    return out


def _cycle(root: Path, start: str, rec: dict) -> list[str]:
    """The chain of references from ``start`` when it comes back to a record it passed."""
    chain, current = [start], rec
    while isinstance(current.get("reference"), dict):
        nxt = current["reference"].get("record")
        if nxt in chain:
            return chain + [nxt]
        chain.append(nxt)
        try:
            current = load_record(root / nxt)
        except SpeedrunError:
            return []
    return []


# --- ranking on one time scale --------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where a verified claim stands: ranked at ``time`` (its own, or scaled through its
    reference chain), or not ranked, with the reason."""

    time: float | None
    scaled: bool
    note: str  # why not ranked, or how the time was scaled


def within_tolerance(track: str, hardware: str, probe: float | None) -> bool | None:
    """Whether a machine probe is within the tolerance of the track's reference machine for
    this hardware class (None: the class has no declared reference machine)."""
    speed = tracks.reference_speed(track, hardware)
    if speed is None:
        return None
    return probe is not None and abs(probe / speed - 1) <= tracks.SPEED_TOLERANCE


def standings(records: dict[str, dict]) -> dict[str, Standing]:
    """{record id: Standing} for verified claims, ``records`` by id (verified claims only;
    re-runs among them get no standing: they are references)."""
    out: dict[str, Standing] = {}

    def stand(rid: str, seen: tuple) -> Standing:
        if rid in out:
            return out[rid]
        rec = records.get(rid)
        if rec is None:
            return Standing(None, False, f"its reference {rid} is not a verified claim")
        if rid in seen:
            return Standing(None, False, "its references run in a circle")
        ref = rec.get("reference")
        own = float(rec["summary"]["mean_time_s"])
        if isinstance(ref, dict):
            base = stand(ref["record"], seen + (rid,))
            if base.time is None:
                result = Standing(None, False, f"not ranked: {base.note}")
            else:
                result = Standing(round(ref["time_ratio"] * base.time, 4), True,
                                  f"{ref['time_ratio']:.3f}x {ref['record'].split('/')[-1]}")
        else:
            ok = within_tolerance(rec["track"], rec["hardware_class"],
                                  rec["summary"].get("mean_machine_gflops"))
            if ok is False:
                speed = tracks.reference_speed(rec["track"], rec["hardware_class"])
                result = Standing(None, False, (
                    f"another machine (probe {rec['summary'].get('mean_machine_gflops')} GFLOP/s, "
                    f"the reference machine's {speed:g} ± {tracks.SPEED_TOLERANCE:.0%}): re-time "
                    f"it against the current #1 with `python -m speedrun submit`"))
            else:
                result = Standing(own, False, "")
        out[rid] = result
        return result

    for rid, rec in records.items():
        if rec.get("rerun_of") is None:
            stand(rid, ())
    return out
