"""Tracks: the pinned rules and the calibration numbers in tracks.py match what the embedded data
builds to, and `tracks` prints them."""

from __future__ import annotations

import pytest

from speedrun import cli, tracks
from speedrun.data import corpus, fingerprint, loader, paths


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    for name in ("wiki-bytes", "wiki"):
        corpus.ensure_dataset(tracks.get(name).dataset, data_dir)
    return data_dir


@pytest.mark.parametrize("name", ["wiki-bytes", "wiki"])
def test_rules_match_a_fresh_build(built, name):
    track = tracks.get(name)
    folder = built / track.dataset
    train = paths.split_files(folder, track.dataset, "train")
    val_files = paths.split_files(folder, track.dataset, "val")
    cfg = track.config
    for seq_len in (cfg.model.seq_len, 1024):  # the fingerprint does not depend on batching
        val = loader.val_batches(val_files, cfg.train.val_tokens, 16, seq_len)
        data = fingerprint.describe(folder, track.dataset, train, val)
        assert track.rules.problems(cfg, data) == []
    assert data["train_sha256"] == track.rules.train_sha256
    # fewer validation tokens break the rule, and say which
    val = loader.val_batches(val_files, 4096, 16, cfg.model.seq_len)
    data = fingerprint.describe(folder, track.dataset, train, val)
    problems = track.rules.problems(cfg, data)
    assert any("rule 'val tokens'" in p for p in problems)
    assert any("rule 'val fingerprint'" in p for p in problems)


def test_calibration_numbers_are_what_tracks_prints(built, capsys):
    assert tracks.DEFAULT == "wiki-bytes"
    assert cli.main(["tracks", "--data-dir", str(built)]) == 0
    out = capsys.readouterr().out
    for name, pinned in tracks.REFERENCES.items():
        track = tracks.get(name)
        measured = corpus.reference_losses(built / track.dataset, track.rules.val_tokens)
        assert {k: round(measured[k], 3) for k in pinned} == pinned, name
        assert " / ".join(f"{pinned[k]:.3f}" for k in ("unigram", "bigram", "trigram")) in out
    # criterion 1 of a CPU track: the default's target is below its own bigram reference
    default = tracks.get(tracks.DEFAULT)
    assert default.target < tracks.REFERENCES[default.name]["bigram"]
