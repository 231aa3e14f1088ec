"""TrajAdapter: probe a frozen video backbone through trajectory tokens.

    clip ──frozen backbone──► dense features [T', h, w, C]
    clip ──frozen TrajTok segmenter (once)──► hard trajectory map [T, H/4, W/4] (<= num_queries ids)
         ──resample_masks──► per-patch trajectory fractions [N, T', h, w] + majority id per patch
    features + masks ──trainable TrajectoryEncoder (K tokens / trajectory)──► tokens
    tokens ──AttentiveHead (one learned query, LayerNorm, linear)──► class logits

The baselines share the head so that only what feeds it differs: ``linear`` (mean-pooled
patches), ``attentive`` (the head straight on the patches) and ``perceiver`` (learned latents
of the same count, width and depth as the trajectory encoder, cross-attending to all
patches: the TrajAdapter without masks).

Why masks are pooled per backbone patch: a patch (tubelet) is the smallest thing the backbone
describes, so the question the encoder needs answered is "which trajectory owns this patch";
the share of its pixels each trajectory holds answers it, and the argmax of the shares is the
majority vote of the pixels under the patch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataengine.errors import ConfigError
from .layers import Attention, PerceiverLayer
from .segmenter import assign_queries
from .trajectory_encoder import TrajectoryEncoder, TrajectoryEncoderConfig
from .video import ViT3DVideo, sinusoid

# The raw velocity feature is ~20x smaller than the other geometry features for ordinary motion;
# at a probe's few hundred AdamW steps the geometry MLP cannot grow weights that large, and the
# TrajAdapter stays at chance on a motion label (bench/REPORT.md, "probe and TrajVLM").
VELOCITY_GAIN = 8.0
# Dropout on the trajectory encoder's appearance inputs: without it a probe on a few hundred clips fits
# the frozen backbone's features and ignores the trajectories' geometry (bench/REPORT.md, same section).
APPEARANCE_DROPOUT = 0.5
METHODS = ("linear", "attentive", "perceiver", "trajadapter_k1", "trajadapter_k2", "trajadapter_k4")


def resample_masks(assign: torch.Tensor, grid: tuple[int, int, int], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard trajectory map ``assign`` ``[B, T, H, W]`` (ids ``0..n-1``; ``-1`` = no trajectory) ->
    ``fractions`` ``[B, n, T', h, w]`` (share of each cell's pixels per trajectory, over the tubelet's
    frames too) and ``majority`` ``[B, T', h, w]`` (argmax of the shares: the majority vote; ``-1``
    where no pixel of the cell has a trajectory).

    When the grid divides the map, a cell is exactly the pixels under one backbone patch (tubelet);
    otherwise cells are the adaptive-pooling windows. Ties go to the lower id.
    """
    if assign.dim() != 4:
        raise ValueError(f"expected a trajectory map [B, T, H, W], got {tuple(assign.shape)}")
    one_hot = F.one_hot(assign.clamp_min(0).long(), n).permute(0, 4, 1, 2, 3).float()
    one_hot = one_hot * (assign >= 0).unsqueeze(1).float()
    fractions = F.adaptive_avg_pool3d(one_hot, grid)
    majority = fractions.argmax(dim=1).masked_fill(fractions.sum(1) <= 0, -1)
    return fractions, majority


@torch.no_grad()
def vit3d_patch_features(model: ViT3DVideo, video: torch.Tensor) -> torch.Tensor:
    """Dense features ``[B, T', h, w, C]`` of a ViT3D tower: its last block's patch states, normalised,
    CLS token in the sequence as in training (the model's own CLS-pooled output drops them)."""
    B, T = video.shape[:2]
    t = model.tubelet[0]
    if T % t:
        video = torch.cat([video, video[:, -1:].expand(-1, t - T % t, -1, -1, -1)], dim=1)
    x = model.patch((video.transpose(1, 2) - model.mean) / model.std)
    _, C, Tp, h, w = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(B, Tp, h * w, C)
    x = x + model.spatial[None, None] + sinusoid(torch.arange(Tp, device=x.device), C)[None, :, None].to(x.dtype)
    tr = model.transformer
    x = torch.cat([tr.cls.expand(B, -1, -1).to(x.dtype), x.reshape(B, Tp * h * w, C)], dim=1)
    for block in tr.blocks:
        x = block(x)
    return tr.norm(x[:, 1:]).reshape(B, Tp, h, w, C)


