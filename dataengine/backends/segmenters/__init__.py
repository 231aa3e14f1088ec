"""Keyframe segmenters: one interface, chosen by name from ``dataengine.backends.table``.

A segmenter turns a batch of keyframes ``[K, H, W, 3]`` uint8 RGB into K label
maps ``[H, W]`` int32 (0 = no region, regions 1..n, disjoint by construction).
Model backends load weights only from local paths and fail at construction
with one clear line when a checkpoint is missing.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from dataengine.config import SegmenterConfig


class Segmenter(Protocol):
    name: str

    def segment(self, frames: np.ndarray) -> list[np.ndarray]: ...


def build_segmenter(cfg: SegmenterConfig, device: str = "cpu") -> Segmenter:
    """The segmenter ``cfg.name`` of ``dataengine.backends.table``."""
    from dataengine.backends.table import build

    return build(cfg, device)
