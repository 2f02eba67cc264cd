"""What a run shows while it trains: a progress bar on a terminal, plain lines otherwise; every
line also goes to the seed's log."""

from __future__ import annotations

import sys


class Console:
    """Progress bar on a terminal; plain lines otherwise. Every log line also goes to the log."""

    def __init__(self, total: int, quiet: bool, label: str):
        from tqdm import tqdm

        self.lines: list[str] = []
        self.quiet = quiet
        interactive = sys.stderr.isatty() and not quiet
        self.bar = tqdm(total=total, desc=label, unit="step", dynamic_ncols=True,
                        disable=not interactive, leave=True)
        self.plain = not interactive and not quiet

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self.bar.disable:
            if self.plain or "val_loss" in line:
                print(line, flush=True)
        elif "val_loss" in line or not line.startswith("step:"):
            self.bar.write(line)

    def progress(self, step: int, info: dict) -> None:
        if "compiled" in info:  # the rate counts train steps, not the compile wait
            self.bar.reset(total=self.bar.total)
            return
        self.bar.n = step
        shown = {k: f"{v:.3f}" if k in ("loss", "val") else f"{v:.0f}" for k, v in info.items()}
        self.bar.set_postfix(shown, refresh=True)

    def close(self) -> None:
        self.bar.close()