@torch.no_grad()
def frozen_clip_inputs(backbone: ViT3DVideo, segmenter: nn.Module, clips: torch.Tensor, image_size: int
                       ) -> dict[str, torch.Tensor]:
    """Clips ``[B, T, 3, H, W]`` in [0, 1] -> what the trainable parts need, computed once:
    backbone ``features`` ``[B, T', h, w, C]``, and the segmenter's hard trajectories (run on the
    raw clip at its own input size) resampled to that grid, ``fractions`` and ``majority``."""
    def resize(x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-2:] == (size, size):
            return x
        y = F.interpolate(x.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return y.clamp(0, 1).view(*x.shape[:3], size, size)

    features = vit3d_patch_features(backbone, resize(clips, image_size))
    assign = assign_queries(segmenter(resize(clips, segmenter.cfg.image_size)))
    fractions, majority = resample_masks(assign, tuple(features.shape[1:4]), segmenter.cfg.num_queries)
    return {"features": features, "fractions": fractions, "majority": majority}


class AttentiveHead(nn.Module):
    """One learned query cross-attends to the tokens; LayerNorm, then a linear classifier."""

    def __init__(self, dim: int, classes: int, heads: int = 4, kv_dim: int | None = None):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm_kv = nn.LayerNorm(kv_dim or dim)
        self.attn = Attention(dim, heads, kv_dim=kv_dim or dim)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if valid is None else ~valid
        q = self.query.expand(tokens.shape[0], -1, -1)
        pooled = self.attn(q, self.norm_kv(tokens), key_padding=pad)[:, 0]
        return self.classifier(self.norm(pooled))


class LinearProbe(nn.Module):
    def __init__(self, in_dim: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.classifier = nn.Linear(in_dim, classes)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        return self.classifier(self.norm(features.flatten(1, 3).mean(1)))


class AttentiveProbe(nn.Module):
    def __init__(self, in_dim: int, dim: int, classes: int, heads: int):
        super().__init__()
        self.head = AttentiveHead(dim, classes, heads, kv_dim=in_dim)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        return self.head(features.flatten(1, 3))


class PerceiverProbe(nn.Module):
    """Learned latents over all patches (no masks), then the attentive head."""

    def __init__(self, in_dim: int, dim: int, classes: int, heads: int, latents: int, depth: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.layers = nn.ModuleList(PerceiverLayer(dim, heads, kv_dim=in_dim) for _ in range(depth))
        self.head = AttentiveHead(dim, classes, heads)

    def forward(self, features: torch.Tensor, **_) -> torch.Tensor:
        pixels = features.flatten(1, 3)
        x = self.latents.unsqueeze(0).expand(pixels.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, pixels)
        return self.head(x)


class TrajAdapterProbe(nn.Module):
    """Trainable trajectory encoder over frozen features and resampled masks, then the attentive head."""

    def __init__(self, in_dim: int, dim: int, classes: int, heads: int, k: int, depth: int,
                 velocity_gain: float = VELOCITY_GAIN, appearance_dropout: float = APPEARANCE_DROPOUT):
        super().__init__()
        self.k = k
        self.encoder = TrajectoryEncoder(TrajectoryEncoderConfig(in_dim=in_dim, dim=dim, out_dim=dim, depth=depth,
                                                                 heads=heads, sub_tokens=[k],
                                                                 velocity_gain=velocity_gain,
                                                                 appearance_dropout=appearance_dropout))
        self.head = AttentiveHead(dim, classes, heads)

    def forward(self, features: torch.Tensor, fractions: torch.Tensor, majority: torch.Tensor, **_) -> torch.Tensor:
        enc = self.encoder(features.permute(0, 1, 4, 2, 3), fractions, assign=majority, k=self.k)
        valid = enc["valid"]
        valid = valid | ~valid.any(1, keepdim=True)   # a clip with no trajectory at all: attend to everything
        return self.head(enc["tokens"], valid)


def build_probe(method: str, in_dim: int, classes: int, dim: int = 128, heads: int = 4, depth: int = 1,
                latents: int = 32, velocity_gain: float = VELOCITY_GAIN,
                appearance_dropout: float = APPEARANCE_DROPOUT) -> nn.Module:
    """``latents``: the Perceiver's latent count, set to the segmenter's trajectory budget (same size);
    ``velocity_gain``: the TrajAdapter's scale on its trajectories' velocities (``trajectory_geometry``);
    ``appearance_dropout``: the TrajAdapter's dropout on the backbone features it reads."""
    if method == "linear":
        return LinearProbe(in_dim, classes)
    if method == "attentive":
        return AttentiveProbe(in_dim, dim, classes, heads)
    if method == "perceiver":
        return PerceiverProbe(in_dim, dim, classes, heads, latents, depth)
    if method.startswith("trajadapter_k"):
        return TrajAdapterProbe(in_dim, dim, classes, heads, int(method.removeprefix("trajadapter_k")), depth,
                                velocity_gain, appearance_dropout)
    raise ConfigError(f"unknown probe method {method!r}; choose from {', '.join(METHODS)}")
