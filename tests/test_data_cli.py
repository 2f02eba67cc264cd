import json
import socket

import huggingface_hub
import huggingface_hub.constants
import pytest

from speedrun.cli import main
from speedrun.data import EOT
from speedrun.data.shards import write_shard


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(tmp_path / "default"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))


def test_check_reports_each_file_and_fails_on_a_bad_one(tmp_path, capsys):
    good = write_shard(tmp_path / "s" / "good.bin", [EOT, 5, 6, EOT, 7])
    assert main(["data", "check", str(good)]) == 0
    assert "5 tokens, 2 documents" in capsys.readouterr().out
    (tmp_path / "s" / "bad.bin").write_bytes(b"\0" * 10)
    assert main(["data", "check", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any("bad.bin: truncated header" in line for line in out)
    assert any("good.bin: 5 tokens" in line for line in out)  # the rest is still checked
    assert main(["data", "check", str(tmp_path / "missing.bin")]) == 1


def test_wiki_command(tmp_path, capsys):
    args = ["data", "wiki", "--data-dir", str(tmp_path / "d")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("wiki: train ") and str(tmp_path / "d" / "wiki") in out
    assert main(args) == 0
    assert "(already built)" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "d" / "wiki")]) == 0


def test_text_files_command(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"document {i}"}) for i in range(50)))
    assert main(["data", "wiki", "--text-files", str(src), "--name", "mine",
                 "--val-fraction", "0.2"]) == 0
    assert str(tmp_path / "default" / "mine") in capsys.readouterr().out
    assert (tmp_path / "default" / "mine" / "mine_val_000000.bin").is_file()


@pytest.mark.parametrize("argv, message", [
    (["data", "wiki", "--name", "x"], "--text-files"),
    (["data", "wiki", "--text-files", "/nonexistent/x.txt"], "no such file"),
    (["data", "wiki", "--val-fraction", "0"], "between 0 and 1"),
    (["data", "fineweb10b", "--train-shards", "0"], "between 1 and 103"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_fineweb_offline(monkeypatch, capsys):
    def unreachable(address, timeout=None):
        raise OSError(101, "Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert main(["data", "fineweb10b", "--train-shards", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and err.count("\n") == 1
