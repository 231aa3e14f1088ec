"""The ``photo`` synth style: pieces of real photographs moving over a photograph, filmed by a moving camera.

A scene is a large photograph seen through a camera that pans and zooms, with
objects in front of it. Each object is a crop of another photograph of the
pool (``photos.py``), colour-graded and cut into an irregular shape (random
smooth blobs, non-convex polygons, ellipses, rounded boxes, a horse
silhouette). Objects move, spin, grow or shrink, enter and leave the frame and
pass in front of each other; the whole frame then gets the camera's exposure,
vignetting, motion blur along each object's screen motion (and the pan's) and
sensor noise, before H.264 / JPEG at web quality (corpus.py).

Ground truth is exact by construction: an object's label is where its own
(sharp, anti-aliased) alpha is at least one half at the frame's time, painted
back to front, so labels are disjoint and cover what a careful annotator would
outline; blur and compression only change the pixels, as in real footage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from . import photos
from .common import Moving, check_video_args, entry_exit, layout, seed_rng
from .words import colour_word

CANVAS = 160                     # side of an object's canonical texture/mask, px
SHAPES = ("blob", "polygon", "ellipse", "rounded box", "horse")
_SHAPE_WEIGHTS = (0.45, 0.2, 0.12, 0.13, 0.1)


@dataclass
class PhotoObject(Moving):
    id: int
    shape: str
    role: str                      # stay | enter | leave
    photo: str                     # source photo name
    noun: str                      # what the texture shows ("cat fur")
    colour: str                    # colour word of its mean pixel
    rgba: np.ndarray               # [CANVAS, CANVAS, 4] float32, colour premultiplied by alpha
    centre: float                  # canvas centre, px
    radius: float                  # canvas px from the centre to the farthest mask pixel
    size0: float                   # screen px per canvas px at frame 0
    log_rate: float                # d log(scale) / frame: own growth plus the camera's zoom
    angle0: float
    spin: float                    # rad / frame
    p0: np.ndarray
    vel: np.ndarray
    box: tuple[float, float, float, float] | None

    def scale(self, t: float) -> float:
        """Screen size relative to frame 0."""
        return math.exp(self.log_rate * t)

    def words(self) -> tuple[str, str]:
        return self.colour, f"{self.noun} {self.shape}"

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "shape": self.shape, "role": self.role, "photo": self.photo,
                "texture": self.noun, "colour": self.colour}


def colour_word_rgb(rgba: np.ndarray) -> tuple[np.ndarray, str]:
    a = rgba[..., 3]
    inside = a > 0.5
    mean = (rgba[..., :3][inside] / a[inside][:, None]).mean(axis=0) if inside.any() else np.zeros(3)
    return mean, colour_word(mean)


@dataclass
class PhotoScene:
    width: int
    height: int
    n_frames: int
    objects: list[PhotoObject]     # back to front
    photo: str                     # background photo name
    bg: np.ndarray                 # graded background photo, float32 [h, w, 3]
    c0: np.ndarray                 # view centre in photo px at frame 0
    cv: np.ndarray                 # view centre velocity, photo px / frame
    z0: float                      # screen px per photo px at frame 0
    zoom_rate: float               # d log(z) / frame
    shutter: float                 # share of a frame interval the shutter is open (motion blur)
    gain: float
    bias: float
    gamma: float
    vignette: float
    noise: float                   # sensor noise sigma, intensity levels
    noise_seed: int
    ids: list[int] = field(default_factory=list)

    @property
    def camera(self) -> dict[str, Any]:
        pan = self.cv * self.z0
        return {"pan": [round(float(pan[0]), 4) + 0.0, round(float(pan[1]), 4) + 0.0],
                "zoom": round(math.exp(self.zoom_rate * max(self.n_frames - 1, 0)), 4),
                "background": photos.by_name(self.photo).scene, "photo": self.photo}

    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        return _render(self, t)


# ------------------------------------------------------------------ shapes
def _shape_mask(rng: np.random.Generator, shape: str) -> np.ndarray:
    """Float alpha [CANVAS, CANVAS] in 0..1: the shape drawn at 4x and area-averaged (anti-aliased)."""
    ss = 4
    big = np.zeros((CANVAS * ss, CANVAS * ss), dtype=np.uint8)
    c, r = CANVAS * ss / 2, CANVAS * ss * 0.46
    aspect = rng.uniform(0.55, 1.0)
    if shape in ("blob", "polygon"):
        if shape == "blob":
            th = np.linspace(0, 2 * math.pi, 180, endpoint=False)
            rad = np.ones_like(th)
            for k in range(2, 7):
                rad += rng.uniform(0, 0.32) / k ** 0.8 * np.cos(k * th + rng.uniform(0, 2 * math.pi))
        else:
            k = int(rng.integers(5, 10))
            th = np.sort((np.arange(k) + rng.uniform(0, 0.9, k)) * (2 * math.pi / k))
            rad = rng.uniform(0.45, 1.0, k)
        rad = rad / rad.max()
        pts = np.stack([c + r * rad * np.cos(th), c + r * aspect * rad * np.sin(th)], axis=1)
        cv2.fillPoly(big, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    elif shape == "ellipse":
        cv2.ellipse(big, (int(c), int(c)), (int(r), int(r * aspect)), 0, 0, 360, 1, -1)
    elif shape == "rounded box":
        hw, hh = r * 0.92, r * 0.92 * aspect
        rr = int(min(hw, hh) * rng.uniform(0.1, 0.45))
        x0, y0, x1, y1 = int(c - hw), int(c - hh), int(c + hw), int(c + hh)
        cv2.rectangle(big, (x0 + rr, y0), (x1 - rr, y1), 1, -1)
        cv2.rectangle(big, (x0, y0 + rr), (x1, y1 - rr), 1, -1)
        for cx, cy in ((x0 + rr, y0 + rr), (x1 - rr, y0 + rr), (x0 + rr, y1 - rr), (x1 - rr, y1 - rr)):
            cv2.circle(big, (cx, cy), rr, 1, -1)
    else:   # horse
        horse = photos.horse_mask().astype(np.uint8)
        if rng.uniform() < 0.5:
            horse = horse[:, ::-1]
        side = 2 * r
        f = side / max(horse.shape)
        h, w = max(1, int(horse.shape[0] * f)), max(1, int(horse.shape[1] * f))
        small = cv2.resize(horse, (w, h), interpolation=cv2.INTER_NEAREST)
        y0, x0 = int(c - h / 2), int(c - w / 2)
        big[y0:y0 + h, x0:x0 + w] = small
    return cv2.resize(big.astype(np.float32), (CANVAS, CANVAS), interpolation=cv2.INTER_AREA)


def _grade(rng: np.random.Generator, rgb: np.ndarray, grey: bool, tint_p: float, sat_max: float) -> np.ndarray:
    """Photographic variation of a crop: tint grey photos, vary saturation, contrast and brightness."""
    rgb = rgb.astype(np.float32)
    if grey and rng.uniform() < tint_p:
        hue = rng.uniform(0, 1)
        tint = np.array(cv2.cvtColor(np.uint8([[[hue * 180, rng.uniform(0.25, sat_max) * 255, 255]]]),
                                     cv2.COLOR_HSV2RGB)[0, 0], dtype=np.float32) / 255.0
        rgb = rgb * tint / tint.max() * rng.uniform(1.0, 1.25)
    lum = rgb.mean(axis=2, keepdims=True)
    rgb = lum + (rgb - lum) * rng.uniform(0.7, 1.35)          # saturation
    mean = float(lum.mean())
    rgb = mean + (rgb - mean) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)   # contrast, brightness
    return np.clip(rgb, 0, 255)


def _make_object(rng: np.random.Generator, oid: int, pool: tuple[photos.Photo, ...], avoid: str,
                 width: int, height: int, n_frames: int, role: str, anchor: np.ndarray,
                 zoom_rate: float, prevailing: float) -> PhotoObject:
    shape = SHAPES[int(rng.choice(len(SHAPES), p=_SHAPE_WEIGHTS))]
    alpha = _shape_mask(rng, shape)
    inside = alpha >= 0.5
    choices = [p for p in pool if p.name != avoid] or list(pool)
    src = choices[int(rng.integers(len(choices)))]
    img = photos.load(src.name)
    ph, pw = img.shape[:2]
    # A few tries for a crop with some texture: a crop of plain sky or black space is not an object.
    for _ in range(6):
        side = int(rng.uniform(0.18, 0.6) * min(ph, pw))
        y, x = int(rng.integers(0, ph - side + 1)), int(rng.integers(0, pw - side + 1))
        crop = cv2.resize(img[y:y + side, x:x + side], (CANVAS, CANVAS), interpolation=cv2.INTER_AREA)
        if crop[inside].std() > 18:
            break
    tex = _grade(rng, crop, photos.is_grey(src.name), 0.6, 0.7)
    rgba = np.concatenate([tex * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
    yy, xx = np.nonzero(alpha > 0)
    radius = float(np.hypot(xx + 0.5 - CANVAS / 2, yy + 0.5 - CANVAS / 2).max())
    # Area share of the frame at frame 0: log-uniform in [1.2%, 9%].
    area = math.exp(rng.uniform(math.log(0.012), math.log(0.09))) * width * height
    size0 = math.sqrt(area / max(float(inside.sum()), 1.0))
    last = max(n_frames - 1, 1)
    growth = math.log(rng.uniform(0.6, 1.7)) / last if rng.uniform() < 0.5 else 0.0
    log_rate = growth + zoom_rate
    obj = PhotoObject(id=oid, shape=shape, role=role, photo=src.name, noun=src.texture, colour="",
                      rgba=rgba, centre=CANVAS / 2, radius=radius, size0=size0, log_rate=log_rate,
                      angle0=rng.uniform(-0.6, 0.6) if shape == "horse" else rng.uniform(0, 2 * math.pi),
                      spin=rng.uniform(-0.03, 0.03), p0=np.zeros(2), vel=np.zeros(2), box=None)
    obj.colour = colour_word_rgb(rgba)[1]
    if role in ("enter", "leave"):
        screen_radius = radius * size0 * max(1.0, math.exp(log_rate * last))
        obj.p0, obj.vel = entry_exit(rng, role, anchor, screen_radius, rng.uniform(1.0, 3.0), n_frames,
                                     width, height)
    else:
        # Most objects share the scene's prevailing direction (traffic, a crowd, wind), some wander.
        ang = prevailing + rng.normal(0, 0.45) if rng.uniform() < 0.7 else rng.uniform(0, 2 * math.pi)
        obj.vel = np.array([math.cos(ang), math.sin(ang)]) * rng.uniform(0.4, 2.5)
        obj.p0 = anchor
        obj.box = (0.05 * width, 0.05 * height, 0.95 * width, 0.95 * height)
    return obj


def _camera(rng: np.random.Generator, img_shape: tuple[int, ...], width: int, height: int,
            n_frames: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(view centre at frame 0, its velocity in photo px, zoom at frame 0, zoom log-rate): a view that
    stays inside the photo for the whole scene."""
    ph, pw = img_shape[:2]
    last = max(n_frames - 1, 1)
    zoom_total = math.exp(rng.choice([-1, 1]) * rng.uniform(0.12, 0.4)) if rng.uniform() < 0.55 else 1.0
    rate = math.log(zoom_total) / last if n_frames > 1 else 0.0
    z_fit = 1.06 * max(width / pw, height / ph)          # smallest zoom that fills the frame
    z_min = z_fit * rng.uniform(1.0, 1.8)
    z0 = z_min / min(1.0, zoom_total)                    # the widest view of the scene is z_min
    zl = z0 * math.exp(rate * last)
    speed = rng.uniform(0.5, 3.0) if rng.uniform() < 0.85 and n_frames > 1 else 0.0
    ang = rng.uniform(0, 2 * math.pi)
    v = np.array([math.cos(ang), math.sin(ang)]) * speed / z0
    for _ in range(30):
        lo, hi = [], []
        for ax, size, dim in ((0, width, pw), (1, height, ph)):
            h0, hl = size / 2 / z0, size / 2 / zl
            lo.append(max(h0, hl - v[ax] * last))
            hi.append(min(dim - h0, dim - hl - v[ax] * last))
        if all(a <= b for a, b in zip(lo, hi)):
            c0 = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])])
            return c0, v, z0, rate
        v = v * 0.8                                       # too fast for this photo: slow the pan
    return np.array([pw / 2, ph / 2]), np.zeros(2), z0, rate


