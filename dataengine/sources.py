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
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import logging
import os
import posixpath
import re
import stat
import tarfile
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np

from .config import SOURCE_FORMATS, SourceConfig

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset({"mp4", "webm", "mkv", "avi", "mov", "m4v"})
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"})
META_EXTS = ("txt", "json")
MAX_META_BYTES = 16 << 20      # a caption or JSON member larger than this is corrupt, not read
_VIDEO_PREFERENCE = ("mp4", "webm", "mkv", "mov", "m4v", "avi")  # panda clip lookup order
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


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


class MediaError(Exception):
    """The media bytes of a sample cannot be read (missing, too large, short)."""


# ------------------------------------------------------------------ helpers
def safe_key(text: str) -> str:
    """ASCII-fold ``text`` (NFKD, accents dropped) and map every other char to '_'."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _UNSAFE_KEY_CHARS.sub("_", folded) or "_"


def media_type_of(ext: str) -> str:
    return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else ""


def _utf8_ok(text: str) -> bool:
    # os and tarfile decode undecodable names to lone surrogates; Parquet and
    # JSON writers downstream reject those, so such names become error refs.
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _one_line(text: Any, limit: int = 300) -> str:
    s = " ".join(_printable(str(text)).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _decode_caption(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return None


def _bad(src: SourceConfig, key: str, uri: str, error: str, caption: str = "", meta: str = "{}") -> SampleRef:
    return SampleRef(key=safe_key(key), source=src.name, uri=_printable(uri), media_type="", ext="",
                     index=-1, caption=caption, meta=meta, error=_one_line(error))


class _SeenKeys:
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


# ------------------------------------------------------------------ public API
def list_samples(src: SourceConfig, limit: int | None = None) -> Iterator[SampleRef]:
    """Samples of ``src`` in a fixed order, keys unique, ``index`` dense from 0.

    Configuration problems (unknown format, missing path or CSV) raise here,
    at call time; problems of single samples become refs with ``error``.
    """
    if src.format not in SOURCE_FORMATS:
        raise ValueError(f"source {src.name!r}: unknown format {src.format!r} (expected one of {SOURCE_FORMATS})")
    if src.format == "panda_csv":
        if not src.csv:
            raise ValueError(f"source {src.name!r}: format panda_csv needs a `csv:` metadata file")
        if not os.path.isfile(src.csv):
            raise FileNotFoundError(f"source {src.name!r}: metadata CSV not found: {src.csv}")
        clips = src.path or os.path.dirname(os.path.abspath(src.csv))
        if not os.path.isdir(clips):
            raise FileNotFoundError(f"source {src.name!r}: clip folder not found: {clips}")
    elif not src.path or not os.path.exists(src.path):
        raise FileNotFoundError(f"source {src.name!r}: input path not found: {src.path!r}")
    lister: Callable[[SourceConfig], Iterator[tuple[SampleRef, bool]]] = _LISTERS[src.format]
    return _numbered(lister(src), limit)


def _numbered(items: Iterator[tuple[SampleRef, bool]], limit: int | None) -> Iterator[SampleRef]:
    """Give refs unique keys and dense indices; ``bool`` says a repeat is an error."""
    seen = _SeenKeys()
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


def read_media(ref: SampleRef, max_bytes: int = 2_000_000_000) -> bytes:
    """The exact media bytes of ``ref``; ``MediaError`` when they cannot be had."""
    if ref.error:
        raise MediaError(f"{ref.key}: sample is marked bad: {ref.error}")
    if not ref.uri:
        raise MediaError(f"{ref.key}: sample has no media")
    if ref.offset >= 0:
        return _read_member(ref, max_bytes)
    path = ref.uri
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise MediaError(f"media is not a regular file: {path}")
        if st.st_size > max_bytes:
            raise MediaError(f"media too large: {st.st_size} bytes > limit {max_bytes}: {path}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)   # the file may grow after stat
    except FileNotFoundError:
        raise MediaError(f"media file not found: {path}") from None
    except OSError as e:
        raise MediaError(f"cannot read media {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise MediaError(f"media too large: more than {max_bytes} bytes: {path}")
    if ref.size >= 0 and len(data) != ref.size:
        raise MediaError(f"short read: media changed since listing ({ref.size} bytes listed, {len(data)} read): {path}")
    return data


def media_path(ref: SampleRef, max_bytes: int = 2_000_000_000) -> str:
    """The path of a plain-file sample, checked as ``read_media`` checks it, not read.

    Video decoders stream from it, so a worker's memory does not grow with the
    file. ``MediaError`` for a tar member (no path of its own) or a bad file.
    """
    if ref.error:
        raise MediaError(f"{ref.key}: sample is marked bad: {ref.error}")
    if not ref.uri or ref.offset >= 0 or not os.path.isabs(ref.uri):
        raise MediaError(f"{ref.key}: media is not a plain file with an absolute path: {ref.uri}")
    path = ref.uri
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(f"media file not found: {path}") from None
    except OSError as e:
        raise MediaError(f"cannot read media {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"media is not a regular file: {path}")
    if st.st_size > max_bytes:
        raise MediaError(f"media too large: {st.st_size} bytes > limit {max_bytes}: {path}")
    if ref.size >= 0 and st.st_size != ref.size:
        raise MediaError(f"short read: media changed since listing ({ref.size} bytes listed, "
                         f"{st.st_size} now): {path}")
    return path


def _read_member(ref: SampleRef, max_bytes: int) -> bytes:
    # The uri is "TAR#MEMBER" and either side may contain '#': the tar is the
    # first prefix that is an existing file. The bytes come from offset/size.
    cuts = [i for i, c in enumerate(ref.uri) if c == "#"]
    tar = next((ref.uri[:i] for i in cuts if os.path.isfile(ref.uri[:i])), None)
    if tar is None:
        raise MediaError(f"tar file not found for {ref.uri}")
    if ref.size < 0:
        raise MediaError(f"tar member without a size: {ref.uri}")
    if ref.size > max_bytes:
        raise MediaError(f"media too large: {ref.size} bytes > limit {max_bytes}: {ref.uri}")
    try:
        with open(tar, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.size)
    except OSError as e:
        raise MediaError(f"cannot read {ref.uri}: {e.strerror or e}") from None
    if len(data) != ref.size:
        raise MediaError(f"short read: got {len(data)} of {ref.size} bytes at offset {ref.offset} of {tar}")
    return data


# ------------------------------------------------------------------ folder
def _walk(root: str, rel: str = "") -> Iterator[tuple[str, frozenset[str], str]]:
    """``(relpath, file names of its directory, error)`` for every visible file.

    Entries are sorted with directories as ``name/``: visiting them in that
    order is exactly the byte-wise order of full relative paths.
    """
    entries = []
    try:
        with os.scandir(os.path.join(root, rel)) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                entries.append((os.fsencode(e.name) + (b"/" if is_dir else b""), e.name, is_dir))
    except OSError as e:
        yield rel, frozenset(), f"unreadable directory {rel or '.'}: {e.strerror or e}"
        return
    entries.sort()
    files = frozenset(name for _, name, is_dir in entries if not is_dir)
    for _, name, is_dir in entries:
        child = f"{rel}/{name}" if rel else name
        if is_dir:
            yield from _walk(root, child)
        else:
            yield child, files, ""


def _list_folder(src: SourceConfig) -> Iterator[tuple[SampleRef, bool]]:
    root = os.path.abspath(src.path)
    for rel, siblings, err in _walk(root):
        if err:
            yield _bad(src, rel or "root", os.path.join(root, rel), err), False
            continue
        name = rel.rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        ext = ext.lower()
        if not dot or not stem or not media_type_of(ext):
            continue
        key, path = rel[: -len(ext) - 1], os.path.join(root, rel)
        if not _utf8_ok(rel):
            yield _bad(src, key, path, "file name is not valid UTF-8"), False
            continue
        try:
            size = os.stat(path).st_size
        except OSError as e:
            yield _bad(src, key, path, f"cannot stat media file: {e.strerror or e}"), False
            continue
        caption, error = "", ""
        if f"{stem}.txt" in siblings:
            caption, error = _read_caption_file(os.path.join(os.path.dirname(path), f"{stem}.txt"))
        yield SampleRef(key=safe_key(key), source=src.name, uri=path, media_type=media_type_of(ext), ext=ext,
                        index=-1, size=size, caption=caption, error=error), False


def _read_caption_file(path: str) -> tuple[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_META_BYTES + 1)
    except OSError as e:
        return "", f"cannot read caption: {e.strerror or e}"
    if len(data) > MAX_META_BYTES:
        return "", f"caption file larger than {MAX_META_BYTES} bytes"
    caption = _decode_caption(data)
    return (caption, "") if caption is not None else ("", "caption is not valid UTF-8")


# ------------------------------------------------------------------ webdataset tars / files
@dataclass
class _Group:
    """Consecutive members (tar) or files (files layout) of one sample."""
    where: tuple[str, str]                 # (directory, key): a sample never spans directories
    key: str
    exts: set[str] = field(default_factory=set)
    media: list[tuple[str, str, int, int]] = field(default_factory=list)  # (ext, uri, offset, size)
    meta: dict[str, bytes] = field(default_factory=dict)                  # "txt"/"json" -> bytes
    error: str = ""


def _group_ref(src: SourceConfig, g: _Group, strict: bool) -> SampleRef | None:
    """The ref of a sample group; ``None`` for a non-sample file group (``strict`` off)."""
    unknown = sorted(e for e in g.exts if e not in META_EXTS and not media_type_of(e))
    if not strict and not any(e in META_EXTS or media_type_of(e) for e in g.exts):
        return None
    meta, info, error = "{}", {}, ""
    if "json" in g.meta:
        try:
            parsed = json.loads(g.meta["json"])
            info = parsed if isinstance(parsed, dict) else {}
            meta = _dumps(parsed)
        except ValueError as e:
            error = f"metadata JSON is invalid: {e}"
    caption = ""
    if "txt" in g.meta:
        decoded = _decode_caption(g.meta["txt"])
        caption = decoded if decoded is not None else ""
        error = error or ("caption is not valid UTF-8" if decoded is None else "")
    elif isinstance(info.get("caption"), str) and _utf8_ok(info["caption"]):
        caption = info["caption"].strip()
    chosen = (next((m for m in g.media if m[0] in VIDEO_EXTS), None)
              or next((m for m in g.media if m[0] in IMAGE_EXTS), None))
    if chosen is None:
        status = info.get("status")
        if unknown:
            error = f"unsupported media type .{unknown[0]}"
        elif status is not None and status != "success":
            error = f"download failed: {status}: {info.get('error_message')}"
        else:
            error = "no media in sample"
        chosen = ("", "", -1, -1)
    ext, uri, offset, size = chosen
    return SampleRef(key=safe_key(g.key), source=src.name, uri=_printable(uri), media_type=media_type_of(ext),
                     ext=ext, index=-1, offset=offset, size=size, caption=caption, meta=meta,
                     error=_one_line(g.error or error))


def _unsafe_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name) is not None


def _end_problem(tar_path: str, offset: int, size: int) -> tuple[str, str]:
    """``(reason, member name)`` when the archive does not end with its zero blocks.

    ``reason`` is '' for a proper end. The name is that of a regular member
    whose header was cut, when enough of the header is left to read it.
    """
    if offset >= size:
        return f"truncated tar: archive ends at byte {size} without an end-of-archive marker", ""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        block = f.read(min(size - offset, 1024))
    if not block.strip(b"\0"):
        return "", ""
    if len(block) >= 512:
        return f"corrupt tar: unreadable member header at byte {offset}", ""
    name = ""
    if len(block) > 156 and block[156:157] in (b"0", b"\0"):   # a regular file's header
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if len(block) >= 500 and block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
            name = block[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") + "/" + name
    return f"truncated tar: archive cut inside the header of member {name or '?'!r} at byte {offset}", name


def _list_tar(src: SourceConfig, tar_path: str) -> Iterator[tuple[SampleRef, bool]]:
    stem = os.path.basename(tar_path).rsplit(".", 1)[0]
    if not _utf8_ok(tar_path):
        yield _bad(src, stem, tar_path, "tar file name is not valid UTF-8"), True
        return
    try:
        size = os.stat(tar_path).st_size
        tf = tarfile.open(tar_path, "r:")   # plain tar only: offsets must be file offsets
    except (OSError, tarfile.TarError) as e:
        yield _bad(src, stem, tar_path, f"unreadable tar {tar_path}: {e}"), True
        return
    g: _Group | None = None
    stop, cut_name = "", ""
    with tf:
        while not stop:
            try:
                m = tf.next()
            except (tarfile.TarError, OSError) as e:
                stop = f"truncated tar: {e} at byte {tf.offset}"
                break
            if m is None:
                stop, cut_name = _end_problem(tar_path, tf.offset, size)
                stop = stop or "end"
                break
            if not m.isfile():      # directories, links, devices: never followed
                continue
            base = m.name.rsplit("/", 1)[-1]
            if base.startswith(".") or "." not in base:
                log.warning("%s: member %r belongs to no sample, skipped", tar_path, m.name)
                continue
            key, ext = base.split(".", 1)
            ext = ext.lower()
            where = (posixpath.dirname(m.name), key)
            if g is not None and (g.where != where or ext in g.exts):
                yield _group_ref(src, g, strict=True), True
                g = None
            g = g or _Group(where=where, key=key)
            g.exts.add(ext)
            if not _utf8_ok(m.name):
                g.error = g.error or f"member name is not valid UTF-8: {m.name}"
            if _unsafe_member(m.name):
                g.error = g.error or f"unsafe member path {m.name!r}"
            if m.offset_data + m.size > size:
                g.error = f"truncated tar: member {m.name!r} is cut off at byte {size}"
                stop = "cut"
            elif m.issparse():
                g.error = g.error or f"sparse tar member not supported: {m.name!r}"
            elif ext in META_EXTS:
                if m.size > MAX_META_BYTES:
                    g.error = g.error or f"member {m.name!r} larger than {MAX_META_BYTES} bytes"
                    continue
                try:
                    g.meta[ext] = tf.extractfile(m).read()
                except (tarfile.TarError, OSError) as e:
                    g.error, stop = f"truncated tar: {e} in member {m.name!r}", "cut"
            else:
                g.media.append((ext, f"{tar_path}#{m.name}", m.offset_data, m.size))
    if stop in ("end", "cut"):
        if g is not None:
            yield _group_ref(src, g, strict=True), True
        return
    # The archive ended abnormally. A cut header we could name is its own
    # error sample (or belongs to the pending one); otherwise the pending
    # sample may have lost members, so it is the one reported.
    base = cut_name.rsplit("/", 1)[-1]
    cut_where = (posixpath.dirname(cut_name), base.split(".", 1)[0]) if "." in base[1:] else None
    if g is not None and (cut_where is None or cut_where == g.where):
        g.error = g.error or stop
        yield _group_ref(src, g, strict=True), True
        return
    if g is not None:
        yield _group_ref(src, g, strict=True), True
    cut_key = cut_where[1] if cut_where else stem
    yield _bad(src, cut_key, f"{tar_path}#{cut_name}" if cut_name else tar_path, stop), True


def _flush(src: SourceConfig, g: _Group | None) -> Iterator[tuple[SampleRef, bool]]:
    ref = _group_ref(src, g, strict=False) if g is not None else None
    if ref is not None:
        yield ref, True


def _list_files_layout(src: SourceConfig, root: str, parquets: dict[str, str]) -> Iterator[tuple[SampleRef, bool]]:
    """``{shard}/{key}.{ext}`` folders; after each top folder, its parquet's failures."""
    g: _Group | None = None
    shard: str | None = None
    done: set[str] = set()
    for rel, _, err in _walk(root):
        parts = rel.split("/")
        top = parts[0] if len(parts) > 1 else ""
        if top != shard or err:
            yield from _flush(src, g)
            g = None
        if top != shard:
            if shard and shard in parquets:
                yield from _parquet_failures(src, parquets[shard])
                done.add(shard)
            shard = top
        if err:
            yield _bad(src, rel or "root", os.path.join(root, rel), err), True
            continue
        name = parts[-1]
        if name.endswith((".parquet", "_stats.json")) or "." not in name:
            continue
        key, ext = name.split(".", 1)
        ext = ext.lower()
        where = (posixpath.dirname(rel), key)
        if g is not None and (g.where != where or ext in g.exts):
            yield from _flush(src, g)
            g = None
        g = g or _Group(where=where, key=key)
        g.exts.add(ext)
        path = os.path.join(root, rel)
        if not _utf8_ok(rel):
            g.error = g.error or f"file name is not valid UTF-8: {rel}"
        elif ext in META_EXTS:
            try:
                with open(path, "rb") as f:
                    g.meta[ext] = f.read(MAX_META_BYTES + 1)
                if len(g.meta[ext]) > MAX_META_BYTES:
                    g.error = g.error or f"{name} larger than {MAX_META_BYTES} bytes"
            except OSError as e:
                g.error = g.error or f"cannot read {rel}: {e.strerror or e}"
        elif media_type_of(ext):
            try:
                g.media.append((ext, path, -1, os.stat(path).st_size))
            except OSError as e:
                g.error = g.error or f"cannot stat {rel}: {e.strerror or e}"
    yield from _flush(src, g)
    if shard and shard in parquets:
        yield from _parquet_failures(src, parquets[shard])
        done.add(shard)
    for stem in sorted(set(parquets) - done, key=os.fsencode):   # parquet with no shard folder
        yield from _parquet_failures(src, parquets[stem])


