"""Video towers over one transformer: TrajViT2 (trajectory tokens) and ViT3D (tubelet tokens).

Both prepend a CLS token, run the same pre-norm transformer (padding mask on empty
trajectories) and return the normalised CLS state. They differ only in what a token is:

* TrajViT2: the tokenizer (segmenter + trajectory encoder) gives N x K trajectory tokens
  per clip, N <= num_queries whatever the resolution; position lives in the tokens
  (geometry embedding of each trajectory), so no position table is needed.
* ViT3D: a 2 x 16 x 16 tubelet Conv3d, a learned spatial position table and a fixed
  sinusoidal temporal one (any clip length runs); 16 frames at 224 px = 8 x 14 x 14 = 1568 tokens.

Long videos (``chunk_frames``): TrajViT2 tokenizes 16-frame chunks separately and
concatenates their tokens (at most 128 x K per chunk); ViT3D has no cap, every tubelet
is a token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layers import MLP, Attention, check_config_keys


@dataclass
class TransformerConfig:
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    tubelet: tuple[int, int, int] = (2, 16, 16)   # ViT3D only: (t, h, w)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        check_config_keys(cls, d)
        d = dict(d)
        if "tubelet" in d:
            d["tubelet"] = tuple(d["tubelet"])
        return cls(**d)


class Block(nn.Module):
    """Pre-norm self-attention + MLP block; ``key_padding`` True = ignore that token."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding=key_padding)
        return x + self.mlp(self.norm2(x))


class VideoTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` ``[B, N, width]``, ``valid`` ``[B, N]`` -> CLS state ``[B, width]``."""
        B = tokens.shape[0]
        x = torch.cat([self.cls.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)
        pad = None
        if valid is not None:
            pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=valid.device), ~valid], dim=1)
        for block in self.blocks:
            x = block(x, key_padding=pad)
        return self.norm(x[:, 0])


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freq[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TrajViT2Video(nn.Module):
    """Video ``[B, T, 3, H, W]`` -> CLS state, via trajectory tokens; also the segmenter logits."""

    def __init__(self, tokenizer: nn.Module, cfg: TransformerConfig):
        super().__init__()
        self.tokenizer = tokenizer
        self.transformer = VideoTransformer(cfg)

    def forward(self, video: torch.Tensor, k: int | None = None, chunk_frames: int | None = None
                ) -> dict[str, torch.Tensor]:
        T = video.shape[1]
        chunks = [video] if not chunk_frames or T <= chunk_frames else list(video.split(chunk_frames, dim=1))
        outs = [self.tokenizer(c, k=k) for c in chunks]
        tokens = torch.cat([o["tokens"] for o in outs], dim=1)
        valid = torch.cat([o["valid"] for o in outs], dim=1)
        logits = outs[0]["logits"] if len(outs) == 1 else None
        res = {"embedding": self.transformer(tokens, valid), "logits": logits, "tokens": valid.sum(1)}
        if logits is not None and "no_object_logits" in outs[0]:
            res["no_object_logits"] = outs[0]["no_object_logits"]
        return res


class ViT3DVideo(nn.Module):
    """Video ``[B, T, 3, H, W]`` -> CLS state over 2 x 16 x 16 tubelet tokens."""

    def __init__(self, cfg: TransformerConfig, image_size: int):
        super().__init__()
        t, ph, pw = cfg.tubelet
        if image_size % ph or image_size % pw:
            raise ValueError(f"image size {image_size} not divisible by tubelet {cfg.tubelet}")
        self.tubelet = cfg.tubelet
        self.patch = nn.Conv3d(3, cfg.width, kernel_size=cfg.tubelet, stride=cfg.tubelet)
        self.spatial = nn.Parameter(torch.randn((image_size // ph) * (image_size // pw), cfg.width) * 0.02)
        self.transformer = VideoTransformer(cfg)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, video: torch.Tensor, k: int | None = None, chunk_frames: int | None = None
                ) -> dict[str, torch.Tensor]:
        B, T = video.shape[:2]
        t = self.tubelet[0]
        if T % t:   # images (T = 1) and odd clips: repeat the last frame up to a whole tubelet
            video = torch.cat([video, video[:, -1:].expand(-1, t - T % t, -1, -1, -1)], dim=1)
        x = (video.transpose(1, 2) - self.mean) / self.std                 # [B, 3, T, H, W]
        x = self.patch(x)                                                  # [B, C, T', h, w]
        _, C, Tp, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(B, Tp, h * w, C)
        x = x + self.spatial[None, None] + sinusoid(torch.arange(Tp, device=x.device), C)[None, :, None].to(x.dtype)
        x = x.reshape(B, Tp * h * w, C)
        return {"embedding": self.transformer(x), "logits": None,
                "tokens": torch.full((B,), Tp * h * w, device=x.device)}