def _make_scene(rng: np.random.Generator, pool: tuple[photos.Photo, ...], width: int, height: int,
                n_frames: int, first_id: int, n_objects: int | None, avoid: str = "") -> PhotoScene:
    n = int(n_objects) if n_objects is not None else int(rng.integers(3, 13))
    if n < 0:
        raise ValueError("n_objects must be >= 0")
    choices = [p for p in pool if p.name != avoid] or list(pool)
    bg_photo = choices[int(rng.integers(len(choices)))]
    img = photos.load(bg_photo.name)
    bg = _grade(rng, img, photos.is_grey(bg_photo.name), 0.5, 0.4).astype(np.float32)
    c0, cv_, z0, zoom_rate = _camera(rng, img.shape, width, height, n_frames)
    prevailing = rng.uniform(0, 2 * math.pi)
    n_move = 1 + n // 6 if n_frames >= 4 and n >= 3 else 0
    roles = ["enter"] * n_move + ["leave"] * n_move + ["stay"] * (n - 2 * n_move)
    anchors = layout(rng, n, width, height)
    objects = [_make_object(rng, first_id + i, pool, bg_photo.name, width, height, n_frames, roles[i],
                            anchors[i], zoom_rate, prevailing) for i in range(n)]
    z = rng.permutation(n)
    return PhotoScene(
        width=width, height=height, n_frames=n_frames, objects=[objects[i] for i in z], photo=bg_photo.name,
        bg=bg, c0=c0, cv=cv_, z0=z0, zoom_rate=zoom_rate,
        shutter=rng.uniform(0.3, 1.0) if n_frames > 1 else 0.0,
        gain=rng.uniform(0.85, 1.15), bias=rng.uniform(-12, 12), gamma=rng.uniform(0.8, 1.25),
        vignette=rng.uniform(0, 0.35) if rng.uniform() < 0.5 else 0.0, noise=rng.uniform(0.5, 3.0),
        noise_seed=int(rng.integers(2**31)), ids=[o.id for o in objects])


