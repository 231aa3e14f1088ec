"""The ``folder`` layout: a recursive tree of media, ``STEM.txt`` captions beside them."""
from __future__ import annotations

import os
from typing import Iterator

from dataengine.config import SourceConfig
from .common import (MAX_META_BYTES, SampleRef, bad_ref, decode_caption, media_type_of, read_small_file,
                     safe_key, utf8_ok)


def walk(root: str, rel: str = "") -> Iterator[tuple[str, frozenset[str], str]]:
    """``(relpath, file names of its directory, error)`` for every visible file.

    Entries are sorted with directories as ``name/``: visiting them in that
    order is exactly the byte-wise order of full relative paths. Depth-first with a stack of
    its own, so a tree deeper than Python's recursion limit is walked like any other.
    """
    stack = [iter(_directory(root, rel))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif item[1] is None:              # a subdirectory: walk it before the next entry
            stack.append(iter(_directory(root, item[0])))
        else:
            yield item


def _directory(root: str, rel: str) -> list[tuple[str, frozenset[str] | None, str]]:
    """One directory's entries in walk order: ``(relpath, sibling file names, "")`` for a file,
    ``(relpath, None, "")`` for a subdirectory; one error entry if it cannot be listed."""
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
        return [(rel, frozenset(), f"unreadable directory {rel or '.'}: {e.strerror or e}")]
    entries.sort()
    files = frozenset(name for _, name, is_dir in entries if not is_dir)
    return [(f"{rel}/{name}" if rel else name, None if is_dir else files, "") for _, name, is_dir in entries]


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
        data = read_small_file(path)
    except OSError as e:
        return "", f"cannot read caption: {e.strerror or e}"
    if len(data) > MAX_META_BYTES:
        return "", f"caption file larger than {MAX_META_BYTES} bytes"
    caption = decode_caption(data)
    return (caption, "") if caption is not None else ("", "caption is not valid UTF-8")
