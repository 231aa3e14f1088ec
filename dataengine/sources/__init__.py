"""Input samples of a source recipe: listing them and reading their media bytes.

Every listed ``SampleRef`` becomes exactly one manifest row, so a listing is
deterministic (byte-wise sorted relative paths, tar members in tar order),
lazy (a generator: sources hold millions of samples), and never drops or
duplicates a sample. Anything known to be bad at listing time is still listed,
with ``error`` set to a one-line reason; nothing here stops the run.

Layouts (details in FORMATS.md):

* ``folder``: a recursive tree of media; ``STEM.txt`` beside a media file is its
  caption. Hidden entries are skipped; symlinked directories are not followed
  (a link cycle would never end), symlinked files are.
* ``video2dataset`` / ``img2dataset``: ``*.tar`` webdataset shards at the top of
  the path (or the path is one tar); with no tars, the ``files`` layout
  (``{shard}/{key}.{ext}`` folders). img2dataset records failed downloads only
  in ``{shard}.parquet``: they are listed after that shard's samples. In the
  ``files`` layout, ``*.parquet`` and ``*_stats.json`` are bookkeeping, not
  samples, and a file group with neither media nor ``.txt``/``.json`` (a stray
  ``config.yaml``) is ignored.
* ``panda_csv``: Panda-70M's metadata CSV plus a folder of clips cut by
  Panda-70M's ``splitting/video_splitting.py``, which names clip ``i`` of video
  ``V`` as ``V.i.mp4`` (``i`` is the 0-based position in the row's
  ``timestamp`` list, no padding). We look for ``{path}/{videoID}.{i}.{ext}``
  for each video extension, ``mp4`` first; the key is ``{videoID}_{i:05d}``,
  video2dataset's clip key pattern.

Tar safety: members are never extracted; media is read later by byte offset.
A member whose path is absolute or contains ``..`` marks its whole sample as
an error ("unsafe member path ...") instead of being renamed to its basename:
such a tar was not written by the tools we read, so its contents are not
trusted. A tar that ends early lists its complete samples; the sample at the
cut becomes "truncated tar: ..." (when the cut falls between members we cannot
tell whether the last sample lost members, so it is reported too).

Keys are unique within a listing. Colliding sanitised folder names get
``-1``, ``-2``... silently (they are different files); a key that repeats in
tars, ``files`` shards or the CSV is a real duplicate: it gets the same suffix
and the error "duplicate key K". Seen keys are kept as 64-bit hashes in a
sorted array (~8 bytes a key, so 70M Panda clips fit in memory); a hash
collision (odds ~1e-4 at 70M keys) only adds a needless suffix / duplicate error.

Modules: ``common`` (SampleRef, keys, error rows), ``reading`` (media bytes of a
listed sample), and one lister per layout: ``folder``, ``webdataset``, ``panda``.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Iterator

from dataengine.config import SOURCE_FORMATS, SourceConfig
from dataengine.errors import ConfigError, InputError, InputNotFound
from .common import (IMAGE_EXTS, VIDEO_EXTS, MediaError, SampleRef, SeenKeys, media_type_of,
                     safe_key)
from .folder import list_folder
from .panda import list_panda
from .reading import media_path, read_media
from .webdataset import list_webdataset

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "MediaError", "SampleRef", "SeenKeys", "list_samples", "media_path",
           "media_type_of", "read_media", "safe_key"]

# ------------------------------------------------------------------ public API


def list_samples(src: SourceConfig, limit: int | None = None) -> Iterator[SampleRef]:
    """Samples of ``src`` in a fixed order, keys unique, ``index`` dense from 0.

    Configuration problems (unknown format, missing path or CSV) raise here,
    at call time; problems of single samples become refs with ``error``.
    """
    if src.format not in SOURCE_FORMATS:
        raise ConfigError(f"source {src.name!r}: unknown format {src.format!r} (expected one of {SOURCE_FORMATS})")
    if src.format == "panda_csv":
        if not src.csv:
            raise ConfigError(f"source {src.name!r}: format panda_csv needs a `csv:` metadata file")
        if not os.path.isfile(src.csv):
            raise InputNotFound(f"source {src.name!r}: metadata CSV not found: {src.csv}")
        clips = src.path or os.path.dirname(os.path.abspath(src.csv))
        if not os.path.isdir(clips):
            raise InputNotFound(f"source {src.name!r}: clip folder not found: {clips}")
    elif not src.path or not os.path.exists(src.path):
        raise InputNotFound(f"source {src.name!r}: input path not found: {src.path!r}")
    elif src.format == "folder" and not os.path.isdir(src.path):
        raise InputError(f"source {src.name!r}: --input must be a folder of media; {src.path} is a file "
                         f"(give the folder that holds it)")
    lister: Callable[[SourceConfig], Iterator[tuple[SampleRef, bool]]] = _LISTERS[src.format]
    return _numbered(lister(src), limit)


def _numbered(items: Iterator[tuple[SampleRef, bool]], limit: int | None) -> Iterator[SampleRef]:
    """Give refs unique keys and dense indices; ``bool`` says a repeat is an error."""
    seen = SeenKeys()
    index = 0
    try:
        while limit is None or index < limit:
            try:
                ref, repeat_is_error = next(items)
            except StopIteration:
                return
            key, dup = seen.claim(ref.key)
            error = ref.error or (f"duplicate key {ref.key}" if dup and repeat_is_error else "")
            yield replace(ref, key=key, index=index, error=error)
            index += 1
    finally:
        items.close()   # closes open tars / CSV when the consumer stops early


_LISTERS: dict[str, Callable[[SourceConfig], Iterator[tuple[SampleRef, bool]]]] = {
    "folder": list_folder,
    "video2dataset": lambda src: list_webdataset(src, failures_in_parquet=False),
    "img2dataset": lambda src: list_webdataset(src, failures_in_parquet=True),
    "panda_csv": list_panda,
}
