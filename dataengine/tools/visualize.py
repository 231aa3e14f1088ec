"""``trajdata show``: draw one sample's trajectories over its frames (PNG grid, GIF or MP4).

The picture is meant for a person who never saw the project: every trajectory
keeps one colour in every frame (the colour is a function of its id alone),
masks are a translucent fill with a crisp outline and the id written inside,
pixels no trajectory covers are greyed out, and each frame carries its source
frame index, timestamp and ``KEY`` / ``CUT`` tags. The PNG adds a title, a
legend and a timeline (which trajectory exists at which frame).

Frames are decoded from the shard's own media member at exactly the
``traj.json`` frame indices and resized to the mask resolution, the same
pixels the engine labelled, by the engine's guarded decoder (``dataengine.media``):
a shared shard's media gets the checks annotate's inputs get. Only the requested sample is decoded; the
manifest says which shard holds it, so other shards are never opened.
"""
from __future__ import annotations

import colorsys
import difflib
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from dataengine.errors import ConfigError, InputError, InputNotFound
from dataengine.format import atomic, shards, trajformat
from dataengine.format.manifest import readable_part
from dataengine.media.decode import DecodeError, decode_frames
from dataengine.metrics.matching import iou_matrix, match_one_to_one

ALPHA = 0.45                      # fill opacity: the object stays visible under its colour
KEY_COLOUR = (255, 176, 0)        # amber: keyframe (segmentation ran here)
CUT_COLOUR = (235, 40, 40)        # red: scene cut (no trajectory crosses it)
PLAIN_BORDER = (40, 40, 40)
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MUTED = (160, 160, 160)
BORDER = 4                        # px around every frame tile, coloured for KEY / CUT
MIN_TILE_SIDE = 360               # small masks are upscaled (integer factor) to at least this
MIN_LABEL_RADIUS = 3.0            # masks thinner than this (mask px) get no id label: it would hide them


