"""A corpus of broken, odd and hostile inputs, with what the engine must make of each.

``make_bad_corpus(out)`` writes three inputs under ``out``:

* ``media/`` -- a plain folder (``--source local``);
* ``v2d/``   -- video2dataset-style webdataset tars (``format: video2dataset``);
* ``i2d/``   -- img2dataset-style tars plus the shard parquet (``format: img2dataset``);

and returns ``{"LAYOUT/KEY": Expectation}`` for **every** input sample: the
manifest key the sample must get, the status it must end with (``ok`` or
``error``) and, for errors, a regular expression the manifest reason must
match. Good samples sit beside the bad ones, so a test also sees that a bad
neighbour never costs a good sample. Everything is generated here (synthetic
scenes from ``dataengine.synth``, hand-built PNG/tar bytes); nothing is
downloaded. The bytes are a pure function of ``seed`` except the one tar member
whose name is an absolute path, which points inside ``out``'s parent so that a
reader which wrongly extracted it would write where a test's snapshot sees it.

Hostile members (``../`` paths, absolute paths, symlinks) are only ever
*written into tars* here; this module never follows or extracts them.
"""
from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from .sources import safe_key
from .synth import encode_jpeg, render_image, write_video

LAYOUTS = {"media": "folder", "v2d": "video2dataset", "i2d": "img2dataset"}   # subfolder -> source format

# Reasons, as regular expressions searched (case-insensitively) in the manifest reason.
R_EMPTY = r"empty file"
R_VIDEO = r"not a decodable video"
R_IMAGE = r"not a decodable image|corrupt image data"
R_TRUNC_IMAGE = r"corrupt image data.*truncated"
R_NO_STREAM = r"no video stream"
R_SMALL = r"too small"
R_LARGE = r"too large"
R_CAPTION = r"caption is not valid UTF-8"
R_NAME = r"not valid UTF-8"
R_UNSAFE = r"unsafe member path"
R_DUP = r"duplicate key"
R_DOWNLOAD = r"download failed"
R_TRUNC_TAR = r"truncated tar"
R_NO_MEDIA = r"no media in sample"
R_NOT_REGULAR = r"not a regular file"
R_STAT = r"cannot stat"
R_JSON = r"metadata JSON is invalid"


# Text formats FFmpeg / Pillow would follow into other files, URLs or programs.
HLS_PLAYLIST = (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nhttp://127.0.0.1:9/segment0.ts\n"
                b"#EXTINF:2.0,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n")
EPS_IMAGE = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n"
             b"newpath 0 0 moveto 64 64 lineto stroke showpage\n%%EOF\n")


@dataclass(frozen=True)
class Expectation:
    layout: str          # "media" | "v2d" | "i2d"
    key: str             # the manifest key the sample must get
    status: str          # "ok" | "error"
    reason: str          # regex the manifest reason must match ('' for ok)
    kind: str            # what this input is, for messages

    @property
    def format(self) -> str:
        return LAYOUTS[self.layout]


# ------------------------------------------------------------------ media bytes
def _video_bytes(seed: int, n_frames: int, width: int = 128, height: int = 96, **kw: Any) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:    # the mp4 muxer seeks: it needs a real file
        path = Path(tmp) / "v.mp4"
        write_video(path, seed=seed, n_frames=n_frames, width=width, height=height, **kw)
        return path.read_bytes()


def _faststart(data: bytes) -> bytes:
    """The same stream remuxed with the index (moov) first, as streaming sites serve mp4."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:    # faststart rewrites the file: it needs a real one
        path = Path(tmp) / "fast.mp4"
        with av.open(io.BytesIO(data)) as src, \
                av.open(str(path), "w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"}) as dst:
            stream = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is None:
                    continue
                packet.stream = stream
                dst.mux(packet)
        return path.read_bytes()


def _audio_only_mp4() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        stream = c.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return out.getvalue()


def _image(seed: int, width: int = 160, height: int = 120) -> np.ndarray:
    return render_image(seed, width, height)[0]


def _save(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of ``width`` x ``height``: a few hundred KB that inflate to gigapixels."""
    row = b"\0" * (1 + (width + 7) // 8)          # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def video_bomb(width: int, height: int) -> bytes:
    """One black H.264 frame of ``width`` x ``height`` in Matroska: ~200 KB for 8200x8200."""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska", options={"fflags": "+bitexact"}) as c:
        stream = c.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"preset": "ultrafast", "crf": "40", "threads": "1"}
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        for packet in stream.encode(frame):
            c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return out.getvalue()


