"""The project's own sample corpus, with exact ground truth.

Scenes are textured shapes (ellipses, rectangles, convex polygons) moving over
a panning textured background. Because we draw every pixel ourselves, the
label map of each frame is exact: objects are painted back to front, so a
pixel belongs to the front-most object covering it and masks are disjoint by
construction. Demos, tests, benchmarks and ``trajdata eval`` all use it.

Colours are chosen so that a classical colour-superpixel segmenter *can*
separate the objects: distinct hues at medium/high saturation with only
low-amplitude texture (about +-12 intensity), over a background of low
saturation whose texture varies on a larger scale. That keeps the corpus a
fair test of the engine rather than of the segmenter's luck.

``make_corpus`` writes three views of the same media:
``media/`` (a plain folder, as ``--source local`` reads it), ``wds/``
(video2dataset / img2dataset-style shards, see FORMATS.md) and ``gt/``
(ground truth as trajectory shards v1 plus a manifest). A wds sample maps to
its ground truth through its url (``synth://video_000.mp4`` -> key
``video_000``). Everything is a pure function of the arguments: x264 runs
single-threaded and every timestamp is fixed, so equal arguments give
byte-identical files (with the same library versions).
"""
from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from . import ENGINE_VERSION, manifest, shards, trajformat

SHAPES = ("ellipse", "rectangle", "polygon")
IMAGE_SIZES = ((320, 240), (256, 256), (240, 320), (384, 288))
JPEG_QUALITY = 95
# Fixed "download" times for the wds stats files: real clocks would break byte identity.
_FIXED_START = 1_700_000_000.0
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen")


# ----------------------------------------------------------------- scenes
@dataclass
class _Object:
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

    def pose(self, t: float) -> tuple[float, float, float]:
        p = self.p0 + self.vel * t
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            p = np.array([_reflect(p[0], x0, x1), _reflect(p[1], y0, y1)])
        return float(p[0]), float(p[1]), self.angle0 + self.spin * t

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "shape": self.shape, "role": self.role,
                "rgb": [int(round(c)) for c in self.rgb]}


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


def _reflect(x: float, lo: float, hi: float) -> float:
    """Triangle wave: a point bouncing between lo and hi, so 'stay' objects never drift away."""
    span = hi - lo
    if span <= 0:
        return lo
    r = (x - lo) % (2 * span)
    return lo + (r if r <= span else 2 * span - r)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _exit_distance(q: np.ndarray, u: np.ndarray, width: int, height: int) -> float:
    """Distance from ``q`` along unit ``u`` to the frame border."""
    ts = []
    for qi, ui, size in ((q[0], u[0], width), (q[1], u[1], height)):
        if ui > 1e-9:
            ts.append((size - qi) / ui)
        elif ui < -1e-9:
            ts.append(-qi / ui)
    return min(ts) if ts else 0.0


