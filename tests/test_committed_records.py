"""The records in the repository verify with the code beside them, and leaderboard.md is what they
generate: a change to the config, the hashes or the claim rules that would orphan a committed
record fails here rather than on the leaderboard. Every tuned trick constant names a committed
record that ran it.

Only the committed records are read (the files git tracks under records/): a user's own runs,
which `python -m speedrun run` writes into records/ of their clone, must never fail the project's
tests."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

import tricks
from helpers import ROOT, tracked_files
from speedrun import cli
from speedrun.records import record, verify
from tricks import softcap

COMMITTED = [f.parent for f in tracked_files("records") if f.name == "record.yaml"]


@pytest.fixture(scope="module")
def committed_copy(tmp_path_factory) -> Path:
    """The committed records alone, copied as they are (records/<track>/<record>/...)."""
    root = tmp_path_factory.mktemp("committed")
    for f in tracked_files("records"):
        target = root / f.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return root / "records"


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_record_verifies(folder, committed_copy):
    assert verify.verify(committed_copy / folder.relative_to(ROOT / "records")) == []


# full suite only: it re-scores step 0 of every claiming record (~45 s on 2 cores), and CI runs
# `leaderboard --check` itself before the tests
@pytest.mark.slow
def test_leaderboard_is_up_to_date(committed_copy, capsys):
    assert COMMITTED, "the repository holds no records"
    rc = cli.main(["leaderboard", "--records-dir", str(committed_copy),
                   "--output", str(ROOT / "leaderboard.md"), "--check"])
    assert rc == 0, capsys.readouterr().out


def test_a_users_own_run_in_records_does_not_count(tmp_path):
    """What a newcomer's quick start leaves behind, an untracked record folder, is not read."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    committed, own = tmp_path / "records/t/committed", tmp_path / "records/t/own-run"
    for folder in (committed, own):
        folder.mkdir(parents=True)
        (folder / "record.yaml").write_text("x: 1\n")
    subprocess.run([*git, "add", "records/t/committed"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    assert tracked_files("records", root=tmp_path) == [committed / "record.yaml"]


def tuned_provenance(records_dir: Path) -> list[str]:
    """Every tuned constant whose record (the sweep point that chose it) is missing under
    ``records_dir``, fails verify, or did not run that value on that track."""
    out = []
    for trick in tricks.available().values():
        for track, values in trick.tuned.items():
            for key, tuned in values.items():
                where = f"{trick.name}.{key} tuned on {track} by {tuned.record}"
                problems = verify.verify(records_dir / tuned.record)
                if problems:
                    out.append(f"{where}: {problems[0]}")
                    continue
                rec = record.load_record(records_dir / tuned.record)
                ran = (rec.get("tricks") or {}).get(trick.name, {}).get(key)
                if rec["track"] != track or ran != tuned.value:
                    out.append(f"{where}: that record ran {trick.name}.{key}={ran} on "
                               f"{rec['track']}")
    return out


def test_every_tuned_constant_names_a_committed_record_that_ran_it(committed_copy, monkeypatch):
    assert tuned_provenance(committed_copy) == []
    ran = "wiki-bytes/2026-11-26_screen-softcap"  # a committed record at softcap.cap=15
    for value, wrong in ((15.0, []), (30.0, ["that record ran softcap.cap=15.0 on wiki-bytes"])):
        tuned = {"wiki-bytes": {"cap": tricks.Tuned(value, ran)}}
        monkeypatch.setattr(softcap, "TRICK", dataclasses.replace(softcap.TRICK, tuned=tuned))
        assert [p.split(": ", 1)[1] for p in tuned_provenance(committed_copy)] == wrong
    tuned = {"wiki-bytes": {"cap": tricks.Tuned(15.0, "wiki-bytes/2026-11-27_not-committed")}}
    monkeypatch.setattr(softcap, "TRICK", dataclasses.replace(softcap.TRICK, tuned=tuned))
    (problem,) = tuned_provenance(committed_copy)
    assert "no such record" in problem
