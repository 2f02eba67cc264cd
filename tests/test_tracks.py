"""Tracks: the pinned rules match what the embedded data builds to."""

from __future__ import annotations

from speedrun import tracks
from speedrun.data import corpus, fingerprint, loader, paths


def test_wiki_rules_match_a_fresh_build(tmp_path):
    track = tracks.WIKI
    folder = corpus.ensure_dataset(track.dataset, tmp_path)
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