def _parquet_failures(src: SourceConfig, path: str) -> Iterator[tuple[SampleRef, bool]]:
    """img2dataset's failed downloads, which appear only in the shard parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stem = os.path.basename(path)[: -len(".parquet")]
    n = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                status = row.get("status")
                if status == "success":
                    continue
                key = row.get("key")
                key = str(key) if key not in (None, "") else f"{stem}_row{n - 1}"
                caption = row.get("caption") if isinstance(row.get("caption"), str) else ""
                yield _bad(src, key, "", f"download failed: {status}: {row.get('error_message')}",
                           caption=caption if _utf8_ok(caption) else "", meta=_dumps(row)), True
    except (OSError, ValueError, pa.ArrowException) as e:
        log.warning("ignoring unreadable parquet %s after %d rows: %s", path, n, e)


def _list_webdataset(src: SourceConfig, failures_in_parquet: bool) -> Iterator[tuple[SampleRef, bool]]:
    root = os.path.abspath(src.path)
    if os.path.isfile(root):        # the path names one tar
        tars = {os.path.basename(root).rsplit(".", 1)[0]: root}
        parquets = {}
        side = root.rsplit(".", 1)[0] + ".parquet"
        if failures_in_parquet and os.path.isfile(side):
            parquets = {next(iter(tars)): side}
    else:
        with os.scandir(root) as it:
            top = [e for e in it if not e.name.startswith(".")]
        tars = {e.name[:-4]: e.path for e in top if e.name.endswith(".tar") and e.is_file()}
        parquets = ({e.name[:-8]: e.path for e in top if e.name.endswith(".parquet") and e.is_file()}
                    if failures_in_parquet else {})
    if not tars:
        yield from _list_files_layout(src, root, parquets)
        return
    for stem in sorted(set(tars) | set(parquets), key=os.fsencode):
        if stem in tars:
            yield from _list_tar(src, tars[stem])
        if stem in parquets:
            yield from _parquet_failures(src, parquets[stem])


# ------------------------------------------------------------------ Panda-70M CSV
def _literal(cell: str | None) -> Any:
    """A Python literal cell (never eval); raises ValueError when it is not one."""
    if cell is None:
        raise ValueError("missing cell")
    try:
        return ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a Python literal: {_one_line(cell, 60)}") from e


def _per_clip(value: Any, i: int, n: int) -> Any:
    return value[i] if isinstance(value, list) and len(value) == n else value


def _list_panda(src: SourceConfig) -> Iterator[tuple[SampleRef, bool]]:
    clips_dir = os.path.abspath(src.path or os.path.dirname(os.path.abspath(src.csv)))
    # Cells listing every shot boundary of a long video outgrow csv's 128 KiB default.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    with open(src.csv, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if "videoID" not in header or "timestamp" not in header:
            raise ValueError(f"{src.csv}: not a Panda-70M CSV (needs videoID and timestamp columns, has {header})")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line = reader.line_num
                yield _bad(src, f"csv_line_{line}", src.csv, f"bad CSV row at line {line}: {e}"), True
                continue
            if not cells:
                continue
            yield from _panda_row(src, clips_dir, dict(zip(header, cells)), reader.line_num)


def _panda_row(src: SourceConfig, clips_dir: str, row: dict[str, str], line: int) -> Iterator[tuple[SampleRef, bool]]:
    vid = row.get("videoID") or ""
    raw_meta = _dumps({k: _printable(v) for k, v in row.items() if isinstance(v, str)})
    try:
        spans = _literal(row.get("timestamp"))
        if not isinstance(spans, list):
            raise ValueError("timestamp is not a list")
    except ValueError as e:
        yield _bad(src, vid or f"csv_line_{line}", src.csv,
                   f"bad timestamp cell at CSV line {line}: {e}", meta=raw_meta), True
        return
    parsed: dict[str, Any] = {}
    for col, cell in row.items():
        if col in ("caption", "matching_score", "desirable_filtering", "shot_boundary_detection"):
            try:
                parsed[col] = _literal(cell)
            except ValueError:
                parsed[col] = cell      # kept as text; a caption that is plain text is still a caption
        elif col != "timestamp":
            parsed[col] = cell
    n = len(spans)
    for i in range(n):
        caption = _per_clip(parsed.get("caption", ""), i, n)
        caption = caption.strip() if isinstance(caption, str) else ""
        meta = {k: (_printable(v) if isinstance(v, str) else v) for k, v in
                ((k, _per_clip(v, i, n)) for k, v in parsed.items())}
        meta.update(clip=i, timestamp=spans[i], caption=_printable(caption))
        key, meta_s = f"{vid}_{i:05d}", _dumps(meta)
        if not _SAFE_ID.fullmatch(vid):
            yield _bad(src, key, src.csv, f"unsafe video id {vid!r} at CSV line {line}", meta=meta_s), True
            continue
        path = next((p for p in (os.path.join(clips_dir, f"{vid}.{i}.{e}") for e in _VIDEO_PREFERENCE)
                     if os.path.isfile(p)), None)
        error = "" if _utf8_ok(caption) else "caption is not valid UTF-8"
        if path is None:
            error = f"clip file not found: {os.path.join(clips_dir, f'{vid}.{i}.mp4')}"
            yield _bad(src, key, "", error, caption=_printable(caption), meta=meta_s), True
            continue
        try:
            size = os.path.getsize(path)
        except OSError as e:
            size, error = -1, error or f"cannot stat clip file: {e.strerror or e}"
        yield SampleRef(key=key, source=src.name, uri=path, media_type="video", ext=path.rsplit(".", 1)[1],
                        index=-1, size=size, caption=caption if not error else "", meta=meta_s, error=error), True


_LISTERS: dict[str, Callable[[SourceConfig], Iterator[tuple[SampleRef, bool]]]] = {
    "folder": _list_folder,
    "video2dataset": lambda src: _list_webdataset(src, failures_in_parquet=False),
    "img2dataset": lambda src: _list_webdataset(src, failures_in_parquet=True),
    "panda_csv": _list_panda,
}
