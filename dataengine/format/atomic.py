"""Write-then-rename: a file appears under its final name only once complete.

Every writer of the project (shards, manifest parts, run.json, checkpoints, `trajdata show`
pictures) goes through here, so a killed run never leaves a half-written file under a name
a reader trusts. The bytes go to ``.NAME.tmp-PID-HOST`` in the same directory (a rename is atomic
only within one file system), are flushed and fsynced, renamed over ``NAME``, and the
directory is fsynced so the rename itself survives a power cut. An exception removes the
temporary file; a killed process leaves it for the next run to clear (writers glob
``.*.tmp-*``). Either way the final name never holds a partial file.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


TMP_MARK = ".tmp-"


def temporary_file_name(name: str) -> str:
    """``.NAME.tmp-PID-HOST``: hidden, unique per process even when hosts share the storage."""
    return f".{name}{TMP_MARK}{os.getpid()}-{socket.gethostname()}"


def is_temporary(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name


def temporary_name(path: str | Path) -> Path:
    """The temporary file beside ``path`` (same directory: a rename is atomic only within one file system)."""
    path = Path(path)
    return path.with_name(temporary_file_name(path.name))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:   # some file systems cannot fsync a directory; the rename has still happened
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, mode: int | None) -> None:
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextmanager
def replaced_when_done(path: str | Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file object whose bytes appear under ``path`` only once the block completes."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _publish(tmp, path, mode)


def write_via(path: str | Path, write: Callable[[Path], object], mode: int | None = None) -> Path:
    """Atomically create ``path`` with a writer that takes a file name (pyarrow, safetensors, torch.save).

    ``mode``: permission bits for the final file (some writers create 0600 files).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        _fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _publish(tmp, path, mode)
    return path


def write_bytes(path: str | Path, data: bytes | str, mode: int | None = None) -> Path:
    """Atomically write ``data`` (str is UTF-8 encoded) to ``path``."""
    with replaced_when_done(path, mode) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
