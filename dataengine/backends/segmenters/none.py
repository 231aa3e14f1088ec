"""The no-op labeller: every frame all background, and no tracker.

For measuring everything around the labeller (listing, decode, shard writing, the driver) at
scale (`bench/scaling.py`); its shards hold no objects, so do not train on them.
"""
from __future__ import annotations

import numpy as np

from dataengine.config import SegmenterConfig


class NoSegmenter:
    name = "none"

    def __init__(self, cfg: SegmenterConfig | None = None):
        self.clip_frames = 1 << 30   # the whole video is one clip

    def segment(self, frames: np.ndarray) -> list[np.ndarray]:
        return [np.zeros(f.shape[:2], np.int32) for f in frames]

    def segment_video(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros(frames.shape[:3], np.int32)
