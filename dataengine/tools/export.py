"""``trajdata export``: trajectory shards -> layouts other tools train on unchanged.

* ``sav``: videos in SA-V's layout, as SAM 2's training code reads it
  (``training/dataset/vos_raw_dataset.py`` JSONRawDataset): ``JPEGImages/<id>/<frame>.jpg``
  + ``Annotations/<id>_manual.json`` + ``train_list.txt``; still images in SA-1B's
  layout under ``sa1b/``.
* ``sa1b``: every annotated frame, video frames included, as an SA-1B image
  (``sa1b/sa_<n>.jpg`` + ``sa1b/sa_<n>.json``; SAM 2's SA1BRawDataset).
* ``png``: per-frame id maps for everything (``JPEGImages/<id>/<frame>.jpg`` +
  ``Annotations/<id>/<frame>.png``, DAVIS / MOSE style; SAM 2's PNGRawDataset).

Frames are named by their *source* frame number (``%05d``). SAM 2 looks up the
masks of frame ``f`` in ``masklet[f // ann_every]``, so the masklet gets a row
for every multiple of ``ann_every`` up to the last frame; rows of frames that
were not annotated are all ``null``, which SAM 2 reads as "not annotated" and
drops (``rm_unannotated``). ``ann_every`` is the annotation's frame stride
(``annotate --frame-stride``) when there is one, else 1; ``export.json`` states
it, and per exported id its shard key and the source frame of every frame.
Uniformly sampled long videos would get many null rows that way; ``frame_names
= "position"`` names the i-th frame of a piece ``i * ann_every`` instead (no
null rows; export.json still maps every frame to its source frame).
Videos are split at their scene cuts (trajectories never cross one); a piece
with fewer annotated frames than SAM 2's sampler draws (8 in its SA-V / MOSE
configs) or without any trajectory is skipped and listed with the reason.
Frames are written at the mask resolution (the frames the labeller saw), so
masks and pixels line up exactly, or with ``resolution = "source"`` at the
media's size with the masks scaled up (nearest neighbour, the mapping
traj.json v2 states). The export is built under a temporary name
and renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from dataengine.errors import ConfigError, InputNotFound, OutputExists
from dataengine.format import manifest, trajformat
from dataengine.media.decode import DecodeError, decode_frames
from dataengine.format.shards import ShardSample, list_shards, read_shard
from dataengine.sources import media_type_of

FORMATS = ("sav", "sa1b", "png")
# SAM 2's SA-V / MOSE fine-tuning configs sample this many consecutive frames (scratch.num_frames).
SAM2_NUM_FRAMES = 8


@dataclass
class ExportConfig:
    format: str = "sav"
    ann_every: int | None = None     # None: the annotation's --frame-stride (run.json), else 1
    min_frames: int | None = None    # video pieces shorter than this are skipped; None: 8 for sav, else 1
    jpeg_quality: int = 95
    resolution: str = "mask"         # mask: frames at the mask size | source: media size, masks scaled up
    frame_names: str = "source"      # sav: source (frame f is f.jpg) | position (i-th frame of a piece is i * ann_every)


@dataclass
class Piece:
    """The frames of one sample that become one exported video (a scene between cuts)."""
    positions: list[int]             # positions in traj.json
    frames: list[int]                # their source frame indices


@dataclass
class Export:
    out: Path
    cfg: ExportConfig
    ann_every: int
    videos: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, s: ShardSample, shard: str, reason: str, piece: int | None = None) -> None:
        self.skipped.append({"key": s.key, "shard": shard, "piece": piece, "reason": reason})


def pieces(traj: dict[str, Any], meta: dict[str, Any]) -> list[Piece]:
    """Split a sample's frame positions at its scene cuts (traj.json v2 and KEY.json: a writer
    that did not pass them to traj.json still has them in KEY.json)."""
    cuts = set(traj.get("scene_cuts") or []) | set(meta.get("scene_cuts") or [])
    frames = [int(f) for f in traj["frame_indices"]]
    bounds = [0] + sorted(c for c in cuts if isinstance(c, int) and 0 < c < len(frames)) + [len(frames)]
    return [Piece(list(range(a, b)), frames[a:b]) for a, b in zip(bounds, bounds[1:])]


def default_ann_every(directory: Path) -> int:
    """The annotation's frame stride from run.json (a filter output keeps it under ``upstream``)."""
    run_json = directory / "run.json"
    if not run_json.is_file():
        return 1
    run = json.loads(run_json.read_text())
    for r in (run, run.get("upstream") or {}):
        stride = ((r.get("config") or {}).get("decode") or {}).get("frame_stride")
        if stride:
            return int(stride)
    return 1


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for {path.name}")
    path.write_bytes(buf.tobytes())


