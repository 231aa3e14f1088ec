"""Sample references, one-line error rows, key sanitising and the unique-key set."""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataengine.config import SourceConfig
from dataengine.errors import UserError
from dataengine.format.shards import IMAGE_EXTS, VIDEO_EXTS
META_EXTS = ("txt", "json")
MAX_META_BYTES = 16 << 20      # a caption or JSON member larger than this is corrupt, not read
VIDEO_PREFERENCE = ("mp4", "webm", "mkv", "mov", "m4v", "avi")  # panda clip lookup order
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SampleRef:
    key: str            # output key: only [A-Za-z0-9_-], unique within one listing
    source: str         # recipe name (src.name)
    uri: str            # media file path, or "TARPATH#MEMBERNAME" for a tar member; '' when no media
    media_type: str     # "video" | "image" | "" (no/unknown media)
    ext: str            # media extension as in the source, lower case; '' if none
    index: int          # 0-based dense position in the listing
    offset: int = -1    # tar member: byte offset of its data inside the tar; -1 for plain files
    size: int = -1      # media bytes
    caption: str = ""
    meta: str = "{}"    # the source's own metadata as a JSON string
    error: str = ""     # non-empty: known bad at listing time, a clear one-line reason


class MediaError(UserError):
    """The media bytes of a sample cannot be read (missing, too large, short)."""


def safe_key(text: str) -> str:
    """ASCII-fold ``text`` (NFKD, accents dropped) and map every other char to '_'."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _UNSAFE_KEY_CHARS.sub("_", folded) or "_"


def media_type_of(ext: str) -> str:
    return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else ""


def utf8_ok(text: str) -> bool:
    # os and tarfile decode undecodable names to lone surrogates; Parquet and
    # JSON writers downstream reject those, so such names become error refs.
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(text: Any, limit: int = 300) -> str:
    s = " ".join(printable(str(text)).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def read_small_file(path: str, limit: int = MAX_META_BYTES) -> bytes:
    """Up to ``limit + 1`` bytes of a caption / metadata file that must be a regular file: a named
    pipe or a device beside the media would block the listing (opened without blocking, then
    checked). Anything else is an ``OSError`` whose text is the reason."""
    import stat
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.path.basename(path)} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def decode_caption(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return None


def bad_ref(src: SourceConfig, key: str, uri: str, error: str, caption: str = "", meta: str = "{}") -> SampleRef:
    return SampleRef(key=safe_key(key), source=src.name, uri=printable(uri), media_type="", ext="",
                     index=-1, caption=caption, meta=meta, error=one_line(error))


class SeenKeys:
    """Set of keys held as 64-bit hashes: a sorted numpy array plus a small Python set.

    The set is merged into the array when it grows past 1/8 of it (capped), so
    merges stay few and each costs one linear pass.
    """

    def __init__(self) -> None:
        self._arr = np.empty(0, dtype=np.uint64)
        self._buf: set[int] = set()
        self._next_suffix: dict[str, int] = {}

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")

    def _has(self, h: int) -> bool:
        if h in self._buf:
            return True
        i = int(self._arr.searchsorted(np.uint64(h))) if self._arr.size else 0
        return i < self._arr.size and int(self._arr[i]) == h

    def _add(self, h: int) -> None:
        self._buf.add(h)
        if len(self._buf) >= min(1 << 20, max(1 << 14, self._arr.size // 8)):
            new = np.sort(np.fromiter(self._buf, dtype=np.uint64, count=len(self._buf)))
            self._arr = np.insert(self._arr, self._arr.searchsorted(new), new)
            self._buf.clear()

    def __contains__(self, key: str) -> bool:
        return self._has(self._hash(key))

    def claim(self, key: str) -> tuple[str, bool]:
        """``(unique key, was_duplicate)``; suffixes -1, -2, ... in order of arrival."""
        h = self._hash(key)
        if not self._has(h):
            self._add(h)
            return key, False
        n = self._next_suffix.get(key, 1)
        while f"{key}-{n}" in self:
            n += 1
        self._next_suffix[key] = n + 1
        self._add(self._hash(f"{key}-{n}"))
        return f"{key}-{n}", True
