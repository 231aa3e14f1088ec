"""Small transformer pieces shared by the trajtok models: 1D RoPE, attention, Perceiver layer."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataengine.errors import ConfigError


def rope_angles(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[N, head_dim]`` for integer ``positions`` ``[N]`` (half-split layout)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[..., N, head_dim]`` by the per-position angles."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention; cross-attention when ``context`` is given.

    ``rope`` (cos, sin) rotates the keys only: in the segmenter the queries are
    learned slots with no position, so only the patch side carries one.
    """

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by {heads} heads")
        kv_dim = kv_dim or dim
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(kv_dim, dim, bias=bias)
        self.v = nn.Linear(kv_dim, dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_padding: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
        if rope is not None:
            k = apply_rope(k, *rope)
        mask = None
        if key_padding is not None:  # [B, N] True = ignore
            mask = ~key_padding[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        B, _, N, _ = out.shape
        return self.out(out.transpose(1, 2).reshape(B, N, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0, out_dim: int | None = None, hidden: int | None = None):
        super().__init__()
        hidden = hidden or int(round(dim * ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PerceiverLayer(nn.Module):
    """Pre-norm block: cross-attention to the inputs, self-attention among latents, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, kv_dim: int | None = None):
        super().__init__()
        kv_dim = kv_dim or dim
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.cross = Attention(dim, heads, kv_dim=kv_dim)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, latents: torch.Tensor, inputs: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_padding: torch.Tensor | None = None) -> torch.Tensor:
        latents = latents + self.cross(self.norm_q(latents), self.norm_kv(inputs), rope=rope,
                                       key_padding=key_padding)
        latents = latents + self.self_attn(self.norm_self(latents))
        return latents + self.mlp(self.norm_mlp(latents))


def check_config_keys(cls: type, d: dict[str, Any]) -> None:
    """A config dict (e.g. from a checkpoint) may name only fields of the dataclass ``cls``:
    an unknown key means a different model, not something to drop silently."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
