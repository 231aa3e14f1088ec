"""TrajVLM on synthetic video QA: does the LM answer questions about held-out clips better than
the majority answer? Trajectory connector vs the patch-pooling connector at the same token budget.

Questions per clip (from the labels ``trajdata synth`` writes into each video's json):
  "which way do the objects move ?"  -> left | right | up | down          (``motion``)
  "how many objects are there ?"     -> few | some | many | lots          (``count`` bins 0-3, 4-6, 7-9, 10+)

Setup: the frozen backbone (randomly initialised ViT3D, as ``trajtok probe``'s default) and the
frozen segmenter run once per clip (through ``trajtok probe``'s cache, so a probe run with the
same ``--cache`` shares the work); a tiny randomly initialised Llama-architecture LM with a
word-level tokenizer is written to a temporary transformers directory and loaded back. The
connector and the LM train together (LLaVA's second stage; a random LM has nothing to keep
frozen); loss on answer tokens only. Held-out accuracy = greedy ``generate`` output equal to
the answer word.

Usage: python bench/vlm_qa.py --data TRAIN/gt --eval-data HELD/gt --segmenter RUN/last.safetensors
       [--cache DIR] [--epochs 12] [--seed 0] [--json FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from trajtok.checkpoint import load_segmenter  # noqa: E402
from trajtok.models.vlm import TrajVLM, VLMConfig, load_lm, write_tiny_lm  # noqa: E402
from trajtok.train.probe import PRESETS, build_backbone, cached_extract, select  # noqa: E402

COUNT_WORDS = {"0-3": "few", "4-6": "some", "7-9": "many", "10+": "lots"}
QUESTIONS = {"motion": "which way do the objects move ?", "count": "how many objects are there ?"}


def qa_pairs(extracted: dict) -> list[tuple[int, str, str, str]]:
    """(clip index, question kind, question, answer) for every extracted clip."""
    out = []
    for i, meta in enumerate(extracted["meta"]):
        out.append((i, "motion", QUESTIONS["motion"], meta["motion"]))
        out.append((i, "count", QUESTIONS["count"], COUNT_WORDS[meta["count"]]))
    return out


def clip(extracted: dict, i: int) -> dict:
    return {"features": extracted["features"][i:i + 1].float(), "fractions": extracted["fractions"][i:i + 1].float(),
            "majority": extracted["majority"][i:i + 1].long()}


def run(connector: str, train: dict, held: dict, train_qa: list, held_qa: list, lm_dir: Path, segmenter_path: str,
        epochs: int, seed: int, lr: float, batch: int) -> dict:
    torch.manual_seed(seed)
    lm, tok = load_lm(lm_dir)
    pcfg = PRESETS["cpu"]
    backbone, _ = build_backbone("vit3d", dataclasses.replace(pcfg), 0)   # only its width matters: inputs are cached
    cfg = VLMConfig(connector=connector, k=1, dim=128, heads=4, image_size=pcfg.image_size, freeze_lm=False)
    vlm = TrajVLM(lm, tok, backbone, load_segmenter(segmenter_path), cfg, feature_dim=pcfg.backbone_width)
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.process_time()
    vlm.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(train_qa), generator=gen).split(batch):
            rows = [train_qa[i] for i in idx.tolist()]
            out = vlm([[clip(train, r[0]), r[2]] for r in rows], [r[3] for r in rows])
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            total += out["loss"].item() * len(rows)
        print(f"  {connector} epoch {epoch + 1}/{epochs} loss {total / len(train_qa):.3f}", flush=True)
    vlm.eval()
    correct: Counter = Counter()
    for start in range(0, len(held_qa), 32):
        rows = held_qa[start:start + 32]
        answers = vlm.generate([[clip(held, r[0]), r[2]] for r in rows], max_new_tokens=2)
        for r, a in zip(rows, answers):
            correct[r[1]] += int(a.split()[:1] == [r[3]])
    n = Counter(r[1] for r in held_qa)
    return {"accuracy": sum(correct.values()) / len(held_qa),
            **{f"accuracy_{k}": correct[k] / n[k] for k in n},
            "visual_tokens_per_clip": vlm.tokens_per_clip, "cpu_seconds_train": time.process_time() - t0}


def majority(train_qa: list, held_qa: list) -> dict:
    best = {k: Counter(r[3] for r in train_qa if r[1] == k).most_common(1)[0][0] for k in QUESTIONS}
    hits = Counter(r[1] for r in held_qa if r[3] == best[r[1]])
    n = Counter(r[1] for r in held_qa)
    return {"accuracy": sum(hits.values()) / len(held_qa), **{f"accuracy_{k}": hits[k] / n[k] for k in n},
            "answers": best}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--eval-data", required=True)
    ap.add_argument("--segmenter", required=True)
    ap.add_argument("--cache")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--connectors", nargs="+", default=["trajectory", "patch"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = PRESETS["cpu"]
    train = select(cached_extract(args.data, "vit3d", args.segmenter, cfg, args.cache), "motion")
    held = select(cached_extract(args.eval_data, "vit3d", args.segmenter, cfg, args.cache), "motion")
    train_qa, held_qa = qa_pairs(train), qa_pairs(held)
    words = [w for q in QUESTIONS.values() for w in q.split()] + ["left", "right", "up", "down"] + list(COUNT_WORDS.values())
    result = {"n_train_pairs": len(train_qa), "n_held_out_pairs": len(held_qa), "majority": majority(train_qa, held_qa),
              "epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    print(f"{len(train_qa)} train / {len(held_qa)} held-out QA pairs; majority answer accuracy "
          f"{result['majority']['accuracy']:.3f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        lm_dir = write_tiny_lm(Path(tmp) / "lm", words, hidden=128, layers=2, heads=4, seed=args.seed)
        for connector in args.connectors:
            result[connector] = run(connector, train, held, train_qa, held_qa, lm_dir, args.segmenter, args.epochs,
                                    args.seed, args.lr, args.batch)
            r = result[connector]
            print(f"{connector}: held-out accuracy {r['accuracy']:.3f} (motion {r['accuracy_motion']:.3f}, count "
                  f"{r['accuracy_count']:.3f}), {r['visual_tokens_per_clip']} visual tokens per clip", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
