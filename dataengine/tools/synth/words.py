"""Small vocabularies for captions: colour names from RGB, directions from screen vectors."""
from __future__ import annotations

import colorsys

import numpy as np

# Hue sectors in degrees (upper bounds), checked in order; red wraps around 360.
_HUES = ((15, "red"), (40, "orange"), (68, "yellow"), (160, "green"), (195, "teal"), (255, "blue"),
         (290, "purple"), (335, "pink"), (361, "red"))


def colour_word(rgb) -> str:
    """A basic colour name for an RGB triple in 0..255 (HSV sectors; dark or grey tones first)."""
    r, g, b = (float(c) / 255.0 for c in np.asarray(rgb, dtype=np.float64)[:3])
    h, s, v = colorsys.rgb_to_hsv(min(max(r, 0.0), 1.0), min(max(g, 0.0), 1.0), min(max(b, 0.0), 1.0))
    if v < 0.2:
        return "black"
    if s < 0.2 or (s < 0.3 and v < 0.4):
        return "white" if v > 0.82 else ("dark grey" if v < 0.4 else "grey")
    deg = h * 360.0
    name = next(n for bound, n in _HUES if deg < bound)
    if name in ("orange", "red", "yellow") and v < 0.55:
        return "brown" if name != "yellow" else "olive"
    if v < 0.4:
        return "dark " + name
    return name


def direction(vec, minor_share: float = 0.5) -> str:
    """'left', 'up', ... or 'down and to the left' when the minor axis has at least ``minor_share``
    of the major one. Screen coordinates: +y is down."""
    x, y = float(vec[0]), float(vec[1])
    horiz = "right" if x > 0 else "left"
    vert = "down" if y > 0 else "up"
    if abs(x) >= abs(y):
        return f"{vert} and to the {horiz}" if abs(y) >= minor_share * abs(x) else horiz
    return f"{vert} and to the {horiz}" if abs(x) >= minor_share * abs(y) else vert


def dominant(vec) -> str:
    """One of the four classes left / right / up / down (the larger component wins)."""
    x, y = float(vec[0]), float(vec[1])
    if abs(x) >= abs(y):
        return "right" if x > 0 else "left"
    return "down" if y > 0 else "up"


def side(vec) -> str:
    """The frame border a direction points at: 'left', 'right', 'top', 'bottom'."""
    return {"left": "left", "right": "right", "up": "top", "down": "bottom"}[dominant(vec)]
