import struct

import numpy as np
import pytest

from speedrun.data import EOT
from speedrun.data.shards import (HEADER_BYTES, MAGIC, ShardError, read_shard, shard_tokens,
                                  validate_shard, write_shard)
from speedrun.errors import SpeedrunError


def test_round_trip(tmp_path):
    tokens = np.array([EOT, 1, 2, 3, EOT, 65535, 0, EOT, 7], dtype=np.int64)
    path = write_shard(tmp_path / "a.bin", tokens)
    back = read_shard(path)
    assert isinstance(back, np.memmap) and back.dtype == np.uint16
    np.testing.assert_array_equal(back, tokens)
    info = validate_shard(path)
    assert (info.n_tokens, info.n_docs, info.path) == (9, 3, path)
    assert path.stat().st_size == HEADER_BYTES + 2 * 9
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temp file left behind


def test_hand_written_shard_reads_back(tmp_path):
    # Written as another program would: struct header + raw little-endian uint16 tokens.
    tokens = np.random.default_rng(0).integers(0, 50257, size=1000).astype("<u2")
    header = struct.pack("<256i", MAGIC, 1, tokens.size, *([0] * 253))
    path = tmp_path / "fineweb_val_000000.bin"
    path.write_bytes(header + tokens.tobytes())
    np.testing.assert_array_equal(read_shard(path), tokens)
    assert validate_shard(path).n_tokens == 1000


def test_empty_shard(tmp_path):
    path = write_shard(tmp_path / "e.bin", [])
    assert read_shard(path).size == 0 and validate_shard(path).n_docs == 0


@pytest.mark.parametrize("bad", [[-1, 3], [65536], [0.5]])
def test_write_rejects_tokens_outside_uint16(tmp_path, bad):
    with pytest.raises(SpeedrunError, match="e.bin"):
        write_shard(tmp_path / "e.bin", np.array(bad))
    assert not list(tmp_path.iterdir())


def _header(magic=MAGIC, version=1, n=4):
    return struct.pack("<256i", magic, version, n, *([0] * 253))


CORRUPT = {
    "truncated header": (_header()[:100], "truncated header"),
    "bad magic": (_header(magic=1234) + b"\0" * 8, "expected 20240520, got 1234"),
    "bad version": (_header(version=2) + b"\0" * 8, "unsupported shard version 2"),
    "truncated tokens": (_header(n=4) + b"\0" * 6,
                         "truncated: header says 4 tokens but file holds 3"),
    "trailing bytes": (_header(n=4) + b"\0" * 11, "trailing bytes"),
    "negative count": (_header(n=-1), "negative token count"),
}


@pytest.mark.parametrize("kind", CORRUPT)
def test_each_corruption_has_its_own_message(tmp_path, kind):
    data, message = CORRUPT[kind]
    path = tmp_path / "bad_shard.bin"
    path.write_bytes(data)
    for check in (shard_tokens, read_shard, validate_shard):
        with pytest.raises(ShardError, match=message) as err:
            check(path)
        assert str(path) in str(err.value)
    others = [m for k, (_, m) in CORRUPT.items() if k != kind]
    assert not any(m in str(err.value) for m in others)


def test_missing_file(tmp_path):
    with pytest.raises(ShardError, match="not found"):
        validate_shard(tmp_path / "nope.bin")
    with pytest.raises(ShardError, match="not a file"):
        validate_shard(tmp_path)
