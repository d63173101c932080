"""Where corpus files come from: the SRC folders a user names, or the running Python's own installation.

`iter_source_files` walks folders lazily in sorted order (so a build is deterministic and never
lists a whole tree in memory), skips hidden folders, caches and version-control folders, and visits
each real folder once even when roots overlap or symlinks point back into a tree.
"""

from __future__ import annotations

import os
import site
import sysconfig
from typing import Iterable, Iterator

from ..errors import UnmaskError

SKIP_DIRS = {"__pycache__", "node_modules"}
FOREIGN_PACKAGE_DIRS = ("site-packages", "dist-packages")


def installed_roots() -> tuple[list[str], set[str]]:
    """(roots, folders to skip) for `--installed`: the standard library and this environment's site-packages.

    The standard library folder of a virtual environment's base interpreter holds that interpreter's
    own site-packages, which is not part of the running environment, so it is skipped.
    """
    paths = sysconfig.get_paths()
    stdlib = os.path.realpath(paths["stdlib"])
    sites = [paths["purelib"], paths["platlib"], *getattr(site, "getsitepackages", lambda: [])()]
    roots: list[str] = [stdlib]
    for path in sites:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in roots:
            roots.append(real)
    skip = {os.path.join(stdlib, name) for name in FOREIGN_PACKAGE_DIRS} - set(roots)
    return roots, skip


def check_sources(sources: Iterable[str]) -> list[str]:
    """The SRC arguments as given, after checking each is an existing folder."""
    checked = []
    for src in sources:
        if not os.path.exists(src):
            raise UnmaskError(f"SRC {src}: no such folder")
        if not os.path.isdir(src):
            raise UnmaskError(f"SRC {src}: not a folder (give the folder that holds the source files)")
        checked.append(src)
    return checked


def iter_source_files(roots: Iterable[str], extensions: Iterable[str], skip: Iterable[str] = ()) -> Iterator[str]:
    """Paths of the files under `roots` whose names end in one of `extensions`, in sorted walk order."""
    extensions = tuple(extensions)
    skip_real = {os.path.realpath(p) for p in skip}
    visited: set[str] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            real = os.path.realpath(dirpath)
            if real in visited or real in skip_real:
                dirnames[:] = []
                continue
            visited.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(extensions):
                    yield os.path.join(dirpath, name)
