"""Preflight checks and failures: every setting, path and shard is checked before the clock
starts; nothing of a finished run is lost when its record cannot be written (the fallback file
and `recover`); every expected failure is one line of error. Also the manifest check by name
and the settings validation."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest

from helpers import (ENV, TINY_DATASET, UNIT, UNIT_DATA, config, one_line_error, record_dirs,
                     result, run_cli, tiny_model, write)
from speedrun import cli
from speedrun.commands import verify as verify_command
from speedrun.data import corpus, paths, shards
from speedrun.inference import checkpoint
from speedrun.records import record, verify
from speedrun.training import saving

QUICK = ("--steps", "3", "--set", "train.eval_every=3")


# --- 1. the records folder is checked before training; a failed write loses nothing ----------


def test_unwritable_records_folder_fails_before_training(tiny, capsys, no_training):
    """Every command that writes records; the fix names --no-record only where it exists."""
    blocker = tiny / "not-a-folder"
    blocker.write_text("")
    for command, skippable in ((["run"], True), (["compare"], True), (["sweep", "--sweep",
                               "optim.lr=0.1,0.2"], False), (["submit"], False),
                               (["find-steps", "--record"], False)):
        assert cli.main([*command, "--track", "tiny", "--records-dir", str(blocker / "records"),
                         "--quiet" if command[0] != "find-steps" else "--seeds=1"]) == 1
        err = one_line_error(capsys, "records folder", "--records-dir DIR (a writable folder)")
        assert ("or --no-record" in err) == skippable, (command, err)


def test_read_only_records_parent_fails_before_training(tiny, capsys, no_training, monkeypatch):
    """A read-only parent (simulated: root, as CI runs, may write anywhere)."""
    parent = tiny / "ro"
    parent.mkdir()
    real = paths.tempfile.mkstemp

    def denied(*a, dir=None, **k):
        if dir is not None and os.path.samefile(dir, parent):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(paths.tempfile, "mkstemp", denied)
    assert cli.main(["run", "--track", "tiny", "--records-dir", str(parent / "records"),
                     "--quiet"]) == 1
    one_line_error(capsys, "not writable", "Permission denied")


@pytest.mark.slow
def test_failed_record_write_goes_to_a_fallback_file_that_recover_turns_into_the_record(
        tiny, capsys, monkeypatch):
    real = record.write_record

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", str(tiny / "records"))

    monkeypatch.setattr(saving, "write_record", disk_full)
    monkeypatch.chdir(tiny)
    assert run_cli(tiny, *QUICK, "--seeds", "2", "--name", "saved") == 1
    err = one_line_error(capsys, "No space left on device", "results are safe in",
                         "python -m speedrun recover")
    fallback = re.search(r"safe in (\S+):", err).group(1)
    assert os.path.isfile(fallback) and record_dirs(tiny) == []
    monkeypatch.setattr(saving, "write_record", real)
    old = os.umask(0o022)
    try:
        assert cli.main(["recover", fallback, "--records-dir", str(tiny / "records")]) == 0
    finally:
        os.umask(old)
    (folder,) = record_dirs(tiny)
    assert folder.name.endswith("_saved") and verify.verify(folder) == []
    rec = record.load_record(folder)
    assert [r["seed"] for r in rec["runs"]] == [0, 1] and rec["config"]["train"]["steps"] == 3
    # record folders are shared like the committed ones, not private.
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "record.yaml").stat().st_mode) == 0o644


def test_new_record_folders_are_0755(tmp_path):
    old = os.umask(0o022)
    try:
        folder = write(tmp_path, [result(0, 2.99)])
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o644}


# --- 2. corrupt shards: reported by name, never rebuilt or trusted silently --------------------


@pytest.fixture(scope="module")
def built_wiki(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
        yield corpus.build_wiki(tmp_path_factory.mktemp("data")).directory


@pytest.fixture
def wiki_copy(built_wiki, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(built_wiki.parent.parent / "tiktoken"))
    shutil.copytree(built_wiki, tmp_path / "data" / "wiki")
    return tmp_path / "data" / "wiki"


def flip_magic(f):
    b = bytearray(f.read_bytes())
    b[0] ^= 0xFF
    f.write_bytes(bytes(b))


def cut_1000_bytes(f):
    f.write_bytes(f.read_bytes()[:-1000])


def set_token_65535(f):
    b = bytearray(f.read_bytes())
    b[shards.HEADER_BYTES + 200:shards.HEADER_BYTES + 202] = b"\xff\xff"
    f.write_bytes(bytes(b))


@pytest.mark.parametrize("shard, damage", [
    ("wiki_train_000000.bin", flip_magic),
    ("wiki_val_000000.bin", cut_1000_bytes),
    ("wiki_val_000000.bin", set_token_65535),
])
@pytest.mark.slow
def test_corrupt_shard_is_reported_by_name_then_rebuilt(wiki_copy, shard, damage, capsys):
    damage(wiki_copy / shard)
    report = corpus.ensure_dataset("wiki", wiki_copy.parent)  # what `run` calls
    err = capsys.readouterr().err
    assert f"rebuilding because {shard}'s checksum did not match its manifest" in err
    assert f"rebuilt wiki because {shard}'s checksum" in err
    assert report == wiki_copy
    assert corpus.existing_build(wiki_copy, "wiki", {"dataset": "wiki"}) is not None


def test_data_wiki_says_rebuilt_not_already_built(wiki_copy, capsys):
    set_token_65535(wiki_copy / "wiki_val_000000.bin")
    assert cli.main(["data", "wiki", "--data-dir", str(wiki_copy.parent)]) == 0
    out = capsys.readouterr().out
    assert "already built" not in out
    assert "(rebuilt wiki because wiki_val_000000.bin's checksum did not match" in out


def test_old_manifest_without_file_checksums_falls_back_to_split_sha256(wiki_copy, capsys):
    manifest = json.loads((wiki_copy / "manifest.json").read_text())
    for entry in manifest["splits"].values():
        del entry["file_sha256"]
    (wiki_copy / "manifest.json").write_text(json.dumps(manifest))
    assert corpus.build_wiki(wiki_copy.parent).skipped  # intact: reused
    f = wiki_copy / "wiki_val_000000.bin"
    tokens = np.array(shards.read_shard(f))
    i = int(np.flatnonzero(tokens != 50256)[5])
    tokens[i] = 11 if tokens[i] != 11 else 12  # same counts, different tokens
    shards.write_shard(f, tokens)
    again = corpus.build_wiki(wiki_copy.parent)
    assert not again.skipped
    assert "its val shards' checksum (wiki_val_000000.bin) did not match" in capsys.readouterr().err


def test_data_check_flags_tokens_outside_the_vocabulary(wiki_copy, capsys):
    f = wiki_copy / "wiki_val_000000.bin"
    set_token_65535(f)
    assert cli.main(["data", "check", str(f)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "token 65535 at position 100 is outside the vocabulary" in out


def test_data_check_flags_a_checksum_mismatch(wiki_copy, capsys):
    f = wiki_copy / "wiki_val_000000.bin"
    tokens = np.array(shards.read_shard(f))
    tokens[10], tokens[11] = tokens[11], tokens[10]
    shards.write_shard(f, tokens)
    assert cli.main(["data", "check", str(wiki_copy)]) == 1
    out = capsys.readouterr().out
    assert "wiki_val_000000.bin: checksum does not match manifest.json" in out
    assert re.search(r"ok +\S+wiki_train_000000.bin", out)


def test_run_checks_the_val_tokens_range_before_training(tiny, capsys, no_training):
    set_token_65535(tiny / "data" / TINY_DATASET / "tiny_val_000000.bin")
    assert run_cli(tiny) == 1
    one_line_error(capsys, "token id 65535", "outside the vocabulary", "tiny_val_000000.bin")


# --- 3. settings are range-checked before anything is built or compiled --------------------


@pytest.mark.parametrize("setting, message", [
    ("model.d_model=65", "model.d_model=65 must be divisible by model.n_head=2"),
    ("train.eval_every=0", "train.eval_every must be a positive integer"),
    ("optim.lr=nan", "optim.lr must be a finite number above 0"),
])
def test_out_of_range_settings_fail_before_training(tiny, capsys, no_training, setting, message):
    assert run_cli(tiny, "--set", setting) == 1
    one_line_error(capsys, message)


def test_find_steps_and_compare_run_the_preflight(tiny, capsys, no_training):
    assert cli.main(["find-steps", "--track", "tiny", "--set", "optim.lr=-1"]) == 1
    one_line_error(capsys, "optim.lr")
    assert cli.main(["compare", "--track", "tiny", "--set-b", "train.steps=0",
                     "--records-dir", str(tiny / "records")]) == 1
    one_line_error(capsys, "train.steps")


# --- 4. file-system problems are one line --------------------------------------------------


def test_data_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, no_training):
    f = tmp_path / "data"
    f.write_text("")
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(f))
    assert cli.main(["run", "--records-dir", str(tmp_path / "records"), "--quiet"]) == 1
    one_line_error(capsys, "is not a folder", "--data-dir")
    assert cli.main(["data", "wiki"]) == 1
    one_line_error(capsys, "is not a folder", "--data-dir")


def test_unusable_home_without_a_data_dir_is_one_line(tmp_path, monkeypatch, capsys, no_training):
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # HOME inside a file: no cache folder can be made (as read-only HOME)
    monkeypatch.delenv("SPEEDRUN_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(blocker / "home"))
    assert cli.main(["run", "--records-dir", str(tmp_path / "records"), "--quiet"]) == 1
    one_line_error(capsys, "SPEEDRUN_DATA_DIR")


# --- one line, tracebacks only for bugs and with --debug ------------------------------------


def test_debug_shows_the_traceback_of_an_expected_error(tiny, capsys, no_training):
    assert run_cli(tiny, "--set", "train.eval_every=0", "--debug") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_a_real_bug_is_not_hidden(monkeypatch):
    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(verify_command, "main", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["verify", "x"])


def test_help_texts():
    parser = cli.build_parser()
    lb = parser._subparsers._group_actions[0].choices["leaderboard"]
    assert all(a.help for a in lb._actions if a.dest in ("records_dir", "output"))


# --- bad input that used to slip through ------------------------------------------------------


def test_empty_seeds_is_refused_before_anything_runs(tiny, capsys, no_training):
    assert run_cli(tiny, "--seeds", "", *QUICK) == 1
    one_line_error(capsys, "--seeds", "names no seed")


def test_recover_of_a_results_file_without_seeds_is_one_line(tmp_path, capsys):
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"speedrun_results": saving.FALLBACK_VERSION, "config": UNIT.config.to_dict(),
                                 "name": None, "date": "2026-11-24", "environment": ENV,
                                 "data": UNIT_DATA, "results": []}))
    assert cli.main(["recover", str(saved), "--records-dir", str(tmp_path / "records")]) == 1
    one_line_error(capsys, "holds no finished seed")


@pytest.mark.parametrize("setting, message", [
    ("muon.lr=-1", "muon.lr must be above 0, got -1.0"),
    ("muon.ns_steps=0", "muon.ns_steps must be at least 1, got 0"),
    ("muon.momentum=1.0", "muon.momentum must be in [0, 1), got 1.0"),
])
def test_a_tricks_settings_are_checked_against_its_limits(tiny, capsys, no_training, setting,
                                                          message):
    assert run_cli(tiny, "--tricks", "muon", "--set", setting, *QUICK) == 1
    one_line_error(capsys, "invalid setting", message)


def test_verify_refuses_a_record_whose_trick_settings_are_out_of_range(tmp_path):
    cfg = config(["muon"])
    bad = dataclasses.replace(cfg, tricks={"muon": {**cfg.tricks["muon"], "lr": -1.0}})
    folder = write(tmp_path, [result(0, 2.9)], cfg=bad)
    assert any("muon.lr must be above 0" in p for p in verify.verify(folder))


def test_a_vocabulary_cut_below_the_tokenizers_is_the_rule_not_corrupt_data(tiny, capsys,
                                                                           no_training):
    assert run_cli(tiny, "--set", "model.vocab_size=10", *QUICK) == 1
    err = one_line_error(capsys, "model.vocab_size 10 is smaller than", "rule 'vocabulary'")
    assert "corrupt" not in err


def test_verify_of_a_path_without_records_fails(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path)]) == 1
    one_line_error(capsys, "no records under")


def test_data_check_without_a_manifest_counts_byte_documents(tmp_path, capsys):
    docs = [b"first document", b"second one", b"third"]
    tokens = np.concatenate([[0, *d] for d in docs]).astype(np.uint16)
    shards.write_shard(tmp_path / "x_val_000000.bin", tokens)
    assert cli.main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 documents" in out and "read as bytes" in out


@pytest.mark.parametrize("names, message", [
    ("muon,muon", "lists muon more than once"),
    ("muon,,rotary", "has an empty entry"),
])
def test_repeated_or_empty_trick_names_are_errors(tiny, capsys, no_training, names, message):
    assert run_cli(tiny, "--tricks", names, *QUICK) == 1
    one_line_error(capsys, message)


@pytest.mark.slow
def test_an_empty_trick_list_is_the_baseline_and_the_run_line_says_so(tiny, capsys):
    assert run_cli(tiny, "--tricks", "", *QUICK, "--no-record") == 0
    assert "tricks: baseline" in capsys.readouterr().out


# --- the commands swept for bad paths, counts and names (docs/troubleshooting.md's tail) -------

BAD_INPUT = [  # (argv, what the one line says); {ck} a tiny checkpoint, {afile} a file
    (["find-steps", "--start", "0"], "--start, --multiple and --max-probes >= 1"),
    (["find-steps", "--multiple", "0"], "--start, --multiple and --max-probes >= 1"),
    (["run", "--name", "///"], "--name '///' has no letter or digit"),
    (["compare", "--name-b", "..."], "--name-b '...' has no letter or digit"),
    (["sweep", "--sweep", "optim.lr=0.1,0.2", "--name", "-"], "--name '-' has no letter"),
    (["sft", "{ck}", "--task", "addition", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["quantize", "{ck}", "--output", "{dir}"], "is a folder: name the file to write"),
    (["quantize", "{ck}", "--output", "{afile}/x.safetensors"], "--output folder {afile} cannot "
     "be used: {afile} is not a folder"),
    (["bench", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["bench", "--decode", "--batch", "1,0"], "--batch sizes must be at least 1, got 0"),
    (["bench", "--decode", "--prompt-len", "-1"], "--prompt-len and --new-tokens must be 0"),
    (["bench", "--profile", "{afile}/x"], "--profile folder"),
    (["tracks", "--data-dir", "{afile}"], "data dir {afile} is not a folder"),
    (["eval", "{ck}", "--data-dir", "{afile}"], "data dir {afile} is not a folder"),
    (["sample", "{ck}", "--prompt-file", "{ck}"], "is not UTF-8 text"),
    (["launch", "--processes", "2", "--module", "no_such_module", "--", "run"],
     "--module no_such_module: no such module here"),
    (["chat", "{ck}", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["chat", "{ck}", "--temperature", "-1"], "--temperature must be 0 (greedy) or more"),
    (["chat", "{ck}", "--top-k", "-1"], "--top-k must be 0 (all) or more, got -1"),
    (["eval", "{ck}", "--task", "addition", "--k", "2", "--temperature", "-1"],
     "--temperature must be 0"),
    (["sft", "{ck}", "--task", "addition", "--seed", "-3"], "--seed must be 0 or more, got -3"),
    (["run", "--seeds", "1,-2"], "--seeds must be 0 or more, got -2"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT, ids=lambda v: " ".join(v)[:40]
                         if isinstance(v, list) else None)
def test_bad_paths_counts_and_names_are_one_line_before_anything_runs(tiny, capsys, no_training,
                                                                      argv, message):
    ck = tiny / "model.safetensors"
    m = tiny_model("")
    checkpoint.save(ck, m.params, m.cfg, m.tokenizer, 0)
    (tiny / "afile").write_text("")
    (tiny / "dir").mkdir()
    where = {"ck": ck, "afile": tiny / "afile", "dir": tiny / "dir"}
    argv = [a.format(**where) for a in argv]
    if argv[0] in ("find-steps", "run", "compare", "sweep", "bench"):
        argv += ["--track", "tiny"] + (["--records-dir", str(tiny / "records")]
                                       if argv[0] != "bench" else [])
    before = sorted(tiny.rglob("*"))
    assert cli.main(argv) == 1
    one_line_error(capsys, message.format(**where))
    assert sorted(tiny.rglob("*")) == before  # nothing written
