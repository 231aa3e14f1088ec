"""Decode media into a few frames at working resolution.

Videos: PyAV, one sequential pass that keeps only the sampled frames, so memory is bounded
by the number of sampled frames at working resolution, never by video length. libavformat
is restricted to the container formats we accept (a playlist named ``.mp4`` would otherwise
make FFmpeg open the URLs inside it) and libavcodec refuses frames above the pixel limit;
the frame size is checked before any frame is decoded. A plain file is decoded from its path
(streamed from disk), a tar member from its bytes.

Why not decord (used here until 2026-11-28): its random access returns other frames than
asked for in common encodings (MPEG-TS, AVI, open-GOP HEVC, MPEG-4 Part 2 with B-frames,
MP4 edit lists), it crashed the process on a corrupt MP4 given as bytes, and its bundled
FFmpeg takes no demuxer allow-list, so a tar member that PyAV accepts as MPEG-TS could be
opened as an HLS playlist that fetches URLs. A sequential decode costs the same as its seeks
on clips whose keyframes are seconds apart (bench: 16 of 300 / 900 frames, equal CPU time,
identical pixels on H.264 MP4).

Frames are the video's frames as stored: display-rotation metadata and EXIF orientation are
not applied (the same rule for every container, codec and image format; the masks and the
media bytes in a shard agree whatever reads them next).
Images: Pillow, restricted to the still-image formats we accept (no plugins that run external
programs), with the pixel count checked *before* the pixels are decoded (decompression-bomb
guard; also the size of a TIFF's tiles or strips, which can be far larger than the image).

Two entry points: ``decode_media`` samples frames for annotate; ``decode_frames`` reads
the frames a traj.json names (``trajdata show``, ``trajdata export``, the training
loader) from shard media, which users download and share, so it runs every guard above.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
# Registers exactly the formats of IMAGE_FORMATS (Image.open(formats=...) needs them loaded).
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401

from dataengine.config import DecodeConfig
from dataengine.errors import UserError


# FFmpeg demuxers a video may be read with: MP4/MOV, Matroska/WebM, AVI, MPEG-TS. Never
# playlists (hls, dash, concat) or anything else that opens further files or URLs.
VIDEO_DEMUXERS = "mov,matroska,avi,mpegts"
# Pillow formats an image may be read with (JPEG includes phone cameras' multi-picture MPO).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")

class DecodeError(UserError):
    """The media cannot be decoded; the message is the manifest reason."""


@dataclass
class DecodedMedia:
    frames: np.ndarray          # [T, h, w, 3] uint8 RGB at working resolution
    frame_indices: list[int]    # indices into the decoded source
    timestamps: list[float]     # seconds
    width: int                  # source size
    height: int
    fps: float
    n_source_frames: int
    media_type: str             # "video" | "image"


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale so the longest side is at most ``max_side``; never upscale."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def sample_indices(n_frames: int, n_samples: int, stride: int = 0) -> list[int]:
    """Uniformly spread, strictly increasing frame indices; with ``stride`` > 0, every
    ``stride``-th frame from 0 (at most ``n_samples`` of them, all when ``n_samples`` <= 0),
    so positions map to source frames by one multiplication (what SA-V style exports need)."""
    if n_frames <= 0:
        return []
    if stride > 0:
        idx = list(range(0, n_frames, stride))
        return idx[:n_samples] if n_samples > 0 else idx
    if n_samples <= 0 or n_samples >= n_frames:
        return list(range(n_frames))
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, n_samples)})


def _check_size(width: int, height: int, cfg: DecodeConfig, what: str) -> None:
    if width * height > cfg.max_source_pixels:
        raise DecodeError(f"{what} too large: {width}x{height} exceeds {cfg.max_source_pixels} pixels")
    if min(width, height) < cfg.min_side:
        raise DecodeError(f"{what} too small: {width}x{height} (minimum side {cfg.min_side} px)")


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` at ``size`` = (width, height), area-averaged (no copy of the pixels when already there)."""
    if (frame.shape[1], frame.shape[0]) == size:
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def decode_image(data: bytes, cfg: DecodeConfig) -> DecodedMedia:
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = img.size
    except Image.DecompressionBombError as e:   # Pillow refuses > 2x its own limit at open
        raise DecodeError(f"image too large (decompression-bomb guard): {e}") from None
    except UnidentifiedImageError:
        raise DecodeError("not a decodable image (unrecognised image format)") from None
    except Exception as e:  # Pillow raises many types for bad bytes
        raise DecodeError(f"not a decodable image ({type(e).__name__}: {e})") from None
    _check_size(width, height, cfg, "image")
    _check_tiff_blocks(img, cfg)
    try:
        # Pillow's own bomb guard would warn or raise on a huge image; ours ran above.
        with np.errstate(all="ignore"):
            img.load()
        rgb = _to_rgb(img)
    except Exception as e:
        raise DecodeError(f"corrupt image data ({type(e).__name__}: {e})") from None
    size = working_size(width, height, cfg.max_side)
    return DecodedMedia(resize_frame(rgb, size)[None], [0], [0.0], width, height, 0.0, 1, "image")