def _inward_direction(rng: np.random.Generator, q: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit vector pointing away from the border nearest ``q`` (jittered), so entries and exits are short."""
    dists = {(1.0, 0.0): q[0], (-1.0, 0.0): width - q[0], (0.0, 1.0): q[1], (0.0, -1.0): height - q[1]}
    base = min(dists, key=dists.get)
    ang = math.atan2(base[1], base[0]) + rng.uniform(-0.6, 0.6)
    return np.array([math.cos(ang), math.sin(ang)])


def _layout(rng: np.random.Generator, n: int, width: int, height: int) -> list[np.ndarray]:
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
    last = max(n_frames - 1, 1)
    q = anchor
    if role == "enter":
        # Inside at the last frame, entering from the nearest border; fully outside at frame 0.
        u = _inward_direction(rng, q, width, height)
        need = _exit_distance(q, -u, width, height) + radius + 1.0
        speed = max(speed, need / (0.75 * last))
        obj.vel = u * speed
        obj.p0 = q - obj.vel * last
    elif role == "leave":
        # Inside at frame 0, fully gone by 75% of the clip.
        u = -_inward_direction(rng, q, width, height)
        need = _exit_distance(q, u, width, height) + radius + 1.0
        speed = max(speed, need / (0.75 * last))
        obj.vel = u * speed
        obj.p0 = q
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
    anchors = _layout(rng, n, width, height)
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


def _seed_rng(*parts: int | str) -> np.random.Generator:
    words = [int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:4], "little") if isinstance(p, str) else int(p)
             for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


def _video_scenes(seed: int, n_frames: int, width: int, height: int, scene_cut_at: int | None,
                  n_objects: int | None) -> list[tuple[int, _Scene]]:
    """[(first frame, scene)]: one scene, or two when there is a hard cut."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    if scene_cut_at is not None and not 0 < scene_cut_at < n_frames:
        raise ValueError(f"scene_cut_at must be in 1..{n_frames - 1}, got {scene_cut_at}")
    rng = _seed_rng("video", seed)
    length = scene_cut_at if scene_cut_at is not None else n_frames
    first = _make_scene(rng, width, height, length, 1, n_objects)
    scenes = [(0, first)]
    if scene_cut_at is not None:
        bg_hsv = colorsys.rgb_to_hsv(*(first.bg_a / 255.0))
        next_id = max(first.ids, default=0) + 1      # ids are never reused after a cut
        scenes.append((scene_cut_at, _make_scene(rng, width, height, n_frames - scene_cut_at, next_id,
                                                 n_objects, avoid_bg=(bg_hsv[0], bg_hsv[2]))))
    return scenes


def _encode_video(path: Path, scenes: list[tuple[int, _Scene]], n_frames: int, width: int, height: int,
                  fps: int) -> np.ndarray:
    labels = np.zeros((n_frames, height, width), dtype=np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bitexact drops the muxer's version tag; one x264 thread makes the bitstream reproducible.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = 2 * fps
        stream.options = {"crf": "16", "preset": "veryfast", "threads": "1"}
        for t in range(n_frames):
            start, scene = max((s for s in scenes if s[0] <= t), key=lambda s: s[0])
            rgb, labels[t] = _render(scene, t - start)    # one frame at a time: memory is O(frame)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return labels


def write_video(path: str | Path, seed: int, n_frames: int, width: int = 256, height: int = 192,
                fps: int = 16, scene_cut_at: int | None = None, n_objects: int | None = None) -> np.ndarray:
    """Write one H.264 mp4 and return its ground truth ``[T, H, W]`` int32 (0 = background).

    ``scene_cut_at`` is the first frame after a hard cut: a new background palette
    and new objects with new ids. Frames are rendered and encoded one at a time.
    """
    if width % 2 or height % 2:
        raise ValueError("yuv420p needs even width and height")
    scenes = _video_scenes(seed, n_frames, width, height, scene_cut_at, n_objects)
    return _encode_video(Path(path), scenes, n_frames, width, height, fps)


def _image_scene(seed: int, width: int, height: int, n_objects: int | None = None) -> _Scene:
    return _make_scene(_seed_rng("image", seed), width, height, 1, 1, n_objects)


def render_image(seed: int, width: int = 320, height: int = 240,
                 n_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A still scene: (rgb uint8 ``[H, W, 3]``, labels int32 ``[H, W]``)."""
    return _render(_image_scene(seed, width, height, n_objects), 0.0)


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------- captions
def _count(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def _visible(scene: _Scene, labels: np.ndarray) -> list[_Object]:
    """Objects of ``scene`` seen in at least one pixel of ``labels``: captions and metadata
    describe what is on screen, not what was hidden behind other objects all along."""
    ids = set(np.unique(labels).tolist())
    return [o for o in sorted(scene.objects, key=lambda o: o.id) if o.id in ids]


def _phrase(objects: list[_Object], noun: str, adjective: str = "") -> str:
    plural = {"ellipse": "ellipses", "rectangle": "rectangles", "polygon": "polygons"}
    kinds = [plural[s] for s in SHAPES if any(o.shape == s for o in objects)]
    if not kinds:
        return f"no {adjective}{noun}"
    listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
    return f"{_count(len(objects))} {adjective}textured {noun} ({listed})"


def _video_caption(parts: list[list[_Object]]) -> str:
    """``parts``: the visible objects of each scene, in order."""
    text = f"{_phrase(parts[0], 'objects')} moving over a panning background"
    if len(parts) > 1:
        text += f", then a hard cut to {_phrase(parts[1], 'objects', 'new ')} over a differently coloured background"
    return text


def _image_caption(objects: list[_Object]) -> str:
    return f"{_phrase(objects, 'shapes')} on a textured background"


# ------------------------------------------------------------------ corpus
def _tar_writer(f, mode: int) -> wds.TarWriter:
    return wds.TarWriter(f, encoder=False, mtime=_FIXED_START, user="synth", group="synth", mode=mode)


def _stats(count: int, successes: int, failures: dict[str, int], bytes_downloaded: int | None) -> bytes:
    stats: dict[str, Any] = {"count": count, "successes": successes, "failed_to_download": sum(failures.values()),
                             "failed_to_resize": 0, "duration": 1.0}
    if bytes_downloaded is not None:
        stats["bytes_downloaded"] = bytes_downloaded
    stats.update({"start_time": _FIXED_START, "end_time": _FIXED_START + 1.0,
                  "status_dict": {"success": successes, **failures}})
    return json.dumps(stats, indent=4).encode()


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_wds_videos(d: Path, videos: list[dict[str, Any]]) -> None:
    """video2dataset webdataset output: one clip per video; the failed video stays in the tar without media."""
    d.mkdir(parents=True, exist_ok=True)
    error = "HTTP Error 404: Not Found"
    rows = []
    with open(d / "00000.tar", "wb") as f:
        tw = _tar_writer(f, 0o644)
        for i, v in enumerate(videos + [None]):
            if v is not None:
                key = f"{i:08d}_{0:05d}"
                meta = {"url": v["url"], "caption": v["caption"], "key": key, "status": "success",
                        "error_message": None, "yt_meta_dict": {},
                        "clips": [[0.0, round(v["n_frames"] / v["fps"], 6)]], "clip_subtitles": []}
                tw.write({"__key__": key, "mp4": v["bytes"], "txt": v["caption"].encode(),
                          "json": json.dumps(meta, indent=4).encode()})
            else:
                key = f"{i:08d}"   # a failed video is never clipped, so it keeps the plain key
                meta = {"url": "synth://missing_000.mp4", "caption": "a video that could not be downloaded",
                        "key": key, "status": "failed_to_download", "error_message": error, "yt_meta_dict": None}
                tw.write({"__key__": key, "txt": meta["caption"].encode(), "json": json.dumps(meta, indent=4).encode()})
            rows.append({k: meta[k] for k in ("url", "caption", "key", "status", "error_message")})
        tw.close()
    schema = pa.schema([(k, pa.string()) for k in ("url", "caption", "key", "status", "error_message")])
    _write_parquet(d / "00000.parquet", rows, schema)
    (d / "00000_stats.json").write_bytes(
        _stats(len(videos) + 1, len(videos), {error: 1}, sum(len(v["bytes"]) for v in videos)))


def _write_wds_images(d: Path, images: list[dict[str, Any]]) -> None:
    """img2dataset webdataset output: the failed download sits between successes (keys skip a number)
    and appears only in the parquet."""
    d.mkdir(parents=True, exist_ok=True)
    error = "HTTP Error 403: Forbidden"
    failed_at = min(1, len(images))
    entries: list[dict[str, Any] | None] = list(images)
    entries.insert(failed_at, None)
    rows = []
    with open(d / "00000.tar", "wb") as f:
        tw = _tar_writer(f, 0o444)     # img2dataset members are often read-only
        for i, im in enumerate(entries):
            key = f"{i:09d}"
            if im is None:
                rows.append({"caption": "an image that could not be downloaded", "url": "synth://missing_000.jpg",
                             "key": key, "status": "failed_to_download", "error_message": error, "width": None,
                             "height": None, "original_width": None, "original_height": None, "exif": None,
                             "sha256": None})
                continue
            meta = {"caption": im["caption"], "url": im["url"], "key": key, "status": "success", "error_message": None,
                    "width": im["width"], "height": im["height"], "original_width": im["width"],
                    "original_height": im["height"], "exif": json.dumps({}),
                    "sha256": hashlib.sha256(im["bytes"]).hexdigest()}
            tw.write({"__key__": key, "jpg": im["bytes"], "txt": im["caption"].encode(),
                      "json": json.dumps(meta, indent=4).encode()})
            rows.append(meta)
        tw.close()
    schema = pa.schema([("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
                        ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                        ("original_width", pa.int64()), ("original_height", pa.int64()), ("exif", pa.string()),
                        ("sha256", pa.string())])
    _write_parquet(d / "00000.parquet", rows, schema)
    (d / "00000_stats.json").write_bytes(_stats(len(images) + 1, len(images), {error: 1}, None))


def _gt_sample(item: dict[str, Any], labels: np.ndarray, keyframes: list[int], scene_cuts: list[int],
               objects: list[dict[str, Any]]) -> tuple[shards.ShardSample, dict[str, Any]]:
    T, H, W = labels.shape
    fps = item.get("fps")
    timestamps = [i / fps for i in range(T)] if fps else [0.0] * T
    traj = trajformat.labels_to_traj(labels, list(range(T)), timestamps, keyframes)
    cov = trajformat.coverage(labels)
    lengths = [sum(1 for a in tr["area"] if a > 0) for tr in traj["trajectories"]]
    stats = {"coverage": round(cov, 6), "n_trajectories": len(traj["trajectories"])}
    meta = {"key": item["key"], "source": "synth", "source_id": item["key"], "source_uri": item["source_uri"],
            "url": item["url"], "media_type": item["media_type"], "width": W, "height": H, "fps": fps,
            "n_frames": T, "scene_cuts": scene_cuts, "engine_version": ENGINE_VERSION,
            "backends": {"segmenter": "ground_truth", "tracker": "ground_truth"}, "stats": stats,
            "objects": objects}
    sample = shards.ShardSample(key=item["key"], media_ext=item["ext"], media=item["bytes"],
                                caption=item["caption"], meta=meta, traj=traj)
    row = {"key": item["key"], "source": "synth", "source_uri": item["source_uri"], "media_type": item["media_type"],
           "status": "ok", "reason": "", "shard": shards.shard_name("gt", 0), "n_frames": T, "n_annotated": T,
           "n_keyframes": len(keyframes), "n_trajectories": len(lengths), "coverage": cov, "height": H, "width": W,
           "mean_trajectory_length": float(np.mean(lengths)) if lengths else 0.0}
    return sample, row


def make_corpus(out: str | Path, videos: int = 6, images: int = 4, seed: int = 0, n_frames: int = 48,
                width: int = 256, height: int = 192, fps: int = 16, overwrite: bool = False) -> dict[str, Any]:
    """Write the sample corpus under ``out`` (media/, wds/, gt/) and return a summary.

    Video 1 (video 0 when there is only one) has a hard scene cut at ``n_frames // 2``.
    ``overwrite`` replaces an existing corpus; otherwise a non-empty target is refused
    so stale files of a larger earlier run can never mix in.
    """
    if videos < 0 or images < 0:
        raise ValueError("videos and images must be >= 0")
    if videos and n_frames < 2:
        raise ValueError("n_frames must be >= 2 (the cut video needs two scenes)")
    out = Path(out)
    parts = [out / "media", out / "wds", out / "gt"]
    busy = [p for p in parts if p.exists() and any(p.iterdir())]
    if busy:
        if not overwrite:
            raise FileExistsError(f"{busy[0]} is not empty; remove it or pass overwrite=True")
        for p in busy:
            shutil.rmtree(p)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    cut_video = 1 if videos >= 2 else 0
    samples, rows, vids, imgs = [], [], [], []

    for i in range(videos):
        key = f"video_{i:03d}"
        vseed = int(_seed_rng("corpus", seed, "video", i).integers(2**31))
        cut = n_frames // 2 if i == cut_video else None
        scenes = _video_scenes(vseed, n_frames, width, height, cut, None)
        labels = _encode_video(media / f"{key}.mp4", scenes, n_frames, width, height, fps)
        bounds = [start for start, _ in scenes] + [n_frames]
        parts = [_visible(sc, labels[bounds[j]:bounds[j + 1]]) for j, (_, sc) in enumerate(scenes)]
        caption = _video_caption(parts)
        (media / f"{key}.txt").write_text(caption, encoding="utf-8")
        item = {"key": key, "ext": "mp4", "bytes": (media / f"{key}.mp4").read_bytes(), "caption": caption,
                "url": f"synth://{key}.mp4", "source_uri": f"media/{key}.mp4", "media_type": "video",
                "fps": fps, "n_frames": n_frames}
        vids.append(item)
        objects = [o.describe() for part in parts for o in part]
        cuts = [cut] if cut is not None else []
        s, r = _gt_sample(item, labels, [0] + cuts, cuts, objects)
        samples.append(s)
        rows.append({**r, "input_index": len(rows)})

    for i in range(images):
        key = f"image_{i:03d}"
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        scene = _image_scene(int(_seed_rng("corpus", seed, "image", i).integers(2**31)), w, h)
        rgb, labels = _render(scene, 0.0)
        data = encode_jpeg(rgb)
        (media / f"{key}.jpg").write_bytes(data)
        visible = _visible(scene, labels)
        caption = _image_caption(visible)
        (media / f"{key}.txt").write_text(caption, encoding="utf-8")
        item = {"key": key, "ext": "jpg", "bytes": data, "caption": caption, "url": f"synth://{key}.jpg",
                "source_uri": f"media/{key}.jpg", "media_type": "image", "fps": None, "width": w, "height": h}
        imgs.append(item)
        s, r = _gt_sample(item, labels[None], [0], [], [o.describe() for o in visible])
        samples.append(s)
        rows.append({**r, "input_index": len(rows)})

    _write_wds_videos(out / "wds" / "videos", vids)
    _write_wds_images(out / "wds" / "images", imgs)
    gt = out / "gt"
    shards.write_shard(gt / shards.shard_name("gt", 0), samples)
    manifest.write_part(gt, 0, rows)
    return {
        "out": str(out), "seed": seed, "videos": videos, "images": images, "n_frames": n_frames,
        "media": str(media), "wds_videos": str(out / "wds" / "videos"), "wds_images": str(out / "wds" / "images"),
        "gt": str(gt), "keys": [r["key"] for r in rows],
        "scene_cut_videos": [f"video_{cut_video:03d}"] if videos else [],
        "n_trajectories": sum(r["n_trajectories"] for r in rows),
    }
