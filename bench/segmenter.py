"""Seconds per 16-frame clip of the TrajTok ``paper`` segmenter as a labeller, on CPU.

Next to it, on the same clip: the classical + flow default and directsam + sam2
(at the reduced model input of ``bench/backends.py``). The paper segmenter has
random weights (nothing comes from a hub); it is saved as a real
``train-segmenter`` checkpoint and loaded through ``--segmenter trajtok``'s own
loader, so the timing covers exactly what annotate runs: one forward pass per
clip, clips linked by IoU.

Usage: python bench/segmenter.py [--frames 16] [--reduced 256] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backends  # noqa: E402  (bench/backends.py: the clip, checkpoints and model labeller)

from dataengine.config import build_annotate_config  # noqa: E402
from dataengine.stages.labeller import Labeller  # noqa: E402


def paper_checkpoint(d: Path) -> str:
    import torch
    from trajtok.checkpoint import save_segmenter
    from trajtok.models.segmenter import build_segmenter
    from trajtok.presets import get_preset

    torch.manual_seed(0)
    return str(save_segmenter(build_segmenter(get_preset("paper").model), d / "paper.safetensors"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--reduced", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result: dict = {"clip": {"frames": args.frames}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = build_annotate_config()
        frames, keyframes, cuts = backends.clip(work / "clip.mp4", args.frames, base)
        result["classical+flow"] = backends.run(Labeller(base), frames, keyframes, cuts)
        ck = paper_checkpoint(work)
        t0 = time.perf_counter()
        labeller = Labeller(build_annotate_config(segmenter={"name": "trajtok", "checkpoint": ck}))
        load = time.perf_counter() - t0
        result["trajtok-paper"] = {**backends.run(labeller, frames, keyframes, cuts), "seconds_load": load}
        del labeller
        model = backends.model_config(backends.write_checkpoints(work), args.reduced)
        labeller = Labeller(model)
        backends.calibrate(labeller, frames[keyframes[0]])
        result[f"directsam+sam2@{args.reduced}"] = backends.run(labeller, frames, keyframes, cuts)
    base_s = result["classical+flow"]["seconds_clip"]
    print(f"clip: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]} (random weights, CPU)")
    for name, r in result.items():
        if name == "clip":
            continue
        print(f"{name:22s} {r['seconds_clip']:8.2f} s/clip   ratio vs classical+flow = {r['seconds_clip'] / base_s:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
