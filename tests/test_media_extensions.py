"""Every media extension the sources accept survives the whole path: annotate, validate,
the training loader and ``trajdata show`` (one extension list, ``dataengine.format.shards``)."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from dataengine.format import shards

from dataengine.tools import visualize
from dataengine.config import build_annotate_config, load_source
from dataengine.format.validate import validate_dataset
from pipelines.annotate import annotate
from trajtok.data import decode_sample

# Containers PyAV writes with its bundled encoders; webm needs libvpx, tried when present.
VIDEO_CODECS = {"mp4": "libx264", "m4v": "libx264", "mkv": "libx264", "mov": "libx264", "avi": "mpeg4",
                "webm": "libvpx-vp9"}
PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF",
               "tiff": "TIFF"}


def scene(t: int) -> np.ndarray:
    """A grey frame with one red square moving right: something to segment and track."""
    f = np.full((48, 64, 3), 90, np.uint8)
    f[14:34, 6 + 2 * t:26 + 2 * t] = (200, 40, 40)
    return f


def write_video(path, ext: str) -> bool:
    codec = VIDEO_CODECS[ext]
    try:
        with av.open(str(path), "w", format={"m4v": "mp4", "mkv": "matroska"}.get(ext, ext)) as c:
            s = c.add_stream(codec, rate=8)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            for t in range(8):
                for pkt in s.encode(av.VideoFrame.from_ndarray(scene(t), format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
    except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):
        path.unlink(missing_ok=True)
        return False
    return True


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    written = []
    for ext in sorted(shards.VIDEO_EXTS):
        if write_video(media / f"clip_{ext}.{ext}", ext):
            written.append(ext)
    for ext in sorted(shards.IMAGE_EXTS):
        buf = io.BytesIO()
        Image.fromarray(scene(0)).save(buf, format=PIL_FORMATS[ext])
        (media / f"still_{ext}.{ext}").write_bytes(buf.getvalue())
        written.append(ext)
    out = tmp_path_factory.mktemp("out")
    cfg = build_annotate_config(source=vars(load_source("local", str(media))))
    annotate(cfg, str(out), use_ray=False)
    return out, written


def test_the_sources_and_the_shards_share_one_extension_list():
    from dataengine.sources import IMAGE_EXTS, VIDEO_EXTS
    assert VIDEO_EXTS is shards.VIDEO_EXTS and IMAGE_EXTS is shards.IMAGE_EXTS
    assert shards.MEDIA_EXTS == VIDEO_EXTS | IMAGE_EXTS and "m4v" in VIDEO_EXTS


def test_every_accepted_extension_round_trips(annotated, tmp_path):
    out, written = annotated
    assert {"mp4", "m4v", "mkv", "mov", "avi"} <= set(written)       # webm only where libvpx exists
    samples = {s.key: s for s in shards.read_dataset(out)}
    assert len(samples) == len(written)
    assert validate_dataset(out) == []
    for key, s in samples.items():
        ext = key.rsplit("_", 1)[1]
        assert s.media_ext == ext and s.meta["media_type"] == ("video" if ext in shards.VIDEO_EXTS else "image")
        rgb, lab = decode_sample(s, 4)                            # the training loader's decoder
        assert rgb.shape[0] == (4 if ext in shards.VIDEO_EXTS else 1) and lab.shape == rgb.shape[:3]
        assert (lab > 0).any()
    m4v = next(k for k in samples if k.endswith("_m4v"))
    res = visualize.show(out, m4v, tmp_path / "m4v.png")
    assert (tmp_path / "m4v.png").stat().st_size > 0 and res
