"""Output folders of the data stages: checked before any work starts, written atomically.

A stage writes into a temporary sibling folder that replaces `--out` only when everything succeeded,
so a failure (bad input found halfway, Ctrl-C, a full disk) leaves no half-written output behind.
An existing `--out` is replaced only when it is empty or holds this stage's own marker file, so a
typo cannot wipe an unrelated folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UnmaskError


def check_output(out: str | os.PathLike, marker: str) -> Path:
    """Fail early, with a one-line error, if `out` cannot become this stage's output folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UnmaskError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise UnmaskError(f"--out {out}: a non-empty folder without {marker}; choose a new folder or empty it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=out.parent))
    except OSError as e:
        raise UnmaskError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    return out


@contextmanager
def output_folder(out: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary folder that becomes `out` if the block succeeds (and vanishes if it fails).

    The pattern of model.checkpoint.atomic_folder, restated here so that building a corpus does not
    import torch (2 s and 200 MB for nothing).
    """
    out = check_output(out, marker)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
