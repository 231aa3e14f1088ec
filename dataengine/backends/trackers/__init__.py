"""Mask trackers: one interface, chosen by name.

``track(frames [n, H, W, 3], labels0 [H, W]) -> [n, H, W]`` carries the label
map of the clip's first frame through the clip; position 0 of the result is
``labels0``. Pixels the tracker cannot explain (occluded, entering) are 0.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from dataengine.config import TrackerConfig


class Tracker(Protocol):
    name: str

    def track(self, frames: np.ndarray, labels0: np.ndarray) -> np.ndarray: ...


TRACKERS = ("flow", "sam2")


def build_tracker(cfg: TrackerConfig, device: str = "cpu") -> Tracker:
    if cfg.name == "flow":
        from .flow import FlowTracker
        return FlowTracker(cfg)
    if cfg.name == "sam2":
        from .sam2 import Sam2Tracker
        return Sam2Tracker(cfg, device)
    if cfg.name in TRACKERS:
        raise NotImplementedError(f"tracker {cfg.name!r} is not available in this build yet")
    raise ValueError(f"unknown tracker {cfg.name!r} (choose from {', '.join(TRACKERS)})")
