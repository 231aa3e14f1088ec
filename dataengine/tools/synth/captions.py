"""Captions and clip labels from a scene's design and its exact ground truth.

Captions are compositional so that few clips share one: which objects are on
screen (colour word + what they are), how each salient one moves, which ones
enter or leave and through which border, and what the camera does, e.g. "a
red ellipse moves left while a green rectangle enters from the top; the
camera pans right". Only what is visible in the ground truth is described.

Clip labels for probing (written into each video's JSON):

* ``motion``: the dominant direction of object motion on screen, one of
  ``left``, ``right``, ``up``, ``down``: the sum over objects of their
  frame-to-frame displacement while visible, larger axis wins.
* ``count``: the number of objects seen in the clip (ground-truth
  trajectories), binned as ``COUNT_BINS``: "0-3", "4-6", "7-9", "10+".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .words import direction, dominant, side

COUNT_BINS = ((0, 3, "0-3"), (4, 6, "4-6"), (7, 9, "7-9"), (10, None, "10+"))
MAX_NAMED = 4                   # objects a caption names; the rest are counted
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve")
_STILL = 0.35                   # px / frame below which an object "stays put"


def count_bin(n: int) -> str:
    for lo, hi, name in COUNT_BINS:
        if n >= lo and (hi is None or n <= hi):
            return name
    raise ValueError(f"negative object count {n}")


@dataclass
class Seen:
    """One object as the ground truth shows it within its scene."""
    obj: Any
    area: np.ndarray            # visible px per local frame
    motion: np.ndarray          # summed screen displacement between consecutive visible frames
    steps: int                  # how many such frame pairs

    @property
    def first(self) -> int:
        return int(np.flatnonzero(self.area)[0])

    @property
    def last(self) -> int:
        return int(np.flatnonzero(self.area)[-1])


def seen_objects(scene, labels: np.ndarray) -> list[Seen]:
    """The objects of ``scene`` visible in ``labels`` ([T, H, W], local to the scene), by id."""
    T = labels.shape[0]
    top = max(scene.ids, default=0) + 1
    areas = np.stack([np.bincount(np.clip(labels[t].ravel(), 0, top), minlength=top + 1)[:top] for t in range(T)])
    out = []
    for obj in sorted(scene.objects, key=lambda o: o.id):
        area = areas[:, obj.id] if obj.id < top else np.zeros(T, dtype=np.int64)
        if not area.any():
            continue
        motion, steps = np.zeros(2), 0
        for t in range(T - 1):
            if area[t] and area[t + 1]:
                a, b = obj.pose(t), obj.pose(t + 1)
                motion += (b[0] - a[0], b[1] - a[1])
                steps += 1
        out.append(Seen(obj=obj, area=area, motion=motion, steps=steps))
    return out


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _name(obj) -> str:
    colour, noun = obj.words()
    return _a(f"{colour} {noun}")


def _number(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _verb(s: Seen, T: int) -> str:
    o = s.obj
    if o.role == "enter" and s.first > 0:
        text = f"enters from the {side(-o.vel)}"
    elif o.role == "leave" and s.last < T - 1:
        text = f"leaves to the {side(o.vel)}"
    elif s.steps == 0 or np.hypot(*s.motion) / s.steps < _STILL:
        text = "stays put"
    else:
        text = f"moves {direction(s.motion)}"
    if T > 1:
        growth = o.scale(s.last) / o.scale(s.first)
        if growth > 1.25:
            text += " and grows"
        elif growth < 0.8:
            text += " and shrinks"
    return text


def _salient(seen: list[Seen]) -> list[Seen]:
    """Up to MAX_NAMED objects: those entering or leaving first, then the largest on screen."""
    movers = [s for s in seen if s.obj.role != "stay"][:2]
    rest = sorted((s for s in seen if s not in movers), key=lambda s: -float(s.area.mean()))
    return sorted(movers + rest[:MAX_NAMED - len(movers)], key=lambda s: s.obj.id)


def _camera(cam: dict[str, Any], T: int) -> str:
    pan = np.asarray(cam["pan"], dtype=np.float64)
    moves = []
    if np.hypot(*pan) >= 0.3:
        moves.append(f"pans {direction(pan)}")
    if cam["zoom"] > 1.08:
        moves.append("zooms in")
    elif cam["zoom"] < 1 / 1.08:
        moves.append("zooms out")
    what = f"over {cam['background']}"
    if not moves:
        return f"the camera is still, {what}"
    return f"the camera {' and '.join(moves)} {what}"


def scene_caption(scene, labels: np.ndarray) -> str:
    T = labels.shape[0]
    seen = seen_objects(scene, labels)
    if not seen:
        return _camera(scene.camera, T).replace("the camera", "nothing moves; the camera", 1)
    named = _salient(seen)
    clauses = [f"{_name(s.obj)} {_verb(s, T)}" for s in named]
    text = clauses[0] if len(clauses) == 1 else f"{clauses[0]} while {_join(clauses[1:])}"
    others = len(seen) - len(named)
    if others:
        text += f", with {_number(others)} other object{'s' if others > 1 else ''} around"
    return f"{text}; {_camera(scene.camera, T)}"


def video_caption(parts: list[tuple[Any, np.ndarray]]) -> str:
    """``parts``: (scene, its ground-truth labels) in order; a second part follows a hard cut."""
    text = scene_caption(*parts[0])
    for scene, labels in parts[1:]:
        text += f". Then a hard cut: {scene_caption(scene, labels)}"
    return text


def _where(mask: np.ndarray) -> str:
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    row = ("top", "middle", "bottom")[min(int(ys.mean() * 3 / H), 2)]
    col = ("left", "centre", "right")[min(int(xs.mean() * 3 / W), 2)]
    return "in the centre" if (row, col) == ("middle", "centre") else f"at the {row} {col}".replace(
        "middle centre", "centre")


def image_caption(scene, labels: np.ndarray) -> str:
    """``labels``: [H, W]."""
    seen = seen_objects(scene, labels[None])
    bg = scene.camera["background"]
    if not seen:
        return f"{bg} with nothing in front"
    named = _salient(seen)
    parts = [f"{_name(s.obj)} {_where(labels == s.obj.id)}" for s in named]
    others = len(seen) - len(named)
    if others:
        parts.append(f"{_number(others)} other object{'s' if others > 1 else ''}")
    return f"{_join(parts)}, in front of {bg}"


def clip_labels(parts: list[tuple[Any, np.ndarray]]) -> dict[str, Any]:
    """``motion`` (videos only), ``count`` and ``n_objects`` of a clip (see the module docstring)."""
    seen = [s for scene, labels in parts for s in seen_objects(scene, labels)]
    out: dict[str, Any] = {"n_objects": len(seen), "count": count_bin(len(seen))}
    if parts[0][1].shape[0] > 1:
        total = sum((s.motion for s in seen), np.zeros(2))
        out["motion"] = dominant(total)
    return out
