"""Writing a synth corpus: H.264 / JPEG media, wds shards, ground-truth trajectory shards.

Styles (``STYLES``) are modules with ``video_scenes`` and ``image_scene``
(the scene interface is in ``common.py``); everything here is shared. Each
video's metadata (wds JSON, ground-truth sample JSON, ``media/STEM.json``)
carries its clip labels (``motion``, ``count``; see ``captions.py``).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from dataengine import ENGINE_VERSION

from dataengine.errors import ConfigError, OutputExists
from dataengine.format import manifest, shards, trajformat
from . import captions, flat, photo
from .common import seed_rng

STYLES: dict[str, ModuleType] = {"photo": photo, "flat": flat}
DEFAULT_STYLE = "photo"
IMAGE_SIZES = ((320, 240), (256, 256), (240, 320), (384, 288))
JPEG_QUALITY = 95
# Web quality for the photo style: x264 CRF and JPEG quality drawn per sample from these ranges.
PHOTO_CRF = (23, 28)
PHOTO_JPEG = (70, 88)
# Fixed "download" times for the wds stats files: real clocks would break byte identity.
_FIXED_START = 1_700_000_000.0


def _style(style: str) -> ModuleType:
    try:
        return STYLES[style]
    except KeyError:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}") from None


def _crf(style: str, seed: int) -> int:
    return 16 if style == "flat" else int(seed_rng("crf", seed).integers(PHOTO_CRF[0], PHOTO_CRF[1] + 1))


def _jpeg_quality(style: str, seed: int) -> int:
    return JPEG_QUALITY if style == "flat" else int(seed_rng("jpeg", seed).integers(PHOTO_JPEG[0], PHOTO_JPEG[1] + 1))


def _encode_video(path: Path, scenes: list[tuple[int, Any]], n_frames: int, width: int, height: int,
                  fps: int, crf: int = 16) -> np.ndarray:
    labels = np.zeros((n_frames, height, width), dtype=np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bitexact drops the muxer's version tag; one x264 thread makes the bitstream reproducible.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = 2 * fps
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        for t in range(n_frames):
            start, scene = max((s for s in scenes if s[0] <= t), key=lambda s: s[0])
            rgb, labels[t] = scene.render(t - start)    # one frame at a time: memory is O(frame)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return labels


def write_video(path: str | Path, seed: int, n_frames: int, width: int = 256, height: int = 192,
                fps: int = 16, scene_cut_at: int | None = None, n_objects: int | None = None,
                style: str = DEFAULT_STYLE, photos: str = "all") -> np.ndarray:
    """Write one H.264 mp4 and return its ground truth ``[T, H, W]`` int32 (0 = background).

    ``scene_cut_at`` is the first frame after a hard cut: a new background palette
    and new objects with new ids. Frames are rendered and encoded one at a time.
    """
    if width % 2 or height % 2:
        raise ValueError("yuv420p needs even width and height")
    scenes = _style(style).video_scenes(seed, n_frames, width, height, scene_cut_at, n_objects, photos)
    return _encode_video(Path(path), scenes, n_frames, width, height, fps, _crf(style, seed))


def render_image(seed: int, width: int = 320, height: int = 240, n_objects: int | None = None,
                 style: str = DEFAULT_STYLE, photos: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """A still scene: (rgb uint8 ``[H, W, 3]``, labels int32 ``[H, W]``)."""
    return _style(style).image_scene(seed, width, height, n_objects, photos).render(0.0)


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ------------------------------------------------------------------ corpus
def _tar_writer(f, mode: int) -> wds.TarWriter:
    return wds.TarWriter(f, encoder=False, mtime=_FIXED_START, user="synth", group="synth", mode=mode)


def _stats(count: int, successes: int, failures: dict[str, int], bytes_downloaded: int | None) -> bytes:
    stats: dict[str, Any] = {"count": count, "successes": successes, "failed_to_download": sum(failures.values()),
                             "failed_to_resize": 0, "duration": 1.0}
    if bytes_downloaded is not None:
        stats["bytes_downloaded"] = bytes_downloaded
    stats.update({"start_time": _FIXED_START, "end_time": _FIXED_START + 1.0,
                  "status_dict": {"success": successes, **failures}})
    return json.dumps(stats, indent=4).encode()


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_wds_videos(d: Path, videos: list[dict[str, Any]]) -> None:
    """video2dataset webdataset output: one clip per video; the failed video stays in the tar without media."""
    d.mkdir(parents=True, exist_ok=True)
    error = "HTTP Error 404: Not Found"
    rows = []
    with open(d / "00000.tar", "wb") as f:
        tw = _tar_writer(f, 0o644)
        for i, v in enumerate(videos + [None]):
            if v is not None:
                key = f"{i:08d}_{0:05d}"
                meta = {"url": v["url"], "caption": v["caption"], "key": key, "status": "success",
                        "error_message": None, "yt_meta_dict": {},
                        "clips": [[0.0, round(v["n_frames"] / v["fps"], 6)]], "clip_subtitles": [], **v["labels"]}
                tw.write({"__key__": key, "mp4": v["bytes"], "txt": v["caption"].encode(),
                          "json": json.dumps(meta, indent=4).encode()})
            else:
                key = f"{i:08d}"   # a failed video is never clipped, so it keeps the plain key
                meta = {"url": "synth://missing_000.mp4", "caption": "a video that could not be downloaded",
                        "key": key, "status": "failed_to_download", "error_message": error, "yt_meta_dict": None}
                tw.write({"__key__": key, "txt": meta["caption"].encode(), "json": json.dumps(meta, indent=4).encode()})
            rows.append({k: meta[k] for k in ("url", "caption", "key", "status", "error_message")})
        tw.close()
    schema = pa.schema([(k, pa.string()) for k in ("url", "caption", "key", "status", "error_message")])
    _write_parquet(d / "00000.parquet", rows, schema)
    (d / "00000_stats.json").write_bytes(
        _stats(len(videos) + 1, len(videos), {error: 1}, sum(len(v["bytes"]) for v in videos)))


def _write_wds_images(d: Path, images: list[dict[str, Any]]) -> None:
    """img2dataset webdataset output: the failed download sits between successes (keys skip a number)
    and appears only in the parquet."""
    d.mkdir(parents=True, exist_ok=True)
    error = "HTTP Error 403: Forbidden"
    failed_at = min(1, len(images))
    entries: list[dict[str, Any] | None] = list(images)
    entries.insert(failed_at, None)
    rows = []
    with open(d / "00000.tar", "wb") as f:
        tw = _tar_writer(f, 0o444)     # img2dataset members are often read-only
        for i, im in enumerate(entries):
            key = f"{i:09d}"
            if im is None:
                rows.append({"caption": "an image that could not be downloaded", "url": "synth://missing_000.jpg",
                             "key": key, "status": "failed_to_download", "error_message": error, "width": None,
                             "height": None, "original_width": None, "original_height": None, "exif": None,
                             "sha256": None})
                continue
            meta = {"caption": im["caption"], "url": im["url"], "key": key, "status": "success", "error_message": None,
                    "width": im["width"], "height": im["height"], "original_width": im["width"],
                    "original_height": im["height"], "exif": json.dumps({}),
                    "sha256": hashlib.sha256(im["bytes"]).hexdigest(), **im["labels"]}
            tw.write({"__key__": key, "jpg": im["bytes"], "txt": im["caption"].encode(),
                      "json": json.dumps(meta, indent=4).encode()})
            rows.append(meta)
        tw.close()
    schema = pa.schema([("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
                        ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                        ("original_width", pa.int64()), ("original_height", pa.int64()), ("exif", pa.string()),
                        ("sha256", pa.string())])
    _write_parquet(d / "00000.parquet", rows, schema)
    (d / "00000_stats.json").write_bytes(_stats(len(images) + 1, len(images), {error: 1}, None))


def _gt_sample(item: dict[str, Any], labels: np.ndarray, keyframes: list[int], scene_cuts: list[int],
               objects: list[dict[str, Any]], style: str,
               cameras: list[dict[str, Any]]) -> tuple[shards.ShardSample, dict[str, Any]]:
    T, H, W = labels.shape
    fps = item.get("fps")
    timestamps = [i / fps for i in range(T)] if fps else [0.0] * T
    traj = trajformat.labels_to_traj(labels, list(range(T)), timestamps, keyframes, scene_cuts=scene_cuts,
                                     media_type=item["media_type"])
    cov = trajformat.coverage(labels)
    lengths = [sum(1 for a in tr["area"] if a > 0) for tr in traj["trajectories"]]
    stats = {"coverage": round(cov, 6), "n_trajectories": len(traj["trajectories"])}
    meta = {"key": item["key"], "source": "synth", "source_id": item["key"], "source_uri": item["source_uri"],
            "url": item["url"], "media_type": item["media_type"], "width": W, "height": H, "fps": fps,
            "n_frames": T, "scene_cuts": scene_cuts, "engine_version": ENGINE_VERSION,
            "backends": {"segmenter": "ground_truth", "tracker": "ground_truth"}, "stats": stats,
            "objects": objects, "style": style, "camera": cameras, **item["labels"]}
    sample = shards.ShardSample(key=item["key"], media_ext=item["ext"], media=item["bytes"],
                                caption=item["caption"], meta=meta, traj=traj)
    row = {"key": item["key"], "source": "synth", "source_uri": item["source_uri"], "media_type": item["media_type"],
           "status": "ok", "reason": "", "shard": shards.shard_name("gt", 0), "n_frames": T, "n_annotated": T,
           "n_keyframes": len(keyframes), "n_trajectories": len(lengths), "coverage": cov, "height": H, "width": W,
           "mean_trajectory_length": float(np.mean(lengths)) if lengths else 0.0}
    return sample, row


def make_corpus(out: str | Path, videos: int = 6, images: int = 4, seed: int = 0, n_frames: int = 48,
                width: int = 256, height: int = 192, fps: int = 16, overwrite: bool = False,
                style: str = DEFAULT_STYLE, photos: str = "all") -> dict[str, Any]:
    """Write the sample corpus under ``out`` (media/, wds/, gt/) and return a summary.

    Video 1 (video 0 when there is only one) has a hard scene cut at ``n_frames // 2``.
    ``style`` is ``photo`` (the default) or ``flat``; ``photos`` picks the photo pool
    (``all`` or one of the disjoint halves ``a`` / ``b``, photo style only).
    ``overwrite`` replaces an existing corpus; otherwise a non-empty target is refused
    so stale files of a larger earlier run can never mix in.
    """
    mod = _style(style)
    if style == "photo":
        from .photos import pool
        pool(photos)                       # a bad split name fails before anything is written
    if videos < 0 or images < 0:
        raise ConfigError("videos and images must be >= 0")
    if videos and n_frames < 2:
        raise ConfigError("n_frames must be >= 2 (the cut video needs two scenes)")
    out = Path(out)
    parts = [out / "media", out / "wds", out / "gt"]
    busy = [p for p in parts if p.exists() and any(p.iterdir())]
    if busy:
        if not overwrite:
            raise OutputExists(f"{busy[0]} is not empty; remove it or pass --overwrite (overwrite=True)")
        for p in busy:
            shutil.rmtree(p)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    cut_video = 1 if videos >= 2 else 0
    samples, rows, vids, imgs = [], [], [], []

    for i in range(videos):
        key = f"video_{i:03d}"
        vseed = int(seed_rng("corpus", seed, "video", i).integers(2**31))
        cut = n_frames // 2 if i == cut_video else None
        scenes = mod.video_scenes(vseed, n_frames, width, height, cut, None, photos)
        labels = _encode_video(media / f"{key}.mp4", scenes, n_frames, width, height, fps, _crf(style, vseed))
        bounds = [start for start, _ in scenes] + [n_frames]
        parts = [(sc, labels[bounds[j]:bounds[j + 1]]) for j, (_, sc) in enumerate(scenes)]
        caption = captions.video_caption(parts)
        clip = captions.clip_labels(parts)
        (media / f"{key}.txt").write_text(caption, encoding="utf-8")
        item = {"key": key, "ext": "mp4", "bytes": (media / f"{key}.mp4").read_bytes(), "caption": caption,
                "url": f"synth://{key}.mp4", "source_uri": f"media/{key}.mp4", "media_type": "video",
                "fps": fps, "n_frames": n_frames, "labels": clip}
        _write_sidecar(media / f"{key}.json", style, clip, [sc.camera for sc, _ in parts])
        vids.append(item)
        objects = [s.obj.describe() for sc, lab in parts for s in captions.seen_objects(sc, lab)]
        cuts = [cut] if cut is not None else []
        s, r = _gt_sample(item, labels, [0] + cuts, cuts, objects, style, [sc.camera for sc, _ in parts])
        samples.append(s)
        rows.append({**r, "input_index": len(rows)})

    for i in range(images):
        key = f"image_{i:03d}"
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        iseed = int(seed_rng("corpus", seed, "image", i).integers(2**31))
        scene = mod.image_scene(iseed, w, h, None, photos)
        rgb, labels = scene.render(0.0)
        data = encode_jpeg(rgb, _jpeg_quality(style, iseed))
        (media / f"{key}.jpg").write_bytes(data)
        caption = captions.image_caption(scene, labels)
        clip = captions.clip_labels([(scene, labels[None])])
        (media / f"{key}.txt").write_text(caption, encoding="utf-8")
        _write_sidecar(media / f"{key}.json", style, clip, [scene.camera])
        item = {"key": key, "ext": "jpg", "bytes": data, "caption": caption, "url": f"synth://{key}.jpg",
                "source_uri": f"media/{key}.jpg", "media_type": "image", "fps": None, "width": w, "height": h,
                "labels": clip}
        imgs.append(item)
        objects = [s.obj.describe() for s in captions.seen_objects(scene, labels[None])]
        s, r = _gt_sample(item, labels[None], [0], [], objects, style, [scene.camera])
        samples.append(s)
        rows.append({**r, "input_index": len(rows)})

    _write_wds_videos(out / "wds" / "videos", vids)
    _write_wds_images(out / "wds" / "images", imgs)
    gt = out / "gt"
    shards.write_shard(gt / shards.shard_name("gt", 0), samples)
    manifest.write_part(gt, 0, rows)
    return {
        "out": str(out), "seed": seed, "videos": videos, "images": images, "n_frames": n_frames,
        "media": str(media), "wds_videos": str(out / "wds" / "videos"), "wds_images": str(out / "wds" / "images"),
        "gt": str(gt), "keys": [r["key"] for r in rows],
        "scene_cut_videos": [f"video_{cut_video:03d}"] if videos else [],
        "n_trajectories": sum(r["n_trajectories"] for r in rows), "style": style, "photos": photos,
    }


def _write_sidecar(path: Path, style: str, clip: dict[str, Any], cameras: list[dict[str, Any]]) -> None:
    """``media/STEM.json``: the clip labels beside the media (the folder source reads only media and .txt)."""
    path.write_text(json.dumps({"style": style, **clip, "camera": cameras}, indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")