def _check_tiff_blocks(img: Image.Image, cfg: DecodeConfig) -> None:
    """A TIFF's tiles (or strips) are decoded whole, whatever the image size: a 16 x 16 image may
    declare one 16384 x 16384 tile of compressed zeros, which libtiff inflates to ~800 MB."""
    if img.format != "TIFF":
        return
    tags = img.tag_v2
    width, height = img.size
    block = (tags.get(322, width), tags.get(323, height)) if 322 in tags or 323 in tags else \
        (width, tags.get(278, height))                       # TileWidth / TileLength, else RowsPerStrip
    try:
        pixels = int(block[0]) * int(block[1])
    except (TypeError, ValueError):
        raise DecodeError(f"corrupt TIFF tile / strip size {block!r}") from None
    if pixels > cfg.max_source_pixels:
        raise DecodeError(f"image too large (decompression-bomb guard): a TIFF block of {block[0]}x{block[1]} "
                          f"pixels exceeds {cfg.max_source_pixels}")


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale the actual range to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        grey = arr.astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"))


def _nbytes(src: bytes | str) -> int:
    return os.path.getsize(src) if isinstance(src, str) else len(src)


def decode_video(src: bytes | str, n_samples: int, cfg: DecodeConfig) -> DecodedMedia:
    """``src``: the media bytes, or the path of a plain file (decoded without loading it)."""
    if _nbytes(src) == 0:
        raise DecodeError("empty file")
    try:   # opened with the demuxer allow-list; the frame size is checked from the headers before decoding
        return _decode_pyav(src, n_samples, cfg)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"not a decodable video ({_short(e)})") from None


def _av_open(src: bytes | str, cfg: DecodeConfig):
    import av

    # libavcodec refuses frames above max_pixels, so probing a stream's parameters never
    # decodes a gigapixel frame (decompression-bomb guard for video); libavformat only
    # uses the whitelisted demuxers and, for a path, only the file protocol.
    options = {"max_pixels": str(cfg.max_source_pixels), "format_whitelist": VIDEO_DEMUXERS}
    if isinstance(src, str):
        return av.open(src, options={**options, "protocol_whitelist": "file"})
    return av.open(io.BytesIO(src), options=options)


def _probe_size(src: bytes | str, cfg: DecodeConfig) -> tuple[int, int] | None:
    """``(width, height)`` of the first video stream from its headers; None when unknown.

    Media that PyAV cannot open with the whitelisted demuxers is refused here.
    """
    try:
        with _av_open(src, cfg) as container:
            if not container.streams.video:
                raise DecodeError("file has no video stream")
            cc = container.streams.video[0].codec_context
            return (cc.width, cc.height) if cc.width > 0 and cc.height > 0 else None
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"not a decodable video ({_short(e)})") from None


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:160]}"


def _count_frames(src: bytes | str, cfg: DecodeConfig) -> tuple[int, int, int, float]:
    """``(frames, width, height, fps)`` of the first video stream, frames counted from its packets
    (no decoding); packets the demuxer marks as discarded (an MP4 edit list's pre-roll) are not
    shown and do not count."""
    with _av_open(src, cfg) as container:
        if not container.streams.video:
            raise DecodeError("file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_size(width, height, cfg, "video")
        fps = float(stream.average_rate or 0.0)
        n = sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)
    return n, width, height, fps


