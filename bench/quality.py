"""Label quality of the CPU default (classical + flow) on held-out synth corpora, and its cost.

For each style and held-out seed a corpus is generated (``make_corpus``: videos,
and images scored apart from them), every video and image is labelled in a child process exactly as ``trajdata
annotate`` does (decode, keyframes, ``Labeller.label``; default ``cpu``
preset), and the labels are scored against the exact ground truth with
``dataengine.metrics.scores.trajectory_recall``: strict recall@0.5, mean best IoU,
predicted ids per GT trajectory (fragmentation), predicted / GT mean
trajectory length, plus the number of predicted trajectories that cross a
scene cut (must be 0), and what the ids covering a GT trajectory are
(``covering_breakdown``: the best one, the object's own other pieces, ids
after a break, background or other objects' trajectories that bleed into it).
Seconds per clip are the labelling seconds (keyframe detection +
``Labeller.label``) per video, wall clock and CPU. Images (single-frame
samples, ``--images`` per seed) get the same strict recall, mean best IoU and
ids per GT object, pooled apart from the videos.

``--baseline-ref REF`` (a git commit of this repository) or ``--baseline-root
DIR`` (a source tree) labels the same corpora with that code too, in the same
run, interleaved video by video so machine load hits both alike; its labels
are scored by *this* tree's metrics.  The default baseline is the labeller as it
was before issue 10 (keyframe every 4 frames, one-to-one Hungarian merge).

Seeds >= 200 are held out: labeller settings are never tuned on them.

Usage: python bench/quality.py [--styles photo flat] [--seeds 200 201] [--videos 8] [--images 24]
                               [--baseline-ref REF | --baseline-root DIR | --no-baseline] [--json FILE]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataengine.metrics import scores as metrics  # noqa: E402
from dataengine.format.shards import read_dataset  # noqa: E402
from dataengine.tools.synth import make_corpus  # noqa: E402
from dataengine.format.trajformat import labels_at  # noqa: E402

# The labeller before issue 10 (the commit this work started from).
BASELINE_REF = "5b8e7ab"

# Runs with a given source tree first on sys.path: labels every video named on stdin (one
# "VIDEO<TAB>OUT.npz" a line), writes OUT.npz (labels, frame_indices) and one JSON line of timings.
CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
# Only the given tree: an editable install of another checkout must not fill in modules it lacks.
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
import numpy as np
from dataengine.config import build_annotate_config
if os.path.isdir(os.path.join(sys.argv[1], "dataengine", "media")):
    from dataengine.media.decode import decode_media
    from dataengine.stages.keyframes import detect_keyframes
    from dataengine.stages.labeller import Labeller
else:                                                # trees before the role-folder layout (f57dbbd)
    from dataengine.decode import decode_media
    from dataengine.keyframes import detect_keyframes
    from dataengine.labeller import Labeller
cfg = build_annotate_config("cpu")
for item in json.loads(sys.argv[3]):                 # --set section.key=value overrides
    key, value = item.split("=", 1)
    section, name = key.split(".")
    target = getattr(cfg, section)
    setattr(target, name, type(getattr(target, name))(value))
labeller = Labeller(cfg)
for line in sys.stdin:
    if not line.strip():
        continue
    path, out = line.rstrip("\n").split("\t")
    kind = "image" if path.endswith((".jpg", ".jpeg", ".png")) else "video"
    media = decode_media(open(path, "rb").read(), kind, cfg.decode)
    w0, c0 = time.perf_counter(), time.process_time()
    keyframes, cuts = detect_keyframes(media.frames, cfg.keyframes)
    result = labeller.label(media.frames, keyframes, cuts)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    name = os.path.splitext(os.path.basename(path))[0]
    np.savez_compressed(out, labels=result.labels,
                        frame_indices=np.asarray(media.frame_indices))
    print(json.dumps({"video": name, "wall": wall, "cpu": cpu, "frames": len(media.frames),
                      "keyframes": len(result.keyframes)}), flush=True)
"""


