"""The house stays as drawn: no import cycle anywhere in the harness or the tricks (imports
inside functions included), and every package imports only what its docstring's "May import:"
line allows, so the layers in speedrun/__init__.py hold."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, tracked_files, walk
from speedrun import cli
from speedrun.records import provenance
PACKAGES = ("speedrun", "tricks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every harness module ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when that is a module, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def unit(name: str) -> str:
    """The layer a module belongs to: its package under speedrun/ (or tricks), else itself."""
    parts = name.split(".")
    if parts[0] == "tricks":
        return "tricks"
    return ".".join(parts[:2]) if len(parts) > 1 else name


def allowed() -> dict[str, set[str]]:
    """Each unit's "May import:" line, from its package docstring or module docstring."""
    out = {}
    for name, path in modules().items():
        if unit(name) != name:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        m = re.search(r"May import:(.*?)(?:\n\n|$)", doc, re.S)
        assert m, f"{path.relative_to(ROOT)}: its docstring needs a 'May import:' line"
        out[name] = set(re.findall(r"\b(speedrun(?:\.\w+)?|tricks)\b", m.group(1)))
    return out


def test_every_package_imports_only_what_its_docstring_allows():
    may = allowed()
    wrong = sorted(f"{a} imports {b}" for a, targets in graph().items() for b in targets
                   if unit(a) != unit(b) and unit(b) not in may[unit(a)])
    assert wrong == []


def test_every_command_is_one_module_of_the_commands_package():
    """cli lists every module of speedrun/commands/ (but the shared flags), each with its parser
    and its main; its parser is the command of the module's name."""
    found = {p.stem for p in (ROOT / "speedrun" / "commands").glob("*.py")} - {"__init__", "flags"}
    listed = [c.__name__.rpartition(".")[2] for c in cli.COMMANDS]
    assert sorted(listed) == sorted(found)
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    for command in cli.COMMANDS:
        name = command.__name__.rpartition(".")[2].replace("_", "-")
        assert callable(command.main) and choices[name].get_default("main") is command.main


def test_every_module_imports():
    """The quick tier (`-m "not slow"`) loads every module of the harness and the tricks, whatever
    its tests exercise."""
    failed = []
    for name in modules():
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - name every module that fails, not the first
            failed.append(f"{name}: {type(e).__name__}: {e}")
    assert failed == []


def test_help_imports_no_jax():
    """`--help` of every command builds its parser from argparse alone: instant."""
    script = ("import sys; from speedrun import cli; cli.build_parser(); "
              "print(sorted(m for m in ('jax', 'pandas', 'scipy', 'matplotlib', 'optax') "
              "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_harness_files_a_record_hashes_exist():
    """provenance.HARNESS names files by path: a moved file must be named where it is now."""
    assert [f for f in provenance.HARNESS if not (ROOT / f).is_file()] == []


# Words about how the project was made, or paths a user of the repository does not have.
OUTSIDE = ("../" + "shared", "the issue" + "'s", "this " + "task", "device " + "tool", "not " + "drawn")


def test_no_file_speaks_of_what_is_outside_the_repository():
    """Read in the files git tracks: a virtual environment, a build or data inside the checkout
    (a newcomer's .venv) is not the project's."""
    files = [p for p in tracked_files() if p.suffix in (".py", ".md", ".sh", ".yml", ".toml")
             and "records" not in p.relative_to(ROOT).parts[:1]]
    found = [f"{p.relative_to(ROOT)}: {w!r}" for p in files for w in OUTSIDE
             if w in p.read_text()]
    assert found == []


def test_the_files_read_are_the_projects_own(tmp_path):
    """Without git (an unpacked release), the walk skips caches and any virtual environment,
    whatever its name."""
    for f in ("speedrun/x.py", "env/lib/site.py", "env/pyvenv.cfg", "a/__pycache__/c.py",
              "README.md"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(walk(tmp_path))] == [
        "README.md", "speedrun/x.py"]
    assert any(p.parts[-2:] == (".ci", "run") for p in tracked_files())
    assert not any(".venv" in p.parts or "pyvenv.cfg" == p.name for p in tracked_files())
