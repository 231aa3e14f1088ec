"""Panda-70M: the metadata CSV plus the clips its splitter wrote beside it."""
from __future__ import annotations

import ast
import csv
import os
from typing import Any, Iterator

from dataengine.config import SourceConfig
from dataengine.errors import InputError
from .common import SAFE_ID, VIDEO_PREFERENCE, SampleRef, bad_ref, dumps, one_line, printable, utf8_ok


def _literal(cell: str | None) -> Any:
    """A Python literal cell (never eval); raises ValueError when it is not one."""
    if cell is None:
        raise InputError("missing cell")
    try:
        return ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise InputError(f"not a Python literal: {one_line(cell, 60)}") from e


def _per_clip(value: Any, i: int, n: int) -> Any:
    return value[i] if isinstance(value, list) and len(value) == n else value


def list_panda(src: SourceConfig) -> Iterator[tuple[SampleRef, bool]]:
    clips_dir = os.path.abspath(src.path or os.path.dirname(os.path.abspath(src.csv)))
    # Cells listing every shot boundary of a long video outgrow csv's 128 KiB default.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    with open(src.csv, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if "videoID" not in header or "timestamp" not in header:
            raise InputError(f"{src.csv}: not a Panda-70M CSV (needs videoID and timestamp columns, has {header})")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line = reader.line_num
                yield bad_ref(src, f"csv_line_{line}", src.csv, f"bad CSV row at line {line}: {e}"), True
                continue
            if not cells:
                continue
            yield from _panda_row(src, clips_dir, dict(zip(header, cells)), reader.line_num)


def _panda_row(src: SourceConfig, clips_dir: str, row: dict[str, str], line: int) -> Iterator[tuple[SampleRef, bool]]:
    vid = row.get("videoID") or ""
    raw_meta = dumps({k: printable(v) for k, v in row.items() if isinstance(v, str)})
    try:
        spans = _literal(row.get("timestamp"))
        if not isinstance(spans, list):
            raise InputError("timestamp is not a list")
    except ValueError as e:
        yield bad_ref(src, vid or f"csv_line_{line}", src.csv,
                      f"bad timestamp cell at CSV line {line}: {e}", meta=raw_meta), True
        return
    parsed: dict[str, Any] = {}
    for col, cell in row.items():
        if col in ("caption", "matching_score", "desirable_filtering", "shot_boundary_detection"):
            try:
                value = _literal(cell)
                dumps(value)            # JSON must hold it (no tuple keys, no keys of mixed types)
                parsed[col] = value
            except (ValueError, TypeError, RecursionError):
                parsed[col] = cell      # kept as text; a caption that is plain text is still a caption
        elif col != "timestamp":
            parsed[col] = cell
    n = len(spans)
    for i in range(n):
        caption = _per_clip(parsed.get("caption", ""), i, n)
        caption = caption.strip() if isinstance(caption, str) else ""
        meta = {k: (printable(v) if isinstance(v, str) else v) for k, v in
                ((k, _per_clip(v, i, n)) for k, v in parsed.items())}
        meta.update(clip=i, timestamp=spans[i], caption=printable(caption))
        key, meta_s = f"{vid}_{i:05d}", dumps(meta)
        if not SAFE_ID.fullmatch(vid):
            yield bad_ref(src, key, src.csv, f"unsafe video id {vid!r} at CSV line {line}", meta=meta_s), True
            continue
        path = next((p for p in (os.path.join(clips_dir, f"{vid}.{i}.{e}") for e in VIDEO_PREFERENCE)
                     if os.path.isfile(p)), None)
        error = "" if utf8_ok(caption) else "caption is not valid UTF-8"
        if path is None:
            error = f"clip file not found: {os.path.join(clips_dir, f'{vid}.{i}.mp4')}"
            yield bad_ref(src, key, "", error, caption=printable(caption), meta=meta_s), True
            continue
        try:
            size = os.path.getsize(path)
        except OSError as e:
            size, error = -1, error or f"cannot stat clip file: {e.strerror or e}"
        yield SampleRef(key=key, source=src.name, uri=path, media_type="video", ext=path.rsplit(".", 1)[1],
                        index=-1, size=size, caption=caption if not error else "", meta=meta_s, error=error), True
