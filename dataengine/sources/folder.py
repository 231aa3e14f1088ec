"""The ``folder`` layout: a recursive tree of media, ``STEM.txt`` captions beside them."""
from __future__ import annotations

import os
from typing import Iterator

from dataengine.config import SourceConfig
from .common import MAX_META_BYTES, SampleRef, bad_ref, decode_caption, media_type_of, safe_key, utf8_ok


def walk(root: str, rel: str = "") -> Iterator[tuple[str, frozenset[str], str]]:
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
            yield from walk(root, child)
        else:
            yield child, files, ""


def list_folder(src: SourceConfig) -> Iterator[tuple[SampleRef, bool]]:
    root = os.path.abspath(src.path)
    for rel, siblings, err in walk(root):
        if err:
            yield bad_ref(src, rel or "root", os.path.join(root, rel), err), False
            continue
        name = rel.rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        ext = ext.lower()
        if not dot or not stem or not media_type_of(ext):
            continue
        key, path = rel[: -len(ext) - 1], os.path.join(root, rel)
        if not utf8_ok(rel):
            yield bad_ref(src, key, path, "file name is not valid UTF-8"), False
            continue
        try:
            size = os.stat(path).st_size
        except OSError as e:
            yield bad_ref(src, key, path, f"cannot stat media file: {e.strerror or e}"), False
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
    caption = decode_caption(data)
    return (caption, "") if caption is not None else ("", "caption is not valid UTF-8")
