"""What the front door promises holds: CI (.ci/run) follows the README's quick start line for
line, as a newcomer types it, virtual environment inside the clone included."""

from __future__ import annotations

import re

from helpers import ROOT


def bash_blocks(text: str) -> list[list[str]]:
    return [[line for line in block.splitlines() if line.strip()]
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
