"""Keyframes: where the content changed enough that segmentation must run again.

A frame becomes a keyframe when its colour histogram (HSV hue x saturation,
plus luminance) has drifted from the last keyframe's by more than
``threshold``, or after ``max_gap`` frames. A jump between *consecutive*
frames above ``cut_threshold`` is a hard scene cut: trajectories never
continue across it.
"""
from __future__ import annotations

import cv2
import numpy as np

from dataengine.config import KeyframeConfig


def frame_histograms(frame_rgb: np.ndarray, cfg: KeyframeConfig) -> tuple[np.ndarray, np.ndarray]:
    hsv = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [cfg.hue_bins, cfg.sat_bins], [0, 180, 0, 256])
    luma = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    y = cv2.calcHist([luma], [0], None, [cfg.luma_bins], [0, 256])
    return cv2.normalize(hs, None, 1.0, 0.0, cv2.NORM_L1), cv2.normalize(y, None, 1.0, 0.0, cv2.NORM_L1)


def histogram_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean Bhattacharyya distance of the colour and luminance histograms, in [0, 1]."""
    d_colour = cv2.compareHist(a[0], b[0], cv2.HISTCMP_BHATTACHARYYA)
    d_luma = cv2.compareHist(a[1], b[1], cv2.HISTCMP_BHATTACHARYYA)
    return float(min(1.0, max(0.0, 0.5 * (d_colour + d_luma))))


def detect_keyframes(frames: np.ndarray, cfg: KeyframeConfig) -> tuple[list[int], list[int]]:
    """Return (keyframe positions, scene-cut positions); cuts are a subset of keyframes."""
    if len(frames) == 0:
        return [], []
    hists = [frame_histograms(f, cfg) for f in frames]
    keyframes, cuts = [0], []
    for t in range(1, len(frames)):
        if histogram_distance(hists[t - 1], hists[t]) > cfg.cut_threshold:
            keyframes.append(t)
            cuts.append(t)
        elif (histogram_distance(hists[keyframes[-1]], hists[t]) > cfg.threshold
              or t - keyframes[-1] >= cfg.max_gap):
            keyframes.append(t)
    return keyframes, cuts