# --------------------------------------------------------------- rendering
def _blur_kernel(v: np.ndarray, shutter: float) -> np.ndarray | None:
    """Normalised line kernel of the motion during the open shutter; None when under 1.5 px.

    Points evenly spaced along the segment, each shared among its four nearest taps (bilinear): the kernel's
    centre of mass is its centre, where ``filter2D`` anchors it, and its length is the motion's. (A line drawn
    by ``cv2.line`` on so small a kernel has whole-pixel runs: blurred objects sat up to 0.7 px off their sharp
    ground truth, and blurs came out ~1.4 px longer than set.)"""
    length = float(np.hypot(*v)) * shutter
    if length < 1.5:
        return None
    k = (int(math.ceil(length)) | 1) + 2                # odd, and a tap to spare at each end: every point's
    c = (k - 1) / 2                                      # four taps lie inside (points span c +- length / 2)
    half = v / np.hypot(*v) * length / 2
    s = np.linspace(-1.0, 1.0, 257)[:, None]
    pts = c + s * half[None, :]                          # (x, y) along the segment, symmetric about the centre
    base = np.floor(pts).astype(int)
    frac = pts - base
    ker = np.zeros((k, k), dtype=np.float64)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
        np.add.at(ker, (base[:, 1] + dy, base[:, 0] + dx), w)
    return (ker / ker.sum()).astype(np.float32)


