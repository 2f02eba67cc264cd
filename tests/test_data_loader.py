import numpy as np
import pytest

from speedrun.data import EOT
from speedrun.data.loader import TokenStream, TrainLoader, val_batches, val_token_count
from speedrun.data.shards import write_shard
from speedrun.errors import SpeedrunError


def _stream(n_docs, seed=0):
    """EOT-separated documents of random length with distinct, non-EOT tokens."""
    rng = np.random.default_rng(seed)
    docs = [np.concatenate(([EOT], rng.integers(0, 50000, size=rng.integers(5, 60))))
            for _ in range(n_docs)]
    return np.concatenate(docs).astype(np.uint16)


@pytest.fixture
def shards(tmp_path):
    """Two train shards (so windows cross a shard boundary) and their concatenation."""
    tokens = _stream(200)
    cut = tokens.size // 2 + 3
    files = [write_shard(tmp_path / "t_train_000000.bin", tokens[:cut]),
             write_shard(tmp_path / "t_train_000001.bin", tokens[cut:])]
    return files, tokens


def test_stream_reads_across_shards(shards):
    files, tokens = shards
    stream = TokenStream(files)
    assert len(stream) == tokens.size
    for start, length in [(0, 10), (tokens.size // 2 - 5, 30), (tokens.size - 7, 7)]:
        np.testing.assert_array_equal(stream.read(start, length), tokens[start:start + length])


def test_batch_shapes_and_shifted_targets(shards):
    files, tokens = shards
    loader = TrainLoader(files, batch_size=8, seq_len=16, seed=0)
    assert loader.n_windows == (tokens.size - 1) // 16 and loader.tokens_per_step == 128
    x, y = loader.batch(3)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):  # every row is a window of the stream at a stride position
        start = int(np.flatnonzero([np.array_equal(tokens[s:s + 16], row_x)
                                    for s in range(0, tokens.size - 16, 16)])[0]) * 16
        np.testing.assert_array_equal(row_y, tokens[start + 1:start + 17])


def test_deterministic_per_seed(shards):
    files, _ = shards
    a, b = TrainLoader(files, 4, 16, seed=1), TrainLoader(files, 4, 16, seed=1)
    c = TrainLoader(files, 4, 16, seed=2)
    for step in (0, 1, 57):
        np.testing.assert_array_equal(a.batch(step)[0], b.batch(step)[0])
    assert not np.array_equal(a.batch(0)[0], c.batch(0)[0])
    assert not np.array_equal(a.batch(0)[0], a.batch(1)[0])


def test_resume_at_any_step(shards):
    files, _ = shards
    run = TrainLoader(files, 4, 64, seed=3)
    seen = [run.batch(s) for s in range(120)]  # > 2 epochs, so batches straddle epochs
    assert 120 > 2 * run.epoch_steps
    for k in (0, 5, 61, 119):
        x, y = TrainLoader(files, 4, 64, seed=3).batch(k)
        np.testing.assert_array_equal(x, seen[k][0])
        np.testing.assert_array_equal(y, seen[k][1])


def test_epoch_visits_every_window_once(tmp_path):
    tokens = np.arange(8 * 12 + 1, dtype=np.uint16)  # exactly 12 windows of 8
    loader = TrainLoader([write_shard(tmp_path / "a.bin", tokens)], 4, 8, seed=0)
    assert loader.n_windows == 12 and loader.epoch_steps == 3
    firsts = np.concatenate([loader.batch(s)[0][:, 0] for s in range(3)])
    assert sorted(firsts.tolist()) == list(range(0, 96, 8))
    second = np.concatenate([loader.batch(s)[0][:, 0] for s in range(3, 6)])
    assert sorted(second.tolist()) == sorted(firsts.tolist())
    assert not np.array_equal(firsts, second)  # a fresh permutation each epoch


def test_aligned_batches_start_at_documents(shards):
    files, tokens = shards
    loader = TrainLoader(files, 8, 32, seed=0, align_docs=True)
    assert loader.n_windows == np.count_nonzero(tokens[:-32] == EOT)
    for step in range(5):
        x, y = loader.batch(step)
        assert (x[:, 0] == EOT).all()
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_process_slices_partition_the_global_batch(shards):
    files, _ = shards
    loader = TrainLoader(files, 8, 16, seed=0)
    x, y = loader.batch(7)
    parts = [loader.batch(7, i, 4) for i in range(4)]
    for i, (px, py) in enumerate(parts):
        np.testing.assert_array_equal(px, x[i::4])
        np.testing.assert_array_equal(py, y[i::4])
    with pytest.raises(SpeedrunError, match="cannot be split"):
        loader.batch(0, 0, 3)


def test_too_little_data(tmp_path):
    f = write_shard(tmp_path / "a.bin", [EOT, 1, 2, 3])
    with pytest.raises(SpeedrunError, match="one sequence"):
        TrainLoader([f], 2, 4, seed=0)
    with pytest.raises(SpeedrunError, match="EOT"):
        no_eot = write_shard(tmp_path / "b.bin", np.ones(100, dtype=np.int64))
        TrainLoader([no_eot], 2, 4, seed=0, align_docs=True)


def test_val_batches_fixed_prefix(tmp_path):
    tokens = _stream(100, seed=5)
    files = [write_shard(tmp_path / "v0.bin", tokens[:500]),
             write_shard(tmp_path / "v1.bin", tokens[500:])]
    assert val_token_count(files, 1000, 64) == 960  # rounded down to whole sequences
    batches = val_batches(files, 1000, 4, 64)
    assert [x.shape for x, _ in batches] == [(4, 64), (4, 64), (4, 64), (3, 64)]  # 15 sequences
    x = np.concatenate([b[0] for b in batches]).ravel()
    y = np.concatenate([b[1] for b in batches]).ravel()
    np.testing.assert_array_equal(x, tokens[:960])
    np.testing.assert_array_equal(y, tokens[1:961])
    again = val_batches(files, 1000, 4, 64)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


def test_val_capped_at_split_size(tmp_path):
    f = write_shard(tmp_path / "v.bin", np.arange(100))
    assert val_token_count([f], 10**9, 32) == 96  # 99 usable input tokens -> 3 sequences
    assert val_token_count([f], 10**9, 99) == 99
    with pytest.raises(SpeedrunError, match="at least 101 tokens"):
        val_token_count([f], 10**9, 100)
    with pytest.raises(SpeedrunError, match="one sequence"):
        val_batches([f], 10, 4, 32)
