"""Training input: samples/s the shard loader delivers vs samples/s a ``train-segmenter`` step consumes.

Both on this machine's CPU, in one process, per preset:
  * loader: ``trajtok.data.make_loader`` with the preset's data settings and
    ``num_workers=0`` (one core: decode video at mask resolution, RLE -> labels,
    augmentation), timed over ``--batches`` batches after a warm-up batch;
  * train step: forward + loss + backward + AdamW step of the preset's model on
    one fixed batch (so no loading inside), timed over ``--steps`` steps after
    a warm-up step; consumption = batch size / step time.
  * decode: CPU seconds to decode 16 frames of a 1280x720 H.264 clip to the
    training size with ``decode_frames`` two ways: ``scaler="area"`` (full frames,
    then an area resize: what annotate and ``show`` do) and ``scaler="decoder"``
    (the decoder scales while decoding: what the training loader does).
A ratio > 1 means one loader core keeps up with one training process on this
device. The ``paper`` preset trains with batch 1 here (``--paper-batch``): its
batch of 8 x 16 x 224^2 needs over 20 GB to train on a CPU. (On a GPU the step is far faster, so the ratio tells how many loader
workers a GPU needs: about 1 / ratio of the GPU's speed-up.)

Usage: python bench/loader.py [--data DIR] [--presets tiny paper] [--json FILE] [--decode-reps N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(data: Path, preset: str, batches: int, steps: int, batch_size: int | None = None) -> dict:
    import torch

    from trajtok.data import make_loader
    from trajtok.losses import segmenter_loss
    from trajtok.models.segmenter import build_segmenter
    from trajtok.presets import get_preset

    P = get_preset(preset)
    if batch_size:
        P.data.batch_size = batch_size
    torch.manual_seed(0)
    it = (b for b in make_loader(str(data), P.data, num_workers=0) if "frames" in b)
    batch = next(it)                                   # warm-up (imports, first shard)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        n += b["frames"].shape[0]
        if b["frames"].shape[1] > batch["frames"].shape[1]:
            batch = b                                  # time the step on a full-length video clip
    loader_sps = n / (time.perf_counter() - t0)

    model = build_segmenter(P.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=P.train.lr)
    frames, labels = batch["frames"], batch["labels"]

    def step() -> None:
        out = model(frames)
        loss = segmenter_loss(out["logits"].float(), labels, P.loss, features=out["features"])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()                                             # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - t0) / steps
    train_sps = frames.shape[0] / step_s
    return {"preset": preset, "batch_size": int(frames.shape[0]), "clip": list(frames.shape[1:]),
            "loader_samples_per_s": loader_sps, "step_seconds": step_s, "train_samples_per_s": train_sps,
            "ratio_loader_vs_train": loader_sps / train_sps, "torch_threads": torch.get_num_threads()}


def measure_decode(work: Path, reps: int, size: tuple[int, int] = (384, 216)) -> dict:
    """CPU seconds per 16 decoded frames at the training size, full-frame + area resize vs decoder scaling."""
    from dataengine.media.decode import decode_frames
    from dataengine.tools.synth.corpus import write_video

    clip = work / "hd.mp4"
    write_video(clip, seed=0, n_frames=48, width=1280, height=720)   # the photo style at web-video quality
    data = clip.read_bytes()
    indices = list(range(0, 48, 3))                    # 16 frames, as a clip of the paper preset samples them
    row = {"clip": "1280x720 H.264 photo-style synth clip, 48 frames", "frames": len(indices), "size": list(size)}
    for scaler in ("area", "decoder"):
        decode_frames(data, "video", indices, size, scaler=scaler)   # warm-up
        times = []
        for _ in range(reps):
            t0 = time.process_time()
            decode_frames(data, "video", indices, size, scaler=scaler)
            times.append(time.process_time() - t0)
        row[f"{scaler}_cpu_s"] = sorted(times)[len(times) // 2]
    row["ratio_area_vs_decoder"] = row["area_cpu_s"] / row["decoder_cpu_s"]
    return row


def make_dataset(work: Path) -> Path:
    from dataengine.config import build_annotate_config, load_source
    from dataengine.tools.synth import make_corpus
    from pipelines.annotate import annotate

    make_corpus(work / "corpus", videos=6, images=4, seed=0)
    annotate(build_annotate_config(source=vars(load_source("local", str(work / "corpus" / "media"))),
                                   output={"samples_per_shard": 4}), str(work / "annotated"), use_ray=False)
    return work / "annotated"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="trajectory shard directory (default: annotate a synthetic corpus)")
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--paper-batch", type=int, default=1,
                    help="batch size for the paper preset (its 8 x 16 x 224^2 batch needs > 20 GB to train on a CPU)")
    ap.add_argument("--decode-reps", type=int, default=5, help="repeats of each decode measurement (median kept)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_dataset(Path(tmp))
        rows = [measure(data, p, args.batches, args.steps, args.paper_batch if p == "paper" else None)
                for p in args.presets]
        decode = measure_decode(Path(tmp), args.decode_reps)
    for r in rows:
        print(f"{r['preset']:>6s} (batch {r['batch_size']} x {r['clip']}): loader {r['loader_samples_per_s']:7.2f} "
              f"samples/s, train step {r['step_seconds']:.3f} s = {r['train_samples_per_s']:7.2f} samples/s   "
              f"ratio loader/train = {r['ratio_loader_vs_train']:.2f}")
    print(f"decode 16 frames of a {decode['clip']} to {decode['size'][0]}x{decode['size'][1]}: "
          f"full frames + area resize {decode['area_cpu_s']:.3f} CPU s, decoder scaling "
          f"{decode['decoder_cpu_s']:.3f} CPU s   ratio area/decoder = {decode['ratio_area_vs_decoder']:.2f}")
    result = {"presets": rows, "decode": decode}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
