"""Segmenter evaluation on trajectory shards: space-time IoU of matched trajectories.

Each ground-truth trajectory is matched one-to-one to a predicted one by
maximum IoU over the whole clip (Hungarian); pixels no trajectory covers are
ignored. Reported per dataset: mean IoU over GT trajectories (unmatched = 0),
recall at IoU 0.5, and the mean number of predicted trajectories per clip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from dataengine.errors import UserError
from dataengine.format import shards as shard_io
from dataengine.metrics.scores import evaluate_sequences

from .checkpoint import load_segmenter
from .data import decode_sample, is_video, resolve_shards
from .models.segmenter import Segmenter, segment


def trajectory_ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every GT id with its matched predicted id (0 if unmatched); ``[n_gt]``."""
    keep = gt != 0
    p, g = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
    g_ids, g_inv = np.unique(g, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    if len(g_ids) == 0:
        return np.zeros(0)
    inter = np.zeros((len(g_ids), len(p_ids)))
    np.add.at(inter, (g_inv, p_inv), 1)
    union = inter.sum(1, keepdims=True) + inter.sum(0, keepdims=True) - inter
    iou = inter / np.maximum(union, 1)
    rows, cols = linear_sum_assignment(-iou)
    out = np.zeros(len(g_ids))
    out[rows] = iou[rows, cols]
    return out


@torch.no_grad()
def predict_samples(checkpoint: str | Path | Segmenter, data: Any, limit: int | None = None,
                    device: str = "cpu") -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """``(key, gt ids [T,H,W], predicted ids [T,H,W])`` for the first clip of each sample.

    A sample whose media cannot be decoded yields ``(key, None, None)`` so callers can
    count it. Scoring is left to the caller (``trajtok eval-segmenter`` uses the same
    metrics as ``trajdata eval``).
    """
    model = checkpoint if isinstance(checkpoint, Segmenter) else load_segmenter(checkpoint, device)
    n = 0
    for path in resolve_shards(data):
        for sample in shard_io.read_shard(path):
            if limit is not None and n >= limit:
                return
            n += 1
            T = model.cfg.frames if is_video(sample) else 1
            try:
                rgb, gt = decode_sample(sample, T)
            except Exception:
                yield sample.key, None, None
                continue
            yield sample.key, gt, segment(model, rgb)


def evaluate_segmenter(checkpoint: str | Path | Segmenter, data: Any, limit: int | None = None,
                       device: str = "cpu") -> dict[str, Any]:
    """Quick summary used during training: one-to-one matched IoU of GT trajectories."""
    ious, n_pred, n_samples, errors = [], [], 0, 0
    for _, gt, pred in predict_samples(checkpoint, data, limit, device):
        if gt is None:
            errors += 1
            continue
        ious.extend(trajectory_ious(pred, gt).tolist())
        n_pred.append(len(np.unique(pred)))
        n_samples += 1
    ious_arr = np.asarray(ious)
    return {"samples": n_samples, "errors": errors, "trajectories": int(ious_arr.size),
            "mean_iou": float(ious_arr.mean()) if ious_arr.size else 0.0,
            "recall@0.5": float((ious_arr >= 0.5).mean()) if ious_arr.size else 0.0,
            "pred_per_clip": float(np.mean(n_pred)) if n_pred else 0.0}


SUMMARY_KEYS = ("STQ", "AQ", "SQ", "VEQ", "VPQ", "recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory",
                "length_ratio", "samples")


def score_segmenter(checkpoint: str | Path | Segmenter, data: Any, limit: int | None = None, device: str = "cpu",
                    on_sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """``trajtok eval-segmenter``: the metrics of ``trajdata eval`` for a segmenter against the shards' masks.

    Returns ``evaluate_sequences``' result plus ``samples`` (scored), ``errors`` (not decodable),
    the sample ``key`` on each per-sequence row, and ``summary`` (the headline numbers).
    """
    keys, pairs, errors = [], [], 0
    for key, gt, pred in predict_samples(checkpoint, data, limit=limit, device=device):
        if on_sample:
            on_sample()
        if gt is None:
            errors += 1
            continue
        keys.append(key)
        pairs.append((gt, pred))
    if not pairs:
        raise UserError(f"no decodable samples in {data}")
    result = evaluate_sequences(pairs)
    result["samples"], result["errors"] = len(pairs), errors
    for row, key in zip(result.get("per_sequence", []), keys):
        row["key"] = key
    result["summary"] = {k: result[k] for k in SUMMARY_KEYS}
    return result
