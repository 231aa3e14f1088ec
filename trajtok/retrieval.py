"""Video-text retrieval of a trained video-text checkpoint, with the chance level of each number.

Identical captions are joint positives. Text-to-video (t2v) has one query per *distinct*
caption; its positives are all clips with that caption and its rank is the position of the
best-scored positive among all clips. Video-to-text (v2t) ranks the distinct captions for each
clip (exactly one positive). R@k = share of queries with rank <= k; MedR = median rank.

Chance = the same numbers for a random ranking: a query with p positives among n candidates
finds one in the top k with probability 1 - C(n-p, k) / C(n, k); chance MedR is the median of
that rank distribution pooled over the queries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dataengine.errors import InputError
from .augment import AugmentConfig
from .data import DataConfig, ShardDataset, captioned, resolve_shards

RANKS = (1, 5, 10)


@torch.no_grad()
def embed_dataset(model: torch.nn.Module, data: Any, batch_size: int = 16, k: int | None = None,
                  limit: int | None = None, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Unit video embeddings ``[N, E]`` with keys and captions: each captioned sample once, no augmentation.

    A mixture recipe's shards are each read once (its weights are for training draws). Samples without
    a caption have nothing to retrieve or be retrieved by: left out, counted in ``uncaptioned``."""
    seg = model.cfg.segmenter
    cfg = DataConfig(image_size=seg.image_size, frames=seg.frames, batch_size=batch_size, image_batch_size=batch_size,
                     shuffle_buffer=1, epochs=1, augment=AugmentConfig(enabled=False))
    device = next(model.parameters()).device
    keys, captions, videos = [], [], []
    uncaptioned = 0
    model.eval()
    for batch in ShardDataset(resolve_shards(data), cfg).iter_batches(0, 1):
        if "frames" not in batch:          # none of its samples decoded (each said in a warning)
            continue
        kept, dropped = captioned(batch)
        uncaptioned += dropped
        if kept is not None:
            videos.append(model.encode_video(kept["frames"].to(device), k=k)["video"].float().cpu())
            keys += kept["keys"]
            captions += kept["captions"]
        if on_batch:
            on_batch(len(batch["keys"]))
        if limit is not None and len(keys) >= limit:
            break
    if not keys:
        raise InputError(f"no decodable captioned samples in {data}")
    n = len(keys) if limit is None else min(limit, len(keys))
    return {"keys": keys[:n], "captions": captions[:n], "video": torch.cat(videos)[:n], "uncaptioned": uncaptioned}


def chance_hit(n: int, p: int, k: int) -> float:
    """Probability that a random order of ``n`` candidates with ``p`` positives has one in the top ``k``."""
    if k >= n - p + 1:
        return 1.0
    miss = 1.0
    for i in range(k):   # C(n-p, k) / C(n, k) as a product, no big integers
        miss *= (n - p - i) / (n - i)
    return 1.0 - miss


def _chance(n: int, positives: list[int]) -> dict[str, float]:
    out = {f"R@{k}": round(float(np.mean([chance_hit(n, p, k) for p in positives])), 6) for k in RANKS}
    cdf = [float(np.mean([chance_hit(n, p, m) for p in positives])) for m in range(1, n + 1)]
    median = next(m for m, c in enumerate(cdf, 1) if c >= 0.5 - 1e-12)
    if abs(cdf[median - 1] - 0.5) < 1e-12 and median < n:
        median += 0.5     # half the mass on each side of the pair: their mean, as np.median takes the model's
    return {**out, "MedR": float(median)}


def _scores(ranks: np.ndarray) -> dict[str, float]:
    return {**{f"R@{k}": float((ranks <= k).mean()) for k in RANKS}, "MedR": float(np.median(ranks))}


def retrieval_metrics(video: torch.Tensor, text: torch.Tensor, caption_index: np.ndarray) -> dict[str, Any]:
    """``video`` ``[N, E]``, ``text`` ``[U, E]`` (distinct captions), ``caption_index`` ``[N]`` into text."""
    sim = (text @ video.T).numpy()                                    # [U, N]
    U, N = sim.shape
    positive = caption_index[None, :] == np.arange(U)[:, None]        # [U, N]
    # A tie with a negative counts against the query (a collapsed model, whose embeddings are all
    # equal, ranks last rather than first).
    best = np.where(positive, sim, -np.inf).max(1)                    # best positive per text query
    t2v = 1 + (np.where(positive, -np.inf, sim) >= best[:, None]).sum(1)
    own = sim[caption_index, np.arange(N)]                            # each clip's own caption score
    v2t = 1 + ((sim >= own[None, :]) & ~positive).sum(0)
    counts = positive.sum(1)
    return {"t2v": {**_scores(t2v), "chance": _chance(N, counts.tolist())},
            "v2t": {**_scores(v2t), "chance": _chance(U, [1] * N)},
            "samples": int(N), "distinct_captions": int(U)}


@torch.no_grad()
def evaluate_retrieval(checkpoint: str | Path, data: Any, batch_size: int = 16, k: int | None = None,
                       limit: int | None = None, on_batch: Callable[[int], None] | None = None,
                       device: str = "cpu") -> dict[str, Any]:
    from .checkpoint import load_video_text
    model = load_video_text(checkpoint, map_location=device)
    emb = embed_dataset(model, data, batch_size=batch_size, k=k, limit=limit, on_batch=on_batch)
    distinct = sorted(set(emb["captions"]))
    index = {c: i for i, c in enumerate(distinct)}
    text = torch.cat([model.encode_text(distinct[i:i + 256]).float().cpu() for i in range(0, len(distinct), 256)])
    result = retrieval_metrics(emb["video"], text, np.array([index[c] for c in emb["captions"]]))
    result["uncaptioned"] = emb["uncaptioned"]
    result["checkpoint"] = str(checkpoint)
    result["video_model"] = model.cfg.video_model
    result["k"] = k if k is not None else model.cfg.eval_k
    return result


def format_retrieval(result: dict[str, Any]) -> str:
    left_out = f", {result['uncaptioned']} without caption left out" if result.get("uncaptioned") else ""
    lines = [f"{result['samples']} clips, {result['distinct_captions']} distinct captions{left_out} "
             f"({result.get('video_model', '?')})",
             f"{'':5}" + "".join(f"{m:>18}" for m in ("R@1", "R@5", "R@10", "MedR"))]
    for way in ("t2v", "v2t"):
        r, c = result[way], result[way]["chance"]
        cells = [f"{r[m]:.3f} ({c[m]:.3f})" for m in ("R@1", "R@5", "R@10")] + [f"{r['MedR']:g} ({c['MedR']:g})"]
        lines.append(f"{way:5}" + "".join(f"{x:>18}" for x in cells))
    lines.append("(chance in brackets)")
    return "\n".join(lines)
