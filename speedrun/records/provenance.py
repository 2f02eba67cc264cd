"""What code and which packages a run ran with, so that a record can say when today's differ.

A record's environment stores ``sources``, the sha256 of every file that computes its run (the
harness's model, optimizer, training and data-loading code, and each applied trick's module with
the trick modules it imports), and ``packages``, the version of every installed distribution.
``verify`` and ``run --from-record`` compare them with today's and say what moved: a note, not a
failure, since a record stays valid when the code moves on, but a re-run that disagrees with it
should know why.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

import tricks as registry

ROOT = Path(__file__).resolve().parents[2]
# The files that compute and time a run, besides its tricks: change one and a re-run may differ
# (the machine-speed probe and the code that times a seed included: they make a record's times).
HARNESS = (
    "speedrun/config.py",
    "speedrun/core/attention.py",
    "speedrun/core/batch_sizes.py",
    "speedrun/core/hooks.py",
    "speedrun/core/model.py",
    "speedrun/core/optim.py",
    "speedrun/core/params.py",
    "speedrun/data/loader.py",
    "speedrun/training/environment.py",
    "speedrun/training/evaluate.py",
    "speedrun/training/seed.py",
    "speedrun/training/state.py",
    "speedrun/training/train.py",
    "tricks/__init__.py",
)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trick_files(names) -> set[str]:
    """Each named trick's module, and the trick modules it imports (one level: a trick that
    borrows another's function, as embed-skip borrows rmsnorm's)."""
    found = registry.available()
    out = set()
    for name in names:
        if name not in found:
            continue
        module = sys.modules[found[name].apply.__module__]
        path = Path(module.__file__)
        out.add(path.relative_to(ROOT).as_posix())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tricks"):
                mods = [node.module] if node.module != "tricks" else [
                    f"tricks.{a.name}" for a in node.names]
                for mod in mods:
                    f = ROOT / (mod.replace(".", "/") + ".py")
                    if f.is_file():
                        out.add(f.relative_to(ROOT).as_posix())
    return out


def sources(trick_names) -> dict[str, str]:
    """{repository path: sha256} of the harness files and the tricks' modules."""
    files = sorted(set(HARNESS) | _trick_files(trick_names))
    return {f: file_sha256(ROOT / f) for f in files if (ROOT / f).is_file()}


def packages() -> dict[str, str]:
    """{distribution name: version} of everything installed (names lower-cased)."""
    out = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name:
            out[name] = dist.version
    return dict(sorted(out.items()))


def digest(values: dict) -> str:
    """One sha256 for a mapping (a log's header carries this for the package list)."""
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def drift(env: dict) -> list[str]:
    """How today's code and packages differ from what a record's environment says it ran
    with: one line per difference, empty when nothing moved (or nothing was stored)."""
    out = []
    stored = env.get("sources")
    if isinstance(stored, dict):
        for f, sha in sorted(stored.items()):
            path = ROOT / f
            if not path.is_file():
                out.append(f"{f}: the record ran code that is not here any more")
            elif file_sha256(path) != sha:
                out.append(f"{f}: changed since the record ran (sha256 {sha[:12]}... then, "
                           f"{file_sha256(path)[:12]}... now)")
    else:
        out.append("the record stores no source hashes (it predates them)")
    then = env.get("packages")
    if isinstance(then, dict):
        now = packages()
        moved = [f"{k} {v} -> {now.get(k, 'absent')}" for k, v in sorted(then.items())
                 if now.get(k) != v]
        if moved:
            shown = ", ".join(moved[:6]) + (f" and {len(moved) - 6} more" if len(moved) > 6 else "")
            out.append(f"packages differ from the record's: {shown}")
    else:
        versions = {k.removesuffix("_version"): env[k] for k in ("jax_version", "jaxlib_version",
                                                                 "optax_version", "numpy_version")
                    if env.get(k)}
        moved = [f"{k} {v} -> {metadata.version(k) if _installed(k) else 'absent'}"
                 for k, v in versions.items() if not _installed(k) or metadata.version(k) != v]
        if moved:
            out.append("packages differ from the record's: " + ", ".join(moved))
    return out


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False