def _render(scene: PhotoScene, t: float) -> tuple[np.ndarray, np.ndarray]:
    W, H = scene.width, scene.height
    z = scene.z0 * math.exp(scene.zoom_rate * t)
    c = scene.c0 + scene.cv * t
    m = np.array([[z, 0, W / 2 - z * c[0]], [0, z, H / 2 - z * c[1]]], dtype=np.float64)
    rgb = cv2.warpAffine(scene.bg, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    ker = _blur_kernel(-scene.cv * z, scene.shutter)
    if ker is not None:
        rgb = cv2.filter2D(rgb, -1, ker, borderType=cv2.BORDER_REFLECT_101)
    labels = np.zeros((H, W), dtype=np.int32)
    for obj in scene.objects:
        cx, cy, ang = obj.pose(t)
        s = obj.size0 * obj.scale(t)
        x1, y1, _ = obj.pose(t + 0.5)
        x0_, y0_, _ = obj.pose(t - 0.5)
        okr = _blur_kernel(np.array([x1 - x0_, y1 - y0_]), scene.shutter)
        pad = (okr.shape[0] if okr is not None else 0) + 2
        r = obj.radius * s + pad
        bx0, bx1 = max(int(math.floor(cx - r)), 0), min(int(math.ceil(cx + r)) + 1, W)
        by0, by1 = max(int(math.floor(cy - r)), 0), min(int(math.ceil(cy + r)) + 1, H)
        if bx0 >= bx1 or by0 >= by1:
            continue
        ca, sa = math.cos(ang) * s, math.sin(ang) * s
        # canvas -> box: rotate and scale about the canvas centre, then move to the pose.
        m = np.array([[ca, -sa, cx - bx0 - ca * obj.centre + sa * obj.centre],
                      [sa, ca, cy - by0 - sa * obj.centre - ca * obj.centre]], dtype=np.float64)
        layer = cv2.warpAffine(obj.rgba, m, (bx1 - bx0, by1 - by0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        mask = layer[..., 3] >= 0.5
        if okr is not None:
            layer = cv2.filter2D(layer, -1, okr, borderType=cv2.BORDER_CONSTANT)
        a = np.clip(layer[..., 3:4], 0.0, 1.0)
        patch = rgb[by0:by1, bx0:bx1]
        patch *= 1.0 - a
        patch += layer[..., :3]
        labels[by0:by1, bx0:bx1][mask] = obj.id
    # The camera: exposure and tone curve, vignetting, sensor noise.
    out = np.clip(rgb * scene.gain + scene.bias, 0, 255) / 255.0
    out = 255.0 * out ** scene.gamma
    if scene.vignette > 0:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
        out *= (1.0 - scene.vignette * r2 / 2)[..., None]
    noise = seed_rng("noise", scene.noise_seed, int(round(t * 1000))).normal(0, scene.noise, out.shape)
    out = out + noise.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), labels


# ------------------------------------------------------------------ scenes
def video_scenes(seed: int, n_frames: int, width: int, height: int, scene_cut_at: int | None,
                 n_objects: int | None, photos_split: str = "all") -> list[tuple[int, PhotoScene]]:
    """[(first frame, scene)]: one scene, or two when there is a hard cut (a new photo, new objects)."""
    check_video_args(n_frames, scene_cut_at)
    pool = photos.pool(photos_split)
    rng = seed_rng("photo-video", seed)
    length = scene_cut_at if scene_cut_at is not None else n_frames
    first = _make_scene(rng, pool, width, height, length, 1, n_objects)
    scenes = [(0, first)]
    if scene_cut_at is not None:
        next_id = max(first.ids, default=0) + 1
        scenes.append((scene_cut_at, _make_scene(rng, pool, width, height, n_frames - scene_cut_at, next_id,
                                                 n_objects, avoid=first.photo)))
    return scenes


def image_scene(seed: int, width: int, height: int, n_objects: int | None = None,
                photos_split: str = "all") -> PhotoScene:
    return _make_scene(seed_rng("photo-image", seed), photos.pool(photos_split), width, height, 1, 1, n_objects)