class ChildLabeller:
    """One long-lived labelling process per source tree (models and imports load once)."""

    def __init__(self, root: Path, out: Path, overrides: list[str] | None = None):
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        env = dict(os.environ, PYTHONPATH=str(root), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(out),
                                      json.dumps(overrides or [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(root))

    def label(self, video: Path, out: Path) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc.stdin.write(f"{video}\t{out}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"labelling child ({self.out.name}) died on {video.name}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def baseline_tree(ref: str, into: Path) -> Path:
    """The ``dataengine`` package of commit ``ref`` extracted under ``into`` (git archive)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "dataengine"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def corpus(out: Path, style: str, seed: int, videos: int, images: int = 0) -> dict[str, Any]:
    if (out / "corpus.json").is_file():                      # --corpus-cache: generated before
        return json.loads((out / "corpus.json").read_text())
    # each sample has its own seed (``seed_rng(..., i)``): the videos are the same whatever ``images`` is
    kwargs: dict[str, Any] = {"videos": videos, "images": images, "seed": seed}
    if "style" in inspect.signature(make_corpus).parameters:
        kwargs["style"] = style
    elif style != "flat":
        raise SystemExit(f"this tree's synth has no --style {style}")
    summary = make_corpus(out, **kwargs)
    (out / "corpus.json").write_text(json.dumps(summary))
    return summary


def crossing_ids(pred: np.ndarray, frame_indices: list[int], cuts: list[int]) -> int:
    """Predicted ids present on both sides of a GT scene cut (source frame index of the cut's first frame)."""
    n = 0
    for c in cuts:
        before = [i for i, f in enumerate(frame_indices) if f < c]
        after = [i for i, f in enumerate(frame_indices) if f >= c]
        if before and after:
            a = set(np.unique(pred[before]).tolist()) - {0}
            b = set(np.unique(pred[after]).tolist()) - {0}
            n += len(a & b)
    return n


BREAKDOWN = ("best", "own_simultaneous", "own_temporal", "background", "other_object")


def covering_breakdown(gt: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """What the predicted ids covering each GT trajectory (>= ``COVER_SHARE`` of it, as ``ids/GT`` counts them)
    are: the best one (highest IoU), the object's *own* other pieces (ids whose majority of pixels is this
    object) that coexist with the best one in at least half of their frames on it (over-segmentation) or not
    (a temporal break: an id ends and another continues), or *foreign* ids whose majority is the background
    (GT void) or another object (bleed). Counts over the GT trajectories of one video."""
    out = dict.fromkeys(BREAKDOWN, 0)
    P, G = int(pred.max()) + 1, int(gt.max()) + 1
    per_frame = np.stack([np.bincount((g * P + p).ravel(), minlength=G * P).reshape(G, P)
                          for g, p in zip(gt.astype(np.int64), pred.astype(np.int64))])
    joint = per_frame.sum(axis=0)
    present = per_frame > 0
    owner = joint.argmax(axis=0)
    g_vol, p_vol = joint.sum(axis=1), joint.sum(axis=0)
    for o in range(1, G):
        if g_vol[o] == 0:
            continue
        ov = joint[o]
        iou = ov / (g_vol[o] + p_vol - ov)
        iou[0] = 0
        best = int(iou.argmax())
        for q in np.flatnonzero(ov >= metrics.COVER_SHARE * g_vol[o]):
            if q == 0:
                continue
            if q == best:
                out["best"] += 1
            elif owner[q] == o:
                frames = present[:, o, q]
                together = (frames & present[:, o, best]).sum()
                out["own_simultaneous" if together >= 0.5 * frames.sum() else "own_temporal"] += 1
            else:
                out["background" if owner[q] == 0 else "other_object"] += 1
    return out


def score(gt_dir: Path, label_dir: Path, media_type: str = "video") -> dict[str, Any]:
    """Strict scores of the labels in ``label_dir`` against the GT samples of one media type."""
    gts, preds, crossings = [], [], 0
    breakdown: dict[str, int] = {}
    for g in read_dataset(gt_dir, with_media=False):
        if g.meta.get("media_type", "video") != media_type:
            continue
        d = np.load(label_dir / f"{g.key}.npz")
        pred, fi = d["labels"].astype(np.int64), [int(x) for x in d["frame_indices"]]
        gt = labels_at(g.traj, fi)
        gts.append(gt)
        preds.append(pred)
        for k, v in covering_breakdown(gt, pred).items():
            breakdown[k] = breakdown.get(k, 0) + v
        crossings += crossing_ids(pred, fi, g.meta.get("scene_cuts", []))
    r = metrics.trajectory_recall(gts, preds)
    keep = ("recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory", "length_ratio", "mean_gt_length",
            "mean_pred_length", "n_trajectories")
    out = {k: r[k] for k in keep}
    out["n_pred_trajectories"] = int(sum(len(metrics.trajectory_lengths(p)) for p in preds))
    out["cut_crossings"] = crossings
    out["covering_counts"] = breakdown
    out["per_video_recall"] = [round(s["recall_at_0.5"], 3) for s in r["per_sequence"]]
    return out


def run(styles: list[str], seeds: list[int], videos: int, baseline_root: Path | None, work: Path,
        overrides: list[str] | None = None, cache: Path | None = None, images: int = 0) -> dict[str, Any]:
    labellers = {"current": ChildLabeller(ROOT, work / "labels_current", overrides)}
    if baseline_root is not None:
        labellers["baseline"] = ChildLabeller(baseline_root, work / "labels_baseline")
    result: dict[str, Any] = {"videos_per_seed": videos, "images_per_seed": images, "seeds": seeds, "styles": {}}
    try:
        for style in styles:
            timings: dict[str, list[dict[str, Any]]] = {k: [] for k in labellers}
            image_timings: dict[str, list[dict[str, Any]]] = {k: [] for k in labellers}
            scores: dict[str, list[tuple[Path, Path]]] = {k: [] for k in labellers}
            for seed in seeds:
                cname = f"{style}_{seed}_{videos}" + (f"_{images}i" if images else "")
                c = corpus((cache or work) / cname, style, seed, videos, images)
                media = Path(c["media"])
                for path in sorted(media.glob("*.mp4")) + sorted(media.glob("*.jpg")):
                    for name, lab in labellers.items():
                        t = lab.label(path, lab.out / f"{style}_{seed}" / f"{path.stem}.npz")
                        (image_timings if path.suffix == ".jpg" else timings)[name].append(t)
                for name, lab in labellers.items():
                    scores[name].append((Path(c["gt"]), lab.out / f"{style}_{seed}"))
            entry: dict[str, Any] = {}
            for name in labellers:
                per_seed = [score(gt, out) for gt, out in scores[name]]
                pooled = pool(per_seed)
                t = timings[name]
                pooled.update(seconds_clip=float(np.mean([x["wall"] for x in t])),
                              cpu_seconds_clip=float(np.mean([x["cpu"] for x in t])),
                              keyframes_per_clip=float(np.mean([x["keyframes"] for x in t])),
                              frames_per_clip=float(np.mean([x["frames"] for x in t])), per_seed=per_seed)
                if images:
                    still = pool([score(gt, out, "image") for gt, out in scores[name]])
                    still.update(cpu_seconds_image=float(np.mean([x["cpu"] for x in image_timings[name]])),
                                 n_images=len(image_timings[name]))
                    pooled["images"] = still
                entry[name] = pooled
            if "baseline" in entry:
                entry["seconds_ratio"] = entry["current"]["seconds_clip"] / entry["baseline"]["seconds_clip"]
                entry["cpu_seconds_ratio"] = entry["current"]["cpu_seconds_clip"] / entry["baseline"]["cpu_seconds_clip"]
            result["styles"][style] = entry
    finally:
        for lab in labellers.values():
            lab.close()
    return result


def pool(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Seeds pooled by trajectory (weights = GT trajectories; lengths weighted by trajectory counts)."""
    n = np.array([s["n_trajectories"] for s in per_seed], float)
    m = np.array([s["n_pred_trajectories"] for s in per_seed], float)
    w = lambda k: float(np.sum([s[k] for s in per_seed] * n) / n.sum())  # noqa: E731
    g_len = w("mean_gt_length")
    p_len = float(np.sum([s["mean_pred_length"] for s in per_seed] * m) / max(m.sum(), 1))
    return {"recall_at_0.5": w("recall_at_0.5"), "mean_best_iou": w("mean_best_iou"),
            "ids_per_gt_trajectory": w("ids_per_gt_trajectory"), "length_ratio": p_len / g_len,
            "n_trajectories": int(n.sum()), "n_pred_trajectories": int(m.sum()),
            "ids_per_gt_breakdown": {k: sum(s["covering_counts"].get(k, 0) for s in per_seed) / max(n.sum(), 1)
                                     for k in BREAKDOWN},
            "cut_crossings": int(sum(s["cut_crossings"] for s in per_seed))}


def print_summary(result: dict[str, Any]) -> None:
    for style, entry in result["styles"].items():
        for name in ("baseline", "current"):
            if name not in entry:
                continue
            e = entry[name]
            print(f"{style:5s} {name:8s} GT traj {e['n_trajectories']:4d}  pred traj {e['n_pred_trajectories']:5d}  "
                  f"R@0.5 {e['recall_at_0.5']:.3f}  mIoU {e['mean_best_iou']:.3f}  ids/GT {e['ids_per_gt_trajectory']:.2f}  "
                  f"len ratio {e['length_ratio']:.2f}  cut crossings {e['cut_crossings']}  "
                  f"keyframes/clip {e['keyframes_per_clip']:.1f}  s/clip {e['seconds_clip']:.2f} (cpu {e['cpu_seconds_clip']:.2f})")
            b = e["ids_per_gt_breakdown"]
            print(f"{style:5s} {name:8s} ids/GT = best {b['best']:.2f} + own pieces {b['own_simultaneous']:.2f} "
                  f"+ own after a break {b['own_temporal']:.2f} + background's {b['background']:.2f} "
                  f"+ other objects' {b['other_object']:.2f}")
            if "images" in e:
                i, b = e["images"], e["images"]["ids_per_gt_breakdown"]
                print(f"{style:5s} {name:8s} images {i['n_images']}  GT objects {i['n_trajectories']:4d}  "
                      f"R@0.5 {i['recall_at_0.5']:.3f}  mIoU {i['mean_best_iou']:.3f}  "
                      f"ids/GT {i['ids_per_gt_trajectory']:.2f} (own pieces {b['own_simultaneous']:.2f}, "
                      f"background's {b['background']:.2f}, other objects' {b['other_object']:.2f})  "
                      f"cpu s/image {i['cpu_seconds_image']:.3f}")
        if "seconds_ratio" in entry:
            print(f"{style:5s} seconds per clip current / baseline: wall {entry['seconds_ratio']:.2f}, "
                  f"cpu {entry['cpu_seconds_ratio']:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--styles", nargs="+", default=["photo", "flat"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[200, 201])
    ap.add_argument("--videos", type=int, default=8, help="videos per seed (one of them has a scene cut)")
    ap.add_argument("--images", type=int, default=24, help="images per seed (scored apart from the videos)")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git commit whose labeller is the baseline")
    ap.add_argument("--baseline-root", type=Path, help="a source tree whose labeller is the baseline")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="config overrides for this tree's labeller (tuning; never on held-out seeds)")
    ap.add_argument("--corpus-cache", type=Path, help="keep generated corpora here and reuse them")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = None
        if not args.no_baseline:
            base = args.baseline_root or baseline_tree(args.baseline_ref, work / "baseline_src")
        result = run(args.styles, args.seeds, args.videos, base, work, args.set, args.corpus_cache, args.images)
    result["baseline"] = None if args.no_baseline else str(args.baseline_root or args.baseline_ref)
    result["overrides"] = args.set
    print_summary(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
