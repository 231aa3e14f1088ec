"""Mask trackers: one interface, chosen by name from ``dataengine.backends.table``.

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


def build_tracker(cfg: TrackerConfig, device: str = "cpu") -> Tracker:
    """The tracker ``cfg.name`` of ``dataengine.backends.table``."""
    from dataengine.backends.table import build

    return build(cfg, device)
