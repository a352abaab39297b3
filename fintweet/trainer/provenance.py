"""What built an artifact, recorded in its manifest: the same code and data trained default
ANNs whose holdout figures differed between two installs, whose ``pyproject.toml`` ranges had
resolved to other library releases (docs/models.md). Without the versions and the commit, two
artifacts that disagree cannot say why."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import fintweet

# The libraries whose release can change a trained model's numbers.
PACKAGES = ("numpy", "scipy", "scikit-learn", "keras", "tensorflow", "tensorflow-cpu", "jax",
            "torch", "tokenizers", "onnxruntime")


def provenance() -> dict[str, Any]:
    """``fintweet``'s version and commit (when run from a checkout), Python, the installed
    releases of :data:`PACKAGES` (absent ones left out) and the command line."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"fintweet": fintweet.__version__, "commit": git_commit(), "python_version":
            platform.python_version(), "packages": packages, "argv": sys.argv[1:]}


def git_commit(start: Path | None = None) -> str | None:
    """The commit the package's checkout has out, read from ``.git`` (no ``git`` process: it
    need not be installed where training runs); None outside a checkout. A dirty tree is not
    detected: the commit says which code, not that it was unchanged."""
    here = (start or Path(fintweet.__file__)).resolve()
    # Only the folder holding the package: a wheel installed under some other checkout (a
    # venv inside a repository, ~/.local under a versioned home) is not that checkout's code.
    folder = here.parents[1]
    git = folder / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git = (folder / text.removeprefix("gitdir:").strip()).resolve()
        if not git.is_dir():
            return None
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head  # detached
        ref = head.removeprefix("ref:").strip()
        common = git / "commondir"  # a worktree keeps its branches in the main .git
        stores = [git, (git / common.read_text().strip()).resolve()] if common.is_file() \
            else [git]
        for store in stores:
            loose = store / ref
            if loose.is_file():
                return loose.read_text().strip()
            packed = store / "packed-refs"
            for line in packed.read_text().splitlines() if packed.is_file() else ():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha
    except OSError:
        return None
    return None
