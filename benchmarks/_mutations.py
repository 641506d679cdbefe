"""The runner shared by the mutation checks (``*_mutations.py``): each deliberate bug must make a test fail.

A mutation is ``(title, path, old, new, tests)``: in ``path`` the text ``old`` (which must
occur exactly once) becomes ``new``, and the space-separated ``tests`` must then fail.

The runner mutates a *copy*, never the live tree: a detached git worktree of HEAD in a
temporary folder, over which the working tree's current versions of ``copied`` are laid,
so uncommitted edits to those are what gets checked. Tests run there with PYTHONPATH
pointing at the copy, and at a folder where ``sipgrad_cli`` links to the copy's ``cli/``
(checked: ``sipgrad.__file__`` and ``sipgrad_cli.__file__`` must lie inside it; the
installed ``sipgrad_cli`` is the live tree's, so a mutation of ``cli/`` would otherwise
change nothing the tests import). Guard CLI mutations with named tests: the copy on
PYTHONPATH makes ``import cli`` work, which one packaging test checks does not. First the guarding
tests run on the unmutated copy (they must pass, or every mutation would look killed);
then one mutation at a time is applied, its guarding tests run (pytest -x,
OMP_NUM_THREADS=1), the file is restored, and KILLED (with the first failing test) or
SURVIVED is printed. The worktree is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

Mutation = tuple[str, str, str, str, str]


def _environment(tree: pathlib.Path) -> dict[str, str]:
    """PYTHONPATH for the copy: its packages, and ``sipgrad_cli`` as a link to its ``cli/`` (made once)."""
    site = tree.parent / "site"
    if not site.exists():
        site.mkdir()
        (site / "sipgrad_cli").symlink_to(tree / "cli", target_is_directory=True)
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{tree}"}


def _pytest(tree: pathlib.Path, tests: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests.split()],
                          cwd=tree, check=False, capture_output=True, text=True,
                          env={**_environment(tree), "OMP_NUM_THREADS": "1"})


def _first_failure(done: subprocess.CompletedProcess) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.MULTILINE)
    if found:
        return found.group(1)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else done.stderr[-200:]


def run_mutations(mutations: Sequence[Mutation], copied: Sequence[str], selection: Sequence[str]) -> int:
    """Apply each selected mutation in turn to a worktree copy; exit status 1 if any survived or no longer matches.

    ``selection``: substrings of titles (case-insensitive); empty selects every mutation.
    """
    live = pathlib.Path(__file__).resolve().parents[1]
    if any(s in ("-h", "--help") for s in selection):
        print(sys.modules["__main__"].__doc__ or __doc__)
        return 0
    chosen = [m for m in mutations if not selection or any(s.lower() in m[0].lower() for s in selection)]
    if not chosen:  # a typo in a filter must not pass as "0 mutations, 0 killed"
        print(f"no mutation title contains any of {list(selection)}", file=sys.stderr)
        return 2
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="sipgrad-mutations-"))
    tree = scratch / "tree"
    subprocess.run(["git", "-C", str(live), "worktree", "add", "--detach", "--quiet", str(tree), "HEAD"], check=True)
    results = []
    try:
        for part in copied:  # the working tree's versions, uncommitted edits included
            source, target = live / part, tree / part
            if source.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, target)
        for package in ("sipgrad", "sipgrad_cli"):
            where = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"], cwd=tree,
                                   capture_output=True, text=True, check=True, env=_environment(tree)).stdout.strip()
            if not pathlib.Path(where).resolve().is_relative_to(tree.resolve()):
                raise SystemExit(f"the copy imports {package} from {where}, not from {tree}")
        guards = sorted({m[4] for m in chosen})
        for tests in guards:
            done = _pytest(tree, tests)
            if done.returncode != 0:
                raise SystemExit(f"unmutated copy fails {tests}: {_first_failure(done)}")
        for title, path, old, new, tests in chosen:
            p = tree / path
            original = p.read_text()
            if original.count(old) != 1:
                results.append((title, "PATTERN NOT FOUND", ""))
                print(results[-1], flush=True)
                continue
            try:
                p.write_text(original.replace(old, new))
                done = _pytest(tree, tests)
                results.append((title, "KILLED" if done.returncode != 0 else "SURVIVED", _first_failure(done)))
            finally:
                p.write_text(original)
            print(results[-1], flush=True)
    finally:
        subprocess.run(["git", "-C", str(live), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    killed = sum(r[1] == "KILLED" for r in results)
    print(f"{len(results)} mutations, {killed} killed")
    return 0 if killed == len(results) else 1
