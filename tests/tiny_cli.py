"""`python -m speedrun` with the tests' tracks (tiny, unit) registered: what the processes of a
test's `launch --module tiny_cli` run (with tests/ on PYTHONPATH)."""

from __future__ import annotations

from helpers import TINY, UNIT
from speedrun import cli, tracks

if __name__ == "__main__":
    tracks.TRACKS.update(tiny=TINY, unit=UNIT)
    raise SystemExit(cli.main())