def _frames(s: ShardSample, kind: str, positions: list[int], labels: np.ndarray) -> np.ndarray:
    """The frames at ``positions``, at the size of ``labels`` (mask or source resolution)."""
    t = s.traj
    return decode_frames(s.media, kind, [int(t["frame_indices"][p]) for p in positions],
                         (labels.shape[2], labels.shape[1]))


def at_source_size(traj: dict[str, Any], meta: dict[str, Any], labels: np.ndarray) -> np.ndarray | None:
    """Label maps scaled to the media's size, nearest neighbour (traj.json v2 says the mask covers
    the whole frame, uniformly scaled; v1 shards take the size from KEY.json). None: size unknown."""
    W, H = traj.get("source_width") or meta.get("width"), traj.get("source_height") or meta.get("height")
    if not W or not H:
        return None
    h, w = labels.shape[1:]
    ys = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[:, ys][:, :, xs]


# ------------------------------------------------------------------ SA-V
def sav_annotation(video_id: str, traj: dict[str, Any], labels: np.ndarray, piece: Piece, ann_every: int,
                   ids: list[int], names: list[int]) -> dict[str, Any]:
    """The ``<video_id>_manual.json`` of one piece, with the fields of SA-V's README.

    ``names``: the file name (frame number) of each frame of the piece.
    """
    H, W = labels.shape[1:]
    rows: list[list[Any]] = [[None] * len(ids) for _ in range(names[-1] // ann_every + 1)]
    present = np.zeros((len(ids), len(piece.frames)), bool)
    areas = np.zeros((len(ids), len(piece.frames)), np.int64)
    for t, (pos, f) in enumerate(zip(piece.positions, names)):
        masks = np.stack([labels[pos] == i for i in ids])
        rows[f // ann_every] = trajformat.encode_masks(masks)
        areas[:, t] = masks.reshape(len(ids), -1).sum(axis=1)
        present[:, t] = areas[:, t] > 0
    first = [int(names[int(np.argmax(p))] // ann_every) for p in present]
    size_abs = [float(a[p].mean()) for a, p in zip(areas, present)]
    fps = traj.get("fps")
    span = piece.frames[-1] - piece.frames[0] + 1
    return {
        "video_id": video_id, "video_height": H, "video_width": W, "video_resolution": H * W,
        "video_frame_count": span, "video_duration": round(span / fps, 6) if fps else None,
        "video_split": "train",
        "masklet": rows, "masklet_id": ids, "masklet_num": len(ids),
        "masklet_first_appeared_frame": first,
        "masklet_frame_count": [int(p.sum()) for p in present],
        "masklet_edited_frame_count": [0] * len(ids),
        "masklet_visibility_changes": [int(np.count_nonzero(np.diff(p[np.argmax(p):].astype(np.int8))))
                                       for p in present],
        "masklet_size_abs": [round(a, 3) for a in size_abs],
        "masklet_size_rel": [round(a / (H * W), 6) for a in size_abs],
        "masklet_size_bucket": ["small" if a < 32 ** 2 else "large" if a > 96 ** 2 else "medium" for a in size_abs],
        "masklet_type": ["auto"] * len(ids),
    }


def _export_video_sav(ex: Export, s: ShardSample, shard: str, labels: np.ndarray) -> None:
    for n, piece in enumerate(pieces(s.traj, s.meta)):
        video_id = f"{s.key}_{n:03d}"
        ids = [int(i) for i in np.unique(labels[piece.positions]) if i != 0]
        min_frames = ex.cfg.min_frames if ex.cfg.min_frames is not None else SAM2_NUM_FRAMES
        if len(piece.frames) < min_frames:
            ex.skip(s, shard, f"{len(piece.frames)} annotated frames < {min_frames} (SAM 2 samples "
                              f"{min_frames} consecutive frames)", n)
            continue
        if not ids:
            ex.skip(s, shard, "no trajectory", n)
            continue
        if ex.cfg.frame_names == "position":
            names = [i * ex.ann_every for i in range(len(piece.frames))]
        else:
            names = piece.frames
        bad = [f for f in names if f % ex.ann_every]
        if bad:
            ex.skip(s, shard, f"source frame {bad[0]} is not a multiple of ann_every {ex.ann_every}", n)
            continue
        rgb = _frames(s, "video", piece.positions, labels)
        folder = ex.out / "JPEGImages" / video_id
        folder.mkdir(parents=True)
        for f, frame in zip(names, rgb):
            _write_jpeg(folder / f"{f:05d}.jpg", frame, ex.cfg.jpeg_quality)
        ann = sav_annotation(video_id, s.traj, labels, piece, ex.ann_every, ids, names)
        (ex.out / "Annotations" / f"{video_id}_manual.json").write_text(json.dumps(ann, separators=(",", ":")))
        ex.videos[video_id] = {"key": s.key, "shard": shard, "piece": n, "frames": piece.frames, "masklet_id": ids}


# ------------------------------------------------------------------ SA-1B
def sa1b_annotation(image_id: int, labels: np.ndarray, scores: dict[int, float]) -> dict[str, Any]:
    """``sa_<n>.json``: one annotation per trajectory present, SA-1B's fields."""
    H, W = labels.shape
    anns = []
    for i in (int(i) for i in np.unique(labels) if i != 0):
        mask = labels == i
        rle = trajformat.encode_masks(mask[None])[0]
        # An interior point (farthest from the mask border), where SA-1B gives its prompt point.
        dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        bbox = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).tolist()
        anns.append({"id": i, "segmentation": rle, "area": int(mask.sum()), "bbox": [float(b) for b in bbox],
                     "predicted_iou": scores.get(i, 1.0), "stability_score": scores.get(i, 1.0),
                     "point_coords": [[float(x), float(y)]], "crop_box": [0.0, 0.0, float(W), float(H)]})
    return {"image": {"image_id": image_id, "width": W, "height": H, "file_name": f"sa_{image_id}.jpg"},
            "annotations": anns}


def _export_sa1b(ex: Export, s: ShardSample, shard: str, labels: np.ndarray, kind: str) -> None:
    positions = [p for p in range(labels.shape[0]) if labels[p].any()]
    if len(positions) < labels.shape[0]:
        ex.skip(s, shard, f"{labels.shape[0] - len(positions)} of {labels.shape[0]} frames have no trajectory")
    if not positions:
        return
    rgb = _frames(s, kind, positions, labels)
    scores = {int(t["id"]): float(t.get("score", 1.0)) for t in s.traj["trajectories"]}
    folder = ex.out / "sa1b"
    folder.mkdir(exist_ok=True)
    for p, frame in zip(positions, rgb):
        n = len(ex.images) + 1
        _write_jpeg(folder / f"sa_{n}.jpg", frame, ex.cfg.jpeg_quality)
        (folder / f"sa_{n}.json").write_text(json.dumps(sa1b_annotation(n, labels[p], scores),
                                                        separators=(",", ":")))
        ex.images[f"sa_{n}"] = {"key": s.key, "shard": shard, "frame": int(s.traj["frame_indices"][p])}


# ------------------------------------------------------------------ PNG id maps
def _write_id_map(path: Path, values: np.ndarray) -> None:
    """Palettised 8-bit PNG (what DAVIS / MOSE ship) when the values fit, else 16-bit grey."""
    if values.max(initial=0) < 256:
        img = Image.fromarray(values.astype(np.uint8), mode="P")
        rng = np.random.default_rng(0)
        palette = np.concatenate([[0, 0, 0], rng.integers(40, 256, size=255 * 3)]).astype(np.uint8)
        img.putpalette(palette.tolist())
        img.save(path, optimize=True)
    elif not cv2.imwrite(str(path), values.astype(np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise ValueError(f"PNG encoding failed for {path.name}")


def _export_png(ex: Export, s: ShardSample, shard: str, labels: np.ndarray, kind: str) -> None:
    min_frames = (ex.cfg.min_frames or 1) if kind == "video" else 1   # the option is about video pieces
    parts = pieces(s.traj, s.meta) if kind == "video" else [Piece([0], [int(s.traj["frame_indices"][0])])]
    for n, piece in enumerate(parts):
        if len(piece.frames) < min_frames:
            ex.skip(s, shard, f"{len(piece.frames)} annotated frames < {min_frames}", n)
            continue
        video_id = f"{s.key}_{n:03d}"
        ids = [int(i) for i in np.unique(labels[piece.positions]) if i != 0]
        lut = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
        lut[ids] = np.arange(1, len(ids) + 1)      # pixel value v is trajectory ids[v - 1]
        rgb = _frames(s, kind, piece.positions, labels)
        jpegs, pngs = ex.out / "JPEGImages" / video_id, ex.out / "Annotations" / video_id
        jpegs.mkdir(parents=True)
        pngs.mkdir(parents=True)
        for pos, f, frame in zip(piece.positions, piece.frames, rgb):
            _write_jpeg(jpegs / f"{f:05d}.jpg", frame, ex.cfg.jpeg_quality)
            _write_id_map(pngs / f"{f:05d}.png", lut[labels[pos]])
        ex.videos[video_id] = {"key": s.key, "shard": shard, "piece": n, "frames": piece.frames, "masklet_id": ids}


# ------------------------------------------------------------------ driver
def export_dataset(directory: str | Path, out: str | Path, cfg: ExportConfig | None = None,
                   overwrite: bool = False, on_sample: Callable[[int, int | None], None] | None = None
                   ) -> dict[str, Any]:
    """Export every sample of a trajectory dataset; returns the summary written to ``OUT/export.json``."""
    cfg = cfg or ExportConfig()
    if cfg.format not in FORMATS:
        raise ConfigError(f"unknown export format {cfg.format!r} (choose from {', '.join(FORMATS)})")
    if cfg.resolution not in ("mask", "source"):
        raise ConfigError(f"unknown resolution {cfg.resolution!r} (choose from mask, source)")
    if cfg.frame_names not in ("source", "position"):
        raise ConfigError(f"unknown frame naming {cfg.frame_names!r} (choose from source, position)")
    src, out = Path(directory), Path(out)
    shards = list_shards(src) if src.exists() else []
    if not shards:
        raise InputNotFound(f"no trajectory shards in {src}")
    if out.exists() and not overwrite:
        raise OutputExists(f"{out} exists; remove it or pass --overwrite")
    # --overwrite replaces the output folder whole: never one that is, or holds, the dataset read
    source, target = src.resolve(), out.resolve()
    if target == source or target in source.parents:
        raise ConfigError(f"--output {out} would replace the dataset it exports ({src}); choose another folder")
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"--output {out} would replace the folder you are in; choose another folder")
    out = target
    ann_every = cfg.ann_every or (1 if cfg.frame_names == "position" else
                                  default_ann_every(src if src.is_dir() else src.parent))
    if ann_every < 1:
        raise ConfigError(f"ann_every must be >= 1, got {ann_every}")
    table = manifest.read_manifest(src) if src.is_dir() else manifest.SCHEMA.empty_table()
    total = table.column("status").to_pylist().count("ok") if table.num_rows else None
    for stale in out.parent.glob(f".{out.name}.tmp-*"):      # a killed export's partial tree
        shutil.rmtree(stale)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    ex = Export(tmp, cfg, ann_every)
    if cfg.format in ("sav", "png"):
        (tmp / "JPEGImages").mkdir()
        (tmp / "Annotations").mkdir()
    done = 0
    try:
        for path in shards:
            for s in read_shard(path):
                _export_sample(ex, s, path.name)
                done += 1
                if on_sample:
                    on_sample(done, total)
        summary = _finish(ex, src, done)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary


def _export_sample(ex: Export, s: ShardSample, shard: str) -> None:
    kind = s.meta.get("media_type") or media_type_of((s.media_ext or "").lower())
    if s.media is None or kind not in ("video", "image"):
        ex.skip(s, shard, "no media member")
        return
    labels = trajformat.traj_to_labels(s.traj)
    try:
        if ex.cfg.resolution == "source":
            labels = at_source_size(s.traj, s.meta, labels)
            if labels is None:
                ex.skip(s, shard, "source size unknown (neither traj.json v2 nor KEY.json gives it)")
                return
        if ex.cfg.format == "sa1b" or (ex.cfg.format == "sav" and kind == "image"):
            _export_sa1b(ex, s, shard, labels, kind)
        elif ex.cfg.format == "sav":
            _export_video_sav(ex, s, shard, labels)
        else:
            _export_png(ex, s, shard, labels, kind)
    except DecodeError as e:
        ex.skip(s, shard, f"media not decodable: {e}")


def _finish(ex: Export, src: Path, samples: int) -> dict[str, Any]:
    if ex.videos:
        (ex.out / "train_list.txt").write_text("".join(f"{v}\n" for v in ex.videos))
    if ex.images:
        (ex.out / "sa1b" / "train_list.txt").write_text("".join(f"{i}\n" for i in ex.images))
    summary = {
        "format": ex.cfg.format, "source": str(src), "format_version": trajformat.FORMAT_VERSION,
        "ann_every": ex.ann_every if ex.cfg.format == "sav" else None,
        "frame_names": ex.cfg.frame_names if ex.cfg.format == "sav" else "source",
        "resolution": ex.cfg.resolution,
        "counts": {"samples": samples, "videos": len(ex.videos), "images": len(ex.images),
                   "skipped": len(ex.skipped)},
        "videos": ex.videos, "images": ex.images, "skipped": ex.skipped,
    }
    (ex.out / "export.json").write_text(json.dumps(summary, indent=1))
    return summary
