"""Peak memory of annotating a video 10x longer than another: is memory bounded by clip length?

Each measurement runs in a fresh Python process (in-process annotate, no Ray)
over a folder holding one synthetic video, and reports that process's peak RSS
(``ru_maxrss``) plus its RSS just before annotating (imports done, labeller
built), so the growth caused by the video itself is visible too.

Cases: the project's synthetic video, short (48 frames) and long (480 frames),
with the default 16 sampled frames and with ``--frames 64``; and a
high-bitrate pair (lossless noise, ~1 MB a second of video at 320x240) with the
same frame counts, where the file itself is tens of MB, so a decoder that loads
whole files shows up. The target is peak(long) / peak(short) <= 1.3 in every case.

Usage: python bench/memory.py [--json FILE] [--width 256 --height 192]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.3

CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[4])
from dataengine.config import build_annotate_config, load_source
from dataengine.stages.labeller import Labeller
from pipelines.annotate import annotate
import psutil
cfg = build_annotate_config(source=vars(load_source("local", sys.argv[1])), decode={"frames": int(sys.argv[3])})
Labeller(cfg)   # imports and builds the backends once, so "before" includes them
before = psutil.Process().memory_info().rss
totals = annotate(cfg, sys.argv[2], use_ray=False)
print(json.dumps({"before_kb": before // 1024, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "status": totals["by_status"], "torch_loaded": "torch" in sys.modules}))
"""


def write_noise_video(path: Path, n_frames: int, width: int = 320, height: int = 240) -> None:
    """Lossless H.264 of a drifting noise pattern: a worst case for file size per frame."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "0", "threads": "1"}
        for t in range(n_frames):
            rgb = np.roll(base, 2 * t, axis=1) ^ rng.integers(0, 32, base.shape, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def measure(video: Path, work: Path, frames: int) -> dict:
    media = work / f"media-{video.stem}-{frames}"
    media.mkdir()
    (media / video.name).symlink_to(video)
    out = subprocess.run([sys.executable, "-c", CHILD, str(media), str(work / f"out-{video.stem}-{frames}"),
                          str(frames), str(ROOT)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["status"] != {"ok": 1}:
        raise RuntimeError(f"annotating {video.name} did not succeed: {result['status']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=48, help="frames of the short video")
    ap.add_argument("--long", type=int, default=480, help="frames of the long video")
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64], help="sampled frames settings")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dataengine.tools.synth import write_video

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = {
            "synthetic": (work / "synth-short.mp4", work / "synth-long.mp4"),
            "high-bitrate": (work / "noise-short.mp4", work / "noise-long.mp4"),
        }
        write_video(videos["synthetic"][0], seed=3, n_frames=args.short, width=args.width, height=args.height)
        write_video(videos["synthetic"][1], seed=3, n_frames=args.long, width=args.width, height=args.height)
        write_noise_video(videos["high-bitrate"][0], args.short)
        write_noise_video(videos["high-bitrate"][1], args.long)
        cases = [("synthetic", f) for f in args.frames] + [("high-bitrate", args.frames[0])]
        for kind, frames in cases:
            short, long = videos[kind]
            s, lg = measure(short, work, frames), measure(long, work, frames)
            rows.append({
                "video": kind, "frames": frames,
                "short_file_mb": short.stat().st_size / 2**20, "long_file_mb": long.stat().st_size / 2**20,
                "short_peak_mb": s["peak_kb"] / 1024, "long_peak_mb": lg["peak_kb"] / 1024,
                "short_growth_mb": (s["peak_kb"] - s["before_kb"]) / 1024,
                "long_growth_mb": (lg["peak_kb"] - lg["before_kb"]) / 1024,
                "ratio": lg["peak_kb"] / s["peak_kb"], "torch_loaded": s["torch_loaded"] or lg["torch_loaded"],
            })
    result = {"short_frames": args.short, "long_frames": args.long, "target": TARGET,
              "cases": rows, "worst_ratio": max(r["ratio"] for r in rows),
              "pass": all(r["ratio"] <= TARGET for r in rows)}
    print(f"videos: short {args.short} frames, long {args.long} frames; peak RSS of a fresh process each "
          f"(growth = peak - RSS before annotating)")
    for r in rows:
        print(f"{r['video']:>12s} --frames {r['frames']:3d}: short {r['short_file_mb']:5.1f} MB file -> "
              f"peak {r['short_peak_mb']:6.1f} MB (+{r['short_growth_mb']:5.1f}); long {r['long_file_mb']:5.1f} MB "
              f"file -> peak {r['long_peak_mb']:6.1f} MB (+{r['long_growth_mb']:5.1f})   ratio {r['ratio']:.3f}")
    if any(r["torch_loaded"] for r in rows):
        print("note: torch was imported during the run (webdataset, imported to write shards, pulls it in); "
              "it is most of the growth and is the same for every video")
    print(f"worst ratio {result['worst_ratio']:.3f} (target <= {TARGET}): {'PASS' if result['pass'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
