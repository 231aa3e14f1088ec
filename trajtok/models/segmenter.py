"""TrajTok segmenter: implicit space-time clustering of pixels into trajectories.

    frames ──ConvNeXt (frame-wise, timm features_only)──► 4 feature maps
           ──1x1 conv to ``dim``, resize to 1/4 input, sum──► pixel features F  [B, T, h, w, D]
    K learned queries ──Perceiver(cross-attn to detach(F)+RoPE, self-attn, MLP) x depth──► Q [B, K, D]
    soft masks  M = softmax_k(<Q_k, F_p> / tau)      hard masks = argmax_k, empty queries dropped

With ``no_object`` a (K+1)-th learned query joins the Perceiver and the softmax: the
*no-object* query, whose mask is the pixels of no trajectory (label 0: background or
void in ground truth that only annotates objects). Without it every pixel must go to
some trajectory, so a model trained on such labels spreads its object masks over the
background it was never told about; with it ``segment`` leaves the pixels it wins at 0.

The Perceiver reads *detached* pixel features: the encoder learns only through
the query-pixel similarity (the mask loss), never through the query path, so
the queries cannot drag the pixel space around to make their own job easier.
All frames of a clip share one set of queries, which is what makes a query a
trajectory rather than a per-frame region: it has to find its object in every
frame. RoPE over the flattened (t, y, x) order is the only position signal.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from dataengine.errors import CheckpointError, CheckpointNotFound, described
from .layers import PerceiverLayer, check_config_keys, rope_angles

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegmenterConfig:
    backbone: str = "convnext_tiny"          # any timm model with features_only support
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. depths/dims for toy nets
    image_size: int = 224                    # square training / inference resolution
    frames: int = 16                         # clip length; longer videos are cut into clips
    dim: int = 768                           # common feature / query width
    num_queries: int = 128                   # upper bound on trajectories per clip
    depth: int = 2                           # Perceiver layers
    heads: int = 8
    mlp_ratio: float = 4.0
    rope_base: float = 10000.0
    temperature: float = 0.1                 # initial softmax temperature over queries
    learnable_temperature: bool = True
    cosine: bool = True                      # L2-normalise both sides so tau alone sets sharpness
    no_object: bool = False                  # a learned query for pixels of no trajectory (label 0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegmenterConfig":
        check_config_keys(cls, d)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Segmenter(nn.Module):
    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        # pretrained=False always: nothing is downloaded; see load_backbone_weights.
        self.backbone = timm.create_model(cfg.backbone, pretrained=False, features_only=True,
                                          **cfg.backbone_kwargs)
        # NHWC: oneDNN's (depthwise) convolutions, forward and backward, run faster in this layout on
        # CPU, and cuDNN's do under bf16 on GPU.
        self.backbone.to(memory_format=torch.channels_last)
        channels = self.backbone.feature_info.channels()
        reductions = self.backbone.feature_info.reduction()
        if reductions[0] != 4:
            raise ValueError(f"backbone {cfg.backbone} first feature stride is {reductions[0]}, need 4")
        self.lateral = nn.ModuleList(nn.Conv2d(c, cfg.dim, kernel_size=1) for c in channels)
        self.pixel_norm = LayerNorm2d(cfg.dim)
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, cfg.dim) * 0.02)
        if cfg.no_object:
            self.no_object_query = nn.Parameter(torch.randn(1, cfg.dim) * 0.02)
        self.perceiver = nn.ModuleList(PerceiverLayer(cfg.dim, cfg.heads, cfg.mlp_ratio)
                                       for _ in range(cfg.depth))
        self.query_norm = nn.LayerNorm(cfg.dim)
        self.mask_embed = nn.Linear(cfg.dim, cfg.dim)
        log_scale = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        # Constants of the input convention, rebuilt from nothing: not part of the weights.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # -- pieces ---------------------------------------------------------------
    def pixel_features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` in [0, 1] -> fused features ``[B, T, D, H/4, W/4]``."""
        B, T = video.shape[:2]
        x = ((video.flatten(0, 1) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        maps = self.backbone(x)
        size = maps[0].shape[-2:]
        fused = None
        for lateral, m in zip(self.lateral, maps):
            m = lateral(m)
            if m.shape[-2:] != size:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            fused = m if fused is None else fused + m
        fused = self.pixel_norm(fused)
        return fused.view(B, T, *fused.shape[1:])

    def query_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Run the Perceiver over detached pixel tokens; ``[B, K, D]`` (``[B, K+1, D]`` with the
        no-object query last)."""
        B, T, D, h, w = features.shape
        tokens = features.detach().permute(0, 1, 3, 4, 2).reshape(B, T * h * w, D)
        pos = torch.arange(T * h * w, device=tokens.device)
        rope = rope_angles(pos, D // self.cfg.heads, self.cfg.rope_base)
        slots = self.queries if not self.cfg.no_object else torch.cat([self.queries, self.no_object_query])
        latents = slots.unsqueeze(0).expand(B, -1, -1)
        for layer in self.perceiver:
            latents = layer(latents, tokens, rope=rope)
        return self.mask_embed(self.query_norm(latents))

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def mask_logits(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Similarity logits ``[B, K, T, h, w]``; softmax over K gives the soft masks."""
        if self.cfg.cosine:
            queries = F.normalize(queries, dim=-1)
            features = F.normalize(features, dim=2)
        logits = torch.einsum("bkd,btdhw->bkthw", queries, features)
        return logits * self.scale()

    # -- forward --------------------------------------------------------------
    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """``video`` ``[B, T, 3, H, W]`` float in [0, 1].

        Returns ``logits`` ``[B, K, T, H/4, W/4]``, ``queries`` ``[B, K, D]`` and the
        pixel ``features`` ``[B, T, D, H/4, W/4]`` (for the trajectory encoder); with
        ``no_object`` also ``no_object_logits`` ``[B, 1, T, H/4, W/4]``, the no-object
        query's channel of the same softmax (``soft_masks`` / ``assign_queries`` use it).
        """
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video [B, T, 3, H, W], got {tuple(video.shape)}")
        features = self.pixel_features(video)
        queries = self.query_embeddings(features)
        logits = self.mask_logits(queries, features)
        if not self.cfg.no_object:
            return {"logits": logits, "queries": queries, "features": features}
        K = self.cfg.num_queries
        return {"logits": logits[:, :K], "no_object_logits": logits[:, K:], "queries": queries[:, :K],
                "features": features}


def soft_masks(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The K trajectories' soft masks ``[B, K, T, h, w]`` of a forward's output: the softmax over
    the queries, the no-object query included when the model has one (then they sum to <= 1)."""
    logits = out["logits"]
    void = out.get("no_object_logits")
    if void is None:
        return logits.softmax(dim=1)
    return torch.cat([logits, void], dim=1).softmax(dim=1)[:, :logits.shape[1]]


def assign_queries(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hard assignment ``[B, T, h, w]`` of a forward's output: the winning query per pixel,
    ``-1`` where the no-object query wins."""
    void = out.get("no_object_logits")
    return hard_assign(out["logits"].transpose(0, 1), None if void is None else void.transpose(0, 1))


def build_segmenter(cfg: SegmenterConfig, backbone_checkpoint: str | Path | None = None) -> Segmenter:
    model = Segmenter(cfg)
    if backbone_checkpoint:
        load_backbone_weights(model.backbone, backbone_checkpoint)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local safetensors or torch file (never unpickles objects)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:    # damaged, empty, not a checkpoint (EOFError too: click would print only "Aborted.")
        raise CheckpointError(f"checkpoint {path} cannot be read: {described(e)}") from None
    for key in ("state_dict", "model"):  # common wrappers of a bare state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return obj


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Initialise the timm feature backbone from a local classification checkpoint.

    timm's ``features_only`` wrapper names modules ``stem_0`` / ``stages_1`` where the
    classification model says ``stem.0`` / ``stages.1``; the classifier head is dropped.
    Missing backbone keys are an error: a silently half-loaded backbone wastes a run.
    """
    state = read_state_dict(path)
    state = {re.sub(r"^(stem|stages)\.(\d+)", r"\1_\2", k): v for k, v in state.items()
             if not k.startswith(("head.", "fc.", "classifier."))}
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:     # shapes of another architecture
        raise CheckpointError(f"{path}: does not fit the backbone: {' '.join(str(e).split())[:200]}") from None
    if result.missing_keys:
        raise CheckpointError(f"{path}: backbone keys missing from checkpoint: {result.missing_keys[:5]}"
                              f"{' ...' if len(result.missing_keys) > 5 else ''}")


def hard_assign(logits: torch.Tensor, no_object: torch.Tensor | None = None) -> torch.Tensor:
    """``[K, ...]`` logits -> query index per pixel ``[...]``; ``-1`` where the no-object
    logits ``[1, ...]`` (if given) win."""
    index = logits.argmax(dim=0)
    if no_object is None:
        return index
    return index.masked_fill(no_object[0] > logits.amax(dim=0), -1)


def compact_ids(index: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, int]:
    """Renumber query indices to ``offset+1 ..``; queries that won no pixel get no id, and
    pixels of no query (``-1``) stay 0."""
    used, inverse = torch.unique(index, return_inverse=True)
    ids = inverse.to(torch.int32) + offset + 1
    if used.numel() and int(used[0]) < 0:     # -1 sorts first: shift the real queries down by one
        ids = torch.where(index < 0, torch.zeros_like(ids), ids - 1)
        return ids, int(used.numel()) - 1
    return ids, int(used.numel())


def _frame_index(frame_logits: torch.Tensor, size: tuple[int, int], K: int) -> torch.Tensor:
    """One frame's logits ``[K(+1), h, w]`` upsampled to ``size`` -> query index per pixel
    (``-1`` where a no-object channel, after the K queries, wins)."""
    up = F.interpolate(frame_logits[None], size=size, mode="bilinear", align_corners=False)[0]
    return hard_assign(up[:K], up[K:] if up.shape[0] > K else None)


@torch.no_grad()
def segment(model: Segmenter, video: np.ndarray | torch.Tensor, clips_per_batch: int = 4) -> np.ndarray:
    """Label map ``[T, H, W]`` int32 (ids 1..n; 0 where the no-object query wins, if the model has
    one, else unused) of a video ``[T, H, W, 3]``.

    ``video`` is uint8, or float in [0, 1]. Frames are resized to the model's
    square input; the video is cut into clips of ``cfg.frames`` frames, run as
    batches, and the hard masks are taken at the original resolution. Ids are
    unique over the whole video but *not linked across clips*: joining clips is
    the engine's cross-clip merge, not the segmenter's job.
    """
    cfg = model.cfg
    x = torch.as_tensor(np.asarray(video))
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected video [T, H, W, 3], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x.float()
        if x.numel() and (float(x.max()) > 1.0 + 1e-3 or float(x.min()) < -1e-3):
            raise ValueError("float video must be in [0, 1]; pass uint8 for 0..255 values")
    T, H, W, _ = x.shape
    device = next(model.parameters()).device
    x = x.permute(0, 3, 1, 2).to(device)
    x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                      align_corners=False, antialias=True).clamp(0, 1)
    clips = [x[s:s + cfg.frames] for s in range(0, T, cfg.frames)]
    # Full clips go in batches; a shorter tail clip runs on its own (batches need equal T).
    groups: list[list[torch.Tensor]] = []
    for c in clips:
        if groups and len(groups[-1]) < clips_per_batch and groups[-1][0].shape[0] == c.shape[0]:
            groups[-1].append(c)
        else:
            groups.append([c])
    was_training = model.training
    model.eval()
    out = np.zeros((T, H, W), dtype=np.int32)
    t0, offset = 0, 0
    try:
        for group in groups:
            res = model(torch.stack(group))
            logits = res["logits"]                                 # [b, K, t, h, w]
            if "no_object_logits" in res:                          # the no-object channel last
                logits = torch.cat([logits, res["no_object_logits"]], dim=1)
            for clip_logits in logits:
                index = torch.stack([_frame_index(clip_logits[:, f], (H, W), cfg.num_queries)
                                     for f in range(clip_logits.shape[1])])
                ids, n = compact_ids(index, offset)
                out[t0:t0 + ids.shape[0]] = ids.cpu().numpy()
                t0 += ids.shape[0]
                offset += n
    finally:
        model.train(was_training)
    return out
