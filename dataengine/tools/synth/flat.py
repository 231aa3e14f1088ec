"""The ``flat`` synth style: textured geometric shapes over a panning, smoothly coloured background.

Colours are chosen so that a classical colour-superpixel segmenter *can*
separate the objects: distinct hues at medium/high saturation with only
low-amplitude texture (about +-12 intensity), over a background of low
saturation whose texture varies on a larger scale. It is the project's first
corpus; the ``photo`` style (``photo.py``) is the realistic default.
Objects are painted back to front, so the label map is exact and disjoint.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import Moving, check_video_args, entry_exit, layout, seed_rng
from .words import colour_word

SHAPES = ("ellipse", "rectangle", "polygon")


@dataclass
class _Object(Moving):
    id: int
    shape: str
    a: float                       # half extent along the object's own u axis, px
    b: float                       # half extent along v
    poly: np.ndarray | None        # [K, 2] unit-ellipse vertices (polygon only), counter-clockwise
    radius: float                  # bounding radius, px
    rgb: np.ndarray                # base colour, float [3] in 0..255
    stripe_period: float
    stripe_angle: float
    stripe_phase: float
    noise: np.ndarray              # [16, 16] in -1..1, lives in object coordinates
    angle0: float
    spin: float                    # rad / frame
    role: str                      # stay | enter | leave
    p0: np.ndarray                 # centre at local frame 0
    vel: np.ndarray                # px / frame
    box: tuple[float, float, float, float] | None  # bounce box (stay only)

    def scale(self, t: float) -> float:
        return 1.0

    def words(self) -> tuple[str, str]:
        return colour_word(self.rgb), self.shape

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "shape": self.shape, "role": self.role,
                "rgb": [int(round(c)) for c in self.rgb], "colour": colour_word(self.rgb)}


@dataclass
class _Scene:
    width: int
    height: int
    n_frames: int
    objects: list[_Object]         # back to front
    bg_a: np.ndarray               # two low-saturation colours mixed by a large-scale field
    bg_b: np.ndarray
    bg_waves: np.ndarray           # [K, 4]: kx, ky (rad/px), phase, weight
    bg_noise: np.ndarray           # [64, 64] periodic fine texture, -1..1
    pan: np.ndarray                # px / frame
    ids: list[int] = field(default_factory=list)

    @property
    def camera(self) -> dict[str, Any]:
        return {"pan": [round(float(self.pan[0]), 4) + 0.0, round(float(self.pan[1]), 4) + 0.0], "zoom": 1.0,
                "background": "a mottled background"}

    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        return _render(self, t)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _make_object(rng: np.random.Generator, oid: int, width: int, height: int, n_frames: int,
                 rgb: np.ndarray, role: str, anchor: np.ndarray) -> _Object:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    # Area as a share of the frame: log-uniform in [1.5%, 8%] so every object is segmentable.
    area = math.exp(rng.uniform(math.log(0.015), math.log(0.08))) * width * height
    aspect = rng.uniform(0.5, 1.0)
    poly = None
    if shape == "ellipse":
        a = math.sqrt(area / (math.pi * aspect))
    elif shape == "rectangle":
        a = math.sqrt(area / (4 * aspect))
    else:
        # Vertices on an ellipse are always in convex position: a half-plane test suffices.
        k = int(rng.integers(5, 8))
        # One vertex per sector of the circle: increasing angles that never wrap past the first.
        angles = (np.arange(k) + rng.uniform(0.0, 0.8, k)) * (2 * math.pi / k)
        poly = np.stack([np.cos(angles), np.sin(angles) * aspect], axis=1)
        unit_area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], -1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], -1)))
        a = math.sqrt(area / unit_area)
    b = a * aspect
    radius = math.hypot(a, b) if shape == "rectangle" else a
    # Periodic noise at 2 px cells, +-4, plus +-8 stripes: about +-12 in total.
    noise = rng.uniform(-1, 1, (16, 16)).astype(np.float32)
    obj = _Object(
        id=oid, shape=shape, a=a, b=b, poly=poly, radius=radius, rgb=rgb,
        stripe_period=rng.uniform(5.0, 12.0), stripe_angle=rng.uniform(0, math.pi),
        stripe_phase=rng.uniform(0, 2 * math.pi), noise=noise,
        angle0=rng.uniform(0, 2 * math.pi), spin=rng.uniform(-0.04, 0.04), role=role,
        p0=np.zeros(2), vel=np.zeros(2), box=None,
    )
    speed = rng.uniform(1.5, 3.5)
    if role in ("enter", "leave"):
        obj.p0, obj.vel = entry_exit(rng, role, anchor, radius, speed, n_frames, width, height)
    else:
        ang = rng.uniform(0, 2 * math.pi)
        obj.vel = np.array([math.cos(ang), math.sin(ang)]) * rng.uniform(0.5, 2.5)
        obj.p0 = anchor
        # Centres bounce a little inside the frame: the object may be cut by a border, never lost.
        obj.box = (0.08 * width, 0.08 * height, 0.92 * width, 0.92 * height)
    return obj


def _make_scene(rng: np.random.Generator, width: int, height: int, n_frames: int, first_id: int,
                n_objects: int | None = None, avoid_bg: tuple[float, float] | None = None) -> _Scene:
    """One scene. ``avoid_bg`` = (hue, value) of a previous scene whose palette must not return."""
    n = int(n_objects) if n_objects is not None else int(rng.integers(6, 13))
    if n < 0:
        raise ValueError("n_objects must be >= 0")
    if avoid_bg is None:
        bg_hue, bg_val = rng.uniform(0, 1), rng.uniform(0.4, 0.7)
    else:
        # A different palette after a cut: opposite-ish hue and the other brightness band.
        bg_hue = avoid_bg[0] + rng.uniform(0.35, 0.65)
        bg_val = rng.uniform(0.3, 0.45) if avoid_bg[1] > 0.52 else rng.uniform(0.6, 0.75)
    bg_a = _hsv(bg_hue, rng.uniform(0.08, 0.22), bg_val)
    bg_b = _hsv(bg_hue + rng.uniform(-0.08, 0.08), rng.uniform(0.08, 0.22), bg_val + rng.uniform(0.1, 0.2))
    waves = []
    for _ in range(4):
        ang, period = rng.uniform(0, 2 * math.pi), rng.uniform(60.0, 180.0)
        waves.append([math.cos(ang) * 2 * math.pi / period, math.sin(ang) * 2 * math.pi / period,
                      rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.0)])
    bg_noise = rng.uniform(-1, 1, (64, 64)).astype(np.float32)
    # Box-blur the fine noise (periodic) so it reads as grain, not salt and pepper.
    bg_noise = sum(np.roll(np.roll(bg_noise, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 3.0
    pan_ang = rng.uniform(0, 2 * math.pi)
    pan = np.array([math.cos(pan_ang), math.sin(pan_ang)]) * rng.uniform(1.0, 3.0)

    # Evenly spaced hues (jittered) with alternating brightness: neighbours in hue differ in value too.
    hue0 = rng.uniform(0, 1)
    hues = [(hue0 + i / max(n, 1) + rng.uniform(-0.015, 0.015)) % 1.0 for i in range(n)]
    colours = [_hsv(h, rng.uniform(0.65, 0.95), rng.uniform(0.8, 0.95) if i % 2 == 0 else rng.uniform(0.55, 0.7))
               for i, h in enumerate(hues)]
    order = rng.permutation(n)
    n_move = 1 + n // 8 if n_frames >= 4 and n >= 3 else 0
    roles = ["enter"] * n_move + ["leave"] * n_move + ["stay"] * (n - 2 * n_move)
    anchors = layout(rng, n, width, height)
    objects = [_make_object(rng, first_id + i, width, height, n_frames, colours[order[i]], roles[i], anchors[i])
               for i in range(n)]
    z = rng.permutation(n)            # painter's order, independent of id and role
    return _Scene(width=width, height=height, n_frames=n_frames, objects=[objects[i] for i in z],
                  bg_a=bg_a, bg_b=bg_b, bg_waves=np.array(waves, dtype=np.float64), bg_noise=bg_noise,
                  pan=pan, ids=[o.id for o in objects])


# -------------------------------------------------------------- rendering
def _render(scene: _Scene, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` (local to the scene) -> (rgb uint8 [H,W,3], labels int32 [H,W])."""
    W, H = scene.width, scene.height
    ox, oy = scene.pan * t
    xs = np.arange(W, dtype=np.float64) + ox
    ys = np.arange(H, dtype=np.float64) + oy
    # Plane waves are separable: sin(ax + by + p) = sin(ax)cos(by + p) + cos(ax)sin(by + p),
    # so each wave costs two outer products instead of a full-frame sin.
    f = np.zeros((H, W), dtype=np.float32)
    for kx, ky, ph, w in scene.bg_waves:
        sx, cx_ = np.sin(xs * kx).astype(np.float32), np.cos(xs * kx).astype(np.float32)
        cy_, sy = (w * np.cos(ys * ky + ph)).astype(np.float32), (w * np.sin(ys * ky + ph)).astype(np.float32)
        f += np.outer(cy_, sx)
        f += np.outer(sy, cx_)
    # Squash into blotches of the two background colours rather than a smooth gradient.
    mix = 0.5 + 0.5 * np.tanh(f * np.float32(2.4 / scene.bg_waves[:, 3].sum()))
    rgb = scene.bg_a[None, None, :] + (scene.bg_b - scene.bg_a)[None, None, :] * mix[..., None]
    nz = scene.bg_noise[np.floor(ys).astype(np.int64) % 64][:, np.floor(xs).astype(np.int64) % 64]
    rgb += 5.0 * nz[..., None]
    labels = np.zeros((H, W), dtype=np.int32)
    for obj in scene.objects:
        cx, cy, ang = obj.pose(t)
        r = obj.radius + 1
        x0, x1 = max(int(math.floor(cx - r)), 0), min(int(math.ceil(cx + r)) + 1, W)
        y0, y1 = max(int(math.floor(cy - r)), 0), min(int(math.ceil(cy + r)) + 1, H)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
        dy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
        c, s = math.cos(ang), math.sin(ang)
        u, v = dx * c + dy * s, -dx * s + dy * c
        if obj.shape == "ellipse":
            mask = (u / obj.a) ** 2 + (v / obj.b) ** 2 <= 1.0
        elif obj.shape == "rectangle":
            mask = (np.abs(u) <= obj.a) & (np.abs(v) <= obj.b)
        else:
            pts = obj.poly * obj.a
            mask = np.ones(u.shape, dtype=bool)
            for (px, py), (qx, qy) in zip(pts, np.roll(pts, -1, axis=0)):
                mask &= (qx - px) * (v - py) - (qy - py) * (u - px) >= 0
        if not mask.any():
            continue
        sa, ca = math.sin(obj.stripe_angle), math.cos(obj.stripe_angle)
        tex = 8.0 * np.sin((u * ca + v * sa) * (2 * math.pi / obj.stripe_period) + obj.stripe_phase)
        tex += 4.0 * obj.noise[np.floor(v / 2).astype(np.int64) % 16, np.floor(u / 2).astype(np.int64) % 16]
        patch = rgb[y0:y1, x0:x1]
        patch[mask] = obj.rgb[None, :] + tex[mask][:, None].astype(np.float32)
        labels[y0:y1, x0:x1][mask] = obj.id
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), labels


def video_scenes(seed: int, n_frames: int, width: int, height: int, scene_cut_at: int | None,
                 n_objects: int | None, photos_split: str = "all") -> list[tuple[int, _Scene]]:
    """[(first frame, scene)]: one scene, or two when there is a hard cut."""
    check_video_args(n_frames, scene_cut_at)
    rng = seed_rng("video", seed)
    length = scene_cut_at if scene_cut_at is not None else n_frames
    first = _make_scene(rng, width, height, length, 1, n_objects)
    scenes = [(0, first)]
    if scene_cut_at is not None:
        bg_hsv = colorsys.rgb_to_hsv(*(first.bg_a / 255.0))
        next_id = max(first.ids, default=0) + 1      # ids are never reused after a cut
        scenes.append((scene_cut_at, _make_scene(rng, width, height, n_frames - scene_cut_at, next_id,
                                                 n_objects, avoid_bg=(bg_hsv[0], bg_hsv[2]))))
    return scenes


def image_scene(seed: int, width: int, height: int, n_objects: int | None = None, photos_split: str = "all") -> _Scene:
    """A still scene (``photos_split`` is accepted for a common signature; the flat style uses none)."""
    return _make_scene(seed_rng("image", seed), width, height, 1, 1, n_objects)

