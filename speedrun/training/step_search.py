"""The search `find-steps` makes: the fewest steps at which a configuration's seeds pass.

It assumes that more steps never hurt (final loss falls with the run's length): it brackets the
answer by doubling or halving from the start, then bisects to a multiple of ``multiple`` steps,
with at most ``max_probes`` probes. A probe *passes* when its seeds make the claim (final val
losses below the target with p < 0.01, at least 3 seeds); with fewer seeds, when every seed's
final loss is below the target (a weaker test).
"""

from __future__ import annotations

from typing import Callable

from speedrun.errors import SpeedrunError
from speedrun.records import stats
from speedrun.records.record import run_dict


def search(passes: Callable[[int], bool], start: int, multiple: int, max_probes: int,
           log: Callable[[str], None] = print) -> tuple[int | None, dict[int, bool]]:
    """(fewest passing step count found, {steps: passed}) for a monotone ``passes``.

    Step counts are multiples of ``multiple`` (at least ``multiple``). Returns None when no
    probe passed within ``max_probes``."""
    if multiple < 1 or max_probes < 1 or start < 1:
        raise SpeedrunError("find-steps needs --start, --multiple and --max-probes >= 1")
    snap = lambda s: max(multiple, int(round(s / multiple)) * multiple)  # noqa: E731
    seen: dict[int, bool] = {}

    def probe(s: int) -> bool:
        if s not in seen:
            if len(seen) >= max_probes:
                raise _OutOfProbes
            seen[s] = passes(s)
        return seen[s]

    try:
        s = snap(start)
        if probe(s):  # bracket downwards
            hi, lo = s, 0
            while lo == 0 and hi > multiple:
                s = snap(hi / 2) if snap(hi / 2) < hi else hi - multiple
                if probe(s):
                    hi = s
                else:
                    lo = s
        else:  # bracket upwards
            lo, hi = s, None
            while hi is None:
                s = snap(lo * 2)
                if probe(s):
                    hi = s
                else:
                    lo = s
        while hi - lo > multiple:  # bisect (lo fails or is 0, hi passes)
            s = snap((lo + hi) / 2)
            if s in (lo, hi):
                s = lo + multiple
            if probe(s):
                hi = s
            else:
                lo = s
    except _OutOfProbes:
        log(f"stopped after {max_probes} probes (--max-probes)")
    passing = [s for s, ok in seen.items() if ok]
    return (min(passing) if passing else None), seen


class _OutOfProbes(Exception):
    pass


def probe_passes(results: list, target: float) -> tuple[bool, str]:
    """Whether one probe's seeds pass, and a line saying why."""
    s = stats.summarize([run_dict(r) for r in results], target)
    losses = ", ".join(f"{r.final_val_loss:.4f}" for r in results)
    if len(results) >= stats.CLAIM_SEEDS:
        ok = s["claim"]
        why = f"p = {s['p_value']:.2g}" if s["p_value"] is not None else "p n/a"
    else:
        ok = all(r.final_val_loss <= target for r in results)
        why = "every seed below the target" if ok else "not every seed below the target"
    return ok, (f"final val loss {losses} (mean {s['mean_val_loss']:.4f}), {why}, "
                f"{s['mean_time_s']:.1f}s mean train time")
