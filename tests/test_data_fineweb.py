import socket
import time

import huggingface_hub
import huggingface_hub.constants
import pytest

from speedrun.data import EOT, fineweb
from speedrun.data.shards import shard_tokens, write_shard
from speedrun.errors import SpeedrunError


@pytest.fixture
def remote(tmp_path):
    """A folder standing in for the hub repo: val + 3 train shards with different sizes."""
    root = tmp_path / "remote"
    write_shard(root / "fineweb_val_000000.bin", [EOT, 1, 2, 3])
    for i in range(1, 4):
        write_shard(root / f"fineweb_train_{i:06d}.bin", [EOT] + list(range(10 * i)))
    return root


def recording_hub(remote, corrupt=()):
    """An hf_hub_download stand-in that writes into local_dir and records its calls."""
    calls = []

    def hub(repo_id, filename, *, repo_type, local_dir):
        calls.append((repo_id, filename, repo_type))
        data = (remote / filename).read_bytes()
        target = f"{local_dir}/{filename}"
        with open(target, "wb") as f:
            f.write(data[:-1] if filename in corrupt else data)
        return target

    hub.calls = calls
    return hub


def test_download(remote, tmp_path):
    hub = recording_hub(remote)
    report = fineweb.download_fineweb(tmp_path / "data", 2, hub=hub)
    folder = tmp_path / "data" / "fineweb10b"
    assert report.directory == folder
    assert [c[1] for c in hub.calls] == [
        "fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert all(c[0] == "kjj0/fineweb10B-gpt2" and c[2] == "dataset" for c in hub.calls)
    assert sorted(p.name for p in folder.glob("*.bin")) == sorted(c[1] for c in hub.calls)
    assert report.n_tokens == 4 + 11 + 21 and report.present == ()


def test_skips_valid_files_and_refetches_bad_ones(remote, tmp_path):
    fineweb.download_fineweb(tmp_path, 2, hub=recording_hub(remote))
    folder = tmp_path / "fineweb10b"
    (folder / "fineweb_train_000001.bin").write_bytes(b"garbage")
    hub = recording_hub(remote)
    report = fineweb.download_fineweb(tmp_path, 3, hub=hub)
    assert [c[1] for c in hub.calls] == ["fineweb_train_000001.bin", "fineweb_train_000003.bin"]
    assert set(report.present) == {"fineweb_val_000000.bin", "fineweb_train_000002.bin"}
    assert shard_tokens(folder / "fineweb_train_000001.bin") == 11
    nothing = recording_hub(remote)
    fineweb.download_fineweb(tmp_path, 3, hub=nothing)
    assert nothing.calls == []


def test_corrupt_download_rejected(remote, tmp_path):
    hub = recording_hub(remote, corrupt={"fineweb_train_000001.bin"})
    with pytest.raises(SpeedrunError, match=r"1 downloaded file\(s\) failed validation.*"
                                            r"fineweb_train_000001\.bin.*truncated"):
        fineweb.download_fineweb(tmp_path, 2, hub=hub)
    folder = tmp_path / "fineweb10b"
    assert not (folder / "fineweb_train_000001.bin").exists()
    assert shard_tokens(folder / "fineweb_train_000002.bin") == 21  # the rest still downloaded


def test_folder_as_hub(remote, tmp_path):
    report = fineweb.download_fineweb(tmp_path, 3, hub=remote)
    assert len(report.downloaded) == 4
    with pytest.raises(SpeedrunError, match="downloading fineweb_train_000004.bin .* failed"):
        fineweb.download_fineweb(tmp_path, 4, hub=remote)


def test_hub_errors_become_one_line(tmp_path):
    def broken(*args, **kwargs):
        raise OSError("connection reset\nlong details\nmore")

    with pytest.raises(SpeedrunError) as err:
        fineweb.download_fineweb(tmp_path, 1, hub=broken)
    assert "\n" not in str(err.value) and "connection reset" in str(err.value)


@pytest.fixture
def no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("must not try to download")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)


def test_offline_fails_fast(monkeypatch, tmp_path, no_download):
    def unreachable(address, timeout=None):
        assert timeout is not None and timeout <= 10
        raise OSError(101, "Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    t0 = time.perf_counter()
    with pytest.raises(SpeedrunError, match="cannot reach huggingface.co:443 .*needs the network"):
        fineweb.download_fineweb(tmp_path, 1)
    assert time.perf_counter() - t0 < 2


def test_hf_offline_mode(monkeypatch, tmp_path, no_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpeedrunError, match="HF_HUB_OFFLINE"):
        fineweb.download_fineweb(tmp_path, 1)


def test_nothing_missing_needs_no_network(remote, tmp_path, monkeypatch, no_download):
    fineweb.download_fineweb(tmp_path, 1, hub=remote)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = fineweb.download_fineweb(tmp_path, 1)
    assert report.downloaded == () and len(report.present) == 2


@pytest.mark.parametrize("n", [0, 104])
def test_shard_count_range(tmp_path, n):
    with pytest.raises(SpeedrunError, match="between 1 and 103"):
        fineweb.download_fineweb(tmp_path, n, hub=lambda *a, **k: "")
