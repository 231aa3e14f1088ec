"""Small helpers over integer label maps shared by segmenters and trackers."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential


def nearest_label(labels: np.ndarray) -> np.ndarray:
    """The label of the nearest labelled pixel, for every pixel (labelled ones keep theirs)."""
    holes = labels == 0
    if not holes.any() or holes.all():
        return labels
    _, (iy, ix) = ndimage.distance_transform_edt(holes, return_indices=True)
    return labels[iy, ix]


def fill_unlabelled(labels: np.ndarray) -> np.ndarray:
    """Give every 0 pixel the label of the nearest labelled pixel (a panoptic partition)."""
    return nearest_label(labels)


def drop_small(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Zero regions with fewer than ``min_pixels`` pixels."""
    counts = np.bincount(labels.ravel())
    small = counts < min_pixels
    small[0] = False
    if not small.any():
        return labels
    out = labels.copy()
    out[small[labels]] = 0
    return out


def keep_largest(labels: np.ndarray, max_regions: int) -> np.ndarray:
    """Zero all but the ``max_regions`` largest regions (ties broken by id, deterministic)."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    ids = np.nonzero(counts)[0]
    if len(ids) <= max_regions:
        return labels
    order = ids[np.lexsort((ids, -counts[ids]))]
    keep = np.zeros(len(counts), dtype=bool)
    keep[order[:max_regions]] = True
    out = labels.copy()
    out[~keep[labels]] = 0
    return out


def consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel to 1..n keeping 0 as 0."""
    return relabel_sequential(labels.astype(np.int32))[0].astype(np.int32)