def _gray16_png(seed: int) -> bytes:
    grey = np.asarray(Image.fromarray(_image(seed)).convert("L")).astype(np.uint16) * 257
    img = Image.fromarray(grey)                    # mode I;16 -> a 16-bit greyscale PNG
    return _save(img, "PNG")


def _tar_bytes(members: list[tuple[str, bytes | None, str]], mode: int = 0o644) -> tuple[bytes, dict[str, int]]:
    """A plain tar of ``(name, data, symlink target)`` members; returns bytes and name -> data offset.

    ``data`` None writes a symbolic link to the target. Headers are fixed (mtime 0, one
    owner) so the bytes depend only on the members.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "synth", "synth"
            if data is None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tf.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:   # read back headers only
        offsets = {m.name: m.offset_data for m in tf.getmembers()}
    return data, offsets


def _sample(key: str, media: tuple[str, bytes] | None, caption: bytes, meta: dict[str, Any] | None = None,
            prefix: str = "") -> list[tuple[str, bytes | None, str]]:
    """The members of one webdataset sample (media, txt, json), names prefixed by ``prefix``."""
    out: list[tuple[str, bytes | None, str]] = []
    if media is not None:
        out.append((f"{prefix}{key}.{media[0]}", media[1], ""))
    out.append((f"{prefix}{key}.txt", caption, ""))
    if meta is not None:
        out.append((f"{prefix}{key}.json", json.dumps(meta, indent=4).encode(), ""))
    return out


# ------------------------------------------------------------------ the corpus
class _Recorder:
    def __init__(self) -> None:
        self.expect: dict[str, Expectation] = {}

    def __call__(self, layout: str, key: str, status: str, reason: str, kind: str) -> None:
        name = f"{layout}/{key}"
        if name in self.expect:
            raise AssertionError(f"bad corpus lists {name} twice")
        self.expect[name] = Expectation(layout, key, status, reason, kind)


def _write_folder(d: Path, rec: Callable[..., None], media: dict[str, bytes], special_files: bool) -> None:
    d.mkdir(parents=True)

    def put(name: str, data: bytes, status: str, reason: str, kind: str, caption: bytes | None = None) -> None:
        (d / name).write_bytes(data)
        stem = name.rsplit(".", 1)[0]
        if caption is not None:
            (d / f"{stem}.txt").write_bytes(caption)
        rec("media", safe_key(stem), status, reason, kind)

    put("good_video_0.mp4", media["video"], "ok", "", "good video", b"three shapes moving")
    put("good_video_1.mp4", media["video_b"], "ok", "", "good video (no caption)")
    put("good_image.jpg", media["jpeg"], "ok", "", "good JPEG with an empty caption", b"")
    put("empty.mp4", b"", "error", R_EMPTY, "empty file")
    put("truncated.mp4", media["video"][: len(media["video"]) * 6 // 10], "error", R_VIDEO,
        "mp4 cut at 60% (index at the end, lost)")
    fast = media["faststart"]
    put("truncated_faststart.mp4", fast[: len(fast) // 2], "error", R_VIDEO, "faststart mp4 cut at 50%")
    put("random_bytes.mp4", media["random"], "error", R_VIDEO, "random bytes named .mp4")
    put("text.mp4", b"this is not a video\n" * 50, "error", R_VIDEO, "text named .mp4")
    put("audio_only.mp4", media["audio"], "error", R_NO_STREAM, "mp4 with only an audio stream")
    put("playlist.mp4", HLS_PLAYLIST, "error", R_VIDEO, "HLS playlist named .mp4 (must open no URL)")
    put("ffconcat.mp4", b"ffconcat version 1.0\nfile good_video_0.mp4\n", "error", R_VIDEO,
        "ffconcat script named .mp4 (must open no file)")
    put("postscript.jpg", EPS_IMAGE, "error", R_IMAGE, "EPS named .jpg (must run no interpreter)")
    put("vidéo à l'été.mp4", media["video_b"], "ok", "", "video whose name has accents and a quote")
    put("one_frame.mp4", media["one_frame"], "ok", "", "1-frame video")
    put("tiny_8x8.mp4", media["tiny_video"], "error", R_SMALL, "8x8 video")
    put("png_named.jpg", media["png"], "ok", "", "PNG named .jpg")
    put("pixel_1x1.png", media["pixel"], "error", R_SMALL, "1x1 image")
    put("gray16.png", media["gray16"], "ok", "", "16-bit greyscale PNG")
    put("rgba.png", media["rgba"], "ok", "", "RGBA PNG")
    put("gray.png", media["gray"], "ok", "", "8-bit greyscale PNG")
    put("palette.png", media["palette"], "ok", "", "palette PNG")
    put("cmyk.jpg", media["cmyk"], "ok", "", "CMYK JPEG")
    put("bomb_30000.png", media["bomb"], "error", R_LARGE, "PNG declaring 30000x30000 (decompression bomb)")
    put("big_9000.png", media["big"], "error", R_LARGE, "PNG declaring 9000x9000 (over the pixel limit)")
    put("bomb_video.mkv", media["video_bomb"], "error", R_LARGE, "one 8200x8200 video frame (decompression bomb)")
    put("truncated_jpeg.jpg", media["jpeg"][: len(media["jpeg"]) // 2], "error", R_TRUNC_IMAGE, "JPEG cut in half")
    put("noise.jpg", media["random"][:3000], "error", R_IMAGE, "random bytes named .jpg")
    put("bad_caption.jpg", media["jpeg"], "error", R_CAPTION, "caption that is not UTF-8",
        caption=b"caf\xe9 \xff\xfe latin-1 bytes")
    put("with space.jpg", media["jpeg"], "ok", "", "name with a space")
    put("café ünïcödé.jpg", media["jpeg"], "ok", "", "name with accents")
    put("日本語の名前.jpg", media["jpeg"], "ok", "", "name in CJK characters")
    # Two names that sanitise to one key: both are distinct files, so both are fine.
    put("dup id.jpg", media["jpeg"], "ok", "", "name colliding after sanitising (first)")
    (d / "dup_id.jpg").write_bytes(media["jpeg"])
    rec("media", "dup_id-1", "ok", "", "name colliding after sanitising (second)")
    # One stem, two media files: two samples.
    put("same_stem.jpg", media["jpeg"], "ok", "", "same stem, .jpg")
    (d / "same_stem.png").write_bytes(media["png"])
    rec("media", "same_stem-1", "ok", "", "same stem, .png")
    (d / "nested" / "deeper").mkdir(parents=True)
    (d / "nested" / "deeper" / "clip.mp4").write_bytes(media["video"])
    rec("media", "nested_deeper_clip", "ok", "", "video in a subfolder")
    raw = os.fsencode(str(d)) + b"/latin1_\xe9t\xe9.jpg"    # a file name that is not UTF-8
    with open(raw, "wb") as f:
        f.write(media["jpeg"])
    rec("media", safe_key(os.fsdecode(b"latin1_\xe9t\xe9")), "error", R_NAME, "file name not UTF-8")
    os.symlink("does_not_exist.mp4", d / "dangling.mp4")
    rec("media", "dangling", "error", R_STAT, "dangling symlink")
    if special_files:
        os.mkfifo(d / "fifo.mp4")
        rec("media", "fifo", "error", R_NOT_REGULAR, "named pipe called .mp4")


def _write_v2d(d: Path, rec: Callable[..., None], media: dict[str, bytes], escape_abs: str) -> None:
    d.mkdir(parents=True)

    def meta(key: str, status: str = "success") -> dict[str, Any]:
        return {"url": f"synth://{key}.mp4", "caption": "clip", "key": key, "status": status,
                "error_message": None if status == "success" else "HTTP Error 404: Not Found",
                "yt_meta_dict": {}, "clips": [[0.0, 1.0]], "clip_subtitles": []}

    m: list[tuple[str, bytes | None, str]] = []
    k = "00000000_00000"
    m += _sample(k, ("mp4", media["video"]), b"a good clip", meta(k))
    rec("v2d", k, "ok", "", "good clip")
    k = "00000001"
    m += _sample(k, None, b"a video that failed", meta(k, "failed_to_download"))
    rec("v2d", k, "error", R_DOWNLOAD, "failed download (no media member)")
    k = "00000002_00000"
    m += _sample(k, ("mp4", b""), b"empty", meta(k))
    rec("v2d", k, "error", R_EMPTY, "empty mp4 member")
    k = "00000003_00000"
    m += _sample(k, ("mp4", media["random"]), b"random", meta(k))
    rec("v2d", k, "error", R_VIDEO, "random bytes as mp4 member")
    k = "00000004_00000"
    m += _sample(k, ("mp4", media["video"]), b"\xff\xfe\x00bad caption \x80", meta(k))
    rec("v2d", k, "error", R_CAPTION, "caption member not UTF-8")
    k = "00000005_00000"
    m += _sample(k, ("mp4", media["video"]), b"escape", meta(k), prefix="../escape/")
    rec("v2d", k, "error", R_UNSAFE, "member path with ../")
    k = "00000006_00000"
    m += _sample(k, ("mp4", media["video"]), b"absolute", meta(k), prefix=escape_abs.rstrip("/") + "/")
    rec("v2d", k, "error", R_UNSAFE, "member with an absolute path")
    k = "00000007_00000"
    m += [(f"{k}.mp4", None, "/etc/passwd")] + _sample(k, None, b"symlink", meta(k))
    rec("v2d", k, "error", R_NO_MEDIA, "media member is a symlink (never followed)")
    k = "00000000_00000"           # the first key again: a real duplicate
    m += _sample(k, ("mp4", media["video_b"]), b"duplicate", meta(k))
    rec("v2d", f"{k}-1", "error", R_DUP, "duplicate key")
    k = "00000009_00000"
    m += _sample(k, ("mp4", media["tiny_video"]), b"tiny", meta(k))
    rec("v2d", k, "error", R_SMALL, "8x8 video member")
    k = "00000010_00000"
    m += _sample(k, ("mp4", media["one_frame"]), b"one frame", meta(k))
    rec("v2d", k, "ok", "", "1-frame video member")
    k = "00000011_00000"
    m += _sample(k, ("MP4", media["video_b"]), b"upper-case extension", meta(k))
    rec("v2d", k, "ok", "", "member with an upper-case .MP4")
    k = "clip é 12"
    m += _sample(k, ("mp4", media["video"]), "unicode name".encode(), meta(k))
    rec("v2d", safe_key(k), "ok", "", "member name with a space and an accent")
    k = "00000013_00000"
    m += [(f"{k}.mp4", media["video"], ""), (f"{k}.txt", b"bad json", ""), (f"{k}.json", b"{not json", "")]
    rec("v2d", k, "error", R_JSON, "metadata member is not JSON")
    k = "00000014_00000"
    m += _sample(k, ("mp4", media["truncated_video"]), b"truncated", meta(k))
    rec("v2d", k, "error", R_VIDEO, "truncated mp4 member")
    data, _ = _tar_bytes(m)
    (d / "00000.tar").write_bytes(data)

    # A second shard whose download was cut off inside a member.
    m = []
    k = "00001000_00000"
    m += _sample(k, ("mp4", media["video_b"]), b"good before the cut", meta(k))
    rec("v2d", k, "ok", "", "good clip before a tar cut")
    k = "00001001_00000"
    m += _sample(k, ("mp4", media["video"]), b"cut", meta(k))
    rec("v2d", k, "error", R_TRUNC_TAR, "tar cut off mid-member")
    data, offsets = _tar_bytes(m)
    cut = offsets[f"{k}.mp4"] + len(media["video"]) // 2
    (d / "00001.tar").write_bytes(data[:cut])


def _write_i2d(d: Path, rec: Callable[..., None], media: dict[str, bytes]) -> None:
    d.mkdir(parents=True)
    m: list[tuple[str, bytes | None, str]] = []
    rows: list[dict[str, Any]] = []

    def add(key: str, ext: str | None, data: bytes | None, status: str, reason: str, kind: str,
            caption: bytes = b"an image", prefix: str = "", download: str = "success",
            expect_key: str | None = None) -> None:
        meta = {"caption": caption.decode("utf-8", "replace"), "url": f"synth://{key}.jpg", "key": key,
                "status": download, "error_message": None if download == "success" else "HTTP Error 403",
                "width": None, "height": None, "original_width": None, "original_height": None,
                "exif": json.dumps({}), "sha256": None}
        rows.append({k: meta[k] for k in ("caption", "url", "key", "status", "error_message")})
        if download == "success":
            nonlocal m
            m += _sample(key, (ext, data) if ext else None, caption, meta, prefix=prefix)
        rec("i2d", expect_key or key, status, reason, kind)

    add("000000000", "jpg", media["jpeg"], "ok", "", "good JPEG")
    add("000000001", None, None, "error", R_DOWNLOAD, "failed download (parquet only)", download="failed_to_download")
    add("000000002", "jpg", media["png"], "ok", "", "PNG named .jpg")
    add("000000003", "jpg", media["jpeg"][: len(media["jpeg"]) // 2], "error", R_TRUNC_IMAGE, "truncated JPEG")
    add("000000004", "jpg", media["pixel_jpeg"], "error", R_SMALL, "1x1 JPEG")
    add("000000005", "png", media["bomb"], "error", R_LARGE, "PNG bomb 30000x30000")
    add("000000006", "png", media["rgba"], "ok", "", "RGBA PNG")
    add("000000007", "png", media["gray16"], "ok", "", "16-bit greyscale PNG")
    add("000000008", "jpg", media["gray_jpeg"], "ok", "", "greyscale JPEG")
    add("000000000", "jpg", media["jpeg"], "error", R_DUP, "duplicate key", expect_key="000000000-1")
    add("000000010", "jpg", media["jpeg"], "error", R_CAPTION, "caption not UTF-8", caption=b"\xc3\x28 broken")
    add("000000011", "jpg", media["jpeg"], "error", R_UNSAFE, "member path with ../", prefix="../../")
    add("000000012", "jpg", b"", "error", R_EMPTY, "empty JPEG member")
    add("000000013", "jpg", b"<html>403 Forbidden</html>", "error", R_IMAGE, "HTML page saved as .jpg")
    data, _ = _tar_bytes(m, mode=0o444)
    (d / "00000.tar").write_bytes(data)
    schema = pa.schema([(k, pa.string()) for k in ("caption", "url", "key", "status", "error_message")])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "00000.parquet")

    m = []
    m += _sample("000010000", ("jpg", media["jpeg"]), b"good before the cut")
    rec("i2d", "000010000", "ok", "", "good JPEG before a tar cut")
    m += _sample("000010001", ("jpg", media["jpeg"]), b"cut")
    rec("i2d", "000010001", "error", R_TRUNC_TAR, "tar cut off mid-member")
    data, offsets = _tar_bytes(m, mode=0o444)
    (d / "00001.tar").write_bytes(data[: offsets["000010001.jpg"] + len(media["jpeg"]) // 3])


def make_bad_corpus(out: str | Path, seed: int = 0, special_files: bool = True) -> dict[str, Expectation]:
    """Write ``out/media``, ``out/v2d``, ``out/i2d``; return ``{"LAYOUT/KEY": Expectation}``.

    ``special_files`` adds a named pipe called ``fifo.mp4`` to the folder (skip it on
    filesystems without FIFOs). ``out`` must not exist or be empty.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    video = _video_bytes(seed + 1, 16)
    rgb = _image(seed + 2)
    media = {
        "video": video,
        "video_b": _video_bytes(seed + 3, 12, 96, 128),
        "faststart": _faststart(video),
        "truncated_video": video[: len(video) // 3],
        "one_frame": _video_bytes(seed + 4, 1),
        "tiny_video": _video_bytes(seed + 5, 4, 8, 8),
        "audio": _audio_only_mp4(),
        "random": rng.bytes(20000),
        "jpeg": encode_jpeg(rgb),
        "gray_jpeg": _save(Image.fromarray(rgb).convert("L"), "JPEG"),
        "cmyk": _save(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "png": _save(Image.fromarray(_image(seed + 6)), "PNG"),
        "rgba": _save(Image.fromarray(_image(seed + 7)).convert("RGBA"), "PNG"),
        "gray": _save(Image.fromarray(_image(seed + 8)).convert("L"), "PNG"),
        "palette": _save(Image.fromarray(_image(seed + 9)).convert("P"), "PNG"),
        "gray16": _gray16_png(seed + 10),
        "pixel": _save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "pixel_jpeg": _save(Image.new("RGB", (1, 1), (200, 30, 30)), "JPEG"),
        "bomb": png_bomb(30000, 30000),
        "big": png_bomb(9000, 9000),
        "video_bomb": video_bomb(8200, 8200),
    }
    rec = _Recorder()
    _write_folder(out / "media", rec, media, special_files)
    _write_v2d(out / "v2d", rec, media, escape_abs=str(out.resolve().parent / "abs_escape"))
    _write_i2d(out / "i2d", rec, media)
    return rec.expect


__all__ = ["Expectation", "LAYOUTS", "make_bad_corpus", "png_bomb", "video_bomb"]
