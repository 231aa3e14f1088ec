"""A tiny synthetic trajectory-shard dataset: coloured rectangles moving on a flat background.

For tests and smoke runs on a CPU: H.264 mp4s written with PyAV and PNG images,
packed with the engine's own shard writer, labels encoded with its codec. Each
rectangle is one trajectory with a distinct colour (``PALETTE[id]``), so a test
can check that frames and label maps still agree after augmentation.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dataengine import shards as shard_io
from dataengine import trajformat

# id -> RGB; id 1 is the background trajectory (coverage 1.0).
PALETTE = np.array([[0, 0, 0], [40, 40, 40], [230, 30, 30], [30, 200, 40], [40, 60, 230],
                    [230, 220, 30], [220, 40, 220], [40, 220, 220]], dtype=np.uint8)


def render_clip(frames: int, height: int, width: int, n_objects: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> rgb uint8 ``[T, H, W, 3]`` and labels int32 ``[T, H, W]`` (1 = background, 2.. = boxes)."""
    labels = np.ones((frames, height, width), dtype=np.int32)
    for obj in range(n_objects):
        h, w = int(rng.integers(height // 5, height // 2)), int(rng.integers(width // 5, width // 2))
        y0, x0 = rng.uniform(0, height - h), rng.uniform(0, width - w)
        vy, vx = rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)
        for t in range(frames):
            y = int(np.clip(y0 + vy * t, 0, height - h))
            x = int(np.clip(x0 + vx * t, 0, width - w))
            labels[t, y:y + h, x:x + w] = obj + 2
    return PALETTE[labels], labels


def encode_mp4(rgb: np.ndarray, fps: int = 10) -> bytes:
    """H.264 mp4 bytes (near-lossless, so colours survive for alignment checks)."""
    import av
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = rgb.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "4", "preset": "ultrafast"}
        for frame in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode_png(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def make_sample(key: str, rgb: np.ndarray, labels: np.ndarray, video: bool, annotate_every: int = 1,
                fps: int = 10) -> shard_io.ShardSample:
    T, H, W = labels.shape
    if video:
        idx = list(range(0, T, annotate_every))
        media, ext = encode_mp4(rgb, fps), "mp4"
        traj = trajformat.labels_to_traj(labels[idx], idx, [i / fps for i in idx], [0])
    else:
        media, ext = encode_png(rgb[0]), "png"
        traj = trajformat.labels_to_traj(labels[:1], [0], [0.0], [0])
    meta = {"source": "synthetic", "media_type": "video" if video else "image", "width": W, "height": H,
            "fps": fps if video else 0, "n_frames": T if video else 1}
    return shard_io.ShardSample(key=key, media_ext=ext, media=media, caption=f"synthetic {key}",
                                meta=meta, traj=traj)


def write_synthetic_dataset(out: str | Path, videos: int = 4, images: int = 2, frames: int = 12,
                            height: int = 48, width: int = 64, objects: int = 3,
                            samples_per_shard: int = 3, annotate_every: int = 1, seed: int = 0) -> list[Path]:
    """Write ``videos + images`` samples as ``traj-XXXXXX.tar`` shards in ``out``; returns the paths."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(videos):
        rgb, lab = render_clip(frames, height, width, objects, rng)
        samples.append(make_sample(f"vid{i:04d}", rgb, lab, True, annotate_every))
    for i in range(images):
        rgb, lab = render_clip(1, height, width, objects, rng)
        samples.append(make_sample(f"img{i:04d}", rgb, lab, False))
    out = Path(out)
    paths = []
    for n, start in enumerate(range(0, len(samples), samples_per_shard)):
        path = out / shard_io.shard_name("traj", n)
        shard_io.write_shard(path, samples[start:start + samples_per_shard])
        paths.append(path)
    return paths


def toy_preset(image_size: int = 32, frames: int = 4, batch_size: int = 2):
    """The ``tiny`` preset shrunk further (1-block ConvNeXt, 32-d queries) for second-long tests."""
    from .presets import get_preset
    P = get_preset("tiny")
    P.name = "toy"
    P.model.backbone_kwargs = {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}
    P.model.image_size, P.model.frames = image_size, frames
    P.model.dim, P.model.num_queries, P.model.heads = 32, 8, 4
    P.encoder.in_dim, P.encoder.dim, P.encoder.out_dim, P.encoder.heads = 32, 32, 48, 4
    P.data.batch_size, P.data.shuffle_buffer = batch_size, 8
    P.train.warmup_steps, P.train.max_steps, P.train.num_workers = 2, 20, 0
    return P.sync()
