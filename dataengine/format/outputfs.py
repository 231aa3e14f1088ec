"""The output location of a run: a local directory or a filesystem URL, read and written the same way.

``--output`` may be a path, a ``file://`` URL, or any URL ``pyarrow.fs`` opens
(``s3://``, ``gs://``, ``hdfs://``, ``abfs://``); other schemes go through
fsspec (``memory://``, ``gcs://``...). Workers on every node open the same
location, so on a cluster it must be storage they all reach.

A file appears under its final name only once complete: it is written to
``.NAME.tmp-PID-HOST`` and moved. On a local disk the move is a rename (atomic)
after an fsync; on object stores the upload itself becomes visible whole.
"""
from __future__ import annotations

import os
import posixpath
from contextlib import contextmanager
from typing import BinaryIO, Iterator

import pyarrow.fs as pafs

from dataengine.errors import ConfigError
from dataengine.format import atomic


def is_url(path: object) -> bool:
    """A location ``Output`` opens through a filesystem URL (``s3://``, ``gs://``, ``file://``, fsspec), not a
    local path."""
    return isinstance(path, str) and "://" in path


class Output:
    """A directory on some filesystem; every path argument is relative to it ("a/b" style)."""

    def __init__(self, uri: str):
        self.uri = str(uri)
        if is_url(self.uri):
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
            except ValueError:  # pyarrow's ArrowInvalid: a scheme it has no filesystem for
                self.fs, self.root = self._fsspec(self.uri)
        else:  # absolute: workers do not share the driver's working directory
            self.uri = os.path.abspath(self.uri)
            self.fs, self.root = pafs.LocalFileSystem(), self.uri
        self.root = self.root.rstrip("/") or "/"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    @staticmethod
    def _fsspec(uri: str) -> tuple[pafs.FileSystem, str]:
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ValueError, ImportError) as e:    # an unknown scheme, or its package is not installed
            raise ConfigError(f"cannot open {uri}: {e}") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path

    def __reduce__(self):  # workers reopen the location from its URI
        return Output, (self.uri,)

    def __str__(self) -> str:
        return self.uri

    def path(self, rel: str = "") -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    # ----------------------------------------------------------- reading
    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def names(self, rel: str = "") -> list[str]:
        """File names directly in ``rel`` (sorted; empty when it does not exist)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        return sorted(i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def open_read(self, rel: str) -> BinaryIO:
        return self.fs.open_input_file(self.path(rel))

    # ----------------------------------------------------------- writing
    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    @contextmanager
    def replaced_when_done(self, rel: str) -> Iterator[BinaryIO]:
        """A writable file whose bytes appear under ``rel`` only once complete. A killed writer leaves
        its temporary file behind; ``sweep_tmp`` clears it."""
        d, name = posixpath.split(rel)
        self.makedirs(d)
        if self.local:   # the project's one local write-then-rename (fsync, rename, fsync the directory)
            with atomic.replaced_when_done(self.path(rel)) as f:
                yield f
            return
        tmp = posixpath.join(d, atomic.temporary_file_name(name))
        with self.fs.open_output_stream(self.path(tmp)) as f:
            yield f
        self.fs.move(self.path(tmp), self.path(rel))   # an object store shows the upload whole

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.replaced_when_done(rel) as f:
            f.write(data)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_dir(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))

    def sweep_tmp(self, rel: str = "", prefix: str = ".") -> int:
        """Remove temporary files in ``rel`` whose name starts with ``prefix``; returns how many."""
        stale = [n for n in self.names(rel) if atomic.is_temporary(n) and n.startswith(prefix)]
        for n in stale:
            self.delete(posixpath.join(rel, n))
        return len(stale)
