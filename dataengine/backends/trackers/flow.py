"""The CPU default tracker: dense optical flow warps the label map frame to frame.

For each step t -> t+1 OpenCV's DIS flow is computed both ways. Each pixel of
t+1 looks up its label at t through the backward flow (nearest neighbour, so
ids are never blended). Where forward and backward flow disagree by more than
``consistency`` pixels the pixel is occluded or newly revealed and stays 0
until the next keyframe segments it; pixels that come from outside the frame
are 0 too. Holes are then filled from the nearest track only where the
pixel's colour matches that track's mean colour: strips revealed by a pan and
flow speckle get their obvious owner, while new content stays unlabelled.
"""
from __future__ import annotations

import cv2
import numpy as np

from dataengine.config import TrackerConfig
from dataengine.ops.regions import drop_small, nearest_label


# OpenCV's DIS flow raises, or kills the process (SIGSEGV), on images with a side under 16 px (found for heights
# 1-15 at widths 16-1024): such frames are edge-padded to 16 px for the flow and the flow is cropped back.
DIS_MIN_SIDE = 16


def dis_flow(dis, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIS flow ``[H, W, 2]`` from grey image ``a`` to ``b``, for any size (small ones padded)."""
    h, w = a.shape[:2]
    if min(h, w) >= DIS_MIN_SIDE:
        return dis.calc(a, b, None)
    pad_h, pad_w = max(0, DIS_MIN_SIDE - h), max(0, DIS_MIN_SIDE - w)
    a, b = (cv2.copyMakeBorder(g, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE) for g in (a, b))
    return np.ascontiguousarray(dis.calc(a, b, None)[:h, :w])


def frame_motion(frames: np.ndarray, t: int, dis=None, reliability: float = 0.0,
                 steps: dict | None = None) -> np.ndarray | None:
    """Dense flow ``[H, W, 2]`` (px/frame) of frame ``t`` towards the next frame (the previous one, reversed,
    for the last frame); None for a single frame.
    With ``reliability`` > 0 a third channel is 1 where the forward-backward check passes within that many
    px (the backward flow costs a second DIS call); the (forward, backward) pair of the step t -> t+1 is
    then left in ``steps[t]`` for the tracker to reuse."""
    if len(frames) < 2:
        return None
    dis = dis or cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    other, sign = (t + 1, 1.0) if t + 1 < len(frames) else (t - 1, -1.0)
    a, b = (cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY) for i in (t, other))
    forward = dis_flow(dis, a, b)
    if reliability <= 0:
        return sign * forward
    from dataengine.ops.motionlayers import consistent
    backward = dis_flow(dis, b, a)
    if steps is not None and sign > 0:
        steps[t] = (forward, backward)
    ok = consistent(forward, backward, reliability)
    return np.concatenate([sign * forward, ok[..., None].astype(np.float32)], axis=-1)


class FlowTracker:
    name = "flow"

    def __init__(self, cfg: TrackerConfig):
        self.cfg = cfg
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        # Per step of the last ``track`` call: share of pixels whose forward and backward flow agree
        # (inside the frame). Near 0 the two frames show different content: the labeller's cut signal.
        self.consistent_share: list[float] = []
        self.flows: list[np.ndarray] = []   # forward flow of each step (reused for grouping tracks)

    def track(self, frames: np.ndarray, labels0: np.ndarray,
              first_step: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``first_step``: the (forward, backward) flow of frames 0 -> 1 where the caller computed it already
        (the keyframe's motion layers)."""
        out = np.zeros((len(frames),) + labels0.shape, dtype=np.int32)
        out[0] = labels0
        if len(frames) == 1:
            return out
        h, w = labels0.shape
        grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
        min_pixels = max(1, int(self.cfg.min_area * h * w))
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        self.consistent_share = []
        self.flows = []
        for t in range(len(frames) - 1):
            if t == 0 and first_step is not None:
                forward, backward = first_step
            else:
                backward = dis_flow(self.dis, grey[t + 1], grey[t])
                forward = dis_flow(self.dis, grey[t], grey[t + 1])
            self.flows.append(forward)
            src = grid + backward
            # float32 carries ids exactly up to 2**24; INTER_NEAREST never blends two ids.
            warped = cv2.remap(out[t].astype(np.float32), src[..., 0], src[..., 1], cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.int32)
            fwd_at_src = cv2.remap(forward, src[..., 0], src[..., 1], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            error = np.linalg.norm(backward + fwd_at_src, axis=-1)
            inside = (src[..., 0] >= 0) & (src[..., 0] <= w - 1) & (src[..., 1] >= 0) & (src[..., 1] <= h - 1)
            self.consistent_share.append(float((inside & (error <= self.cfg.consistency)).mean()))
            warped[error > self.cfg.consistency] = 0
            warped = drop_small(warped, min_pixels)
            if self.cfg.fill_colour_distance > 0:
                warped = self.fill_matching_colour(warped, frames[t + 1])
            out[t + 1] = warped
        return out

    def fill_matching_colour(self, labels: np.ndarray, frame: np.ndarray) -> np.ndarray:
        holes = labels == 0
        if not holes.any() or holes.all():
            return labels
        lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
        flat = labels.ravel()
        counts = np.bincount(flat, minlength=1).astype(np.float32)
        means = np.stack([np.bincount(flat, weights=lab[:, c], minlength=len(counts)) for c in range(3)], axis=1)
        means /= np.maximum(counts, 1)[:, None]
        at = np.flatnonzero(holes.ravel())            # only holes can be filled: distances there alone
        candidate = nearest_label(labels).ravel()[at]
        distance = np.linalg.norm(lab[at] - means[candidate], axis=1)
        out = flat.copy()
        fill = distance <= self.cfg.fill_colour_distance
        out[at[fill]] = candidate[fill]
        return out.reshape(labels.shape)
