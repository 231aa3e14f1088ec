"""Decode media into a few frames at working resolution.

Videos: decord (fast seeking), PyAV as the fallback; frames are sampled
uniformly and only the sampled ones are kept, so memory is bounded by the
number of sampled frames at working resolution, never by video length. A
plain file is decoded from its path (streamed from disk), a tar member from
its bytes. PyAV probes every video first, with libavformat restricted to the
container formats we accept (a playlist named ``.mp4`` would otherwise make
FFmpeg open the URLs inside it) and libavcodec refusing frames above the pixel
limit; the frame size is checked before any frame is decoded.
Images: Pillow, restricted to the still-image formats we accept (no plugins
that run external programs), with the pixel count checked *before* the pixels
are decoded (decompression-bomb guard).

Two entry points: ``decode_media`` samples frames for annotate; ``decode_frames`` reads
the frames a traj.json names (``trajdata show``, ``trajdata export``, the training
loader) from shard media, which users download and share, so it runs every guard above.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
# Registers exactly the formats of IMAGE_FORMATS (Image.open(formats=...) needs them loaded).
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401

from dataengine.config import DecodeConfig
from dataengine.errors import InputError, UserError


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
    try:
        # Pillow's own bomb guard would warn or raise on a huge image; ours ran above.
        with np.errstate(all="ignore"):
            img.load()
        rgb = _to_rgb(img)
    except Exception as e:
        raise DecodeError(f"corrupt image data ({type(e).__name__}: {e})") from None
    size = working_size(width, height, cfg.max_side)
    return DecodedMedia(resize_frame(rgb, size)[None], [0], [0.0], width, height, 0.0, 1, "image")


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
    size = _probe_size(src, cfg)
    if size is not None:   # refuse a huge frame size before any frame is decoded
        _check_size(*size, cfg, "video")
    try:
        return _decode_decord(src, n_samples, cfg)
    except DecodeError:
        raise
    except Exception as first:
        try:
            return _decode_pyav(src, n_samples, cfg)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"not a decodable video (decord: {_short(first)}; pyav: {_short(e)})") from None


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

    Media that PyAV cannot open with the whitelisted demuxers is refused here, so
    decord (which takes no such options) only ever sees an accepted container.
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


# decord prefixes messages with a clock time and its source location: noise in a manifest reason.
_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: (Error: )?")


def _short(e: Exception) -> str:
    text = _DECORD_PREFIX.sub("", str(e).splitlines()[0] if str(e) else "")
    return f"{type(e).__name__}: {text[:160]}"


def _decode_decord(src: bytes | str, n_samples: int, cfg: DecodeConfig) -> DecodedMedia:
    import decord

    # decord copies a file object whole into memory; from a path it reads as it seeks.
    vr = decord.VideoReader(src if isinstance(src, str) else io.BytesIO(src), ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    if n == 0:
        raise DecodeError("video has no frames")
    first = vr[0].asnumpy()
    height, width = first.shape[:2]
    _check_size(width, height, cfg, "video")
    fps = float(vr.get_avg_fps() or 0.0)
    idx = sample_indices(n, n_samples, cfg.frame_stride)
    size = working_size(width, height, cfg.max_side)
    # One frame at a time keeps peak memory at one full-resolution frame.
    frames = np.stack([resize_frame(vr[i].asnumpy(), size) for i in idx])
    timestamps = [i / fps if fps > 0 else 0.0 for i in idx]
    return DecodedMedia(frames, idx, timestamps, width, height, fps, n, "video")


def _decode_pyav(src: bytes | str, n_samples: int, cfg: DecodeConfig) -> DecodedMedia:
    with _av_open(src, cfg) as container:
        if not container.streams.video:
            raise DecodeError("file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_size(width, height, cfg, "video")
        fps = float(stream.average_rate or 0.0)
        # Count packets first (no decoding) so sampling is uniform over the real length.
        n = sum(1 for p in container.demux(stream) if p.size > 0)
    if n == 0:
        raise DecodeError("video has no frames")
    wanted = set(sample_indices(n, n_samples, cfg.frame_stride))
    size = working_size(width, height, cfg.max_side)
    frames, idx = [], []
    with _av_open(src, cfg) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames.append(resize_frame(frame.to_ndarray(format="rgb24"), size))
                idx.append(i)
            if i >= max(wanted):
                break
    if not frames:
        raise DecodeError("video has no decodable frames")
    timestamps = [i / fps if fps > 0 else 0.0 for i in idx]
    return DecodedMedia(np.stack(frames), idx, timestamps, width, height, fps, n, "video")


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
    dims = _probe_size(data, cfg)   # refuses other containers, and a huge frame size before decoding
    if dims is not None:
        _check_size(*dims, cfg, "video")
    if not indices:
        return np.zeros((0, size[1], size[0], 3), np.uint8)
    if min(indices) < 0:
        raise DecodeError(f"negative frame index {min(indices)}")
    try:
        if scaler == "decoder" and dims is not None:   # size already checked from the headers
            return _frames_decord_scaled(data, indices, size)
        return _frames_decord(data, indices, size, cfg)
    except DecodeError:
        raise
    except Exception as first:
        try:
            return _frames_pyav(data, indices, size, cfg)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"not a decodable video (decord: {_short(first)}; pyav: {_short(e)})") from None


def _frames_decord(data: bytes, indices: list[int], size: tuple[int, int], cfg: DecodeConfig) -> np.ndarray:
    import decord

    vr = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    if max(indices) >= len(vr):
        raise DecodeError(f"frame {max(indices)} is past the video's {len(vr)} frames")
    frames = []
    for i in indices:   # one full-resolution frame in memory at a time
        frame = vr[i].asnumpy()
        if not frames:
            _check_size(frame.shape[1], frame.shape[0], cfg, "video")
        frames.append(resize_frame(frame, size))
    return np.stack(frames)


def _frames_decord_scaled(data: bytes, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    import decord

    vr = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1, width=size[0], height=size[1])
    if max(indices) >= len(vr):
        raise DecodeError(f"frame {max(indices)} is past the video's {len(vr)} frames")
    return vr.get_batch(indices).asnumpy()


def _frames_pyav(data: bytes, indices: list[int], size: tuple[int, int], cfg: DecodeConfig) -> np.ndarray:
    wanted, got = set(indices), {}
    with _av_open(data, cfg) as container:
        if not container.streams.video:
            raise DecodeError("file has no video stream")
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                got[i] = resize_frame(frame.to_ndarray(format="rgb24"), size)
            if len(got) == len(wanted):
                break
    if len(got) != len(wanted):   # not a DecodeError: reported with decord's reason as undecodable
        raise InputError(f"video has only frames up to {max(got, default=-1)}, traj.json wants {max(wanted)}")
    return np.stack([got[i] for i in indices])
