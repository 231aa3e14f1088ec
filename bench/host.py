"""Host CPU per clip of the model labeller's post-processing (issue 15): this tree against a baseline, one run.

On the H200 the directsam + sam2 labeller ran out of CPUs before it ran out of GPU (16 packed processes,
bench/REPORT.md), so this measures, on a CPU, the host work of one clip that does not depend on the
models' speed, given outputs like theirs, in CPU seconds with one thread (as one packed process has):

  * ``post random`` / ``post edges``: DirectSAM's boundary map -> regions (``regions_from_boundary``:
    connected components, small regions dropped, boundary pixels filled from the nearest region) for the
    clip's 8 keyframes (every 2 frames, as the H200 runs placed them), on two kinds of map: a random-weight
    DirectSAM's own output (a small Segformer at input 512, threshold calibrated to ``--objects`` regions on
    the first keyframe, as bench/gpu.py does: half the frame or more is boundary) and the synth ground
    truth's outlines, blurred (thin boundaries, as trained weights give);
  * ``flows``: the 15 DIS flows ``Labeller.join_common_fate`` computes when the tracker made none (SAM 2),
    a DIS object each; ``flows 1 DIS``: the same flows from one DIS object (not what the labeller does
    today: what it would save);
  * ``fate ...``: ``grouping.common_fate_lut`` with the default MergeConfig, and ``absorb ...``:
    ``grouping.absorb_short`` on the joined tracks, for two sets of tracks (16 frames at 512x288):
    ``model`` -- DirectSAM (random weights, as above) on keyframes every 2 frames carried by the flow
    tracker, with 3 regions of every keyframe made new tracks that end after 2 frames (SAM 2 with random
    weights loses a keyframe's new regions at once: the short tracks ``absorb_short`` removes);
    ``classical`` -- the CPU default labeller's tracks.
A clip's total: its maps' post-processing + flows + ``fate model`` + ``absorb model``.

The clip is the one bench/gpu.py labels (a 640x360 photo-style synth video decoded at 512 px). The
baseline (``--baseline``: a git revision, extracted with ``git archive``, or a directory; default: the
commit before this benchmark's fast paths, ``BASELINE_REF``) and this tree each run in their own worker process, rounds interleaved, so both see
the same machine load; each phase's outputs are hashed and the two trees' hashes compared (the fast paths
must not change a label).

Usage: python bench/host.py [--baseline REV|DIR|none] [--rounds 5] [--repeat 3] [--objects 24] [--json FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
# phase -> what it runs on; a clip like the H200 runs' is "post random" + flows + "fate model" + "absorb model"
PHASES = ("post random", "post edges", "flows", "flows 1 DIS", "fate model", "fate classical", "absorb model",
          "absorb classical")
CLIPS = {"random weights (the H200 runs)": ("post random", "flows", "fate model", "absorb model"),
         "thin boundaries (trained weights)": ("post edges", "flows", "fate model", "absorb model")}
KEYFRAMES = list(range(0, 16, 2))
EDGE_THRESHOLD = 0.25   # on the blurred outlines (peak 1): boundaries 2-3 px wide, as trained DirectSAM draws them


# ------------------------------------------------------------------ workload (built once, this tree)
def build_workload(out: Path, objects: int, size: int) -> dict:
    import cv2
    import numpy as np
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    sys.path.insert(0, str(ROOT))
    from dataengine.config import build_annotate_config
    from dataengine.media.decode import decode_media
    from dataengine.metrics.scores import trajectory_lengths
    from dataengine.stages.keyframes import detect_keyframes
    from dataengine.stages.labeller import Labeller
    from dataengine.tools.synth import write_video

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    video = out / "clip.mp4"
    gt = write_video(video, seed=300, n_frames=48, width=size * 5 // 4, height=size * 45 // 64 // 2 * 2)
    decode = {"frames": 16, "max_side": size}
    frames = decode_media(video.read_bytes(), "video", build_annotate_config(decode=decode).decode).frames
    h, w = frames.shape[1:3]
    # A random-weight DirectSAM (small Segformer, one boundary channel), threshold calibrated to `objects`.
    torch.manual_seed(0)
    seg = SegformerConfig(num_labels=1, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                          num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
    SegformerForSemanticSegmentation(seg).save_pretrained(out / "directsam")
    cfg = build_annotate_config(decode=decode, tracker={"name": "flow"},
                                segmenter={"name": "directsam", "checkpoint": str(out / "directsam"),
                                           "resolution": size})
    model = Labeller(cfg)
    probability = model.segmenter.boundary_probability(frames[KEYFRAMES])
    best = None
    for q in np.arange(0.05, 0.96, 0.05):
        model.segmenter.cfg.boundary_threshold = float(np.quantile(probability[0], q))
        n = int(model.segmenter.segment(frames[:1])[0].max())
        if best is None or abs(n - objects) < abs(best[1] - objects):
            best = (model.segmenter.cfg.boundary_threshold, n)
    model.segmenter.cfg.boundary_threshold = best[0]
    # Ground-truth outlines, blurred: the thin boundaries of trained weights (frame i of 16 ~ source 3 i).
    edges = []
    for k in KEYFRAMES:
        g = cv2.resize(gt[3 * k], (w, h), interpolation=cv2.INTER_NEAREST)
        line = np.zeros((h, w), np.float32)
        line[:, 1:][g[:, 1:] != g[:, :-1]] = 1
        line[1:][g[1:] != g[:-1]] = 1
        blurred = cv2.GaussianBlur(line, (0, 0), 1.0)
        edges.append(blurred / max(float(blurred.max()), 1e-6))

    def tracks(labeller, keyframes):
        captured = {}
        join = labeller.join_common_fate

        def capture(frames_, labels, cuts, flows=None):
            captured.update(labels=labels.copy(), cuts=list(cuts))
            return join(frames_, labels, cuts, flows)
        labeller.join_common_fate = capture
        labeller.label(frames, keyframes, [])
        return captured["labels"], captured["cuts"]

    model_tracks, model_cuts = tracks(model, KEYFRAMES)
    rng = np.random.default_rng(0)
    next_id = int(model_tracks.max()) + 1
    for k in KEYFRAMES:             # regions a keyframe starts and the tracker loses after 2 frames
        ids = np.unique(model_tracks[k][model_tracks[k] != 0])
        for i in rng.choice(ids, size=min(3, len(ids)), replace=False):
            model_tracks[k:k + 2][model_tracks[k:k + 2] == i] = next_id
            next_id += 1
    default = build_annotate_config(decode=decode)
    classical_tracks, classical_cuts = tracks(Labeller(default), detect_keyframes(frames, default.keyframes)[0])
    np.savez(out / "workload.npz", frames=frames, random_maps=probability, edge_maps=np.stack(edges),
             model_tracks=model_tracks, classical_tracks=classical_tracks)
    info = {"frames": list(frames.shape), "random_threshold": best[0], "random_regions_first_keyframe": best[1],
            "edge_threshold": EDGE_THRESHOLD, "model_cuts": model_cuts, "classical_cuts": classical_cuts}
    for name, t in (("model", model_tracks), ("classical", classical_tracks)):
        lengths = trajectory_lengths(t)
        info[f"{name}_ids"] = int(len(lengths))
        info[f"{name}_short"] = int((lengths < default.merge.min_track_frames).sum())
    # the settings both trees run with: this tree's, so a changed default compares code, not settings
    info["merge"] = dataclasses.asdict(default.merge)
    info["segmenter"] = {"min_area": default.segmenter.min_area, "max_regions": default.segmenter.max_regions}
    (out / "workload.json").write_text(json.dumps(info))
    return info


# ------------------------------------------------------------------ one tree's worker
def worker(tree: str, data: str, repeat: int) -> None:
    """Times each phase ``repeat`` times in this process with ``tree``'s dataengine; prints JSON."""
    sys.path.insert(0, tree)
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    from dataengine.backends.segmenters.directsam import regions_from_boundary
    from dataengine.backends.trackers.flow import frame_motion
    from dataengine.stages.grouping import absorb_short, apply_lut, common_fate_lut

    w = np.load(Path(data) / "workload.npz")
    info = json.loads((Path(data) / "workload.json").read_text())
    frames = w["frames"]
    m = SimpleNamespace(**info["merge"])                # the workload's settings, not this tree's defaults
    max_regions = info["segmenter"]["max_regions"]
    min_pixels = max(1, int(info["segmenter"]["min_area"] * frames[0, ..., 0].size))
    maps = {"random": [p > info["random_threshold"] for p in w["random_maps"]],
            "edges": [p > info["edge_threshold"] for p in w["edge_maps"]]}
    flows = {t: frame_motion(frames[t:t + 2], 0) for t in range(len(frames) - 1)}
    seconds = {p: 0.0 for p in PHASES}
    digest = {p: hashlib.sha1() for p in PHASES}

    def timed(phase, fn, *args):
        t0 = time.process_time()
        result = fn(*args)
        seconds[phase] += time.process_time() - t0
        return result

    for _ in range(repeat):
        for kind, boundaries in maps.items():
            for r in timed(f"post {kind}", lambda: [regions_from_boundary(b, min_pixels, max_regions)
                                                    for b in boundaries]):
                digest[f"post {kind}"].update(r.tobytes())
        for f in timed("flows", lambda: [frame_motion(frames[t:t + 2], 0) for t in range(len(frames) - 1)]):
            digest["flows"].update(f.tobytes())
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)   # what one DIS object per clip saves
        for f in timed("flows 1 DIS", lambda: [frame_motion(frames[t:t + 2], 0, dis=dis) for t in range(len(frames) - 1)]):
            digest["flows 1 DIS"].update(f.tobytes())
        for name in ("model", "classical"):
            tracks = w[f"{name}_tracks"]
            lut = timed(f"fate {name}", lambda: common_fate_lut(      # as Labeller.join_common_fate calls it
                tracks, flows, m.fate_tolerance, m.fate_min_frames, m.fate_max_share,
                moving_speed=m.fate_moving_speed, moving_share=m.fate_moving_share,
                moving_tolerance=m.fate_moving_tolerance))
            digest[f"fate {name}"].update(repr(sorted(lut.items())).encode())
            absorbed = timed(f"absorb {name}", absorb_short, apply_lut(tracks, lut), info[f"{name}_cuts"],
                             m.min_track_frames)
            digest[f"absorb {name}"].update(absorbed.tobytes())
    print(json.dumps({"seconds_per_clip": {p: s / repeat for p, s in seconds.items()},
                      "hash": {p: d.hexdigest() for p, d in digest.items()}}))


