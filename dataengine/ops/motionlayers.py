"""Motion layers for keyframe segmentation: what moves apart from the camera.

A pan or zoom moves the whole frame with one global model. It is fitted
robustly (RANSAC affine, OpenCV) to a grid of optical-flow vectors between the
keyframe and its neighbour; what is left of each pixel's flow after the camera
model is its *residual*. A superpixel whose mean residual is clearly above the
flow's noise belongs to an independently moving object. The classical
segmenter uses the layers as merge constraints: moving regions with similar
residuals merge more easily (an object's differently textured pieces move
together), and regions whose residuals differ clearly never merge (an object
is not swallowed by similar-coloured background). Static content keeps the
colour merge.
"""
from __future__ import annotations

import cv2
import numpy as np


def camera_model(flow: np.ndarray, step: int = 4, ransac_px: float = 1.0) -> np.ndarray | None:
    """The global affine camera motion (``[2, 3]``, keyframe -> next frame) fitted robustly to ``flow``
    (``[H, W, 2]``) on a grid; None when no model fits (too few vectors, or RANSAC finds none)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    if len(src) < 6:
        return None
    dst = src + flow[ys.ravel(), xs.ravel()].astype(np.float32)
    model, _ = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px,
                                    refineIters=10)
    return model


def camera_residual(flow: np.ndarray, step: int = 4, ransac_px: float = 1.0) -> np.ndarray | None:
    """``flow`` minus the global affine camera motion fitted to it (``[H, W, 2]``); None when no model fits."""
    model = camera_model(flow, step, ransac_px)
    if model is None:
        return None
    h, w = flow.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    camera = np.stack([model[0, 0] * gx + model[0, 1] * gy + model[0, 2] - gx,
                       model[1, 0] * gx + model[1, 1] * gy + model[1, 2] - gy], axis=-1)
    return flow - camera


def region_motion(labels: np.ndarray, residual: np.ndarray, min_speed: float,
                  reliable: np.ndarray | None = None, min_reliable: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label id: the summed residual flow of its reliable pixels ``[n, 2]``, their count ``[n]``, and its
    layer ``[n]``: 1 moving (mean residual longer than ``min_speed`` px/frame), -1 static, 0 unknown (fewer
    than ``min_reliable`` of its pixels have a reliable flow: occluded, or the flow's smoothing halo)."""
    n = int(labels.max()) + 1
    flat = labels.ravel()
    weight = np.ones(flat.shape) if reliable is None else reliable.ravel().astype(np.float64)
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    good = np.bincount(flat, weights=weight, minlength=n)
    total = np.stack([np.bincount(flat, weights=residual[..., c].ravel() * weight, minlength=n) for c in range(2)],
                     axis=1)
    mean = total / np.maximum(good, 1)[:, None]
    layer = np.where(np.linalg.norm(mean, axis=1) > min_speed, 1, -1)
    layer[good < min_reliable * np.maximum(counts, 1)] = 0
    return total, good, layer


def consistent(forward: np.ndarray, backward: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels whose forward flow, followed by the backward flow from where it lands, returns within
    ``tolerance`` px: not occluded, not a smoothing halo."""
    h, w = forward.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    back = cv2.remap(backward, gx + forward[..., 0], gy + forward[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=1e3)
    return np.linalg.norm(forward + back, axis=-1) <= tolerance


def textured(frame: np.ndarray, min_std: float, window: int = 7) -> np.ndarray:
    """Pixels whose grey level varies by more than ``min_std`` (std) in a ``window`` neighbourhood: where
    the flow is measured rather than filled in by its smoothing (plain areas take the motion of whatever
    textured neighbour moves, e.g. a flat background next to a moving object)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (window, window))
    var = cv2.blur(grey * grey, (window, window)) - mean * mean
    return var > min_std * min_std
