"""Does TrajViT2's CPU preset learn video-text retrieval? The quality check of the video-text issue.

Trains ``trajtok train-trajvit2 --preset cpu`` on one synth corpus and evaluates
``trajtok eval-retrieval`` on clips of another synth seed (held out by seed), for:

* TrajViT2, two training seeds;
* TrajViT2 with shuffled captions (each clip paired with another clip's caption): must stay
  at chance, which shows the retrieval numbers measure what the captions say;
* ViT3D trained the same way (reported beside it; no ordering asserted).

Each run is one process with ``torch.set_num_threads(1)``; its CPU seconds (user + sys of
training alone) are reported, so parallel runs on a shared machine still measure one core.
Pass: t2v R@5 >= 3 x chance for both TrajViT2 seeds, shuffled t2v R@5 < 2 x chance.

Usage: python bench/retrieval.py [--train DIR --held-out DIR] [--videos 300] [--steps 600]
       [--jobs 3] [--json FILE]        (corpora are generated when not given)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS = [("trajvit2", 0, False), ("trajvit2", 1, False), ("trajvit2", 0, True), ("vit3d", 0, False),
        ("vit3d", 1, False)]


def one_run(spec: tuple) -> dict:
    video_model, seed, shuffled, train, held_out, work, steps = spec
    import torch
    torch.set_num_threads(1)
    from trajtok.retrieval import evaluate_retrieval
    from trajtok.train.trajvit2 import train_video_text
    name = f"{video_model}_seed{seed}{'_shuffled' if shuffled else ''}"
    run = Path(work) / name
    summary = train_video_text(train, run, preset="cpu", video_model=video_model, seed=seed,
                               shuffle_captions=shuffled, max_steps=steps)
    result = evaluate_retrieval(run / "last.safetensors", held_out)
    t2v = result["t2v"]
    row = {"name": name, "video_model": video_model, "seed": seed, "shuffled_captions": shuffled,
           "steps": summary["step"], "train_cpu_seconds": summary["cpu_seconds"],
           "train_wall_seconds": summary["seconds"], "t2v": t2v, "v2t": result["v2t"],
           "held_out_clips": result["samples"], "t2v_R@5_over_chance": t2v["R@5"] / t2v["chance"]["R@5"]}
    print(f"{name:28s} steps {row['steps']}, train {row['train_cpu_seconds']:.0f} CPU s: t2v R@1 {t2v['R@1']:.3f} "
          f"R@5 {t2v['R@5']:.3f} (chance {t2v['chance']['R@5']:.3f}, x{row['t2v_R@5_over_chance']:.2f}) "
          f"MedR {t2v['MedR']:g}; v2t R@5 {result['v2t']['R@5']:.3f} (chance {result['v2t']['chance']['R@5']:.3f})",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, help="captioned shards to train on (default: synth seed 1)")
    ap.add_argument("--held-out", type=Path, help="captioned shards to evaluate on (default: synth seed 2)")
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each single-threaded)")
    ap.add_argument("--only", nargs="+", help="run names, e.g. trajvit2_seed0 vit3d_seed0")
    ap.add_argument("--work", type=Path, help="keep run directories here (default: a temporary directory)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        train, held = args.train, args.held_out
        if train is None or held is None:
            from dataengine.tools.synth import make_corpus
            for seed, n in ((1, args.videos), (2, max(100, args.videos // 3))):
                make_corpus(work / f"synth_s{seed}", videos=n, images=0, seed=seed, n_frames=16, width=128, height=96)
            train, held = work / "synth_s1" / "gt", work / "synth_s2" / "gt"
        specs = [(m, s, sh, str(train), str(held), str(work), args.steps) for m, s, sh in RUNS
                 if not args.only or f"{m}_seed{s}{'_shuffled' if sh else ''}" in args.only]
        if args.jobs > 1:
            with mp.get_context("spawn").Pool(args.jobs) as pool:
                rows = pool.map(one_run, specs, chunksize=1)
        else:
            rows = [one_run(s) for s in specs]
    traj = [r for r in rows if r["video_model"] == "trajvit2" and not r["shuffled_captions"]]
    shuf = [r for r in rows if r["shuffled_captions"]]
    result = {"runs": rows, "steps": args.steps,
              "trajvit2_pass": bool(traj) and all(r["t2v_R@5_over_chance"] >= 3 for r in traj),
              "shuffled_at_chance": all(r["t2v_R@5_over_chance"] < 2 for r in shuf)}
    print(f"TrajViT2 t2v R@5 >= 3x chance on every seed: {result['trajvit2_pass']}; "
          f"shuffled captions below 2x chance: {result['shuffled_at_chance']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
