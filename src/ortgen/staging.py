"""Directories that appear complete or not at all: built beside the destination, renamed into place.

``tempfile.mkdtemp`` creates directories with mode 0700 whatever the umask, which would make
every package and converted checkpoint unreadable to another uid (a Triton container, a
service account). :func:`make_staging_dir` gives the staging directory the permissions
``mkdir`` would (0777 minus the umask) before anything is written into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ortgen.errors import OrtgenError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_staging_dir(output: Path) -> Path:
    """An empty directory beside ``output`` named ``.NAME.partial-*``, with the umask's permissions."""
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    staging.chmod(0o777 & ~current_umask())
    return staging


@contextlib.contextmanager
def atomic_directory(output: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a staging directory; when the block ends normally it becomes ``output`` (an existing
    ``output`` is replaced only when ``replace`` and only then), otherwise it is removed."""
    output = Path(output).absolute()
    if output.exists() and not replace:
        raise OrtgenError(f"{output} already exists; pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging_dir(output)
    try:
        yield staging
        if output.exists():
            trash = output.with_name(f".{output.name}.old-{os.getpid()}")
            output.rename(trash)
            staging.rename(output)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
