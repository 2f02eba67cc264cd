"""Where data lives and how shard files are named."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from speedrun.errors import SpeedrunError

# Datasets whose shard files use a different prefix than the dataset (folder) name: the
# FineWeb10B files on the hub are called fineweb_{train,val}_NNNNNN.bin.
FILE_PREFIX = {"fineweb10b": "fineweb"}


def data_dir(cli_value: str | None = None) -> Path:
    """``--data-dir`` if given, else $SPEEDRUN_DATA_DIR, else $XDG_CACHE_HOME/speedrun
    (or ~/.cache/speedrun)."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("SPEEDRUN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "speedrun"


def file_prefix(dataset: str) -> str:
    return FILE_PREFIX.get(dataset, dataset)


def shard_name(dataset: str, split: str, index: int) -> str:
    """('wiki', 'train', 0) -> 'wiki_train_000000.bin'."""
    return f"{file_prefix(dataset)}_{split}_{index:06d}.bin"


def split_files(directory: str | os.PathLike, dataset: str, split: str) -> list[Path]:
    """The shards of one split in index order (empty if there are none)."""
    pattern = re.compile(rf"{re.escape(file_prefix(dataset))}_{re.escape(split)}_\d{{6}}\.bin")
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (where it would be made)."""
    existing = Path(path).expanduser()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def probe_writable(folder: Path, what: str, fix: str) -> None:
    """Fail unless ``folder`` (or, where it does not exist yet, its nearest existing parent, in
    which it would be created) is a folder we can create and remove a file in."""
    folder = Path(folder).expanduser()
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise SpeedrunError(f"{what} {folder} cannot be used: {existing} is not a folder; {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".speedrun-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SpeedrunError(f"{what} {folder} is not writable ({e.strerror or e} in {existing}); "
                            f"{fix}") from None
