"""Trajectory shards (format v2, v1 still read): the one writer and the one reader of the format.

Shards are webdataset tars ``{prefix}-{index:06d}.tar`` written to a temporary
name and renamed when complete, so a final name never holds a partial tar.
Members are written in sorted order with a fixed mtime and owner, so the same
samples always give the same bytes.

A dataset keeps one shard *series* per media extension, ``{prefix}-{ext}-{index:06d}.tar``
(``traj-mp4-000000.tar``, ``traj-jpg-000000.tar``): Hugging Face ``datasets``
infers a shard's columns from its first samples and silently drops a member type
it did not see there, so every tar of a series holds the same member names.
"""
from __future__ import annotations

import functools
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from dataengine.errors import InputError, first_line
from dataengine.format import trajformat
from dataengine.format.atomic import replaced_when_done
from dataengine.format.outputfs import Output, is_url

# The media extensions of the whole project, one list: sources list these, annotate decodes
# them, shards carry them, and validate / the training loader / show find them.
VIDEO_EXTS = frozenset({"mp4", "webm", "mkv", "avi", "mov", "m4v"})
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"})
MEDIA_EXTS = VIDEO_EXTS | IMAGE_EXTS

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# {index:06d}: six digits, more from chunk 1,000,000 on (64 M inputs at the default 64 a shard)
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6,})\.tar$")
SERIES_RE = re.compile(r"^[a-z0-9]{1,16}$")
NO_MEDIA_SERIES = "nomedia"


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def series_of(media_ext: str | None) -> str:
    """The series a sample belongs to: its media extension (lower case), or ``nomedia``."""
    ext = (media_ext or "").lower()
    return ext if SERIES_RE.match(ext) else NO_MEDIA_SERIES


def series_shard_name(prefix: str, media_ext: str | None, index: int) -> str:
    return shard_name(f"{prefix}-{series_of(media_ext)}", index)


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
            trajformat.MEMBER: trajformat.encode_member(self.traj),
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
    with replaced_when_done(path) as f:
        return write_shard_to(f, samples)


