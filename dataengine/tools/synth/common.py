"""Geometry and seeding shared by both synth styles.

Both styles build scenes with the same interface, which the corpus writer and
the captioner rely on: ``scene.render(t) -> (rgb uint8 [H, W, 3], labels int32
[H, W])`` for a frame ``t`` local to the scene, ``scene.objects`` back to front,
``scene.ids``, ``scene.camera`` (``pan``: screen px/frame the view moves by,
``zoom``: total scale factor over the scene) and, per object, ``id``, ``role``
(stay | enter | leave), ``pose(t) -> (x, y, angle)``, ``scale(t)`` (1.0 for
rigid objects), ``words()`` (adjective and noun for captions, e.g. ``("red",
"ellipse")``) and ``describe()`` (the JSON record kept in the ground truth).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np


def seed_rng(*parts: int | str) -> np.random.Generator:
    words = [int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:4], "little") if isinstance(p, str) else int(p)
             for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


def check_video_args(n_frames: int, scene_cut_at: int | None) -> None:
    """The argument checks both styles' ``video_scenes`` share."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    if scene_cut_at is not None and not 0 < scene_cut_at < n_frames:
        raise ValueError(f"scene_cut_at must be in 1..{n_frames - 1}, got {scene_cut_at}")


class Moving:
    """Pose of a synth object at frame ``t``: straight motion, bouncing inside ``box`` when it stays.
    Both styles' objects carry ``p0``, ``vel``, ``box``, ``angle0`` and ``spin``."""

    def pose(self, t: float) -> tuple[float, float, float]:
        p = self.p0 + self.vel * t
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            p = np.array([reflect(p[0], x0, x1), reflect(p[1], y0, y1)])
        return float(p[0]), float(p[1]), self.angle0 + self.spin * t


def reflect(x: float, lo: float, hi: float) -> float:
    """Triangle wave: a point bouncing between lo and hi, so 'stay' objects never drift away."""
    span = hi - lo
    if span <= 0:
        return lo
    r = (x - lo) % (2 * span)
    return lo + (r if r <= span else 2 * span - r)


def exit_distance(q: np.ndarray, u: np.ndarray, width: int, height: int) -> float:
    """Distance from ``q`` along unit ``u`` to the frame border."""
    ts = []
    for qi, ui, size in ((q[0], u[0], width), (q[1], u[1], height)):
        if ui > 1e-9:
            ts.append((size - qi) / ui)
        elif ui < -1e-9:
            ts.append(-qi / ui)
    return min(ts) if ts else 0.0


def inward_direction(rng: np.random.Generator, q: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit vector pointing away from the border nearest ``q`` (jittered), so entries and exits are short."""
    dists = {(1.0, 0.0): q[0], (-1.0, 0.0): width - q[0], (0.0, 1.0): q[1], (0.0, -1.0): height - q[1]}
    base = min(dists, key=dists.get)
    ang = math.atan2(base[1], base[0]) + rng.uniform(-0.6, 0.6)
    return np.array([math.cos(ang), math.sin(ang)])


def layout(rng: np.random.Generator, n: int, width: int, height: int) -> list[np.ndarray]:
    """Jittered-grid anchor points, one cell per object: spread out, so few objects start fully hidden."""
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = max(1, math.ceil(n / cols))
    cells = rng.permutation(rows * cols)[:n]
    out = []
    for c in cells:
        fx = (c % cols + 0.5 + rng.uniform(-0.3, 0.3)) / cols
        fy = (c // cols + 0.5 + rng.uniform(-0.3, 0.3)) / rows
        out.append(np.array([(0.12 + 0.76 * fx) * width, (0.12 + 0.76 * fy) * height]))
    return out


def entry_exit(rng: np.random.Generator, role: str, anchor: np.ndarray, radius: float, speed: float,
               n_frames: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre at frame 0, velocity) of an object that enters (fully outside at frame 0, at ``anchor``
    by the last frame) or leaves (at ``anchor`` at frame 0, fully gone by 75% of the clip)."""
    last = max(n_frames - 1, 1)
    u = inward_direction(rng, anchor, width, height)
    if role == "enter":
        need = exit_distance(anchor, -u, width, height) + radius + 1.0
        vel = u * max(speed, need / (0.75 * last))
        return anchor - vel * last, vel
    u = -u
    need = exit_distance(anchor, u, width, height) + radius + 1.0
    return anchor.copy(), u * max(speed, need / (0.75 * last))
