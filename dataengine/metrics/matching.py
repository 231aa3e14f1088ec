"""The one IoU / Hungarian matcher: IoU between the ids of two label maps, one-to-one matching on it.

Used by ``trajdata show --gt`` (colour ground truth like the trajectory it was found as),
trajtok's segmenter evaluation and the stage tests. Label maps are int arrays of any shape
(``[H, W]`` or ``[T, H, W]``: an id's region over the whole clip); 0 is "no trajectory".

Two recalls at IoU 0.5 exist in the project, under different names:

* ``scores.trajectory_recall``'s ``recall_at_0.5`` (what ``trajdata eval`` reports): each GT
  trajectory takes its best-overlapping prediction, several GT may share one prediction, and
  predicted pixels on GT void count against the IoU (strict);
* ``matched_ious`` here, reported by trajtok as ``matched_recall@0.5``: GT and predictions
  matched one-to-one (Hungarian), pixels no GT trajectory covers ignored.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every nonzero id of ``a`` and of ``b`` (same shape): ``(ids_a, ids_b, iou)``.

    ``where``: a boolean mask of the pixels that count (all by default); areas and
    intersections are taken over those pixels only.
    """
    a, b = np.asarray(a), np.asarray(b)
    if where is not None:
        a, b = a[where], b[where]
    a, b = a.ravel(), b.ravel()
    ids_a = np.unique(a[a != 0])
    ids_b = np.unique(b[b != 0])
    if len(ids_a) == 0 or len(ids_b) == 0:
        return ids_a, ids_b, np.zeros((len(ids_a), len(ids_b)))
    # Index 0 is background, 1..n the sorted ids, so one bincount gives all intersections.
    ia = np.where(a != 0, np.searchsorted(ids_a, a) + 1, 0)
    ib = np.where(b != 0, np.searchsorted(ids_b, b) + 1, 0)
    na, nb = len(ids_a) + 1, len(ids_b) + 1
    joint = np.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb)
    area_a = joint.sum(axis=1)[1:, None]
    area_b = joint.sum(axis=0)[None, 1:]
    inter = joint[1:, 1:]
    return ids_a, ids_b, inter / np.maximum(area_a + area_b - inter, 1)


def match_one_to_one(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one assignment with the largest total IoU (Hungarian)."""
    if iou.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(-iou)
    return rows.astype(np.int64), cols.astype(np.int64)


def matched_ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every GT id (sorted) with the prediction matched to it one-to-one, 0 if none; ``[n_gt]``.

    Only pixels some GT trajectory covers count (pseudo-labels leave pixels unlabelled;
    nothing is known there). Predicted id 0 is "nothing predicted" (a no-object model's
    unclaimed pixels): it is never matched, but its pixels are in each GT trajectory's area.
    """
    keep = np.asarray(gt) != 0
    g_ids, _, iou = iou_matrix(gt, pred, where=keep)
    out = np.zeros(len(g_ids))
    rows, cols = match_one_to_one(iou)
    out[rows] = iou[rows, cols]
    return out
