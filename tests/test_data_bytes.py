"""Byte-level shards (wiki-bytes), count-model reference losses and bits per byte."""

import argparse
import json
import math

import numpy as np
import pytest

from speedrun.commands import data as data_command
from speedrun.data import EOT, bytelevel, corpus, ngram, paths, tokenizer
from speedrun.data.bytelevel import BYTE_SEP
from speedrun.data.loader import TrainLoader
from speedrun.data.shards import read_shard, validate_shard
from speedrun.errors import SpeedrunError

TEXTS = ["Plain ASCII text.", "Accents: héllo wörld, naïve café", "日本語のテキスト",
         "emoji 🙂 and a\nnew line", "x", "Ελληνικά γράμματα", "tab\tseparated", "last one"]
DOCS = [corpus.Document(key=f"doc-{i}", text=t) for i, t in enumerate(TEXTS * 3)]
DOCS = [corpus.Document(key=f"{d.key}-{i}", text=d.text) for i, d in enumerate(DOCS)]


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
        yield


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(tmp_path / "default"))


@pytest.fixture(scope="module")
def wiki_bytes(tmp_path_factory):
    """The real wiki corpus as bytes, built once for this module (under a second)."""
    return corpus.build_wiki_bytes(tmp_path_factory.mktemp("data"))


def _build(directory, shard_tokens=60):
    return corpus.write_corpus(DOCS, directory, "tb", 0.3, {}, shard_tokens=shard_tokens,
                               kind="bytes")


def _stream(directory, split):
    return np.concatenate([np.asarray(read_shard(f))
                           for f in paths.split_files(directory, "tb", split)])


# --- byte shards -----------------------------------------------------------------------------


def test_byte_shards_round_trip_the_text_exactly(tmp_path):
    report = _build(tmp_path / "tb")
    assert len(paths.split_files(tmp_path / "tb", "tb", "train")) > 3  # docs cross shard ends
    for split in corpus.SPLITS:
        expected = [d.text for d in DOCS if corpus.split_of(d.key, 0.3) == split]
        assert expected  # both splits have documents
        assert bytelevel.decode_documents(_stream(tmp_path / "tb", split)) == expected
    assert report.train_tokens + report.val_tokens == sum(
        len(t.encode()) + 1 for t in TEXTS * 3)


def test_separator_precedes_every_document(tmp_path):
    _build(tmp_path / "tb", shard_tokens=10**6)
    tokens = _stream(tmp_path / "tb", "train")
    train = [d.text for d in DOCS if corpus.split_of(d.key, 0.3) == "train"]
    expected = np.concatenate([np.frombuffer(b"\0" + t.encode(), np.uint8) for t in train])
    np.testing.assert_array_equal(tokens, expected)
    assert BYTE_SEP == 0 and tokens[0] == BYTE_SEP and tokens.max() < bytelevel.BYTE_VOCAB == 256
    assert bytelevel.BYTE_VOCAB % 128 == 0
    starts = np.flatnonzero(tokens == BYTE_SEP)
    assert starts.size == len(train)
    assert validate_shard(paths.split_files(tmp_path / "tb", "tb", "train")[0],
                          sep=BYTE_SEP).n_docs == len(train)


