"""Student vs teacher: the tiny TrajTok segmenter trained for a CPU budget, against the engine.

Issue 10 asks whether the tiny segmenter trained on photo-style video generalises, trained
(a) on the corpus's ground truth and (b) on the engine's own labels of the same media, and
whether it beats its teacher (the CPU default labeller). This script does it end to end:

1. ``trajdata synth`` a training corpus (``--train-seed``) and a held-out one (``--held-seed``,
   videos only; ``--photos a`` / ``b`` keep the photographs of the two apart);
2. the engine labels both media folders (``trajdata annotate``, CPU default);
3. ``trajtok train-segmenter --preset tiny`` twice, in two processes side by side, one torch
   thread each: (a) on the ground truth with ``--no-object`` (its label 0 means "no object"),
   (b) on the engine's labels (every pixel; 0 there means "not labelled");
4. scores the students and the teacher on the same frames of each held-out video (the first
   clip the student sees: ``tiny``'s 8 of the 16 frames) with ``trajdata eval``'s strict
   metrics (``dataengine.metrics.scores.evaluate_sequences``).

Printed: strict recall@0.5, mean best IoU, ids per GT trajectory, length ratio, and the share of
predicted pixels on GT void, per model, with each training's CPU seconds (user + system of its
process). ``--every-pixel-gt`` adds (a0): ground truth without the no-object query (the
segmenter before it existed); ``--paper-loss`` adds (a) trained without the tiny preset's
pixel-grouping term (the paper's Dice + Focal alone). One full run (defaults) takes ~15 minutes of wall time on 2 cores.

Usage: python bench/student.py [--work DIR] [--steps 2400] [--videos 30] [--images 20]
                               [--held-videos 12] [--photos-train all|a] [--photos-held all|b]
                               [--paper-loss] [--every-pixel-gt] [--json F]
"""
from __future__ import annotations

import argparse
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

from dataengine.format import shards, trajformat  # noqa: E402
from dataengine.metrics.scores import evaluate_sequences  # noqa: E402

KEYS = ("recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory", "length_ratio")


def command(app: str, *args: str) -> list[str]:
    """``trajdata ARGS`` / ``trajtok ARGS`` with this interpreter and this tree's cli.py."""
    return [sys.executable, "-c", f"import cli; cli.{app}_main()", *args]


def run_cli(*args: str) -> None:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    subprocess.run(command("trajdata", *args), check=True, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL)


def train_all(jobs: dict[str, list[str]], work: Path, logs: dict[str, str]) -> dict[str, float]:
    """Run the trainings side by side, one torch thread each; -> CPU seconds of each process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs, cpu = {}, {}
    for name, args in jobs.items():
        with open(work / logs[name], "w") as log:
            procs[name] = subprocess.Popen(command("trajtok", "train-segmenter", *args),
                                           env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
    for name, p in procs.items():
        # os.wait4 gives each child's own rusage (getrusage(RUSAGE_CHILDREN) would pool them)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            raise SystemExit(f"training {name} failed; see {work / logs[name]}")
        cpu[name] = usage.ru_utime + usage.ru_stime
    return cpu


def score(held_gt: Path, teacher_dir: Path, checkpoints: dict[str, Path]) -> dict[str, dict[str, float]]:
    from trajtok.checkpoint import load_segmenter
    from trajtok.data import decode_sample, frame_positions
    from trajtok.models import segment

    teacher = {s.key: s.traj for p in shards.list_shards(teacher_dir) for s in shards.read_shard(p)}
    models = {name: load_segmenter(path) for name, path in checkpoints.items()}
    frames = {m.cfg.frames for m in models.values()}
    if len(frames) != 1:
        raise SystemExit(f"students see different clip lengths {sorted(frames)}: not one set of frames to score")
    T = frames.pop()
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"teacher": [], **{n: [] for n in models}}
    for path in shards.list_shards(held_gt):
        for sample in shards.read_shard(path):
            rgb, gt = decode_sample(sample, T)
            pos = [int(x) for x in frame_positions(len(sample.traj["frame_indices"]), T, None)]
            pairs["teacher"].append((gt, trajformat.labels_at(teacher[sample.key], pos)))
            for name, model in models.items():
                pairs[name].append((gt, segment(model, rgb)))
    out = {}
    for name, pr in pairs.items():
        r = evaluate_sequences(pr)
        row = {k: float(r[k]) for k in KEYS}
        row["gt_trajectories"] = int(sum(len(np.unique(g[g > 0])) for g, _ in pr))
        row["pred_on_void"] = float(np.mean([((p > 0) & (g == 0)).sum() / max((p > 0).sum(), 1) for g, p in pr]))
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="keep corpora, labels and runs here (default: a temporary dir)")
    ap.add_argument("--train-seed", type=int, default=100)
    ap.add_argument("--held-seed", type=int, default=200)
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--held-videos", type=int, default=12)
    ap.add_argument("--photos-train", default="all", help="photo pool of the training corpus: all | a")
    ap.add_argument("--photos-held", default="all", help="photo pool of the held-out corpus: all | b")
    ap.add_argument("--steps", type=int, default=2400, help="training steps of each student (tiny preset)")
    ap.add_argument("--every-pixel-gt", action="store_true",
                    help="also (a0): ground truth, no no-object query (and no grouping term)")
    ap.add_argument("--paper-loss", action="store_true",
                    help="also (a) trained with the paper's loss alone (--grouping-weight 0): the tiny preset's "
                         "grouping term against none, same run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train, held = work / "train", work / "held"
        for out, seed, videos, images, photos in ((train, args.train_seed, args.videos, args.images, args.photos_train),
                                                  (held, args.held_seed, args.held_videos, 0, args.photos_held)):
            if not (out / "gt").is_dir():
                run_cli("synth", str(out), "--videos", str(videos), "--images", str(images), "--frames", "16",
                        "--seed", str(seed), "--photos", photos)
            if not (out / "engine").is_dir():
                run_cli("annotate", "--source", "local", "--input", str(out / "media"), "--output", str(out / "engine"))
        students = {"a": ("(a) ground truth, --no-object", train / "gt", "--no-object"),
                    "b": ("(b) engine labels", train / "engine", "--every-pixel")}
        if args.every_pixel_gt:
            students["a0"] = ("(a0) ground truth, every pixel", train / "gt", "--every-pixel")
        if args.paper_loss:
            students["ap"] = ("(a) ground truth, paper loss", train / "gt", "--no-object")
        jobs = {name: ["--data", str(data), "--output", str(work / f"run_{key}"), flag, "--preset", "tiny",
                       "--max-steps", str(args.steps)] + (["--grouping-weight", "0"] if key in ("ap", "a0") else [])
                for key, (name, data, flag) in students.items()}
        logs = {name: f"train_{key}.log" for key, (name, _, _) in students.items()}
        cpu = train_all(jobs, work, logs)
        checkpoints = {name: work / f"run_{key}" / "last.safetensors" for key, (name, _, _) in students.items()}
        result = {"args": {k: str(v) for k, v in vars(args).items()}, "cpu_seconds": cpu,
                  "scores": score(held / "gt", held / "engine", checkpoints)}
    for name, row in result["scores"].items():
        spent = f"  train CPU {cpu[name]:.0f} s" if name in cpu else ""
        print(f"{name:34s} " + "  ".join(f"{k} {row[k]:.3f}" for k in KEYS)
              + f"  pred-on-void {row['pred_on_void']:.3f}  GT {row['gt_trajectories']}{spent}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
