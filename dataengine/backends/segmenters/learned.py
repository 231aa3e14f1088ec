"""A trained TrajTok segmenter as a labelling backend.

It segments *and* tracks (``tracks`` in its table entry): one forward pass labels a whole clip of
``model.cfg.frames`` frames, so the labeller skips the tracker and only links
consecutive clips by IoU (the same merge as between keyframes). The
checkpoint is a ``trajtok train-segmenter`` safetensors file, which carries
its own config.
"""
from __future__ import annotations

import numpy as np

from dataengine.backends.models import autocast, torch_device, trajtok_checkpoint
from dataengine.config import SegmenterConfig


class TrajTokSegmenter:
    name = "trajtok"

    def __init__(self, cfg: SegmenterConfig, device: str = "cpu"):
        from trajtok.checkpoint import load_segmenter

        self.device = torch_device(device)
        self.checkpoint = trajtok_checkpoint(cfg)
        self.model = load_segmenter(self.checkpoint.path, self.device)
        self.clip_frames = int(self.model.cfg.frames)

    def segment_video(self, frames: np.ndarray) -> np.ndarray:
        """``[T, H, W, 3]`` -> ``[T, H, W]`` ids, unique over the video, not linked across clips."""
        from trajtok.models.segmenter import segment

        # bf16 on CUDA as in training (the forward pass is trained under the same autocast); fp32 on CPU.
        with autocast(self.device):
            return segment(self.model, np.array(frames))  # writable copy: rows hand read-only buffers

    def segment(self, frames: np.ndarray) -> list[np.ndarray]:
        return [self.segment_video(f[None])[0] for f in frames]
