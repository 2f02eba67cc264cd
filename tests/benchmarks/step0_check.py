"""Re-score step 0 of every committed pretraining record, those accepted as committed included,
and print the largest |logged - re-scored| per record with the seconds it took: the measurement
behind speedrun/audit/step0.py's tolerance and cost.

    python tests/benchmarks/step0_check.py [records/]
"""

from __future__ import annotations

import sys
import time

import tricks as registry
from speedrun.audit.step0 import Checker
from speedrun.config import RunConfig
from speedrun.records.record import load_record
from speedrun.records.verify import find_records
from speedrun.training.environment import machine_gflops


def main(root: str = "records") -> int:
    print(f"machine: float32 matmul {machine_gflops()} GFLOP/s")
    checker = Checker(pinned_too=True)
    worst, seeds, start, failed = 0.0, 0, time.perf_counter(), 0
    for folder in find_records([root]):
        rec = load_record(folder)
        cfg = RunConfig.from_dict(rec["config"])
        if cfg.post is not None:
            continue
        t = time.perf_counter()
        cfg = registry.canonical(cfg)
        hooks = registry.build_hooks(cfg)
        found = checker.deviations(rec, cfg, hooks, checker.validation(cfg))
        here = max(d for d, _ in found)
        worst, seeds = max(worst, here), seeds + len(found)
        failed += any(p for _, p in found)
        print(f"{folder}: {len(found)} seed(s), max |Δ| {here:.2g}, "
              f"{time.perf_counter() - t:.1f} s")
    total = time.perf_counter() - start
    print(f"{seeds} seeds, largest |Δ| {worst:.2g}, {failed} record(s) over the tolerance, "
          f"{total:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
