"""Trajectory shards v1: the one writer and the one reader of the format.

Shards are webdataset tars ``{prefix}-{index:06d}.tar`` written to a temporary
name and renamed when complete, so a final name never holds a partial tar.
Members are written in sorted order with a fixed mtime and owner, so the same
samples always give the same bytes.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import trajformat

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6})\.tar$")


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


@dataclass
class ShardSample:
    """One sample of a trajectory shard, members kept as bytes."""
    key: str
    media_ext: str | None          # e.g. "mp4", "jpg"; None when the shard holds no media
    media: bytes | None
    caption: str
    meta: dict[str, Any]
    traj: dict[str, Any]

    def to_members(self) -> dict[str, Any]:
        if not KEY_RE.match(self.key):
            raise ValueError(f"unsafe sample key {self.key!r}")
        obj: dict[str, Any] = {
            "__key__": self.key,
            "txt": self.caption.encode("utf-8"),
            "json": json.dumps(self.meta, sort_keys=True, separators=(",", ":")).encode("utf-8"),
            "traj.json": trajformat.dumps(self.traj),
        }
        if self.media is not None and self.media_ext:
            obj[self.media_ext] = bytes(self.media)
        return obj

    @property
    def labels(self):
        return trajformat.traj_to_labels(self.traj)


def write_shard(path: str | Path, samples: list[ShardSample]) -> int:
    """Write ``samples`` atomically to ``path``; returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Imported here: webdataset pulls in torch (~700 MB, seconds), which readers never need.
    import webdataset as wds

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0, user="trajtok", group="trajtok", mode=0o644)
        for s in samples:
            writer.write(s.to_members())
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return size


MEDIA_EXTS = {"mp4", "webm", "mkv", "avi", "mov", "jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"}


def iter_tar_members(path: str | Path) -> Iterator[tuple[str, str, bytes]]:
    """Stream ``(key, ext, bytes)`` of regular members; nothing is extracted to disk.

    The key is the member's basename up to its first dot, the ext the rest.
    Directories, links and devices are skipped: a tar's paths are never trusted.
    """
    with tarfile.open(path, "r|*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            if "." not in base:
                continue
            key, ext = base.split(".", 1)
            data = tf.extractfile(m).read()
            yield key, ext, data


def group_members(members: Iterator[tuple[str, str, bytes]]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive members sharing a key, as webdataset does."""
    key, group = None, {}
    for k, ext, data in members:
        if k != key and group:
            yield key, group
            group = {}
        key = k
        group[ext] = data
    if group:
        yield key, group


def read_shard(path: str | Path, with_media: bool = True) -> Iterator[ShardSample]:
    for key, group in group_members(iter_tar_members(path)):
        media_ext = next((e for e in group if e in MEDIA_EXTS), None)
        yield ShardSample(
            key=key,
            media_ext=media_ext,
            media=group.get(media_ext) if (with_media and media_ext) else None,
            caption=group.get("txt", b"").decode("utf-8"),
            meta=json.loads(group["json"]) if "json" in group else {},
            traj=json.loads(group["traj.json"]),
        )


def list_shards(directory: str | Path) -> list[Path]:
    """Final shard files of a dataset directory, in index order (temporary files excluded)."""
    d = Path(directory)
    if d.is_file():
        return [d]
    return sorted(p for p in d.glob("*.tar") if SHARD_RE.match(p.name))


def read_dataset(directory: str | Path, with_media: bool = True) -> Iterator[ShardSample]:
    for p in list_shards(directory):
        yield from read_shard(p, with_media=with_media)