def write_shard_to(f: BinaryIO, samples: Iterable[ShardSample]) -> int:
    """Write ``samples`` as one tar into the open file ``f``; returns bytes written. ``samples`` may be a
    generator: each is taken when it is written, so only one sample's media need be in memory.

    The bytes are those of ``webdataset.TarWriter(f, encoder=False, mtime=0, user="trajtok",
    group="trajtok", mode=0o644)`` (a sample's members sorted by name; tests check it), written
    with ``tarfile`` itself: importing webdataset imports torch, about a CPU second in every
    label actor that writes shards."""
    start = f.tell()
    with tarfile.open(fileobj=f, mode="w|") as tar:
        for s in samples:
            members = s.to_members()
            key = members.pop("__key__")
            for ext in sorted(members):
                data = members[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uname = info.gname = "trajtok"
                tar.addfile(info, io.BytesIO(data))
    return f.tell() - start


def chunk_shard_names(names: Iterable[str], prefix: str, index: int) -> list[str]:
    """Those of ``names`` that are final shards of chunk ``index``: its series and a pre-series
    ``{prefix}-{index}.tar``, sorted."""
    out = []
    for name in names:
        m = SHARD_RE.match(name)
        if not m or int(m["index"]) != index:
            continue
        if m["prefix"] == prefix or (m["prefix"].startswith(prefix + "-")
                                     and SERIES_RE.match(m["prefix"][len(prefix) + 1:])):
            out.append(name)
    return sorted(out)


def write_series(directory: str | Path | Output, prefix: str, index: int, samples: list[ShardSample],
                 replaces: Iterable[str] | None = None) -> dict[str, int]:
    """Write chunk ``index`` as one shard per media series; returns {shard name: bytes}.

    ``directory`` is a local path or the run's ``Output`` (a path or filesystem URL). Samples
    keep their order within a series. Shards of the chunk that the new samples no longer fill
    (another series, the pre-series name) are removed after the new ones are in place: the
    names in ``replaces`` when the caller knows them, else those listed in the directory.
    """
    by_series: dict[str, list[ShardSample]] = {}
    for s in samples:
        by_series.setdefault(series_of(s.media_ext), []).append(s)
    return write_series_streams(directory, prefix, index, by_series, replaces)


def write_series_streams(directory: str | Path | Output, prefix: str, index: int,
                         streams: dict[str, Iterable[ShardSample]],
                         replaces: Iterable[str] | None = None) -> dict[str, int]:
    """``write_series`` with the samples given series by series as iterables (``{series: samples}``),
    taken one at a time while each shard is written: a chunk of large videos is never in memory
    whole. A series whose iterable gives nothing gets no shard (and its old shard, if any, goes)."""
    out = directory if isinstance(directory, Output) else Output(str(directory))
    written = {}
    for series in sorted(streams):
        name = series_shard_name(prefix, series, index)
        size = write_shard_stream(out, name, streams[series])
        if size is not None:
            written[name] = size
    stale = chunk_shard_names(out.names(), prefix, index) if replaces is None else replaces
    for name in stale:
        if name not in written:
            out.delete(name)
    return written


def write_shard_stream(out: Output, name: str, samples: Iterable[ShardSample]) -> int | None:
    """Write the samples, taken one at a time, as shard ``name`` of ``out`` (complete or not at all); returns
    its bytes, or None (and no shard) when ``samples`` gives nothing."""
    samples = iter(samples)
    first = next(samples, None)
    if first is None:
        return None
    samples, first = _after(first, samples), None     # no reference here keeps the first sample alive
    with out.replaced_when_done(name) as f:
        return write_shard_to(f, samples)


def _after(first: ShardSample, rest: Iterator[ShardSample]) -> Iterator[ShardSample]:
    yield first
    del first
    yield from rest


@functools.lru_cache(maxsize=64)
def _location(directory: str) -> Output:
    return Output(directory)


def open_url(url: str) -> BinaryIO:
    """A shard at a URL, opened as a stream through ``Output``'s filesystem (one per folder), read ahead in
    8 MiB pieces: tar reads a member at a time, and on an object store every unbuffered read is a request."""
    directory, name = url.rstrip("/").rsplit("/", 1)
    location = _location(directory)
    return location.fs.open_input_stream(location.path(name), compression=None, buffer_size=8 << 20)


def shard_stat(path: str | Path) -> tuple[int, int]:
    """``(size, mtime in ns)`` of a shard path or URL (mtime 0 where the store keeps none)."""
    if is_url(path):
        directory, name = str(path).rstrip("/").rsplit("/", 1)
        location = _location(directory)
        info = location.fs.get_file_info(location.path(name))
        return int(info.size or 0), int(info.mtime_ns or 0)
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def iter_tar_members(path: str | Path | BinaryIO) -> Iterator[tuple[str, str, bytes]]:
    """Stream ``(key, ext, bytes)`` of regular members of a tar path, URL or open file; nothing is
    extracted to disk.

    The key is the member's basename up to its first dot, the ext the rest.
    Directories, links and devices are skipped: a tar's paths are never trusted.
    """
    if is_url(path):
        with open_url(path) as f:
            yield from iter_tar_members(f)
        return
    opened = tarfile.open(path, "r|*") if isinstance(path, (str, Path)) else tarfile.open(fileobj=path, mode="r|*")
    with opened as tf:
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


def read_traj(group: dict[str, bytes]) -> dict[str, Any]:
    """The traj.json dict of a sample's members (``traj.json.gz`` of v2 or ``traj.json`` of v1)."""
    name = trajformat.find_member(group)
    if name is None:
        raise InputError(f"no {trajformat.MEMBER} (or {trajformat.LEGACY_MEMBER}) member")
    return trajformat.decode_member(name, group[name])


def media_ext_of(group: dict[str, bytes]) -> str | None:
    return next((e for e in group if e in MEDIA_EXTS), None)


def sample_from_group(key: str, group: dict[str, bytes], with_media: bool = True) -> ShardSample:
    """A sample from its members; its JSON and traj.json are parsed here (errors are this sample's)."""
    media_ext = media_ext_of(group)
    return ShardSample(
        key=key,
        media_ext=media_ext,
        media=group.get(media_ext) if (with_media and media_ext) else None,
        caption=group.get("txt", b"").decode("utf-8"),
        meta=json.loads(group["json"]) if "json" in group else {},
        traj=read_traj(group),
    )


class ShardError(InputError):
    """A shard that is not a readable trajectory shard: damaged tar, or a sample without a sound traj.json."""


def read_shard(path: str | Path | BinaryIO, with_media: bool = True) -> Iterator[ShardSample]:
    """The samples of one shard, in order. A damaged tar or a sample that does not parse ends the
    iteration with a ``ShardError`` naming the shard and the sample (the samples before it were given)."""
    name = shard_file_name(path) if isinstance(path, (str, Path)) else getattr(path, "name", "shard")
    try:
        for key, group in group_members(iter_tar_members(path)):
            try:
                sample = sample_from_group(key, group, with_media)
            except (ValueError, KeyError, TypeError) as e:   # JSON / UTF-8 / traj member errors
                raise ShardError(f"{name}: sample {key}: {first_line(e)}") from e
            yield sample
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ShardError(f"{name}: unreadable tar ({first_line(e)})") from e


def shard_file_name(p: Path | str) -> str:
    """The file name of a shard path or URL."""
    return p.name if isinstance(p, Path) else p.rsplit("/", 1)[-1]


def _order(p: Path | str) -> tuple[int, str]:
    name = shard_file_name(p)
    return int(SHARD_RE.match(name)["index"]), name


def list_shards(directory: str | Path) -> list[Path] | list[str]:
    """Final shard files of a dataset directory in index order, series by series within an index
    (temporary files excluded). A URL directory (or one tar's URL) gives URLs, which ``read_shard`` reads."""
    if is_url(directory):
        url = str(directory).rstrip("/")
        if url.endswith(".tar") and _location(url.rsplit("/", 1)[0]).exists(url.rsplit("/", 1)[1]):
            return [url]
        return sorted((f"{url}/{n}" for n in Output(url).names() if SHARD_RE.match(n)), key=_order)
    d = Path(directory)
    if d.is_file():
        return [d]
    return sorted((p for p in d.glob("*.tar") if SHARD_RE.match(p.name)), key=_order)


def read_dataset(directory: str | Path, with_media: bool = True) -> Iterator[ShardSample]:
    for p in list_shards(directory):
        yield from read_shard(p, with_media=with_media)


# How Hugging Face ``datasets`` should type a series' media member (its own extension lists).
HF_MEDIA_DTYPES = {**dict.fromkeys(("mp4", "m4v", "mkv", "avi", "mov", "mpeg"), "video"),
                   **dict.fromkeys(("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"), "image")}
CARD = "README.md"


def write_dataset_card(directory: str | Path, prefix: str = "traj") -> Path | None:
    """``README.md`` whose YAML header tells Hugging Face ``datasets`` the series and their columns.

    With it ``datasets.load_dataset(DIR, "mp4")`` reads every sample of that series:
    JSON members are typed ``json`` (kept whole), so the builder never infers a
    column from its first samples (an empty ``scene_cuts`` there would make a later
    sample's cut fail to cast). Returns the path, or None when there are no series shards.
    """
    d = Path(directory)
    text = dataset_card([p.name for p in list_shards(d)], prefix)
    if text is None:
        return None
    path = d / CARD
    with replaced_when_done(path) as f:
        f.write(text.encode("utf-8"))
    return path


def dataset_card(shard_names: Iterable[str], prefix: str = "traj") -> str | None:
    """The text of ``write_dataset_card`` for a dataset holding ``shard_names`` (None: no series)."""
    series = sorted({m["prefix"][len(prefix) + 1:] for n in shard_names if (m := SHARD_RE.match(n))
                     and m["prefix"].startswith(prefix + "-") and SERIES_RE.match(m["prefix"][len(prefix) + 1:])})
    if not series:
        return None
    lines = ["---", "configs:"]
    for name in series:
        lines += [f"- config_name: {name}", f"  data_files: \"{prefix}-{name}-*.tar\""]
    lines.append("dataset_info:")
    for name in series:
        media = [f"  - {{name: {name}, dtype: {HF_MEDIA_DTYPES.get(name, 'binary')}}}"] if name != NO_MEDIA_SERIES else []
        lines += [f"- config_name: {name}", "  features:", "  - {name: __key__, dtype: string}",
                  "  - {name: __url__, dtype: string}", *media, "  - {name: txt, dtype: string}",
                  "  - {name: json, dtype: json}", f"  - {{name: {trajformat.MEMBER}, dtype: json}}"]
    lines += ["---", "", "Trajectory shards (format v2, see the trajtok docs: docs/format.md). One shard series "
              "per media type;", "`datasets.load_dataset(\"DIR\", \"SERIES\")` reads one series.", ""]
    return "\n".join(lines)