def _read_frames(src: bytes | str, wanted: set[int], cfg: DecodeConfig, size: tuple[int, int] | None = None,
                 scaled: bool = False) -> tuple[dict[int, np.ndarray], dict[int, float], int]:
    """One sequential decoding pass: ``{index: rgb frame}`` of the ``wanted`` frame indices (resized to
    ``size`` by area, or by the decoder when ``scaled``), their presentation times in seconds from the
    first frame, and how many frames were decoded (the pass stops after the last wanted one)."""
    frames, times, first, count = {}, {}, None, 0
    last = max(wanted) if wanted else -1
    with _av_open(src, cfg) as container:
        if not container.streams.video:
            raise DecodeError("file has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1      # one core per labelling actor / loader worker
        width, height = stream.codec_context.width, stream.codec_context.height
        if width > 0 and height > 0:               # refuse a huge frame size before any frame is decoded
            _check_size(width, height, cfg, "video")
        else:
            scaled = False                         # size unknown from the headers: check the first frame
        for i, frame in enumerate(container.decode(stream)):
            count = i + 1
            t = frame.time
            if first is None and t is not None:
                first = t
            if i in wanted:
                if scaled and size is not None:
                    frames[i] = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                    if not frames:
                        _check_size(rgb.shape[1], rgb.shape[0], cfg, "video")
                    frames[i] = rgb if size is None else resize_frame(rgb, size)
                times[i] = max(0.0, t - first) if t is not None and first is not None else float("nan")
            if i >= last:
                break
    return frames, times, count


def _decode_pyav(src: bytes | str, n_samples: int, cfg: DecodeConfig) -> DecodedMedia:
    n, width, height, fps = _count_frames(src, cfg)
    if n == 0:
        raise DecodeError("video has no frames")
    size = working_size(width, height, cfg.max_side)
    idx = sample_indices(n, n_samples, cfg.frame_stride)
    frames, times, decoded = _read_frames(src, set(idx), cfg, size)
    if len(frames) < len(idx) and decoded > 0:
        # Fewer frames came out than the packets said (a stream that ends early): sample over the
        # frames there are, so the clip's end is still sampled.
        n = decoded
        idx = sample_indices(n, n_samples, cfg.frame_stride)
        frames, times, _ = _read_frames(src, set(idx), cfg, size)
    idx = [i for i in idx if i in frames]
    if not idx:
        raise DecodeError("video has no decodable frames")
    # Presentation times of the frames themselves (a variable frame rate is kept); the frame rate
    # where the stream gives no times.
    timestamps = [times[i] if np.isfinite(times[i]) else (i / fps if fps > 0 else 0.0) for i in idx]
    return DecodedMedia(np.stack([frames[i] for i in idx]), idx, [round(t, 6) for t in timestamps],
                        width, height, fps, n, "video")


def decode_media(src: bytes | str, media_type: str, cfg: DecodeConfig) -> DecodedMedia:
    """Decode ``src``: media bytes, or the path of a plain file (videos stream from it)."""
    if _nbytes(src) == 0:
        raise DecodeError("empty file")
    if media_type == "image":
        if isinstance(src, str):
            with open(src, "rb") as f:
                src = f.read()
        return decode_image(src, cfg)
    if media_type == "video":
        return decode_video(src, cfg.frames, cfg)
    raise DecodeError(f"unsupported media type {media_type!r}")


def decode_frames(data: bytes, media_type: str, indices: Sequence[int], size: tuple[int, int],
                  cfg: DecodeConfig | None = None, scaler: str = "area") -> np.ndarray:
    """Frames ``indices`` of the media ``data``, each resized to ``size`` = (width, height): ``[len, h, w, 3]`` uint8.

    The same guards as annotate's decoding (``cfg``'s limits, default ``DecodeConfig()``):
    accepted containers and still-image formats only, the pixel count checked before any
    pixel is decoded. An image gives its one frame once per index. Anything wrong with the
    media is a ``DecodeError`` whose message is one line.

    ``scaler``: ``"area"`` resizes each full frame the way annotate did (the pixels that were
    labelled: ``show``, ``export``); ``"decoder"`` lets the decoder scale while it decodes
    (video only, when the headers give the frame size), which skips full-resolution frames in
    memory and costs less CPU per frame (the training loader; pixels differ by the interpolation).
    """
    if scaler not in ("area", "decoder"):
        raise ValueError(f"scaler must be 'area' or 'decoder', got {scaler!r}")
    cfg = cfg or DecodeConfig()
    if not data:
        raise DecodeError("empty file")
    if len(data) > cfg.max_media_bytes:
        raise DecodeError(f"media too large: {len(data)} bytes exceeds {cfg.max_media_bytes}")
    indices = [int(i) for i in indices]
    if media_type == "image":
        # Decoded at the working size whose longest side is the target's, as annotate did.
        img = decode_image(data, replace(cfg, max_side=max(size)))
        return np.stack([resize_frame(img.frames[0], size)] * len(indices)) if indices \
            else np.zeros((0, size[1], size[0], 3), np.uint8)
    if media_type != "video":
        raise DecodeError(f"unsupported media type {media_type!r}")
    if not indices:
        _probe_size(data, cfg)      # the media is still checked: refuses other containers and huge frames
        return np.zeros((0, size[1], size[0], 3), np.uint8)
    if min(indices) < 0:
        raise DecodeError(f"negative frame index {min(indices)}")
    try:
        # opened with the demuxer allow-list; the frame size is checked from the headers before decoding
        frames, _, decoded = _read_frames(data, set(indices), cfg, size, scaled=scaler == "decoder")
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"not a decodable video ({_short(e)})") from None
    if len(frames) < len(set(indices)):
        raise DecodeError(f"frame {max(indices)} is past the video's {decoded} frames")
    return np.stack([frames[i] for i in indices])
