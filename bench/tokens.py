"""Tokens per video and forward FLOPs of TrajViT2 and ViT3D (paper preset), and CPU seconds per
training step of both ``cpu`` presets.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one video forward pass (video tower
only, no text), models built on the ``meta`` device (shapes only, nothing allocated), at 16,
32, 64 and 128 frames of 224 x 224.

Chunking policy for long videos:
* TrajViT2 ``whole`` (the model's default): the segmenter runs over the whole video as one
  clip, so its 128 queries are trajectories over all frames; at most 128 x K tokens per video
  whatever its length. Cost: the per-frame backbone, the per-pixel Perceiver and mask terms
  (linear in frames), plus a transformer over a constant token count.
* TrajViT2 ``chunk16``: 16-frame chunks tokenized separately, tokens concatenated
  (at most 128 x K per chunk), one transformer over all of them.
* ViT3D: every 2 x 16 x 16 tubelet is a token (1568 per 16 frames), one transformer over all.

Training step: ``trajtok train-trajvit2 --preset cpu`` (both video models) on a small photo
synth corpus with ``torch.set_num_threads(1)``; CPU seconds (user + sys of this process) per
step, the first steps (warm-up of allocators and caches) left out.

TrajVLM (``trajtok/models/vlm.py``): visual tokens per video given to the LM, 16-frame clips of
at most 128 tokens (paper segmenter: 128 trajectories, K = 1), for the trajectory connector (an
upper bound: empty trajectories are dropped) and the patch-pooling connector (exactly the budget).

Usage: python bench/tokens.py [--frames 16 32 64 128] [--steps 12] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from trajtok.models.video_text import VideoTextModel  # noqa: E402
from trajtok.presets import get_video_text_preset  # noqa: E402

SKIP_STEPS = 2


def video_flops(model: VideoTextModel, frames: int, k: int | None, chunk: int | None) -> tuple[int, int]:
    """(forward FLOPs, tokens) of one ``frames``-frame video through the video tower."""
    size = model.cfg.segmenter.image_size
    video = torch.zeros(1, frames, 3, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        out = model.video(video, k=k, chunk_frames=chunk)
    if model.cfg.video_model == "vit3d":
        tokens = int(out["tokens"].shape[0] and (frames // 2) * (size // 16) ** 2)
    else:   # on meta nothing is valid or not: the bound, N x K per clip
        n_clips = 1 if chunk is None else -(-frames // chunk)
        tokens = n_clips * model.cfg.segmenter.num_queries * k
    return int(counter.get_total_flops()), tokens


def paper_model(video_model: str) -> VideoTextModel:
    P = get_video_text_preset("paper")
    P.model.video_model = video_model
    P.model.text.vocab = _vocab()
    with torch.device("meta"):
        return VideoTextModel(P.model)


def _vocab() -> str:
    from trajtok.models.text import build_word_vocab
    return build_word_vocab(["a red square moves left"])


def flops_table(frames: list[int]) -> list[dict]:
    rows = []
    traj, vit = paper_model("trajvit2"), paper_model("vit3d")
    for T in frames:
        row = {"frames": T}
        for k in (1, 4):
            f, n = video_flops(traj, T, k, None)
            row[f"trajvit2_k{k}_gflops"], row[f"trajvit2_k{k}_tokens"] = f / 1e9, n
            f, n = video_flops(traj, T, k, 16)
            row[f"trajvit2_chunk16_k{k}_gflops"], row[f"trajvit2_chunk16_k{k}_tokens"] = f / 1e9, n
        f, n = video_flops(vit, T, None, None)
        row["vit3d_gflops"], row["vit3d_tokens"] = f / 1e9, n
        rows.append(row)
        print(f"{T:4d} frames: TrajViT2 <= {row['trajvit2_k1_tokens']} / {row['trajvit2_k4_tokens']} tokens "
              f"(K=1/4) {row['trajvit2_k1_gflops']:9.1f} / {row['trajvit2_k4_gflops']:9.1f} GFLOPs; "
              f"chunk16 <= {row['trajvit2_chunk16_k4_tokens']} tokens {row['trajvit2_chunk16_k4_gflops']:9.1f} "
              f"GFLOPs (K=4); ViT3D {row['vit3d_tokens']} tokens {row['vit3d_gflops']:9.1f} GFLOPs", flush=True)
    return rows


def step_seconds(steps: int) -> dict:
    from dataengine.tools.synth import make_corpus
    from trajtok.train.trajvit2 import train_video_text
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_corpus(Path(tmp) / "corpus", videos=32, images=0, seed=0, n_frames=16, width=128, height=96)
        for video_model in ("trajvit2", "vit3d"):
            run = Path(tmp) / video_model
            train_video_text(Path(tmp) / "corpus" / "gt", run, preset="cpu", video_model=video_model,
                             max_steps=steps, warmup_steps=2)
            log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            cpu = (log[-1]["cpu_seconds"] - log[SKIP_STEPS - 1]["cpu_seconds"]) / (len(log) - SKIP_STEPS)
            out[video_model] = {"cpu_seconds_per_step": cpu, "steps_timed": len(log) - SKIP_STEPS,
                                "batch_size": get_video_text_preset("cpu").data.batch_size}
            print(f"cpu preset {video_model}: {cpu:.3f} CPU s per training step "
                  f"(batch {out[video_model]['batch_size']}, 1 thread)", flush=True)
    return out


def vlm_tokens(frames: list[int]) -> list[dict]:
    """Visual tokens per video of both VLM connectors at the paper sizes (built on meta, nothing allocated)."""
    from trajtok.models.vlm import Connector, VLMConfig
    P = get_video_text_preset("paper")
    rows = []
    for T in frames:
        row = {"frames": T}
        for kind in ("trajectory", "patch"):
            cfg = VLMConfig(connector=kind, k=1)
            with torch.device("meta"):
                conn = Connector(kind, P.model.transformer.width, 4096, P.model.segmenter.num_queries, cfg)
            row[f"vlm_{kind}_tokens"] = -(-T // cfg.clip_frames) * conn.budget
        rows.append(row)
        print(f"{T:4d} frames: TrajVLM <= {row['vlm_trajectory_tokens']} visual tokens (trajectory connector), "
              f"{row['vlm_patch_tokens']} (patch pooling)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if 0 < args.steps <= SKIP_STEPS:  # the first SKIP_STEPS steps are warm-up and are not timed
        ap.error(f"--steps must be 0 (no step timing) or more than {SKIP_STEPS}")
    rows = flops_table(args.frames)
    first, last = rows[0], rows[-1]
    span = last["frames"] / first["frames"]
    growth = {name: last[f"{name}_gflops"] / first[f"{name}_gflops"]
              for name in ("trajvit2_k1", "trajvit2_k4", "trajvit2_chunk16_k4", "vit3d")}
    print(f"FLOPs growth {first['frames']} -> {last['frames']} frames (x{span:g} frames): "
          + ", ".join(f"{k} x{v:.2f}" for k, v in growth.items()))
    result = {"frames": args.frames, "rows": rows, "growth": growth, "frame_ratio": span,
              "vit3d_superlinear": growth["vit3d"] > span,
              "trajvit2_at_most_linear": growth["trajvit2_k4"] <= span and growth["trajvit2_k1"] <= span,
              "vlm": vlm_tokens(args.frames),
              "train_step": step_seconds(args.steps) if args.steps else {}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