def test_two_builds_are_identical(tmp_path):
    _build(tmp_path / "a")
    _build(tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["tokenizer"] == "bytes"
    files = manifest["splits"]["train"]["files"]
    assert len(manifest["splits"]["train"]["file_sha256"]) == len(files)


def test_nul_in_text_is_refused():
    with pytest.raises(SpeedrunError, match="byte 0"):
        bytelevel.encode_document("a\0b")


def test_wiki_bytes_build(wiki_bytes):
    d = wiki_bytes.directory
    assert d.name == corpus.WIKI_BYTES == "wiki-bytes" and not wiki_bytes.skipped
    assert (wiki_bytes.train_tokens, wiki_bytes.val_tokens) == (4_653_482, 242_086)
    docs = corpus.wiki_documents(corpus.wiki_source())
    val = [x.text for x in docs if corpus.split_of(x.key, 0.05) == "val"]
    assert (wiki_bytes.train_docs, wiki_bytes.val_docs) == (len(docs) - len(val), len(val))
    assert bytelevel.decode_documents(read_shard(d / "wiki-bytes_val_000000.bin")) == val
    manifest = json.loads((d / "manifest.json").read_text())
    refs = {e["val_tokens"]: e for e in manifest["references"]["losses"]}
    assert set(refs) == {65_536, 242_085}
    first = refs[65_536]
    assert first["unigram"] > first["bigram"] > first["trigram"] > 1.5
    assert corpus.reference_losses(d, 65_536) == first
    assert corpus.build_wiki_bytes(d.parent).skipped
    assert corpus.ensure_dataset("wiki-bytes", d.parent) == d


def test_wiki_bytes_command_and_check(tmp_path, capsys):
    args = argparse.Namespace(data_command="wiki-bytes", data_dir=str(tmp_path),
                              val_fraction=0.05, force=False)
    assert data_command.main(args) == 0
    assert capsys.readouterr().out.startswith("wiki-bytes: train 9,520 docs / 4,653,482 tokens")
    assert data_command.main(argparse.Namespace(data_command="check",
                                            paths=[str(tmp_path / "wiki-bytes")])) == 0
    assert "242,086 tokens, 513 documents" in capsys.readouterr().out


def test_references_are_computed_when_a_manifest_lacks_them(tmp_path):
    _build(tmp_path / "tb", shard_tokens=10**6)
    path = tmp_path / "tb" / "manifest.json"
    manifest = json.loads(path.read_text())
    stored = manifest["references"]["losses"][0]  # the whole val split
    del manifest["references"]
    path.write_text(json.dumps(manifest))
    assert corpus.reference_losses(tmp_path / "tb") == pytest.approx(stored)
    assert corpus.reference_losses(tmp_path / "tb", 10)["val_tokens"] == 10


# --- reference losses ------------------------------------------------------------------------

TRAIN = [0, 1, 0, 1, 2, 0, 1, 2, 2, 0]
VAL = [0, 1, 2, 3]  # targets 1, 2, 3 (3 never occurs in train)


def test_unigram_by_hand():
    # counts 0:4 1:3 2:3 3:0 of 10; nothing counted once or twice -> D = 1/2; 3 seen types
    # p(w) = (max(c - 1/2, 0) + 1/2 * 3 * 1/4) / 10
    p = {1: 2.875 / 10, 2: 2.875 / 10, 3: 0.375 / 10}
    want = -np.mean([math.log(p[w]) for w in VAL[1:]])
    (got,) = ngram.reference_losses(TRAIN, VAL, vocab=4, orders=(1,))
    assert got == {"val_tokens": 3, "unigram": pytest.approx(want, rel=1e-12)}


def test_bigram_by_hand():
    # bigrams: (0,1) x3, (1,0) x1, (1,2) x2, (2,0) x2, (2,2) x1 -> n1 = 2, n2 = 2, D2 = 1/3
    # continuation counts #{v: (v,w) seen}: w0: 2, w1: 1, w2: 2 (total 5, 3 types);
    # n1 = 1, n2 = 2 -> D1 = 1/5; p1(w) = (max(N(w) - 1/5, 0) + 1/5 * 3 / 4) / 5
    p1 = {1: 0.95 / 5, 2: 1.95 / 5, 3: 0.15 / 5}
    # context 0: total 3, 1 type; contexts 1 and 2: total 3, 2 types
    p_1_after_0 = (3 - 1 / 3) / 3 + (1 / 3) * 1 / 3 * p1[1]
    p_2_after_1 = (2 - 1 / 3) / 3 + (1 / 3) * 2 / 3 * p1[2]
    p_3_after_2 = 0 + (1 / 3) * 2 / 3 * p1[3]
    want = -np.mean(np.log([p_1_after_0, p_2_after_1, p_3_after_2]))
    (got,) = ngram.reference_losses(TRAIN, VAL, vocab=4, orders=(2,))
    assert got["bigram"] == pytest.approx(want, rel=1e-12)
    assert ngram.KneserNey(TRAIN, 2, 4).discounts == pytest.approx([1 / 5, 1 / 3])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_context_is_a_distribution(order):
    rng = np.random.default_rng(order)
    train = rng.integers(0, 5, 300)
    train[::9] = 0
    model = ngram.KneserNey(train, order, vocab=7)  # 5 and 6 are never seen
    grid = np.stack(np.meshgrid(*[np.arange(7)] * 3, indexing="ij"), -1).reshape(-1, 3)
    p = np.exp([model.log_probs(seq)[-1] for seq in grid]).reshape(49, 7)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert p.min() > 0


def test_large_vocabulary_relabelling_changes_nothing():
    """GPT-2-sized ids go through the same int64 keys: relabelling the tokens with ids up to
    50303 gives the same losses."""
    rng = np.random.default_rng(0)
    chain = np.zeros(5500, np.int64)  # next = 5 * prev + 3 (mod 40) four times in five
    for i in range(1, chain.size):
        chain[i] = (5 * chain[i - 1] + 3) % 40 if rng.random() < 0.8 else rng.integers(40)
    train, val = chain[:5000], chain[5000:]
    relabel = rng.choice(50304, 40, replace=False)
    small = ngram.reference_losses(train, val, vocab=50304, n_tokens=(100, None))
    big = ngram.reference_losses(relabel[train], relabel[val], vocab=50304, n_tokens=(100, None))
    assert [e["val_tokens"] for e in big] == [100, 499]
    for a, b in zip(small, big):
        assert a == pytest.approx(b, rel=1e-12)
        assert a["unigram"] > max(a["bigram"], a["trigram"])  # a first-order chain


# --- bits per byte ---------------------------------------------------------------------------

TEXT = "Bits per byte: héllo wörld, 日本語 🙂."


def test_text_bytes_agree_across_tokenizers(tiktoken_cache):
    n_bytes = len(TEXT.encode("utf-8"))
    as_bytes = np.concatenate(([BYTE_SEP], bytelevel.encode_document(TEXT), [BYTE_SEP]))
    as_gpt2 = np.concatenate(([EOT], tokenizer.encode_documents([TEXT])[0], [EOT]))
    assert bytelevel.text_bytes(as_bytes, "bytes") == n_bytes  # separators count 0 bytes
    assert bytelevel.text_bytes(as_gpt2, "gpt2") == n_bytes  # <|endoftext|> counts 0 bytes
    assert as_gpt2.size < as_bytes.size
    # The same total loss is the same bits per byte, whatever the tokenization.
    total_nats = 42.0
    for tokens, kind in ((as_bytes, "bytes"), (as_gpt2, "gpt2")):
        bpb = bytelevel.bits_per_byte(total_nats / tokens.size, tokens.size,
                                      bytelevel.text_bytes(tokens, kind))
        assert bpb == pytest.approx(total_nats / n_bytes / math.log(2), rel=1e-12)
    assert bytelevel.bits_per_byte(2.0, 30, 40) == pytest.approx(2.0 * 30 / 40 / math.log(2))
    with pytest.raises(SpeedrunError):
        bytelevel.text_bytes([256], "bytes")


def test_loader_aligns_byte_documents(tmp_path):
    _build(tmp_path / "tb")
    files = paths.split_files(tmp_path / "tb", "tb", "train")
    loader = TrainLoader(files, 4, 8, seed=0, align_docs=True, doc_sep=BYTE_SEP)
    stream = _stream(tmp_path / "tb", "train")
    starts = np.flatnonzero(stream == BYTE_SEP)
    assert loader.n_windows == np.count_nonzero(starts <= stream.size - 9) > 0
    x, _ = loader.batch(0)
    assert (x[:, 0] == BYTE_SEP).all()
