"""`python -m speedrun data {wiki,wiki-bytes,fineweb10b,hellaswag,check}`."""

from __future__ import annotations

import json
from pathlib import Path

from speedrun.data import bytelevel, corpus, fineweb, hellaswag, paths, shards
from speedrun.errors import SpeedrunError


def build(args) -> int:
    root = paths.data_dir(args.data_dir)
    if args.text_files:
        report = corpus.build_text_corpus(args.text_files, root, name=args.name or "custom",
                                          force=args.force, val_fraction=args.val_fraction)
    elif args.name:
        raise SpeedrunError("--name names a corpus built from --text-files; give --text-files too")
    else:
        report = corpus.build_wiki(root, force=args.force, val_fraction=args.val_fraction)
    print(report.summary())
    return 0


def build_bytes(args) -> int:
    report = corpus.build_wiki_bytes(paths.data_dir(args.data_dir), force=args.force,
                                     val_fraction=args.val_fraction)
    print(report.summary())
    return 0


def download(args) -> int:
    report = fineweb.download_fineweb(paths.data_dir(args.data_dir), args.train_shards,
                                      repo_id=args.repo)
    print(report.summary())
    return 0


def get_hellaswag(args) -> int:
    report = hellaswag.install(paths.data_dir(args.data_dir), args.from_file, force=args.force)
    print(report.summary())
    return 0


def shard_paths(items: list[str]) -> list[Path]:
    """Files as given; folders expand to the .bin files directly inside them."""
    out = []
    for item in items:
        p = Path(item)
        out.extend(sorted(p.glob("*.bin")) if p.is_dir() else [p])
    return out


def _manifest(shard: Path) -> dict:
    try:
        manifest = json.loads((shard.parent / "manifest.json").read_text())
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        return {}


def tokenizer_for(shard: Path) -> tuple[str, str]:
    """(the shard's tokenizer, how it is known): the manifest beside it names it; without one,
    the tokens tell: a shard whose every id is below 256 is read as bytes (a GPT-2 shard holds
    its separator 50256), else GPT-2."""
    named = _manifest(shard).get("tokenizer")
    if named in corpus.VOCAB:
        return named, "manifest.json"
    try:
        tokens = shards.read_shard(shard)
    except (shards.ShardError, OSError):
        return "gpt2", "no manifest.json"  # validation reports what is wrong with the file
    if tokens.size and int(tokens.max()) < bytelevel.BYTE_VOCAB:
        return "bytes", "no manifest.json; every id is below 256, so read as bytes"
    return "gpt2", "no manifest.json; read as GPT-2 tokens"


def expected_sha256(shard: Path) -> str | None:
    """The file's sha256 as the manifest beside it records it (None where it records none)."""
    try:
        for entry in _manifest(shard).get("splits", {}).values():
            if shard.name in entry.get("files", []) and entry.get("file_sha256"):
                return entry["file_sha256"][entry["files"].index(shard.name)]
    except (AttributeError, TypeError, IndexError):
        pass
    return None


def check(args) -> int:
    bad = total = 0
    for item in args.paths:
        files = shard_paths([item])
        if not files:
            print(f"INVALID {item}: no .bin shard files in this folder")
            bad, total = bad + 1, total + 1
        for f in files:
            total += 1
            try:
                tokenizer, how = tokenizer_for(f)
                info = shards.validate_shard(f, bytelevel.separator(tokenizer),
                                             corpus.VOCAB.get(tokenizer))
                want = expected_sha256(f)
                if want and corpus.file_sha256(f) != want:
                    raise shards.ShardError(f"{f}: checksum does not match manifest.json (the "
                                            f"file changed after it was built; rebuild it)")
            except shards.ShardError as e:
                print(f"INVALID {e}")
                bad += 1
            except OSError as e:
                print(f"INVALID {f}: cannot read it ({e.strerror or e})")
                bad += 1
            else:
                note = "" if how == "manifest.json" else f" ({how})"
                print(f"ok      {f}: {info.n_tokens:,} tokens, {info.n_docs:,} documents{note}")
    if bad:
        print(f"{bad} invalid of {total} checked")
    return 1 if bad else 0


def main(args) -> int:
    commands = {"wiki": build, "wiki-bytes": build_bytes, "fineweb10b": download,
                "hellaswag": get_hellaswag, "check": check}
    if args.data_command == "check":
        return check(args)
    root = paths.data_dir(args.data_dir)
    fix = "pass --data-dir DIR or set SPEEDRUN_DATA_DIR to a writable folder"
    existing = paths.nearest_existing(root)
    if not existing.is_dir():
        raise SpeedrunError(f"data dir {root} cannot be used: {existing} is not a folder; {fix}")
    try:
        return commands[args.data_command](args)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise SpeedrunError(f"cannot write the data in {root}: {e.strerror or e}{where}; "
                            f"{fix}") from None
