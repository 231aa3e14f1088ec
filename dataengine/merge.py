"""Cross-clip merge: keyframe regions inherit the ids of the tracks they continue.

At each keyframe the tracker's propagated label map (the previous clip carried
forward) is matched one-to-one to the fresh segmentation by IoU with the
Hungarian algorithm. Pairs at or above the threshold keep the old id;
unmatched regions start new trajectories; unmatched tracks simply end there.
Nothing is dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .regions import iou_matrix


@dataclass
class MergeResult:
    labels: np.ndarray                      # the keyframe's regions with trajectory ids
    matched: list[tuple[int, float]] = field(default_factory=list)   # (id, IoU) carried over
    new_ids: list[int] = field(default_factory=list)
    ended_ids: list[int] = field(default_factory=list)


def merge_keyframe(propagated: np.ndarray | None, segmentation: np.ndarray, next_id: int,
                   iou_threshold: float) -> tuple[MergeResult, int]:
    """Assign trajectory ids to ``segmentation`` (regions 1..n); returns the result and the next free id."""
    seg_ids = np.unique(segmentation[segmentation != 0])
    mapping: dict[int, int] = {}
    matched: list[tuple[int, float]] = []
    ended: list[int] = []
    if propagated is not None:
        prev_ids, new_ids, iou = iou_matrix(propagated, segmentation)
        if iou.size:
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= iou_threshold:
                    mapping[int(new_ids[c])] = int(prev_ids[r])
                    matched.append((int(prev_ids[r]), round(float(iou[r, c]), 4)))
        ended = sorted(set(int(i) for i in prev_ids) - set(mapping.values()))
    fresh = []
    for s in seg_ids:  # ascending order: deterministic id assignment
        if int(s) not in mapping:
            mapping[int(s)] = next_id
            fresh.append(next_id)
            next_id += 1
    lut = np.zeros(int(segmentation.max()) + 1, dtype=np.int32)
    for s, t in mapping.items():
        lut[s] = t
    return MergeResult(lut[segmentation], sorted(matched), fresh, ended), next_id