# ------------------------------------------------------------------ colours
def colour_of(tid: int) -> tuple[int, int, int]:
    """Stable RGB for a trajectory id: golden-ratio hue steps keep consecutive ids far apart."""
    hue = (tid * 0.618033988749895) % 1.0
    # Ids 8, 13, 21 apart (Fibonacci numbers) get nearly the same hue from the golden-ratio
    # sequence; cycling saturation (period 3) and value (period 2) separates them again.
    sat = (0.95, 0.60, 0.80)[tid % 3]
    val = (1.00, 0.75)[tid % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def colour_table(max_id: int) -> np.ndarray:
    lut = np.zeros((max_id + 1, 3), np.uint8)
    for i in range(1, max_id + 1):
        lut[i] = colour_of(i)
    return lut


def _font(size: int, bold: bool = True) -> ImageFont.ImageFont:
    # matplotlib ships DejaVu Sans; locating the file (without importing matplotlib, which is slow) gives
    # the same font on every machine.
    try:
        import importlib.util

        root = Path(importlib.util.find_spec("matplotlib").submodule_search_locations[0])
        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(str(root / "mpl-data" / "fonts" / "ttf" / name), size)
    except Exception:
        return ImageFont.load_default(size)


# ------------------------------------------------------------------ loading
@dataclass
class Shown:
    """One sample ready to draw: frames and label maps at the mask resolution."""
    key: str
    frames: np.ndarray        # [T, H, W, 3] uint8 RGB
    labels: np.ndarray        # [T, H, W] int32, 0 = no trajectory
    traj: dict[str, Any]
    meta: dict[str, Any]
    caption: str
    has_media: bool
    gt: np.ndarray | None = None   # [T, H, W] ground truth, ids recoloured to the matched trajectory

    @property
    def cuts(self) -> set[int]:
        return {int(c) for c in self.meta.get("scene_cuts", [])}

    @property
    def keyframes(self) -> set[int]:
        return {int(k) for k in self.traj.get("keyframes", [])}


def find_sample(directory: str | Path, key: str) -> shards.ShardSample:
    """The shard sample ``key`` of a dataset directory (or one shard file).

    A missing key is a ``ValueError`` naming a few keys that do exist, so the
    user can copy one; a key that failed or was filtered says so and why.
    """
    d = Path(directory)
    if not d.exists():
        raise InputNotFound(f"no such dataset: {d}")
    parts = sorted((d / "manifest").glob("part-*.parquet")) if d.is_dir() else []
    if parts:
        # Four columns only: a lookup in a manifest of millions of rows stays cheap.
        rows = {}
        for p in parts:
            with readable_part(f"manifest/{p.name}"):
                rows.update((r["key"], r) for r in pq.read_table(p, columns=["key", "status", "reason", "shard"])
                            .to_pylist())
        row = rows.get(key)
        if row is None:
            _raise_missing(d, key, sorted(k for k, r in rows.items() if r["status"] == "ok"))
        if row["status"] != "ok" or not row["shard"]:
            raise InputError(f"sample {key!r} has status {row['status']!r} ({row['reason'] or 'no reason'}); "
                             f"only 'ok' samples have trajectories in the shards")
        candidates = [d / row["shard"]]
    else:
        candidates = shards.list_shards(d)
    seen: list[str] = []
    for path in candidates:
        if not path.is_file():
            raise InputNotFound(f"manifest names shard {path.name} for {key!r}, but {path} is missing")
        for s in shards.read_shard(path):
            if s.key == key:
                return s
            seen.append(s.key)
    _raise_missing(d, key, sorted(seen))
    raise AssertionError("unreachable")


def _raise_missing(d: Path, key: str, keys: list[str]) -> None:
    if not keys:
        raise InputError(f"no sample {key!r} in {d}: it holds no 'ok' samples (is it a trajdata output?)")
    # difflib is quadratic-ish per candidate: on huge datasets only the first keys are compared.
    close = difflib.get_close_matches(key, keys[:20000], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    raise InputError(f"no sample {key!r} in {d}{hint} available keys: {shown}")


def load(directory: str | Path, key: str, gt: str | Path | None = None) -> Shown:
    s = find_sample(directory, key)
    labels = trajformat.traj_to_labels(s.traj)
    T, H, W = labels.shape
    if s.media is not None:
        media_type = s.meta.get("media_type") or ("image" if len(s.traj["frame_indices"]) == 1 else "video")
        try:
            frames = decode_frames(s.media, media_type, list(s.traj["frame_indices"]), (W, H))
        except DecodeError as e:  # a user-facing error (one line in the CLI), not a traceback
            raise InputError(f"cannot decode the {s.media_ext} member of {key!r}: {e}") from None
    else:  # a shard without media still shows its masks, over a neutral grey
        frames = np.full((T, H, W, 3), 96, np.uint8)
    shown = Shown(s.key, frames, labels, s.traj, s.meta, s.caption, s.media is not None)
    if gt is not None:
        shown.gt = match_ground_truth(labels, _gt_at(find_sample(gt, key), s.traj["frame_indices"], H, W))
    return shown


def _gt_at(sample: shards.ShardSample, indices: list[int], height: int, width: int) -> np.ndarray:
    """Ground-truth label maps at the engine's frame indices and mask size (0 where GT has no frame)."""
    gt = trajformat.traj_to_labels(sample.traj)
    where = {int(f): p for p, f in enumerate(sample.traj["frame_indices"])}
    out = np.zeros((len(indices), height, width), np.int32)
    for t, f in enumerate(indices):
        if f in where:
            out[t] = cv2.resize(gt[where[f]], (width, height), interpolation=cv2.INTER_NEAREST)
    return out


def match_ground_truth(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Relabel ground-truth objects with the id of the predicted trajectory they overlap best.

    One-to-one matching (Hungarian) on IoU over the whole clip, so "same colour on both sides"
    means "the engine found this object". Unmatched objects get fresh ids above every
    predicted one, hence colours no prediction uses.
    """
    p_ids, g_ids, iou = iou_matrix(pred, gt)
    rows, cols = match_one_to_one(iou)
    matched = {int(g_ids[c]): int(p_ids[r]) for r, c in zip(rows, cols) if iou[r, c] >= 0.2}
    g_all, g_inv = np.unique(gt, return_inverse=True)
    new = np.zeros(len(g_all), np.int64)
    fresh = int(pred.max()) + 1
    for j, g in enumerate(g_all):
        if g == 0:
            continue
        if int(g) in matched:
            new[j] = matched[int(g)]
        else:
            new[j], fresh = fresh, fresh + 1
    return new[g_inv].reshape(gt.shape).astype(np.int32)


# ------------------------------------------------------------------ drawing one frame
def auto_scale(height: int, width: int) -> int:
    return max(1, math.ceil(MIN_TILE_SIDE / max(height, width)))


def overlay(frame: np.ndarray, labels: np.ndarray, scale: int = 1, alpha: float = ALPHA) -> np.ndarray:
    """Translucent fill + outline ``scale`` px wide per side + darkened grey where nothing is labelled."""
    H, W = labels.shape
    img = cv2.resize(frame, (W * scale, H * scale), interpolation=cv2.INTER_LINEAR) if scale > 1 else frame
    lab = np.repeat(np.repeat(labels, scale, 0), scale, 1) if scale > 1 else labels
    lut = colour_table(int(lab.max()))
    col = lut[lab]
    covered = (lab > 0)[..., None]
    # Whole-array uint8 ops (cv2) instead of boolean-indexed float maths: far cheaper per frame.
    fill = cv2.addWeighted(img, 1 - alpha, col, alpha, 0)
    # Uncovered pixels: darkened grey, so gaps in the labelling stand out from every colour.
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    out = np.where(covered, fill, (grey * 0.45).astype(np.uint8))
    # Outline: a pixel whose 4-neighbour has another label, found at mask resolution and then
    # upscaled, so it is `scale` px wide. Both sides of a shared edge are marked, each in its
    # own colour, so neighbouring objects get a two-tone border.
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    if scale > 1:
        edge = np.repeat(np.repeat(edge, scale, 0), scale, 1)
    return np.where(edge[..., None] & covered, col, out)


def label_points(labels: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """Per id the interior point farthest from the mask's border, as (x, y, radius) in mask px.

    A plain centroid can fall outside a curved or split mask; the point of
    maximum distance to the border is always inside it, and the radius says
    whether a label fits at all.
    """
    points = {}
    for tid in np.unique(labels):
        if tid == 0:
            continue
        m = np.pad((labels == tid).astype(np.uint8), 1)
        dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points[int(tid)] = (float(x - 1), float(y - 1), float(dist[y, x]))
    return points


def draw_ids(img: Image.Image, labels: np.ndarray, scale: int, font: ImageFont.ImageFont) -> None:
    draw = ImageDraw.Draw(img)
    for tid, (x, y, r) in label_points(labels).items():
        if r < MIN_LABEL_RADIUS:
            continue
        # White text with a dark stroke reads on every fill colour.
        draw.text(((x + 0.5) * scale, (y + 0.5) * scale), str(tid), font=font, fill=(255, 255, 255),
                  anchor="mm", stroke_width=2, stroke_fill=(0, 0, 0))


def render_frame(shown: Shown, t: int, scale: int, fonts: dict[str, Any] | None = None,
                 title: str | None = None) -> np.ndarray:
    """Frame position ``t`` as an RGB tile: caption strip on top, overlay, KEY/CUT border."""
    fonts = fonts or make_fonts(scale * shown.labels.shape[1])
    body = Image.fromarray(overlay(shown.frames[t], shown.labels[t], scale))
    draw_ids(body, shown.labels[t], scale, fonts["id"])
    if shown.gt is not None:  # engine | ground truth, side by side
        right = Image.fromarray(overlay(shown.frames[t], shown.gt[t], scale))
        draw_ids(right, shown.gt[t], scale, fonts["id"])
        pair = Image.new("RGB", (body.width * 2 + BORDER, body.height), PLAIN_BORDER)
        pair.paste(body, (0, 0))
        pair.paste(right, (body.width + BORDER, 0))
        d = ImageDraw.Draw(pair)
        for x, name in ((4, "engine"), (body.width + BORDER + 4, "ground truth")):
            d.text((x, 2), name, font=fonts["caption"], fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        body = pair
    # A still image is trivially its own keyframe: no tag, no coloured border.
    video = len(shown.labels) > 1
    is_cut, is_key = video and t in shown.cuts, video and t in shown.keyframes
    border = CUT_COLOUR if is_cut else KEY_COLOUR if is_key else PLAIN_BORDER
    strip = fonts["strip"]
    w, h = body.size
    tile = Image.new("RGB", (w + 2 * BORDER, h + 2 * BORDER + strip), BACKGROUND)
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, strip, tile.width - 1, tile.height - 1], fill=border)
    tile.paste(body, (BORDER, strip + BORDER))
    idx, ts = shown.traj["frame_indices"][t], shown.traj["timestamps"][t]
    text = title or (f"frame {idx}  ·  {ts:.2f} s" if len(shown.labels) > 1 else "image")
    draw.text((BORDER, strip // 2), text, font=fonts["caption"], fill=TEXT, anchor="lm")
    x = tile.width - BORDER
    tags = ([("CUT", CUT_COLOUR)] if is_cut else []) + ([("KEY", KEY_COLOUR)] if is_key else [])
    for tag, colour in tags:  # right-aligned badges
        x0 = x - draw.textlength(tag, font=fonts["caption"]) - 10
        draw.rounded_rectangle([x0, 3, x, strip - 3], radius=4, fill=colour)
        draw.text(((x0 + x) / 2, strip // 2), tag, font=fonts["caption"], fill=(0, 0, 0), anchor="mm")
        x = x0 - 6
    return np.asarray(tile)


def make_fonts(tile_height: int) -> dict[str, Any]:
    """Fonts for tiles ``tile_height`` display px high (smaller text only on tiny tiles)."""
    size = 16 if tile_height >= 240 else 12
    return {"id": _font(size), "caption": _font(size), "strip": int(size * 1.8),
            "title": _font(size + 6), "text": _font(size, bold=False)}


# ------------------------------------------------------------------ the PNG page
def pick_positions(shown: Shown, max_frames: int) -> list[int]:
    """At most ``max_frames`` positions spread evenly, always keeping keyframes and cuts."""
    T = len(shown.labels)
    if max_frames <= 0 or T <= max_frames:
        return list(range(T))
    must = sorted(shown.keyframes | shown.cuts)[:max_frames]
    others = [p for p in range(T) if p not in must]
    k = max_frames - len(must)
    extra = [others[int(round(i))] for i in np.linspace(0, len(others) - 1, k)] if k > 0 and others else []
    return sorted(set(must) | set(extra))


def render_page(shown: Shown, scale: int, max_frames: int = 16, columns: int = 0) -> Image.Image:
    """Title + legend, a grid of frame tiles, and (for videos) the trajectory timeline."""
    H, W = shown.labels.shape[1:]
    fonts = make_fonts(scale * H)
    positions = pick_positions(shown, max_frames)
    tiles = [render_frame(shown, t, scale, fonts) for t in positions]
    # About square; tiles twice as wide (with ground truth) get half the columns.
    cols = columns or _columns(len(tiles), math.sqrt(len(tiles) / (2 if shown.gt is not None else 1)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    gap, margin = 8, 16
    grid_w = cols * tw + (cols - 1) * gap
    width = max(grid_w + 2 * margin, 720)
    header = _header(shown, positions, width - 2 * margin, fonts)
    timeline = _timeline(shown, positions, width - 2 * margin, fonts) if len(shown.labels) > 1 else None
    height = margin + header.height + margin + rows * th + (rows - 1) * gap + margin
    if timeline is not None:
        height += timeline.height + margin
    page = Image.new("RGB", (width, height), BACKGROUND)
    page.paste(header, (margin, margin))
    y0 = margin + header.height + margin
    x0 = (width - grid_w) // 2
    for n, tile in enumerate(tiles):
        r, c = divmod(n, cols)
        page.paste(Image.fromarray(tile), (x0 + c * (tw + gap), y0 + r * (th + gap)))
    if timeline is not None:
        page.paste(timeline, (margin, y0 + rows * th + (rows - 1) * gap + margin))
    return page


def _columns(n: int, target: float) -> int:
    """Near ``target`` columns, preferring a count that leaves the fewest empty grid cells."""
    options = [c for c in range(max(1, math.floor(target) - 1), math.ceil(target) + 2) if c <= n] or [n]
    return min(options, key=lambda c: (math.ceil(n / c) * c - n, abs(c - target)))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def _header(shown: Shown, positions: list[int], width: int, fonts) -> Image.Image:
    T, H, W = shown.labels.shape
    traj, meta = shown.traj, shown.meta
    cov = float((shown.labels != 0).mean())
    n_src = meta.get("n_source_frames") or meta.get("n_frames") or "?"
    kind = "image" if T == 1 else f"video, {T} labelled frames of {n_src}"
    shownote = "" if len(positions) == T else f" (showing {len(positions)})"
    title = (f"{shown.key}  —  {kind}{shownote}  ·  {len(traj['masklet_id'])} trajectories  ·  "
             f"{cov:.0%} of pixels covered  ·  masks {W}×{H} px")
    if T == 1:
        legend = ("Each colour is one trajectory (for a still image: one segment), with its id number "
                  "written inside. Grey = pixels no trajectory covers.")
    else:
        legend = ("Each colour is one trajectory: the same object keeps its colour and id number in every "
                  "frame. Grey = pixels no trajectory covers. Amber border / KEY = keyframe (masks were "
                  "segmented there, then tracked through the following frames). Red border / CUT = scene "
                  "cut (no trajectory continues across it).")
    if shown.gt is not None:
        legend += (" Left: engine output; right: ground truth, each true object coloured like the engine "
                   "trajectory it overlaps best over the whole clip (same colour = found; a colour absent "
                   "on the left = missed).")
    if not shown.has_media:
        legend += " This shard holds no media: masks are drawn over plain grey."
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [(s, fonts["title"], TEXT) for s in _wrap(probe, title, fonts["title"], width)]
    lines += [(s, fonts["text"], MUTED) for s in _wrap(probe, legend, fonts["text"], width)]
    if shown.caption.strip():
        cap = shown.caption.strip().replace("\n", " ")
        lines += [(s, fonts["text"], TEXT) for s in _wrap(probe, f"Caption: “{cap}”", fonts["text"], width)[:2]]
    heights = [int(f.size * 1.45) for _, f, _ in lines]
    img = Image.new("RGB", (width, sum(heights)), BACKGROUND)
    draw = ImageDraw.Draw(img)
    y = 0
    for (s, f, c), h in zip(lines, heights):
        draw.text((0, y), s, font=f, fill=c)
        y += h
    return img


def _timeline(shown: Shown, positions: list[int], width: int, fonts) -> Image.Image:
    """Rows = trajectories (by first frame), columns = labelled frames; a bar where the id is present."""
    T = len(shown.labels)
    areas = {t["id"]: t["area"] for t in shown.traj["trajectories"]}
    order = sorted(areas, key=lambda i: (next((p for p, a in enumerate(areas[i]) if a), T), i))
    font = fonts["text"]
    row_h = max(3, min(16, 360 // max(1, len(order))))
    label_w = int(font.size * 7)
    top = int(font.size * 3.2)
    cell = (width - label_w) / T
    img = Image.new("RGB", (width, top + row_h * len(order) + int(font.size * 1.6)), BACKGROUND)
    draw = ImageDraw.Draw(img)
    subset = len(positions) < T
    note = ("Timeline: which trajectory exists in which labelled frame (bar = present; amber line = keyframe, "
            "red line = scene cut" + ("; ▲ = frames shown above)" if subset else ")"))
    draw.text((0, 0), note, font=font, fill=TEXT)
    for t in range(T):
        x = label_w + t * cell
        colour = CUT_COLOUR if t in shown.cuts else KEY_COLOUR if t in shown.keyframes else None
        if colour:  # a line just left of the column where the new clip starts
            draw.rectangle([x - 2, top - 4, x + 1, img.height - font.size * 1.6], fill=colour)
        if subset and t in positions:
            draw.text((x + cell / 2, top - 6), "▲", font=font, fill=MUTED, anchor="mb")
    for r, tid in enumerate(order):
        y = top + r * row_h
        if row_h >= 10:
            draw.text((label_w - 8, y + row_h / 2), f"id {tid}", font=font, fill=TEXT, anchor="rm")
        for t, a in enumerate(areas[tid]):
            if a:
                x = label_w + t * cell
                draw.rectangle([x + 2, y + 1, x + cell - 1, y + row_h - 2], fill=colour_of(tid))
    yb = img.height - font.size * 1.6 + 2
    for t in sorted(set(range(0, T, max(1, T // 8))) | {T - 1}):
        draw.text((label_w + (t + 0.5) * cell, yb), str(shown.traj["frame_indices"][t]), font=font,
                  fill=MUTED, anchor="ma")
    draw.text((0, yb), "source frame", font=font, fill=MUTED)
    return img


# ------------------------------------------------------------------ writers
def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> None:
    # One palette for all frames (built from all of them): a trajectory's colour maps to the same
    # palette entry in every frame instead of drifting with per-frame quantisation.
    sample = np.concatenate([f[::4, ::4] for f in frames], axis=0)
    palette = Image.fromarray(sample).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False)


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    import av

    h, w = frames[0].shape[:2]
    H, W = h + h % 2, w + w % 2  # yuv420p needs even sides
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        for f in frames:
            if (h, w) != (H, W):
                f = np.pad(f, ((0, H - h), (0, W - w), (0, 0)), constant_values=BACKGROUND[0])
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def show(directory: str | Path, key: str, out: str | Path, gt: str | Path | None = None,
         fps: float = 4.0, max_frames: int = 16,
         columns: int = 0, scale: int = 0) -> dict[str, Any]:
    """Write the picture of sample ``key`` to ``out`` (.png grid, .gif or .mp4 animation).

    ``out`` appears only once complete: media that cannot be decoded (or any other error)
    leaves no file, not even a partial one, under that name.
    """
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in (".png", ".gif", ".mp4"):
        raise ConfigError(f"--out must end in .png, .gif or .mp4, got {out.name!r}")
    if fps <= 0:
        raise ConfigError("--fps must be > 0")
    shown = load(directory, key, gt)
    T, H, W = shown.labels.shape
    scale = scale or auto_scale(H, W)
    out.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".png":
        page = render_page(shown, scale, max_frames=max_frames, columns=columns)
        # level 6 (the default) is several times slower for a slightly smaller file
        atomic.write_via(out, lambda tmp: page.save(tmp, format="PNG", compress_level=3))
        size, n = page.size, 1
    else:
        fonts = make_fonts(scale * H)
        title = (lambda t: f"{shown.key}  ·  frame {shown.traj['frame_indices'][t]}  ·  "
                           f"{shown.traj['timestamps'][t]:.2f} s")
        frames = [render_frame(shown, t, scale, fonts, title=title(t) if T > 1 else shown.key) for t in range(T)]
        atomic.write_via(out, lambda tmp: (write_gif if ext == ".gif" else write_mp4)(frames, tmp, fps))
        size, n = (frames[0].shape[1], frames[0].shape[0]), len(frames)
    return {"key": key, "out": str(out), "frames": n, "labelled_frames": T,
            "trajectories": len(shown.traj["masklet_id"]), "width": size[0], "height": size[1]}
