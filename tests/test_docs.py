"""What the front door promises holds: CI (.ci/run) follows the README's quick start line for
line, as a newcomer types it, virtual environment inside the clone included; every relative
link of README.md, CONTRIBUTING.md and docs/*.md (and its #anchor) resolves."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import ROOT


def bash_blocks(text: str) -> list[list[str]]:
    """Each bash block's commands, their comments dropped."""
    return [[line.split("  #")[0].rstrip() for line in block.splitlines() if line.strip()]
            for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_the_readmes_quick_start_and_tests():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("## Everyday commands")]
    install, tests = bash_blocks(quick)[:2]
    assert install[0].startswith("python -m venv .venv"), install
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd ", "export "))]
    # every quick-start line verbatim, in order (the run shortened: flags may follow it), and
    # the README's test command last
    steps = iter(ci)
    for line in install:
        assert any(c == line or c.startswith(line + " ") for c in steps), (line, ci)
    assert ci[-1] == tests[0], (ci, tests)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as
    hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", markdown, re.M)}


def broken_links(files, root: Path = ROOT) -> list[str]:
    """Every relative link (and #anchor) of ``files`` that does not resolve."""
    out = []
    for f in files:
        for link in LINK.findall(f.read_text()):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:: not the repository's to check
            path, _, anchor = link.partition("#")
            target = (f.parent / path) if path else f
            if not target.exists():
                out.append(f"{f.relative_to(root)}: {link}")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
                out.append(f"{f.relative_to(root)}: {link} (no such heading)")
    return out


def test_every_relative_link_of_the_docs_resolves():
    docs = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert broken_links(docs) == []


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Intro\n\n## GPU figures, measured\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("[ok](b.md#gpu-figures-measured) [top](#nothing) [from the root](docs/b.md) "
                    "[anchor](b.md#nope) [web](https://example.org/x)")
    assert broken_links([page], tmp_path) == [
        "docs/a.md: #nothing (no such heading)", "docs/a.md: docs/b.md",
        "docs/a.md: b.md#nope (no such heading)"]
