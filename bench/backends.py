"""Per-clip seconds of the model labeller (DirectSAM + SAM 2) next to the CPU default (classical + flow).

One synthetic 16-frame clip is decoded at the engine's working resolution and
labelled (segment keyframes + track + merge, ``Labeller.label``) by:
  * classical + flow, the CPU default;
  * directsam + sam2 with the real architectures (DirectSAM = Segformer-B5,
    SAM 2.1 hiera-L) at a reduced model input size (``--reduced``, full clip);
  * SAM (v1, ViT-B) automatic masks on keyframes + flow, at segment-anything's
    fixed 1024 input (minutes per keyframe on a CPU: the first ``--sam-keyframes``
    are timed and the clip is scaled from them), and SAM 2's automatic mask
    generator (hiera-L) at the reduced input + flow: the two ``--segmenter sam``
    variants;
  * directsam + sam2 at the default input size 1024 (``--default``). On a CPU that is
    far too slow for a whole clip, so it times one keyframe and a short
    propagation and extrapolates linearly to the clip (a lower bound: SAM 2's
    memory grows to 7 frames over a clip).
Weights are random (no hub access): each model is written to a temp dir in its
real checkpoint format and loaded through the engine's loaders. With random
weights DirectSAM's boundary threshold is set at the median probability of the
first keyframe so it yields a realistic number of regions (SAM 2's cost grows
with the number of objects it tracks); the object count is printed. For the same
reason the SAM generators' predicted-IoU threshold is set so that about 10 % of
the candidate masks pass (random weights would otherwise keep none, or, with the
filters off, send all ~3000 masks per image through RLE and NMS), stability off.

Usage: python bench/backends.py [--frames 16] [--reduced 256] [--sam-keyframes 1] [--default] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataengine.config import AnnotateConfig, build_annotate_config  # noqa: E402
from dataengine.media.decode import decode_media  # noqa: E402
from dataengine.stages.keyframes import detect_keyframes  # noqa: E402
from dataengine.stages.labeller import Labeller  # noqa: E402
from dataengine.tools.synth import write_video  # noqa: E402

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"


def write_checkpoints(d: Path) -> dict[str, str]:
    import torch
    from sam2.build_sam import build_sam2
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    # DirectSAM's published architecture: Segformer-B5 with a one-channel (boundary) head.
    b5 = SegformerConfig(num_labels=1, depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512],
                         num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=768)
    SegformerForSemanticSegmentation(b5).save_pretrained(d / "directsam")
    # Parameter shapes do not depend on image_size, so one checkpoint serves every size.
    torch.save({"model": build_sam2(SAM2_CONFIG, None, device="cpu").state_dict()}, d / "sam2.pt")
    return {"directsam": str(d / "directsam"), "sam2": str(d / "sam2.pt")}


def write_sam_checkpoint(d: Path) -> str:
    """SAM (v1) ViT-B, random weights, as the plain state dict segment-anything publishes (~360 MB)."""
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), d / "sam_vit_b.pth")
    return str(d / "sam_vit_b.pth")


def clip(path: Path, frames: int, cfg: AnnotateConfig) -> tuple[np.ndarray, list[int], list[int]]:
    write_video(path, seed=5, n_frames=frames * 3, width=256, height=192)
    cfg.decode.frames = frames
    media = decode_media(path.read_bytes(), "video", cfg.decode)
    keyframes, cuts = detect_keyframes(media.frames, cfg.keyframes)
    return media.frames, keyframes, cuts


def model_config(ck: dict[str, str], size: int) -> AnnotateConfig:
    return build_annotate_config(segmenter={"name": "directsam", "checkpoint": ck["directsam"], "resolution": size},
                                 tracker={"name": "sam2", "checkpoint": ck["sam2"], "sam2_config": SAM2_CONFIG,
                                          "image_size": size})


def sam_config(ck: dict[str, str], sam_type: str, size: int) -> AnnotateConfig:
    """``--segmenter sam`` (v1 from its checkpoint, or SAM 2's generator) with the flow tracker."""
    seg = {"name": "sam", "sam_type": sam_type, "stability_thresh": 0.0}
    if sam_type == "sam2":
        seg.update(checkpoint=ck["sam2"], sam2_config=SAM2_CONFIG, resolution=size)
    else:
        seg.update(checkpoint=ck["sam"])
    return build_annotate_config(segmenter=seg)


def calibrate_sam(labeller: Labeller, frame: np.ndarray, keep: float = 0.1) -> None:
    """Set the generator's IoU threshold to pass ``keep`` of the masks a 4x4 point grid yields."""
    generator = labeller.segmenter.generator
    probe = type(generator)(generator.predictor.model, points_per_side=4, pred_iou_thresh=0.0,
                            stability_score_thresh=0.0, box_nms_thresh=1.0)
    if hasattr(generator.predictor, "_bb_feat_sizes"):   # SAM 2 at a non-1024 input
        probe.predictor._bb_feat_sizes = generator.predictor._bb_feat_sizes
    ious = [m["predicted_iou"] for m in probe.generate(np.ascontiguousarray(frame))]
    generator.pred_iou_thresh = float(np.quantile(ious, 1 - keep)) if ious else 0.0


def calibrate(labeller: Labeller, frame: np.ndarray) -> None:
    seg = labeller.segmenter
    seg.cfg.boundary_threshold = float(np.median(seg.boundary_probability(frame[None])))


def run(labeller: Labeller, frames, keyframes, cuts) -> dict:
    t0 = time.perf_counter()
    res = labeller.label(frames, keyframes, cuts)
    total = time.perf_counter() - t0
    return {"seconds_clip": total, "seconds_segment": res.seconds_segment, "seconds_track": res.seconds_track,
            "objects": int(np.count_nonzero(np.unique(res.labels[keyframes[0]]))),
            "trajectories": int(np.count_nonzero(np.unique(res.labels)))}


def sam_v1_estimate(ck: dict[str, str], frames, keyframes, cuts, measured: int) -> dict:
    """SAM (v1) runs at segment-anything's fixed 1024 input, minutes per keyframe on a CPU: time the
    first ``measured`` keyframes (all when ``measured`` >= their number) and scale to the clip."""
    labeller = Labeller(sam_config(ck, "auto", 1024))
    calibrate_sam(labeller, frames[keyframes[0]])
    thresh = labeller.segmenter.generator.pred_iou_thresh
    if measured >= len(keyframes):
        return {**run(labeller, frames, keyframes, cuts), "pred_iou_thresh": thresh}
    t0 = time.perf_counter()
    labels = labeller.segmenter.segment(frames[keyframes[:measured]])
    per_keyframe = (time.perf_counter() - t0) / measured
    span = keyframes[1] if len(keyframes) > 1 else len(frames)   # frames up to the next keyframe
    t0 = time.perf_counter()
    labeller.tracker.track(frames[:span], labels[0])
    per_tracked_frame = (time.perf_counter() - t0) / max(1, span - 1)
    return {"seconds_sam_keyframe": per_keyframe, "keyframes_measured": measured, "pred_iou_thresh": thresh,
            "objects": int(np.count_nonzero(np.unique(labels[0]))),
            "seconds_clip_estimate": len(keyframes) * per_keyframe + (len(frames) - 1) * per_tracked_frame}


def default_estimate(ck: dict[str, str], frames, keyframes, objects: int) -> dict:
    """Time DirectSAM on one keyframe and SAM 2 over 3 frames at 1024; extrapolate to the clip."""
    import torch

    t0 = time.perf_counter()
    labeller = Labeller(model_config(ck, 1024))
    t_load = time.perf_counter() - t0
    calibrate(labeller, frames[keyframes[0]])
    t0 = time.perf_counter()
    labels0 = labeller.segmenter.segment(frames[keyframes[:1]])[0]
    t_segment = time.perf_counter() - t0
    tracker = labeller.tracker
    with torch.inference_mode():
        t0 = time.perf_counter()
        tracker.predictor.forward_image(tracker.images(frames[:1]))
        t_backbone = time.perf_counter() - t0
    n = min(2, max(1, int(labels0.max())))
    keep = np.where(labels0 <= n, labels0, 0)
    t0 = time.perf_counter()
    tracker.track(frames[:3], keep)
    t_track = time.perf_counter() - t0
    # 3 frames: 3 backbone passes plus 2 propagated frames of n objects.
    per_object_frame = max(0.0, t_track - 3 * t_backbone) / (2 * n)
    tracked_frames = len(frames) - 1
    estimate = len(keyframes) * t_segment + tracked_frames * (t_backbone + objects * per_object_frame)
    return {"seconds_load": t_load, "seconds_directsam_keyframe": t_segment, "seconds_sam2_backbone_frame": t_backbone,
            "seconds_sam2_per_object_frame": per_object_frame, "objects_assumed": objects,
            "seconds_clip_estimate": estimate}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--reduced", type=int, default=256, help="model input side of the reduced run (multiple of 32)")
    ap.add_argument("--default", action="store_true", help="also time the default 1024 input (minutes on a CPU)")
    ap.add_argument("--sam-keyframes", type=int, default=1,
                    help="SAM (v1) keyframes to time before scaling to the clip (a large value times them all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch

    result: dict = {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = build_annotate_config()
        frames, keyframes, cuts = clip(work / "clip.mp4", args.frames, base)
        result["clip"] = {"frames": len(frames), "height": frames.shape[1], "width": frames.shape[2],
                          "keyframes": keyframes}
        result["classical+flow"] = run(Labeller(base), frames, keyframes, cuts)
        t0 = time.perf_counter()
        ck = {**write_checkpoints(work), "sam": write_sam_checkpoint(work)}
        result["seconds_write_random_checkpoints"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labeller = Labeller(model_config(ck, args.reduced))
        load = time.perf_counter() - t0
        calibrate(labeller, frames[keyframes[0]])
        result[f"directsam+sam2@{args.reduced}"] = {**run(labeller, frames, keyframes, cuts), "seconds_load": load}
        del labeller
        t0 = time.perf_counter()
        labeller = Labeller(sam_config(ck, "sam2", args.reduced))
        load = time.perf_counter() - t0
        calibrate_sam(labeller, frames[keyframes[0]])
        result[f"sam2-generator@{args.reduced}+flow"] = {
            **run(labeller, frames, keyframes, cuts), "seconds_load": load,
            "pred_iou_thresh": labeller.segmenter.generator.pred_iou_thresh}
        del labeller
        result["sam(vit_b)@1024+flow"] = sam_v1_estimate(ck, frames, keyframes, cuts, args.sam_keyframes)
        if args.default:
            objects = result[f"directsam+sam2@{args.reduced}"]["objects"]
            result["directsam+sam2@1024"] = default_estimate(ck, frames, keyframes, objects)

    c = result["clip"]
    print(f"clip: {c['frames']} frames {c['width']}x{c['height']}, keyframes {c['keyframes']}; "
          f"torch threads {result['torch_threads']}, load average {result['load_average']:.1f}")
    for name in ("classical+flow", f"directsam+sam2@{args.reduced}", f"sam2-generator@{args.reduced}+flow",
                 "sam(vit_b)@1024+flow"):
        r = result[name]
        if "seconds_clip_estimate" in r:
            print(f"{name:24s} {r['seconds_clip_estimate']:8.1f} s/clip  ESTIMATE: {r['seconds_sam_keyframe']:.1f} "
                  f"s/keyframe (SAM automatic masks, 32x32 points) x {len(keyframes)} keyframes + flow")
            continue
        print(f"{name:24s} {r['seconds_clip']:8.2f} s/clip  (segment {r['seconds_segment']:.2f} s, "
              f"track {r['seconds_track']:.2f} s; {r['objects']} objects on the first keyframe)")
    if args.default:
        r = result["directsam+sam2@1024"]
        print(f"{'directsam+sam2@1024':24s} {r['seconds_clip_estimate']:8.1f} s/clip  ESTIMATE (linear lower bound): "
              f"DirectSAM {r['seconds_directsam_keyframe']:.1f} s/keyframe, SAM 2 backbone "
              f"{r['seconds_sam2_backbone_frame']:.1f} s/frame + {r['seconds_sam2_per_object_frame']:.2f} s "
              f"per object-frame x {r['objects_assumed']} objects")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