def run_worker(tree: Path, data: Path, repeat: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", str(tree), "--data", str(data), "--repeat", str(repeat)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"worker for {tree} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main
# The model labeller's host code before the fast paths this benchmark was written for (issue 15).
BASELINE_REF = "0b8352d"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE_REF,
                    help="git revision (or a directory holding a dataengine/ tree) to compare with, or 'none' "
                         f"(default: {BASELINE_REF}, the host code before the fast paths)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per tree (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of every phase inside one round (default 3)")
    ap.add_argument("--objects", type=int, default=24, help="regions the random DirectSAM is calibrated to")
    ap.add_argument("--size", type=int, default=512, help="decode size, the model input (default 512)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.data, args.repeat)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"current": ROOT}
        if Path(args.baseline).is_dir():        # a tree on disk (the tests pass this one)
            trees = {f"baseline {args.baseline}": Path(args.baseline), **trees}
        elif args.baseline != "none":
            base = tmp / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "dataengine"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                    capture_output=True, text=True, check=True).stdout.strip()
            trees = {f"baseline {commit}": base, **trees}
        t0 = time.perf_counter()
        info = build_workload(tmp, args.objects, args.size)
        print(f"workload ({time.perf_counter() - t0:.0f} s): frames {info['frames']}; random DirectSAM maps "
              f"{info['random_regions_first_keyframe']} regions on the first keyframe; tracks: model "
              f"{info['model_ids']} ids ({info['model_short']} short), classical {info['classical_ids']} ids "
              f"({info['classical_short']} short)", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        names = list(trees)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):    # alternate who goes first
                runs[name].append(run_worker(trees[name], tmp, args.repeat))
    result = {"workload": info, "rounds": args.rounds, "repeat": args.repeat, "trees": {}}
    for name, rows in runs.items():
        median = {p: statistics.median(r["seconds_per_clip"][p] for r in rows) for p in PHASES}
        median.update({clip: sum(median[p] for p in parts) for clip, parts in CLIPS.items()})
        result["trees"][name] = {"cpu_s_per_clip": median, "hash": rows[0]["hash"],
                                 "stable_hash": all(r["hash"] == rows[0]["hash"] for r in rows)}
    print(f"host CPU s per clip (median of {args.rounds} rounds x {args.repeat} repeats, one thread):")
    columns = list(PHASES)
    print(f"{'':26s}" + "".join(f"{p:>17s}" for p in columns))
    for name, t in result["trees"].items():
        print(f"{name:26s}" + "".join(f"{t['cpu_s_per_clip'][p]:17.4f}" for p in columns))
    if len(runs) == 2:
        (old, a), (new, b) = result["trees"].items()
        ratio = {p: a["cpu_s_per_clip"][p] / max(b["cpu_s_per_clip"][p], 1e-9) for p in a["cpu_s_per_clip"]}
        same = {p: a["hash"][p] == b["hash"][p] for p in PHASES}
        result["ratio_baseline_over_current"], result["identical"] = ratio, same
        print(f"{'ratio baseline / current':26s}" + "".join(f"{ratio[p]:17.2f}" for p in columns))
    for clip, parts in CLIPS.items():
        print(f"clip, {clip} ({' + '.join(parts)}): " + ", ".join(
            f"{name} {t['cpu_s_per_clip'][clip]:.4f} s" for name, t in result["trees"].items())
            + (f"; ratio {result['ratio_baseline_over_current'][clip]:.2f}" if len(runs) == 2 else ""))
    if len(runs) == 2:
        print("outputs identical: " + ", ".join(f"{p} {'yes' if s else 'NO'}" for p, s in result["identical"].items()))
    for name, t in result["trees"].items():
        print(f"{name}: flows from one DIS object {'equal' if t['hash']['flows'] == t['hash']['flows 1 DIS'] else 'DIFFER from'}"
              " a DIS object per flow")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
