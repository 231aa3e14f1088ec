"""The annotate stages as plain functions over rows (dicts of scalars, strings, bytes).

The same three calls run inside Ray Data (``pipelines/annotate.py``) and in
the in-process runner below. A row that failed keeps an ``error`` string and
passes through later stages untouched, so errors are data, never exceptions
escaping a worker. Arrays cross stage boundaries as raw bytes at working
resolution, never as full-resolution frames.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from typing import Any, Iterable, Iterator

import numpy as np

from dataengine import ENGINE_VERSION

from dataengine.format import trajformat
from dataengine.config import AnnotateConfig, to_dict
from dataengine.media.decode import DecodeError, decode_media
from dataengine.stages.keyframes import detect_keyframes
from dataengine.stages.labeller import Labeller
from dataengine.sources import MediaError, SampleRef, media_path, read_media

Row = dict[str, Any]


def pack(a: np.ndarray) -> tuple[bytes, str]:
    return np.ascontiguousarray(a).tobytes(), ",".join(map(str, a.shape)) + ":" + a.dtype.str


def unpack(data: bytes, spec: str) -> np.ndarray:
    shape, dtype = spec.split(":")
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape([int(s) for s in shape.split(",")])


def ref_to_row(ref: SampleRef) -> Row:
    row = dataclasses.asdict(ref)
    row.update(frames=b"", frames_spec="", labels=b"", labels_spec="", traj=b"", info="{}", timings="{}")
    return row


def _fail(row: Row, reason: str) -> Row:
    row["error"] = reason.replace("\n", " ")[:500]
    row["frames"] = row["labels"] = b""
    return row


def _timings(row: Row, **seconds: float) -> None:
    t = json.loads(row["timings"])
    t.update({k: round(v, 6) for k, v in seconds.items()})
    row["timings"] = json.dumps(t, sort_keys=True)


def read_and_decode(row: Row, cfg: AnnotateConfig) -> Row:
    """Read the media bytes, decode the sampled frames, find keyframes (CPU stage)."""
    if row["error"]:
        return row
    try:
        t0 = time.perf_counter()
        ref = SampleRef(**{f.name: row[f.name] for f in dataclasses.fields(SampleRef)})
        if ref.media_type == "video" and ref.offset < 0 and os.path.isabs(ref.uri):
            src: bytes | str = media_path(ref, cfg.decode.max_media_bytes)   # streamed, never loaded whole
        else:
            src = read_media(ref, cfg.decode.max_media_bytes)
        t1 = time.perf_counter()
        media = decode_media(src, row["media_type"], cfg.decode)
        keyframes, cuts = detect_keyframes(media.frames, cfg.keyframes)
        t2 = time.perf_counter()
    except (MediaError, DecodeError) as e:
        return _fail(row, str(e))
    except Exception as e:  # anything else is still one sample's problem, not the run's
        return _fail(row, f"decode failed: {type(e).__name__}: {e}")
    row["frames"], row["frames_spec"] = pack(media.frames)
    row["info"] = json.dumps({
        "frame_indices": media.frame_indices, "timestamps": media.timestamps,
        "keyframes": keyframes, "cuts": cuts, "source_width": media.width,
        "source_height": media.height, "fps": media.fps, "n_source_frames": media.n_source_frames,
        "media_type": media.media_type,
    })
    _timings(row, read=t1 - t0, decode=t2 - t1)
    return row


def label_row(row: Row, labeller: Labeller) -> Row:
    """Segment + track + merge (the model stage; one Labeller per worker)."""
    if row["error"]:
        return row
    try:
        info = json.loads(row["info"])
        frames = unpack(row["frames"], row["frames_spec"])
        result = labeller.label(frames, info["keyframes"], info["cuts"])
    except Exception as e:
        return _fail(row, f"labelling failed: {type(e).__name__}: {e} "
                          f"[{traceback.extract_tb(e.__traceback__)[-1].name}]")
    # The labeller places keyframes (and finds cuts by flow) itself, so both come from its result.
    info.update(keyframes=result.keyframes, cuts=result.cuts, merges=result.merges, backends=labeller.backends)
    row["info"] = json.dumps(info)
    row["labels"], row["labels_spec"] = pack(result.labels.astype(np.uint16 if result.labels.max() < 65535 else np.int32))
    row["frames"] = b""
    _timings(row, segment=result.seconds_segment, track=result.seconds_track)
    return row


def encode_row(row: Row, cfg: AnnotateConfig) -> Row:
    """RLE-encode the label maps into traj.json and compute the sample's stats (CPU stage)."""
    if row["error"]:
        return row
    try:
        t0 = time.perf_counter()
        info = json.loads(row["info"])
        labels = unpack(row["labels"], row["labels_spec"]).astype(np.int32)
        traj = trajformat.labels_to_traj(
            labels, info["frame_indices"], info["timestamps"], info["keyframes"],
            source_size=(info["source_width"], info["source_height"]),
            resize=trajformat.fit_longest_side(cfg.decode.max_side), fps=info["fps"],
            scene_cuts=info["cuts"], media_type=info["media_type"])
        lengths = [t["last"] - t["first"] + 1 for t in traj["trajectories"]]
        stats = {
            "coverage": round(trajformat.coverage(labels), 6),
            "n_trajectories": len(traj["trajectories"]),
            "n_annotated": int(labels.shape[0]),
            "n_keyframes": len(info["keyframes"]),
            "mean_trajectory_length": round(float(np.mean(lengths)), 4) if lengths else 0.0,
            "height": int(labels.shape[1]), "width": int(labels.shape[2]),
        }
        row["traj"] = trajformat.dumps(traj)
        info["stats"] = stats
        row["info"] = json.dumps(info)
        row["labels"] = b""
        _timings(row, encode=time.perf_counter() - t0)
    except Exception as e:
        return _fail(row, f"encoding failed: {type(e).__name__}: {e}")
    return row


def sample_meta(row: Row, cfg: AnnotateConfig) -> dict[str, Any]:
    """The KEY.json of a sample in the output shard."""
    info = json.loads(row["info"])
    try:
        source_meta = json.loads(row["meta"])
    except json.JSONDecodeError:
        source_meta = {}
    return {
        "source": row["source"], "source_uri": row["uri"], "source_key": source_meta.get("key"),
        "url": source_meta.get("url"), "input_index": row["index"], "media_type": info["media_type"],
        "width": info["source_width"], "height": info["source_height"],
        "fps": info["fps"] if info["media_type"] == "video" else None,
        "n_source_frames": info["n_source_frames"], "engine_version": ENGINE_VERSION,
        "backends": info.get("backends", {}), "config_hash": cfg.model_hash(),
        "scene_cuts": info["cuts"], "merges": info.get("merges", []), "stats": info.get("stats", {}),
    }


def run_local(refs: Iterable[SampleRef], cfg: AnnotateConfig, labeller: Labeller | None = None) -> Iterator[Row]:
    """The in-process runner: the same stage calls as the Ray pipeline, one sample at a time."""
    labeller = labeller or Labeller(cfg)
    for ref in refs:
        row = read_and_decode(ref_to_row(ref), cfg)
        row = label_row(row, labeller)
        yield encode_row(row, cfg)


__all__ = ["read_and_decode", "label_row", "encode_row", "run_local", "ref_to_row", "sample_meta", "to_dict"]
