"""Keyframe segmenters: one interface, chosen by name.

A segmenter turns a batch of keyframes ``[K, H, W, 3]`` uint8 RGB into K label
maps ``[H, W]`` int32 (0 = no region, regions 1..n, disjoint by construction).
Model backends load weights only from local paths and fail at construction
with one clear line when a checkpoint is missing.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..config import SegmenterConfig


class Segmenter(Protocol):
    name: str

    def segment(self, frames: np.ndarray) -> list[np.ndarray]: ...


SEGMENTERS = ("classical", "directsam", "sam", "trajtok", "none")


class NoSegmenter:
    """Labels nothing: every frame all background, no tracker built. For measuring the pipeline
    around the labeller (listing, decode, shard writing, the driver); its shards hold no objects."""
    name = "none"
    segments_video = True           # the labeller then builds no tracker

    def __init__(self) -> None:
        self.clip_frames = 1 << 30  # the whole video is one clip

    def segment(self, frames: np.ndarray) -> list[np.ndarray]:
        return [np.zeros(f.shape[:2], np.int32) for f in frames]

    def segment_video(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros(frames.shape[:3], np.int32)


def build_segmenter(cfg: SegmenterConfig, device: str = "cpu") -> Segmenter:
    if cfg.name == "classical":
        from .classical import ClassicalSegmenter
        return ClassicalSegmenter(cfg)
    if cfg.name == "directsam":
        from .directsam import DirectSamSegmenter
        return DirectSamSegmenter(cfg, device)
    if cfg.name == "sam":
        from .sam import SamSegmenter
        return SamSegmenter(cfg, device)
    if cfg.name == "trajtok":
        from .learned import TrajTokSegmenter
        return TrajTokSegmenter(cfg, device)
    if cfg.name == "none":
        return NoSegmenter()
    if cfg.name in SEGMENTERS:
        raise NotImplementedError(f"segmenter {cfg.name!r} is not available in this build yet")
    raise ValueError(f"unknown segmenter {cfg.name!r} (choose from {', '.join(SEGMENTERS)})")
