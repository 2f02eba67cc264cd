"""The records in the repository verify with the code beside them, and leaderboard.md is what they
generate: a change to the config, the hashes or the claim rules that would orphan a committed
record fails here rather than on the leaderboard."""

from __future__ import annotations

from pathlib import Path

import pytest

from speedrun import cli
from speedrun.records import record, verify

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "records").glob("*/*/record.yaml"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_committed_record_verifies(path):
    assert verify.verify(path.parent) == []


def test_leaderboard_is_up_to_date(capsys):
    assert COMMITTED, "the repository holds no records"
    rc = cli.main(["leaderboard", "--records-dir", str(ROOT / "records"),
                   "--output", str(ROOT / "leaderboard.md"), "--check"])
    assert rc == 0, capsys.readouterr().out
