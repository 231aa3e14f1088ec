"""Storage: bytes per annotated frame of our masks (COCO RLE in the traj member) vs PNG id maps.

For every sample of a trajectory dataset the label maps are decoded from its
traj member (``traj.json.gz`` of format v2, ``traj.json`` of v1) and re-encoded
as one PNG id map per frame (8-bit when ids fit, 16-bit otherwise; zlib level
9, the smallest PNG OpenCV writes), the way panoptic video datasets usually
ship masks. Reported per annotated frame: the member's bytes as stored, the
same JSON uncompressed, PNG bytes, stored/PNG ratio, and the whole shard
(media and metadata included) for scale; plus how much of the JSON is RLE
counts and how many of its masks are empty (SA-V layout: every trajectory
has an entry in every frame).

Usage: python bench/storage.py [DATASET_DIR ...] [--json FILE]
       (no directory: annotates a fresh synthetic corpus and also measures its ground truth)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataengine.format.shards import iter_tar_members, list_shards  # noqa: E402
from dataengine.format.trajformat import MEMBERS, decode_member, dumps, traj_to_labels  # noqa: E402


def png_bytes(labels: np.ndarray) -> int:
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    total = 0
    for frame in labels:
        ok, buf = cv2.imencode(".png", frame.astype(dtype), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        total += len(buf)
    return total


def measure(directory: Path) -> dict:
    frames = traj_bytes = json_bytes = png_total = shard_bytes = samples = counts_bytes = entries = empty = 0
    sizes = set()
    for shard in list_shards(directory):
        shard_bytes += shard.stat().st_size
        for _, ext, data in iter_tar_members(shard):
            if ext not in MEMBERS:
                continue
            traj = decode_member(ext, data)
            labels = traj_to_labels(traj)
            samples += 1
            frames += labels.shape[0]
            traj_bytes += len(data)
            json_bytes += len(dumps(traj))
            for row in traj["masklet"]:
                for rle in row:
                    entries += 1
                    counts_bytes += len(rle["counts"])
            empty += sum(a == 0 for t in traj["trajectories"] for a in t["area"])
            png_total += png_bytes(labels)
            sizes.add(f"{traj['width']}x{traj['height']}")
    if not frames:
        raise ValueError(f"{directory}: no annotated frames")
    return {"dataset": str(directory), "samples": samples, "frames": frames, "mask_sizes": sorted(sizes),
            "traj_json_bytes_per_frame": traj_bytes / frames, "json_bytes_per_frame": json_bytes / frames,
            "png_bytes_per_frame": png_total / frames,
            "ratio_traj_vs_png": traj_bytes / png_total, "shard_bytes_per_frame": shard_bytes / frames,
            "rle_counts_bytes_per_frame": counts_bytes / frames, "masks_per_frame": entries / frames,
            "empty_mask_share": empty / max(1, entries)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", type=Path, nargs="*")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        datasets = args.datasets
        if not datasets:
            from dataengine.config import build_annotate_config, load_source
            from dataengine.tools.synth import make_corpus
            from pipelines.annotate import annotate

            work = Path(tmp)
            make_corpus(work / "corpus", videos=6, images=4, seed=0)
            annotate(build_annotate_config(source=vars(load_source("local", str(work / "corpus" / "media")))),
                     str(work / "annotated"), use_ray=False)
            datasets = [work / "annotated", work / "corpus" / "gt"]
        rows = [measure(d) for d in datasets]
    for r in rows:
        print(f"{r['dataset']}: {r['samples']} samples, {r['frames']} frames at {', '.join(r['mask_sizes'][:3])}"
              f"{' ...' if len(r['mask_sizes']) > 3 else ''}")
        print(f"    traj member {r['traj_json_bytes_per_frame']:6.0f} B/frame (JSON {r['json_bytes_per_frame']:.0f}"
              f" uncompressed)   PNG id maps "
              f"{r['png_bytes_per_frame']:8.0f} B/frame   ratio = {r['ratio_traj_vs_png']:.3f}   "
              f"(whole shard incl. media {r['shard_bytes_per_frame']:.0f} B/frame)")
        print(f"    of which RLE counts {r['rle_counts_bytes_per_frame']:.0f} B/frame; {r['masks_per_frame']:.1f} "
              f"masks/frame, {100 * r['empty_mask_share']:.0f}% of them empty (absent trajectory)")
    result = {"datasets": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
