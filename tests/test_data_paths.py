from pathlib import Path

from speedrun.data import paths


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.data_dir(str(tmp_path / "cli")) == tmp_path / "cli"
    assert paths.data_dir() == tmp_path / "env"
    monkeypatch.delenv("SPEEDRUN_DATA_DIR")
    assert paths.data_dir() == tmp_path / "xdg" / "speedrun"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.data_dir() == Path.home() / ".cache" / "speedrun"


def test_shard_names_and_split_files(tmp_path):
    assert paths.shard_name("wiki", "train", 0) == "wiki_train_000000.bin"
    assert paths.shard_name("fineweb10b", "train", 1) == "fineweb_train_000001.bin"
    for name in ["wiki_train_000001.bin", "wiki_train_000000.bin", "wiki_val_000000.bin",
                 "wiki_train_1.bin", "wikix_train_000000.bin", "wiki_train_000002.bin.tmp"]:
        (tmp_path / name).write_bytes(b"")
    got = [p.name for p in paths.split_files(tmp_path, "wiki", "train")]
    assert got == ["wiki_train_000000.bin", "wiki_train_000001.bin"]
    assert paths.split_files(tmp_path / "missing", "wiki", "train") == []
