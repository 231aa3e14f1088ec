"""video2dataset / img2dataset output: webdataset tars, the ``files`` layout, img2dataset failure parquets."""
from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from typing import Iterator


from dataengine.config import SourceConfig
from .common import (IMAGE_EXTS, MAX_META_BYTES, META_EXTS, VIDEO_EXTS, SampleRef, bad_ref, decode_caption,
                     dumps, media_type_of, one_line, printable, read_small_file, safe_key, utf8_ok)
from .folder import walk

log = logging.getLogger(__name__)


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
            if isinstance(parsed, dict):
                info, meta = parsed, dumps(parsed)
            else:       # every reader of a sample's metadata takes an object
                error = f"metadata JSON is {type(parsed).__name__ if parsed is not None else 'null'}, not an object"
        except (ValueError, RecursionError) as e:     # RecursionError: nested deeper than Python parses
            error = f"metadata JSON is invalid: {type(e).__name__ if isinstance(e, RecursionError) else e}"
    caption = ""
    if "txt" in g.meta:
        decoded = decode_caption(g.meta["txt"])
        caption = decoded if decoded is not None else ""
        error = error or ("caption is not valid UTF-8" if decoded is None else "")
    elif isinstance(info.get("caption"), str) and utf8_ok(info["caption"]):
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
    return SampleRef(key=safe_key(g.key), source=src.name, uri=printable(uri), media_type=media_type_of(ext),
                     ext=ext, index=-1, offset=offset, size=size, caption=caption, meta=meta,
                     error=one_line(g.error or error))


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
    if not utf8_ok(tar_path):
        yield bad_ref(src, stem, tar_path, "tar file name is not valid UTF-8"), True
        return
    try:
        size = os.stat(tar_path).st_size
        tf = tarfile.open(tar_path, "r:")   # plain tar only: offsets must be file offsets
    except (OSError, tarfile.TarError) as e:
        yield bad_ref(src, stem, tar_path, f"unreadable tar {tar_path}: {e}"), True
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
            if not utf8_ok(m.name):
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
    yield bad_ref(src, cut_key, f"{tar_path}#{cut_name}" if cut_name else tar_path, stop), True


def _flush(src: SourceConfig, g: _Group | None) -> Iterator[tuple[SampleRef, bool]]:
    ref = _group_ref(src, g, strict=False) if g is not None else None
    if ref is not None:
        yield ref, True


def _list_files_layout(src: SourceConfig, root: str, parquets: dict[str, str]) -> Iterator[tuple[SampleRef, bool]]:
    """``{shard}/{key}.{ext}`` folders; after each top folder, its parquet's failures."""
    g: _Group | None = None
    shard: str | None = None
    done: set[str] = set()
    for rel, _, err in walk(root):
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
            yield bad_ref(src, rel or "root", os.path.join(root, rel), err), True
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
        if not utf8_ok(rel):
            g.error = g.error or f"file name is not valid UTF-8: {rel}"
        elif ext in META_EXTS:
            try:
                g.meta[ext] = read_small_file(path)
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


def _parquet_failures(src: SourceConfig, path: str, delivered: set[str] | None = None
                      ) -> Iterator[tuple[SampleRef, bool]]:
    """img2dataset's failed downloads, which appear only in the shard parquet; with ``delivered`` (the
    keys its tar gave), also the rows it lists as downloaded that the tar does not hold (a tar cut
    short, or missing): they are inputs too, and end in the manifest as errors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stem = os.path.basename(path)[: -len(".parquet")]
    n = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                status = row.get("status")
                key = row.get("key")
                key = str(key) if key not in (None, "") else f"{stem}_row{n - 1}"
                if status == "success":
                    if delivered is not None and safe_key(key) not in delivered:
                        yield bad_ref(src, key, "", f"listed as downloaded in {os.path.basename(path)} but "
                                                    f"missing from its tar", meta=dumps(row)), True
                    continue
                caption = row.get("caption") if isinstance(row.get("caption"), str) else ""
                yield bad_ref(src, key, "", f"download failed: {status}: {row.get('error_message')}",
                              caption=caption if utf8_ok(caption) else "", meta=dumps(row)), True
    except (OSError, ValueError, pa.ArrowException) as e:
        log.warning("ignoring unreadable parquet %s after %d rows: %s", path, n, e)


def list_webdataset(src: SourceConfig, failures_in_parquet: bool) -> Iterator[tuple[SampleRef, bool]]:
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
        delivered: set[str] = set()
        if stem in tars:
            for ref, flag in _list_tar(src, tars[stem]):
                delivered.add(ref.key)
                yield ref, flag
        if stem in parquets:
            yield from _parquet_failures(src, parquets[stem], delivered)
