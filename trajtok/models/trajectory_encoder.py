"""Trajectory encoder: one token per trajectory, and the full tokenizer (segmenter + encoder).

Each trajectory token is the soft-mask-weighted mean of the pixel features
(``z_k = sum_p M[k,p] F_p / sum_p M[k,p]``) plus an embedding of where and how
large the trajectory is in space-time (mass-weighted mean and spread of
(t, y, x), log area), lifted to the video model's width by a per-token MLP.

Pooling with the *soft* masks keeps the tokenizer differentiable end to end,
which is the point of TrajTok; everything after the pooling acts on K tokens
only, so its cost does not grow with resolution or clip length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layers import MLP
from .segmenter import Segmenter, SegmenterConfig

N_GEOMETRY = 7  # mean (t, y, x), std (t, y, x), log area fraction


@dataclass
class TrajectoryEncoderConfig:
    in_dim: int = 512        # must equal the segmenter's ``dim``
    out_dim: int = 768       # width of the video model that consumes the tokens
    depth: int = 2           # residual MLP blocks at ``out_dim``
    mlp_ratio: float = 4.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrajectoryEncoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown TrajectoryEncoderConfig keys: {sorted(set(d) - known)}")
        return cls(**d)


def trajectory_geometry(masks: torch.Tensor) -> torch.Tensor:
    """Soft masks ``[B, K, T, h, w]`` -> geometry features ``[B, K, 7]`` in roughly [-1, 1]."""
    B, K, T, h, w = masks.shape
    dev, dt = masks.device, masks.dtype
    coords = [torch.linspace(-1, 1, n, device=dev, dtype=dt) if n > 1 else torch.zeros(1, device=dev, dtype=dt)
              for n in (T, h, w)]
    mass = masks.sum(dim=(2, 3, 4)).clamp_min(1e-6)                     # [B, K]
    feats_mean, feats_std = [], []
    for axis, c in zip((2, 3, 4), coords):
        marginal = masks.sum(dim=[a for a in (2, 3, 4) if a != axis])   # [B, K, n]
        mean = (marginal * c).sum(-1) / mass
        var = (marginal * c.pow(2)).sum(-1) / mass - mean.pow(2)
        feats_mean.append(mean)
        feats_std.append(var.clamp_min(0).sqrt())
    area = torch.log(mass / (T * h * w)).clamp_min(-20) / 10.0
    return torch.stack(feats_mean + feats_std + [area], dim=-1)


class ResidualMLP(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class TrajectoryEncoder(nn.Module):
    def __init__(self, cfg: TrajectoryEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.in_norm = nn.LayerNorm(cfg.in_dim)
        self.in_proj = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.geometry = MLP(N_GEOMETRY, out_dim=cfg.out_dim, hidden=cfg.out_dim)
        self.blocks = nn.ModuleList(ResidualMLP(cfg.out_dim, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(cfg.out_dim)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``features`` ``[B, T, D, h, w]``, soft ``masks`` ``[B, K, T, h, w]`` -> tokens ``[B, K, out_dim]``."""
        pooled = torch.einsum("bkthw,btdhw->bkd", masks, features)
        pooled = pooled / masks.sum(dim=(2, 3, 4)).clamp_min(1e-6).unsqueeze(-1)
        x = self.in_proj(self.in_norm(pooled)) + self.geometry(trajectory_geometry(masks))
        for block in self.blocks:
            x = block(x)
        return self.out_norm(x)


class Tokenizer(nn.Module):
    """Video -> trajectory tokens: the segmenter plus the trajectory encoder.

    ``valid`` marks queries that win at least one pixel under hard assignment;
    the others are empty trajectories a video model should drop (or mask).
    """

    def __init__(self, seg_cfg: SegmenterConfig, enc_cfg: TrajectoryEncoderConfig):
        super().__init__()
        if enc_cfg.in_dim != seg_cfg.dim:
            raise ValueError(f"trajectory encoder in_dim {enc_cfg.in_dim} != segmenter dim {seg_cfg.dim}")
        self.segmenter = Segmenter(seg_cfg)
        self.encoder = TrajectoryEncoder(enc_cfg)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.segmenter(video)
        masks = out["logits"].softmax(dim=1)
        tokens = self.encoder(out["features"], masks)
        K = masks.shape[1]
        winners = out["logits"].argmax(dim=1).flatten(1)                # [B, T*h*w]
        valid = torch.zeros(winners.shape[0], K, dtype=torch.bool, device=winners.device)
        valid.scatter_(1, winners, True)
        return {"tokens": tokens, "valid": valid, **out}
