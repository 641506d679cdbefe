"""Every ```python block in README.md and docs/*.md runs as written.

The blocks of one page run top to bottom in one namespace, as a reader would type them, in
a scratch folder where ``assets/`` is the repository's (so outputs such as ``out/`` never
land in the checkout). A block preceded by ``<!-- not-run: REASON -->`` is skipped; keep
those few (network, hours of compute, files a reader must make first).
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, not-run reason or None) of each ```python block in ``text``."""
    blocks = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = [b for b in text[:match.start()].rstrip("\n").splitlines()[-1:] if b.strip()]
        reason = NOT_RUN.search(before[0]) if before else None
        blocks.append((line, textwrap.dedent(match.group(1)), reason.group(1) if reason else None))
    return blocks


def test_blocks_are_found_and_markers_read():
    text = ("intro\n```python\na = 1\n```\n<!-- not-run: needs network -->\n```python\nb = 2\n```\n"
            "```bash\nls\n```\n")
    assert python_blocks(text) == [(2, "a = 1\n", None), (6, "b = 2\n", "needs network")]


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page.read_text())]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[p.relative_to(ROOT).as_posix() for p in PAGES_WITH_CODE])
def test_python_blocks_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    os.symlink(ROOT / "assets", tmp_path / "assets")
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for line, code, reason in python_blocks(page.read_text()):
        if reason is not None:
            continue
        name = f"{page.relative_to(ROOT)}:{line}"
        try:
            exec(compile(code, name, "exec"), namespace)
        except Exception as error:  # name the block, not this test's line
            pytest.fail(f"the python block at {name} failed: {type(error).__name__}: {error}")
        ran += 1
    if not ran:
        pytest.skip("every python block of this page is marked not-run")
