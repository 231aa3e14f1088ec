import os

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def render_scene(t: int, h: int = 96, w: int = 128, shift: int = 3, seed: int = 0,
                 background=(90, 110, 90)) -> tuple[np.ndarray, np.ndarray]:
    """Three flat-coloured rectangles with mild noise moving right over a grey-green background.

    Returns (rgb [h,w,3] uint8, ground-truth ids [h,w] int32 with 0 = background).
    """
    rng = np.random.default_rng(seed * 1000 + t)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = background
    ids = np.zeros((h, w), np.int32)
    boxes = [((10, 20), (30, 30), (220, 40, 40)), ((50, 10), (28, 36), (40, 60, 220)),
             ((30, 70), (40, 26), (230, 210, 40))]
    for i, ((y, x), (bh, bw), colour) in enumerate(boxes, start=1):
        x = x + shift * t
        rgb[y:y + bh, max(0, x):max(0, x + bw)] = colour
        ids[y:y + bh, max(0, x):max(0, x + bw)] = i
    rgb += rng.normal(0, 3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), ids


@pytest.fixture
def scene():
    return render_scene
