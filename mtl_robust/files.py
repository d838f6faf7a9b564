"""Files that are either whole or absent: write to a temporary sibling, fsync, then rename over the target.

A kill at any moment leaves the old file (or none) and at worst a stray `.tmp-*` sibling, never a truncated
target that a later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is fsynced and renamed onto `target`.

    Example:
        >>> with atomic_path("logs/checkpoints/abc.ckpt") as tmp:   # doctest: +SKIP
        ...     torch.save(state, tmp)
    """
    target = Path(target)
    with write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with write_errors(target):
            yield tmp
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


class WriteError(OSError):
    """A file could not be written: one line naming the file and why (disk full, read-only folder, ...)."""

    def __str__(self) -> str:
        return str(self.strerror)


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


@contextlib.contextmanager
def write_errors(target: Path) -> Iterator[None]:
    """Turn a failed write into a `WriteError` naming `target`: torch's writer reports a full disk as
    `RuntimeError: [enforce fail at inline_container.cc:...] ... file write failed`, without a path."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        reason = _REASONS.get(err.errno or 0, err.strerror or str(err))
        raise WriteError(err.errno, f"cannot write {target}: {reason}") from err
    except RuntimeError as err:
        if "inline_container" not in str(err) and "PytorchStreamWriter" not in str(err):
            raise
        free = _free_bytes(target.parent)
        reason = "no space left on device" if free is not None and free < 1 << 20 else "the write failed"
        raise WriteError(errno.EIO, f"cannot write {target}: {reason} ({str(err).splitlines()[0]})") from err


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
