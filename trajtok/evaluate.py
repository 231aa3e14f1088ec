"""Segmenter evaluation on trajectory shards: space-time IoU of matched trajectories.

Each ground-truth trajectory is matched one-to-one to a predicted one by
maximum IoU over the whole clip (Hungarian, ``dataengine.metrics.matching``);
pixels no trajectory covers are ignored. Reported per dataset: ``matched_iou``
(mean over GT trajectories, unmatched = 0), ``matched_recall@0.5`` and the mean
number of predicted trajectories per clip. These are not ``trajdata eval``'s
strict best-IoU ``recall_at_0.5`` (``trajtok eval-segmenter`` reports that one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from dataengine.errors import InputError
from dataengine.format import shards as shard_io
from dataengine.metrics.matching import matched_ious
from dataengine.metrics.scores import evaluate_sequences, pooled_by_trajectory

from .checkpoint import load_segmenter
from .data import decode_sample, frame_positions, is_video, resolve_shards
from .models.segmenter import Segmenter, segment


@torch.no_grad()
def predict_samples(checkpoint: str | Path | Segmenter, data: Any, limit: int | None = None,
                    device: str = "cpu", with_media_type: bool = False
                    ) -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """``(key, gt ids [T,H,W], predicted ids [T,H,W])`` of each sample: the model's clip (T evenly spaced
    annotated frames, as the loader takes them without augmentation); a video with fewer annotated frames
    is fed with repeats, as in training, and scored on each of its frames once.

    A sample whose media cannot be decoded yields ``(key, None, None)`` so callers can
    count it. Scoring is left to the caller (``trajtok eval-segmenter`` uses the same
    metrics as ``trajdata eval``). ``with_media_type``: 4-tuples, the sample's kind
    ("video" / "image") last.
    """
    model = checkpoint if isinstance(checkpoint, Segmenter) else load_segmenter(checkpoint, device)
    n = 0
    for path in resolve_shards(data):
        for sample in shard_io.read_shard(path):
            if limit is not None and n >= limit:
                return
            n += 1
            T = model.cfg.frames if is_video(sample) else 1
            kind = ("video" if is_video(sample) else "image",) if with_media_type else ()
            try:
                rgb, gt = decode_sample(sample, T)
            except Exception:
                yield (sample.key, None, None) + kind
                continue
            pred = segment(model, rgb)
            n_annotated = len(sample.traj["frame_indices"])
            if T > 1 and n_annotated < T:    # repeated frames would weigh twice in the scores
                _, first = np.unique(frame_positions(n_annotated, T, None), return_index=True)
                gt, pred = gt[np.sort(first)], pred[np.sort(first)]
            yield (sample.key, gt, pred) + kind


def evaluate_segmenter(checkpoint: str | Path | Segmenter, data: Any, limit: int | None = None,
                       device: str = "cpu") -> dict[str, Any]:
    """Quick summary: one-to-one (Hungarian) matched IoU of GT trajectories and its recall at 0.5."""
    ious, n_pred, n_samples, errors = [], [], 0, 0
    for _, gt, pred in predict_samples(checkpoint, data, limit, device):
        if gt is None:
            errors += 1
            continue
        ious.extend(matched_ious(pred, gt).tolist())
        n_pred.append(len(np.unique(pred[pred > 0])))     # 0: pixels a no-object model leaves unlabelled
        n_samples += 1
    ious_arr = np.asarray(ious)
    return {"samples": n_samples, "errors": errors, "trajectories": int(ious_arr.size),
            "matched_iou": float(ious_arr.mean()) if ious_arr.size else 0.0,
            "matched_recall@0.5": float((ious_arr >= 0.5).mean()) if ious_arr.size else 0.0,
            "pred_per_clip": float(np.mean(n_pred)) if n_pred else 0.0}


SUMMARY_KEYS = ("STQ", "AQ", "SQ", "VEQ", "VPQ", "recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory",
                "length_ratio", "samples")


def score_segmenter(checkpoint: str | Path | Segmenter, data: Any, limit: int | None = None, device: str = "cpu",
                    on_sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """``trajtok eval-segmenter``: the metrics of ``trajdata eval`` for a segmenter against the shards' masks.

    Returns ``evaluate_sequences``' result plus ``samples`` (scored), ``errors`` (not decodable),
    ``per_sample`` (its per-sequence rows with the sample's ``key`` and ``media_type``, as ``trajdata eval``
    names them), ``by_media`` when the data holds videos and images (the trajectory figures pooled per kind,
    as ``trajdata eval``), and ``summary`` (the headline numbers).
    """
    keys, kinds, pairs, errors = [], [], [], 0
    for key, gt, pred, kind in predict_samples(checkpoint, data, limit=limit, device=device, with_media_type=True):
        if on_sample:
            on_sample()
        if gt is None:
            errors += 1
            continue
        keys.append(key)
        kinds.append(kind)
        pairs.append((gt, pred))
    if not pairs:
        raise InputError(f"no decodable samples in {data}")
    result = evaluate_sequences(pairs)
    result["samples"], result["errors"] = len(pairs), errors
    result["per_sample"] = result.pop("per_sequence")
    for row, key, kind in zip(result["per_sample"], keys, kinds):
        row.pop("id", None)
        row["key"], row["media_type"] = key, kind
    if len(set(kinds)) > 1:
        result["by_media"] = {m: pooled_by_trajectory([r for r in result["per_sample"] if r["media_type"] == m])
                              for m in sorted(set(kinds))}
    result["summary"] = {k: result[k] for k in SUMMARY_KEYS}
    return result
