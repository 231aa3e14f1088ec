"""The ``traj.json`` codec (shard format v2; v1 still read): id label maps <-> COCO RLE masklets.

A label map is ``[T, H, W]`` integers: 0 = no trajectory, otherwise the
trajectory id. Masks of one frame are therefore disjoint by construction.
``masklet[t][j]`` is the RLE of trajectory ``masklet_id[j]`` at frame position
``t`` (an empty mask where it is absent), the layout SA-V uses.

v2 adds what a reader needs without the rest of the shard: the source size
beside the mask size, the rule that maps one to the other, ``fps`` (null for
images) and the scene cuts. The shard member is gzip-compressed JSON
(``KEY.traj.json.gz``; webdataset and Hugging Face ``datasets`` decompress it
themselves): absent trajectories' empty RLEs and the repeated ``size`` fields
cost almost nothing compressed, and the layout stays plain json + pycocotools.
"""
from __future__ import annotations

import gzip
import json
import zlib
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from dataengine.errors import InputError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MEMBER = "traj.json.gz"           # what v2 shards hold
LEGACY_MEMBER = "traj.json"       # v1 shards: the same JSON, uncompressed
MEMBERS = (MEMBER, LEGACY_MEMBER)
# A hostile member must not expand without bound (gzip bomb); real ones are far smaller.
MAX_JSON_BYTES = 512 * 1024 * 1024

NO_RESIZE = {"rule": "none"}


