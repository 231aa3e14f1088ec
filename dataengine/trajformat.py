"""The ``traj.json`` codec of shard format v1: id label maps <-> COCO RLE masklets.

A label map is ``[T, H, W]`` integers: 0 = no trajectory, otherwise the
trajectory id. Masks of one frame are therefore disjoint by construction.
``masklet[t][j]`` is the RLE of trajectory ``masklet_id[j]`` at frame position
``t`` (an empty mask where it is absent), the layout SA-V uses.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

FORMAT_VERSION = 1


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """``[N, H, W]`` bool -> N COCO RLEs with string counts."""
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_masks(rles: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """N COCO RLEs -> ``[N, H, W]`` bool."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    objs = [{"size": r["size"], "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]}
            for r in rles]
    return np.moveaxis(mask_utils.decode(objs), -1, 0).astype(bool)


def labels_to_traj(labels: np.ndarray, frame_indices: list[int], timestamps: list[float],
                   keyframes: list[int], scores: dict[int, float] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the ``traj.json`` dict of one sample from its label maps."""
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
    out = {
        "version": FORMAT_VERSION, "height": int(H), "width": int(W),
        "frame_indices": [int(f) for f in frame_indices],
        "timestamps": [round(float(s), 6) for s in timestamps],
        "keyframes": [int(k) for k in keyframes],
        "trajectories": trajectories,
        "masklet_id": ids,
        "masklet": masklet,
    }
    if extra:
        out.update(extra)
    return out


def traj_to_labels(traj: dict[str, Any]) -> np.ndarray:
    """Decode a ``traj.json`` dict back to ``[T, H, W]`` int32 label maps."""
    H, W = traj["height"], traj["width"]
    ids = traj["masklet_id"]
    T = len(traj["frame_indices"])
    labels = np.zeros((T, H, W), dtype=np.int32)
    for t, rles in enumerate(traj["masklet"]):
        if len(rles) != len(ids):
            raise ValueError(f"masklet row {t} has {len(rles)} masks for {len(ids)} ids")
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
