"""Records written before sittings were logged (schema 2), accepted only exactly as committed.

Their logs do not state their sitting, host or wall-clock times, so nothing in them can vouch
for the ``sitting`` a migration derived (from the same-sitting links they carried). They stay
valid as the project's history, pinned by content hash in ``legacy.txt``; any other schema-2
record, or an edited copy of a pinned one, is refused: a new measurement is a new record.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PINS = Path(__file__).with_name("legacy.txt")


@lru_cache(maxsize=1)
def pinned() -> dict[str, str]:
    """{content hash: '<track>/<record folder>'} of the accepted schema-2 records."""
    out = {}
    for line in PINS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            digest, rid = line.split()
            out[digest] = rid
    return out


def accepted(rec: dict) -> bool:
    return rec.get("content_hash") in pinned()
