"""The video decoder returns the frames it is asked for, at their own times, and never leaves the
bytes it was given: encodings where random access used to return other frames, variable frame
rates, a playlist polyglot, and a TIFF whose tile is a decompression bomb."""
from __future__ import annotations

import http.server
import io
import struct
import threading
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest

from dataengine.config import DecodeConfig
from dataengine.media.decode import DecodeError, decode_frames, decode_image, decode_media, sample_indices

W, H = 64, 48


def numbered(i: int) -> np.ndarray:
    """A frame whose 8 vertical bars (black / white) spell ``i`` in binary: readable after lossy coding."""
    img = np.zeros((H, W, 3), np.uint8)
    for bit in range(8):
        if i >> bit & 1:
            img[:, bit * 8:(bit + 1) * 8] = 255
    return img


def read_number(frame: np.ndarray) -> int:
    bars = frame.reshape(frame.shape[0], 8, -1, 3).mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(8) if bars[b] > 127))


def encode(n: int, fmt: str, codec: str = "libx264", options: dict | None = None, pts_ms: list[int] | None = None,
           rate: int = 25) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = options or {}
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(numbered(i), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


CASES = {   # encodings whose random access returned other frames (decord 0.6, its FFmpeg 4.1)
    "mpegts": (37, "mpegts", "libx264", {}),
    "avi keyint 10": (25, "avi", "libx264", {"g": "10", "keyint_min": "10"}),
    "mkv hevc open gop": (25, "matroska", "libx265", {"x265-params": "keyint=15:open-gop=1:log-level=none"}),
    "mp4 mpeg4 b-frames": (25, "mp4", "mpeg4", {"bf": "2", "g": "8"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sampled_frames_are_the_frames_asked_for(name):
    n, fmt, codec, options = CASES[name]
    try:
        data = encode(n, fmt, codec, options)
    except av.error.FFmpegError as e:     # an encoder this FFmpeg build lacks is not the decoder's fault
        pytest.skip(f"{codec} not in this PyAV build: {e}")
    media = decode_media(data, "video", DecodeConfig(frames=8))
    assert media.n_source_frames == n
    assert media.frame_indices == sample_indices(n, 8)
    assert [read_number(f) for f in media.frames] == media.frame_indices
    # the reader of shard media gives the same frames, in the order asked
    wanted = [media.frame_indices[k] for k in (3, 0, 7)]
    frames = decode_frames(data, "video", wanted, (W, H))
    assert [read_number(f) for f in frames] == wanted
    with pytest.raises(DecodeError, match="past the video"):
        decode_frames(data, "video", [n + 5], (W, H))


def test_variable_frame_rate_keeps_each_frames_own_time():
    pts = [0, 40, 80, 120, 160, 200, 240, 280] + [1280 + 1000 * k for k in range(8)]
    data = encode(16, "matroska", pts_ms=pts)
    media = decode_media(data, "video", DecodeConfig(frames=16))
    assert [read_number(f) for f in media.frames] == list(range(16))
    assert media.timestamps == pytest.approx([p / 1000 for p in pts], abs=1e-3)


def test_a_playlist_inside_a_transport_stream_opens_no_url():
    """An HLS header padded to one TS packet, then a real MPEG-TS: accepted as MPEG-TS, decoded
    from its own bytes; the playlist's URL is never requested."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):              # noqa: N802 (the stdlib's name)
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        head = (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n"
                f"http://127.0.0.1:{server.server_port}/seg.ts\n#EXT-X-ENDLIST\n").encode()
        data = head.ljust(188, b"\n") + encode(12, "mpegts")
        try:
            media = decode_media(data, "video", DecodeConfig(frames=4))
            assert [read_number(f) for f in media.frames] == media.frame_indices
        except DecodeError:
            pass                        # refusing it is fine too; fetching is not
        try:
            decode_frames(data, "video", [0, 1], (W, H))
        except DecodeError:
            pass
    finally:
        server.shutdown()
    assert hits == []


def tiff_with_tile(tile: int) -> bytes:
    """A 16 x 16 RGB TIFF whose one deflate tile is ``tile`` x ``tile`` pixels of zeros."""
    payload = zlib.compress(b"\0" * (tile * tile * 3), 9)
    entries = [(256, 3, 1, 16), (257, 3, 1, 16), (258, 3, 3, None), (259, 3, 1, 8), (262, 3, 1, 2),
               (277, 3, 1, 3), (284, 3, 1, 1), (322, 4, 1, tile), (323, 4, 1, tile), (324, 4, 1, None),
               (325, 4, 1, len(payload))]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    bits_at, data_at = extra_at, extra_at + 6
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_at
        if tag == 324:
            value = data_at
        out += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 and count == 1
                                                         else struct.pack("<I", value))
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8) + payload
    return bytes(out)


def test_a_tiff_tile_larger_than_the_pixel_limit_is_refused_before_decoding():
    cfg = DecodeConfig(max_source_pixels=1_000_000)
    assert decode_image(tiff_with_tile(16), cfg).frames.shape == (1, 16, 16, 3)     # a sound tiny TIFF decodes
    with pytest.raises(DecodeError, match="TIFF block of 2048x2048"):
        decode_image(tiff_with_tile(2048), cfg)
