"""Download the FineWeb10B GPT-2 shards (kjj0/fineweb10B-gpt2, 100M tokens per file).

Files already present and valid are kept; every downloaded file is validated, and a bad one is
deleted so the next run fetches it again. Without network we fail in seconds with one line.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union
from urllib.parse import urlparse

from speedrun.data import paths, shards
from speedrun.errors import SpeedrunError

DATASET = "fineweb10b"
REPO = "kjj0/fineweb10B-gpt2"
MAX_TRAIN_SHARDS = 103  # fineweb_train_000001.bin .. fineweb_train_000103.bin
CONNECT_TIMEOUT_S = 5.0

# hf_hub_download's signature, the part we use: (repo_id, filename, *, repo_type, local_dir)
# -> path of the file it wrote. A folder stands in for the hub (a mirror, or tests).
Hub = Union[Callable[..., str], str, os.PathLike]


@dataclass(frozen=True)
class DownloadReport:
    directory: Path
    downloaded: tuple[str, ...]
    present: tuple[str, ...]  # already there and valid; not fetched again
    n_tokens: int  # over all requested files

    def summary(self) -> str:
        return (f"{DATASET}: {len(self.downloaded)} downloaded, {len(self.present)} already "
                f"present, {self.n_tokens:,} tokens -> {self.directory}")


def fineweb_files(train_shards: int) -> list[str]:
    """The val shard plus train shards 1..N (the repo numbers train shards from 000001)."""
    return [paths.shard_name(DATASET, "val", 0)] + [
        paths.shard_name(DATASET, "train", i) for i in range(1, train_shards + 1)]


def check_online(endpoint: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with one line, when the hub cannot be reached."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true"):
        raise SpeedrunError("HF_HUB_OFFLINE is set, so FineWeb shards cannot be downloaded; "
                            "unset it, or copy the shards into the data folder yourself")
    url = urlparse(endpoint or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise SpeedrunError(f"cannot reach {host}:{port} ({e.strerror or e}); downloading "
                            f"FineWeb needs the network") from None


def _folder_hub(folder: Path) -> Callable[..., str]:
    def fetch(repo_id: str, filename: str, *, repo_type: str, local_dir: str) -> str:
        source = folder / filename
        if not source.is_file():
            raise FileNotFoundError(f"{source} not found")
        target = Path(local_dir) / filename
        shutil.copyfile(source, target)
        return str(target)

    return fetch


def _valid(path: Path) -> int | None:
    try:
        return shards.shard_tokens(path)
    except shards.ShardError:
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def download_fineweb(
    data_dir: Path,
    train_shards: int,
    repo_id: str = REPO,
    hub: Hub | None = None,
) -> DownloadReport:
    """Fetch fineweb_val_000000.bin and fineweb_train_000001..N.bin into <data_dir>/fineweb10b."""
    if not 1 <= train_shards <= MAX_TRAIN_SHARDS:
        raise SpeedrunError(f"--train-shards must be between 1 and {MAX_TRAIN_SHARDS}, "
                            f"got {train_shards}")
    directory = Path(data_dir) / DATASET
    directory.mkdir(parents=True, exist_ok=True)
    names = fineweb_files(train_shards)
    present, missing = [], []
    for name in names:
        path = directory / name
        if path.exists() and _valid(path) is None:
            path.unlink()  # a corrupt leftover (e.g. copied by hand); fetch it again
        (present if path.exists() else missing).append(name)

    if missing:
        if hub is None:
            from huggingface_hub import hf_hub_download

            check_online()
            hub = hf_hub_download
        elif not callable(hub):
            hub = _folder_hub(Path(hub))
        _fetch_all(hub, repo_id, directory, missing)

    n_tokens = sum(shards.shard_tokens(directory / n) for n in names)
    return DownloadReport(directory, tuple(missing), tuple(present), n_tokens)


def _fetch_all(hub: Callable[..., str], repo_id: str, directory: Path, names: list[str]) -> None:
    from tqdm import tqdm

    rejected = []
    for name in tqdm(names, desc=f"{DATASET} files", unit="file", disable=None):
        try:
            got = Path(hub(repo_id, name, repo_type="dataset", local_dir=str(directory)))
        except SpeedrunError:
            raise
        except Exception as e:  # network, auth, missing file: one line, no traceback wall
            raise SpeedrunError(f"downloading {name} from {repo_id} failed: "
                                f"{_first_line(e)}") from None
        target = directory / name
        if got.resolve() != target.resolve():
            shutil.copyfile(got, target)
        try:
            shards.shard_tokens(target)
        except shards.ShardError as e:
            target.unlink(missing_ok=True)
            rejected.append(str(e))
    if rejected:
        raise SpeedrunError(f"{len(rejected)} downloaded file(s) failed validation and were "
                            f"deleted ({rejected[0]}); run the command again to re-fetch")
