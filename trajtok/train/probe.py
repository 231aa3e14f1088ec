"""``trajtok probe``: frozen backbone + frozen segmenter, trainable probes, held-out top-1.

Every clip is decoded, run through the backbone and the segmenter once, and its features and
resampled masks are kept (in memory, and in ``cache`` when given, so a second seed or a second
label key skips the expensive part). Each method then trains on those tensors alone, which is
what makes six probes x several seeds affordable on a CPU.

Labels come from each sample's json (``meta[label_key]``); samples without the key (e.g. images
for ``motion``) are left out and counted. The classes are the training set's; a held-out clip
of a class never seen in training counts as wrong.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from dataengine.errors import CheckpointError, CheckpointNotFound, ConfigError, InputError
from ..checkpoint import load_segmenter
from ..data import decode_sample, is_video, resolve_shards
from ..models.adapter import APPEARANCE_DROPOUT, METHODS, VELOCITY_GAIN, build_probe, frozen_clip_inputs
from ..models.video import TransformerConfig, ViT3DVideo

log = logging.getLogger(__name__)
MAX_TRAJECTORIES = 128


@dataclass
class ProbeConfig:
    frames: int = 16
    image_size: int = 128            # backbone input (the segmenter uses its own size)
    dim: int = 128                   # probe / trajectory-encoder width
    heads: int = 4
    depth: int = 1                   # trajectory-encoder and Perceiver layers
    lr: float = 1e-4
    weight_decay: float = 0.5
    epochs: int = 40
    batch_size: int = 32
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    velocity_gain: float = VELOCITY_GAIN   # TrajAdapter: scale of the trajectories' velocity feature
    appearance_dropout: float = APPEARANCE_DROPOUT   # TrajAdapter: dropout on the backbone features it reads
    backbone_width: int = 192        # random-init ViT3D backbone (when no checkpoint is given)
    backbone_depth: int = 4
    backbone_heads: int = 3


PRESETS: dict[str, ProbeConfig] = {
    "paper": ProbeConfig(lr=1e-4, epochs=20, batch_size=64, dim=256, heads=8, depth=2),
    # CPU: 10x the paper's learning rate, so a few hundred clips train in minutes.
    "cpu": ProbeConfig(lr=1e-3, epochs=40, batch_size=32),
    "test": ProbeConfig(frames=4, image_size=32, dim=32, heads=2, epochs=3, batch_size=4,
                        backbone_width=32, backbone_depth=1, backbone_heads=2),
}


def build_backbone(spec: str, cfg: ProbeConfig, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """``vit3d`` (randomly initialised, seeded) or ``vit3d:PATH`` (the ViT3D tower of a
    ``train-trajvit2 --video-model vit3d`` checkpoint). Returns the module and a description."""
    if spec == "vit3d":
        torch.manual_seed(seed)
        tcfg = TransformerConfig(width=cfg.backbone_width, depth=cfg.backbone_depth, heads=cfg.backbone_heads,
                                 tubelet=(2, 16, 16) if cfg.image_size % 16 == 0 else (2, 8, 8))
        return ViT3DVideo(tcfg, cfg.image_size).eval(), f"vit3d random init (seed {seed})"
    if spec.startswith("vit3d:"):
        from ..checkpoint import load_video_text
        model = load_video_text(spec.split(":", 1)[1])
        if model.cfg.video_model != "vit3d":
            raise CheckpointError(f"{spec}: checkpoint holds a {model.cfg.video_model} model, not vit3d")
        cfg.image_size = model.cfg.segmenter.image_size
        return model.video.eval(), f"vit3d checkpoint {spec.split(':', 1)[1]}"
    raise ConfigError(f"unknown backbone {spec!r}; use vit3d or vit3d:PATH")


def _scalar_labels(meta: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in meta.items() if isinstance(v, (str, int, float, bool))}


@torch.no_grad()
def extract_clip_inputs(data: Any, backbone: torch.nn.Module, segmenter: torch.nn.Module, cfg: ProbeConfig,
            batch: int = 8, on_clip: Callable[[], None] | None = None) -> dict[str, Any]:
    """Features, resampled masks and scalar json fields (any of them can be the label) of every
    decodable video clip in ``data``; ``skipped`` counts the other samples."""
    if segmenter.cfg.num_queries > MAX_TRAJECTORIES:
        raise CheckpointError(f"segmenter has {segmenter.cfg.num_queries} queries; the probe takes at most "
                              f"{MAX_TRAJECTORIES} trajectories")
    from dataengine.format import shards as shard_io
    feats, fracs, majs, metas, keys, skipped = [], [], [], [], [], 0
    pending: list[tuple[str, dict[str, str], np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        side = max(cfg.image_size, segmenter.cfg.image_size)   # clips of any size stack once square
        clips = torch.stack([F.interpolate(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0, size=(side, side),
                                           mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
                             for _, _, rgb in pending])
        out = frozen_clip_inputs(backbone, segmenter, clips, cfg.image_size)
        feats.append(out["features"].half())
        fracs.append(out["fractions"].half())
        majs.append(out["majority"].to(torch.int16))
        metas.extend(m for _, m, _ in pending)
        keys.extend(k for k, _, _ in pending)
        pending.clear()

    for path in resolve_shards(data):
        for s in shard_io.read_shard(path):
            if not is_video(s):
                skipped += 1
                continue
            try:
                rgb, _ = decode_sample(s, cfg.frames)
            except Exception as e:   # a bad clip costs one clip
                log.warning("skipping %s: %s", s.key, e)
                skipped += 1
                continue
            pending.append((s.key, _scalar_labels(s.meta), rgb))
            if on_clip:
                on_clip()
            if len(pending) == batch:
                flush()
    flush()
    if not keys:
        raise InputError(f"no decodable video sample in {data}")
    return {"features": torch.cat(feats), "fractions": torch.cat(fracs), "majority": torch.cat(majs),
            "meta": metas, "keys": keys, "skipped": skipped}


def select(extracted: dict[str, Any], label_key: str, data: Any = "") -> dict[str, Any]:
    """The clips that carry ``label_key``, with ``labels``; the others join ``skipped``."""
    keep = [i for i, m in enumerate(extracted["meta"]) if label_key in m]
    if not keep:
        raise ConfigError(f"no video sample in {data} has the label {label_key!r}")
    idx = torch.tensor(keep)
    return {"features": extracted["features"][idx], "fractions": extracted["fractions"][idx],
            "majority": extracted["majority"][idx], "labels": [extracted["meta"][i][label_key] for i in keep],
            "keys": [extracted["keys"][i] for i in keep], "meta": [extracted["meta"][i] for i in keep],
            "skipped": extracted["skipped"] + len(extracted["keys"]) - len(keep)}


def backbone_file_signature(spec: str, cfg: ProbeConfig) -> list[Any] | None:
    """For ``vit3d:PATH``: the checkpoint file's path, mtime and size (so a cache entry of an older
    state of the file is not reused), and ``cfg.image_size`` set to its model's now, before any
    cache key is made (``build_backbone`` would set it only on a cache miss)."""
    if not spec.startswith("vit3d:"):
        return None
    from ..checkpoint import read_video_text_metadata
    path = Path(spec.split(":", 1)[1])
    config = json.loads(read_video_text_metadata(path)["config"])
    cfg.image_size = int(config["segmenter"]["image_size"])
    st = path.stat()
    return [str(path.resolve()), st.st_mtime_ns, st.st_size]


def cached_extract(data: Any, backbone_spec: str, segmenter_path: str | Path, cfg: ProbeConfig,
                   cache: str | Path | None, backbone_seed: int = 0, **kw) -> dict[str, Any]:
    """``extract_clip_inputs`` through an optional on-disk cache keyed by everything that changes the tensors."""
    from dataengine.format import shards as shard_io
    shard_sig = [(str(p), *shard_io.shard_stat(p)) for p in resolve_shards(data)]
    seg = Path(segmenter_path)
    backbone_sig = backbone_file_signature(backbone_spec, cfg)
    key = json.dumps([shard_sig, backbone_spec, backbone_sig, backbone_seed, str(seg.resolve()),
                      seg.stat().st_mtime_ns, cfg.frames, cfg.image_size, cfg.backbone_width, cfg.backbone_depth,
                      cfg.backbone_heads])
    path = Path(cache) / f"probe-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt" if cache else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True)
    backbone, _ = build_backbone(backbone_spec, cfg, backbone_seed)
    out = extract_clip_inputs(data, backbone, load_segmenter(segmenter_path), cfg, **kw)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, path)
    return out


def train_one(method: str, train: dict[str, Any], held: dict[str, Any], classes: list[str], cfg: ProbeConfig,
              seed: int, n_trajectories: int) -> float:
    """Train one probe on cached tensors; held-out top-1."""
    torch.manual_seed(seed)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in train["labels"]])
    y_held = torch.tensor([index.get(c, -1) for c in held["labels"]])
    model = build_probe(method, train["features"].shape[-1], len(classes), cfg.dim, cfg.heads, cfg.depth,
                        latents=n_trajectories, velocity_gain=cfg.velocity_gain,
                        appearance_dropout=cfg.appearance_dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)

    def inputs(d: dict[str, Any], idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": d["features"][idx].float(), "fractions": d["fractions"][idx].float(),
                "majority": d["majority"][idx].long()}

    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            loss = F.cross_entropy(model(**inputs(train, idx)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for idx in torch.arange(len(y_held)).split(64):
            pred = model(**inputs(held, idx)).argmax(-1)
            correct += int((pred == y_held[idx]).sum())
    return correct / len(y_held)


def run_probe(data: Any, eval_data: Any, label_key: str, segmenter: str | Path, backbone: str = "vit3d",
              preset: str = "cpu", seeds: list[int] | None = None, cache: str | Path | None = None,
              methods: list[str] | None = None, on_clip: Callable[[], None] | None = None,
              on_method: Callable[[str], None] | None = None, overrides: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """All methods x seeds; returns the JSON-ready result (mean top-1 per method, per-seed figures, chance)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[preset], **(overrides or {}))
    methods = list(methods or cfg.methods)
    for m in methods:
        build_probe(m, 8, 2, 8, 2)   # fail fast on an unknown name, before any decoding
    if not Path(segmenter).is_file():
        raise CheckpointNotFound(f"segmenter checkpoint not found: {segmenter}")
    seeds = list(seeds or [0])
    train = select(cached_extract(data, backbone, segmenter, cfg, cache, 0, on_clip=on_clip), label_key, data)
    held = select(cached_extract(eval_data, backbone, segmenter, cfg, cache, 0, on_clip=on_clip), label_key, eval_data)
    classes = sorted(set(train["labels"]))
    n_traj = int(train["fractions"].shape[1])
    per_seed: dict[str, list[float]] = {m: [] for m in methods}
    for m in methods:
        for s in seeds:
            per_seed[m].append(train_one(m, train, held, classes, cfg, s, n_traj))
        if on_method:
            on_method(m)
    counts = {c: held["labels"].count(c) for c in sorted(set(held["labels"]))}
    majority_class = max(classes, key=train["labels"].count)
    return {
        **{m: float(np.mean(v)) for m, v in per_seed.items()},
        "per_seed": per_seed, "seeds": seeds,
        "chance": 1.0 / len(classes),
        "majority": counts.get(majority_class, 0) / len(held["labels"]),
        "classes": classes, "held_out_counts": counts, "label_key": label_key,
        "n_train": len(train["labels"]), "n_held_out": len(held["labels"]),
        "skipped": {"train": train["skipped"], "held_out": held["skipped"]},
        "backbone": backbone, "segmenter": str(segmenter), "trajectories": n_traj,
        "feature_grid": list(train["features"].shape[1:4]), "config": dataclasses.asdict(cfg), "preset": preset,
    }
