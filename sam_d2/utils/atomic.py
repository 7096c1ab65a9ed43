"""Atomic file writes: a reader (or a job resumed after SIGKILL) sees the old file or the new one,
never a truncated one."""

import contextlib
import os
import tempfile
from typing import IO, Iterator

__all__ = ["atomic_open"]


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    The data is flushed to disk before the rename, so a crash at any point leaves either the
    previous content or the complete new one. On an exception the temporary file is removed and
    ``path`` is untouched.

    Args:
        path: destination file; its folder is created if needed.
        mode: "w" (text) or "wb" (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
