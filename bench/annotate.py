"""Annotate throughput vs decode-only throughput, and peak memory vs video length.

Prints ratios measured in one run on the same generated corpus:
  * annotate frames/s (decode + keyframes + segment + track + merge + RLE) next to
    decode-only frames/s (read + decode + keyframes), in-process, one core;
  * peak RSS of annotating one video 10x longer vs one short video, each in a
    fresh process (`trajdata annotate --no-ray`).

Usage: python bench/annotate.py [--videos 6] [--frames 16] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from dataengine.stages.annotate import read_and_decode, ref_to_row, run_local
from dataengine.config import build_annotate_config, load_source
from dataengine.stages.labeller import Labeller
from dataengine.sources import list_samples
from dataengine.tools.synth import make_corpus, write_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402  (bench/memory.py: peak RSS of a fresh annotate process)

def throughput(media: Path, frames: int) -> dict:
    cfg = build_annotate_config(source=vars(load_source("local", str(media))), decode={"frames": frames})
    refs = list(list_samples(cfg.source))
    t0 = time.perf_counter()
    decoded = [read_and_decode(ref_to_row(r), cfg) for r in refs]
    t_decode = time.perf_counter() - t0
    n_frames = sum(int(r["frames_spec"].split(",")[0]) for r in decoded if not r["error"])
    labeller = Labeller(cfg)
    t0 = time.perf_counter()
    rows = list(run_local(refs, cfg, labeller))
    t_annotate = time.perf_counter() - t0
    errors = [r["error"] for r in rows if r["error"]]
    return {"samples": len(refs), "frames": n_frames, "errors": len(errors),
            "decode_fps": n_frames / t_decode, "annotate_fps": n_frames / t_annotate,
            "ratio_annotate_vs_decode": (n_frames / t_annotate) / (n_frames / t_decode)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_corpus(work / "corpus", videos=args.videos, images=0, seed=0)
        tp = throughput(work / "corpus" / "media", args.frames)
        write_video(work / "short.mp4", seed=3, n_frames=48)
        write_video(work / "long.mp4", seed=3, n_frames=480)
        short = measure(work / "short.mp4", work, args.frames)["peak_kb"]
        long = measure(work / "long.mp4", work, args.frames)["peak_kb"]
    result = {**tp, "peak_rss_short_mb": short / 1024, "peak_rss_long_mb": long / 1024,
              "ratio_memory_long_vs_short": long / short}
    print(f"corpus: {tp['samples']} videos, {tp['frames']} sampled frames, {tp['errors']} errors")
    print(f"decode-only   {tp['decode_fps']:8.1f} frames/s")
    print(f"annotate      {tp['annotate_fps']:8.1f} frames/s   ratio annotate/decode = {tp['ratio_annotate_vs_decode']:.3f}")
    print(f"peak RSS      short {short / 1024:.0f} MB, 10x longer {long / 1024:.0f} MB   ratio = {long / short:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