def fit_longest_side(max_side: int) -> dict[str, Any]:
    """The engine's working-resolution rule (``decode.working_size``) as traj.json states it.

    Mask size = source size x ``min(1, max_side / longest source side)``, each side
    rounded to the nearest integer; the whole frame, never cropped or padded.
    """
    return {"rule": "fit_longest_side", "max_side": int(max_side), "upscale": False, "rounding": "nearest",
            "crop": False, "interpolation": "area"}


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """``[N, H, W]`` bool -> N COCO RLEs with string counts."""
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_masks(rles: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """N COCO RLEs -> ``[N, H, W]`` bool.

    ``pycocotools.mask.decode([])`` returns garbage, not an empty stack, so a frame
    of a sample without trajectories is special-cased (the idiom docs/format.md gives).
    """
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    objs = [{"size": r["size"], "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]}
            for r in rles]
    return np.moveaxis(mask_utils.decode(objs), -1, 0).astype(bool)


def _fps_from(frame_indices: list[int], timestamps: list[float]) -> float | None:
    if len(frame_indices) < 2 or timestamps[-1] <= timestamps[0]:
        return None
    return round((frame_indices[-1] - frame_indices[0]) / (timestamps[-1] - timestamps[0]), 3)


def labels_to_traj(labels: np.ndarray, frame_indices: list[int], timestamps: list[float],
                   keyframes: list[int], scores: dict[int, float] | None = None,
                   extra: dict[str, Any] | None = None, *, source_size: tuple[int, int] | None = None,
                   resize: dict[str, Any] | None = None, fps: float | None = None,
                   scene_cuts: list[int] | None = None, media_type: str | None = None) -> dict[str, Any]:
    """Build the ``traj.json`` dict of one sample from its label maps.

    ``source_size`` is the media's (width, height); without it the masks are taken
    to be at source resolution (``resize`` rule "none"). ``fps`` defaults to what
    ``frame_indices`` / ``timestamps`` imply; ``media_type`` "image" forces null.
    """
    labels = np.asarray(labels)
    T, H, W = labels.shape
    if len(frame_indices) != T or len(timestamps) != T:
        raise ValueError("frame_indices / timestamps must have one entry per label frame")
    ids = [int(i) for i in np.unique(labels) if i != 0]
    areas = {i: [0] * T for i in ids}
    masklet = []
    for t in range(T):
        frame = labels[t]
        counts = np.bincount(frame.ravel(), minlength=(max(ids) + 1) if ids else 1)
        for i in ids:
            areas[i][t] = int(counts[i])
        masklet.append(encode_masks(np.stack([frame == i for i in ids])) if ids else [])
    scores = scores or {}
    trajectories = []
    for i in ids:
        present = [t for t in range(T) if areas[i][t] > 0]
        trajectories.append({"id": i, "first": present[0], "last": present[-1], "area": areas[i],
                             "score": round(float(scores.get(i, 1.0)), 6)})
    if source_size is None:
        source_size, resize = (W, H), resize or NO_RESIZE
    if media_type == "image" or (fps is not None and fps <= 0):
        fps = None
    elif fps is None:
        fps = _fps_from(list(frame_indices), list(timestamps))
    out = {
        "version": FORMAT_VERSION, "height": int(H), "width": int(W),
        "source_width": int(source_size[0]), "source_height": int(source_size[1]),
        "resize": dict(resize or NO_RESIZE),
        "fps": None if fps is None else round(float(fps), 6),
        "frame_indices": [int(f) for f in frame_indices],
        "timestamps": [round(float(s), 6) for s in timestamps],
        "keyframes": [int(k) for k in keyframes],
        "scene_cuts": [int(c) for c in (scene_cuts or [])],
        "trajectories": trajectories,
        "masklet_id": ids,
        "masklet": masklet,
    }
    if extra:
        out.update(extra)
    return out


def traj_to_labels(traj: dict[str, Any]) -> np.ndarray:
    """Decode a ``traj.json`` dict (v1 or v2) back to ``[T, H, W]`` int32 label maps."""
    T = len(traj["frame_indices"])
    labels = labels_at(traj, range(len(traj["masklet"])))
    if len(labels) < T:   # rows missing at the end read as unlabelled frames
        labels = np.concatenate([labels, np.zeros((T - len(labels), *labels.shape[1:]), np.int32)])
    elif len(labels) > T:
        raise ValueError(f"masklet has {len(labels)} rows for {T} frame_indices")
    return labels


def labels_at(traj: dict[str, Any], positions: Sequence[int]) -> np.ndarray:
    """Decode only the rows at frame ``positions`` (indices into ``frame_indices``) -> ``[len, H, W]`` int32.

    RLE decoding is the expensive part of reading labels; callers that need a few frames
    (the training loader, eval's frame alignment) decode just those.
    """
    H, W = traj["height"], traj["width"]
    ids = traj["masklet_id"]
    labels = np.zeros((len(positions), H, W), dtype=np.int32)
    for t, p in enumerate(positions):
        rles = traj["masklet"][p]
        if len(rles) != len(ids):
            raise ValueError(f"masklet row {p} has {len(rles)} masks for {len(ids)} ids")
        masks = decode_masks(rles, H, W)
        for i, m in zip(ids, masks):
            labels[t][m] = i
    return labels


def coverage(labels: np.ndarray) -> float:
    """Mean over frames of covered pixels / all pixels."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    return float((labels != 0).reshape(labels.shape[0], -1).mean(axis=1).mean())


def dumps(traj: dict[str, Any]) -> bytes:
    """Canonical bytes (sorted keys, no spaces) so equal labels give equal shards."""
    return json.dumps(traj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def encode_member(traj: dict[str, Any]) -> bytes:
    """The ``traj.json.gz`` member: canonical JSON, gzip with no name and mtime 0 (same labels, same bytes)."""
    return gzip.compress(dumps(traj), compresslevel=9, mtime=0)


def decode_member(name: str, data: bytes) -> dict[str, Any]:
    """A ``traj.json.gz`` (v2) or ``traj.json`` (v1) member -> dict; a bomb or bad bytes is a ValueError."""
    if name == MEMBER:
        d = zlib.decompressobj(wbits=31)    # gzip framing
        try:
            data = d.decompress(data, MAX_JSON_BYTES)
        except zlib.error as e:
            raise InputError(f"{name} is not gzip data ({e})") from None
        if d.unconsumed_tail:
            raise InputError(f"{name} expands beyond {MAX_JSON_BYTES} bytes")
    elif name != LEGACY_MEMBER:
        raise InputError(f"{name!r} is not a traj.json member")
    traj = json.loads(data)
    if not isinstance(traj, dict):
        raise InputError(f"{name} holds {type(traj).__name__}, not an object")
    return traj


def find_member(group: dict[str, bytes]) -> str | None:
    """Which traj member a sample's members hold (v2 first), or None."""
    return next((m for m in MEMBERS if m in group), None)
