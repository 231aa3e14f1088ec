"""Trajectory encoder: K tokens per trajectory, and the full tokenizer (segmenter + encoder).

    proposal_n   = soft-mask weighted mean of the features over trajectory n's own pixels
                   (+ an embedding of its space-time geometry)          -> one vector per trajectory
    sub-tokens   = proposal_n + sub-query_j, j < K  (K in {1, 2, 4}, Fourier-initialised queries)
    refinement   = Perceiver layers: cross-attention to the pixel features, restricted to the
                   pixels the hard segmentation gives trajectory n; self-attention among the K
                   sub-tokens of one trajectory; MLP
    tokens       = [B, N * K, out_dim], ``valid`` marks trajectories that own at least one pixel

Why the pieces are shaped so:
* The proposal weights pixels by the *soft* masks, so a loss on the tokens reaches the
  segmenter's mask logits (TrajTok trains end to end); it sums over the trajectory's own
  hard pixels only, so nothing outside a trajectory moves its token.
* The masked cross-attention is computed per pixel, not per (token, pixel) pair: every pixel
  belongs to exactly one trajectory, so it scores only that trajectory's K sub-tokens and the
  softmax runs within each segment (scatter max / sum). Cost is O(pixels x K), independent of
  the number of trajectories, and an empty trajectory gets a zero update, never a 0/0.
* Sub-queries of K tokens sit at maximally separated angles (pairwise cosine cos(2 pi i / K)
  <= 0), so the K tokens of one trajectory start out looking at it differently. A separate,
  learned set per K lets any K of the set be chosen at inference (Matryoshka-style training
  draws K per batch).
* Self-attention never mixes trajectories: the video model does that; here it would let one
  object's token change when another object changes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataengine.errors import ConfigError
from .layers import MLP, Attention, check_config_keys
from .segmenter import Segmenter, SegmenterConfig, assign_queries, soft_masks

N_GEOMETRY = 9  # mean (t, y, x), std (t, y, x), velocity (dy/dt, dx/dt), log area fraction
# Up to this many tokens per clip the masked cross-attention runs as one dense masked matmul
# (faster on CPU for the small presets); above it, per-pixel segment attention (O(pixels x K)).
DENSE_MAX_TOKENS = 64


@dataclass
class TrajectoryEncoderConfig:
    in_dim: int = 512          # feature channels (the segmenter's ``dim``, or any given feature map's)
    dim: int = 512             # Perceiver width
    out_dim: int = 768         # width of the video model that consumes the tokens
    depth: int = 2             # Perceiver layers
    heads: int = 8
    mlp_ratio: float = 4.0
    sub_tokens: list[int] = field(default_factory=lambda: [1, 2, 4])   # choices of K
    # Multiplies the two velocity features before the geometry MLP. 1.0 keeps checkpoints written
    # before this field; the TrajAdapter probe raises it (see ``trajectory_geometry``).
    velocity_gain: float = 1.0
    # Dropout on the appearance inputs (the pooled features of each proposal and the pixel features
    # the cross-attention reads); geometry is never dropped. 0.0 keeps earlier checkpoints' behaviour;
    # the TrajAdapter probe raises it so that a probe on a few hundred clips cannot fit a frozen
    # backbone's features instead of the trajectories (bench/REPORT.md, "probe and TrajVLM").
    appearance_dropout: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrajectoryEncoderConfig":
        check_config_keys(cls, d)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fourier_queries(k: int, dim: int) -> torch.Tensor:
    """``[k, dim]`` embeddings of the angles ``2 pi j / k``: channel pair c holds
    ``(cos(a_j + p_c), sin(a_j + p_c))`` with a fixed phase p_c per pair, so
    ``<e_i, e_j> = dim/2 * cos(a_i - a_j)``: cosine ``cos(2 pi (i - j) / k)``."""
    if dim % 2:
        raise ValueError(f"Fourier sub-queries need an even width, got {dim}")
    angles = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k)
    phases = torch.arange(dim // 2, dtype=torch.float32) * ((math.sqrt(5) - 1) * math.pi)
    theta = angles[:, None] + phases[None, :]
    return torch.stack([theta.cos(), theta.sin()], dim=-1).reshape(k, dim)


def trajectory_geometry(masks: torch.Tensor, velocity_gain: float = 1.0) -> torch.Tensor:
    """Weights ``[B, N, T, h, w]`` -> geometry features ``[B, N, 9]`` in roughly [-1, 1].

    The velocity (a slope in half-frames per half-clip, halved) is small for ordinary motion:
    an object crossing a quarter of the frame over the clip scores about 0.1, against position
    means and spreads of 0.2-0.5. ``velocity_gain`` scales it up so that a network trained for a
    few hundred steps can read it next to them (bench/REPORT.md, "probe and TrajVLM")."""
    B, N, T, h, w = masks.shape
    dev, dt = masks.device, masks.dtype
    coords = [torch.linspace(-1, 1, n, device=dev, dtype=dt) if n > 1 else torch.zeros(1, device=dev, dtype=dt)
              for n in (T, h, w)]
    mass = masks.sum(dim=(2, 3, 4)).clamp_min(1e-6)                     # [B, N]
    means, stds = [], []
    for axis, c in zip((2, 3, 4), coords):
        marginal = masks.sum(dim=[a for a in (2, 3, 4) if a != axis])   # [B, N, n]
        mean = (marginal * c).sum(-1) / mass
        var = (marginal * c.pow(2)).sum(-1) / mass - mean.pow(2)
        means.append(mean)
        stds.append(var.clamp_min(0).sqrt())
    # Direction of motion: the regression slope of y and x on t (cov(t, .) / var(t)).
    var_t = stds[0].pow(2)
    velocity = []
    for axis, c in ((4, coords[1]), (3, coords[2])):                     # sum out x for y, y for x
        joint = masks.sum(dim=axis)                                     # [B, N, T, n]
        e_tc = (joint * coords[0][:, None] * c[None, :]).sum((-1, -2)) / mass
        velocity.append(((e_tc - means[0] * means[1 if axis == 4 else 2]) / (var_t + 0.05)).clamp(-2, 2) / 2)
    area = torch.log(mass / (T * h * w)).clamp_min(-20) / 10.0
    velocity = [v * velocity_gain for v in velocity]
    return torch.stack(means + stds + velocity + [area], dim=-1)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: torch.Tensor,
                      n_segments: int) -> torch.Tensor:
    """Cross-attention in which each query attends only to the pixels of its own segment.

    ``q`` ``[S, K, H, d]`` (S segments, K sub-tokens each), ``k``/``v`` ``[P, H, d]`` pixels,
    ``segment`` ``[P]`` long in ``0..S-1`` (or ``-1``: a pixel no query sees). Returns
    ``[S, K, H, d]``; a segment without pixels gets zeros.
    """
    S, K, H, d = q.shape
    keep = segment >= 0
    if segment.device.type != "meta" and not bool(keep.all()):   # meta: shapes only (FLOP counts)
        k, v, segment = k[keep], v[keep], segment[keep]
    scores = torch.einsum("pkhd,phd->pkh", q[segment], k) / math.sqrt(d)          # [P, K, H]
    peak = scores.new_full((S, K, H), -torch.inf)
    peak = peak.scatter_reduce(0, segment[:, None, None].expand_as(scores), scores.detach(), "amax")
    weights = (scores - peak[segment]).exp()
    denom = scores.new_zeros((S, K, H)).index_add(0, segment, weights)
    weights = weights / denom[segment]
    out = q.new_zeros((S, K, H, d))
    return out.index_add(0, segment, weights[..., None] * v[:, None])


class MaskedCrossAttention(nn.Module):
    """Multi-head cross-attention from trajectory sub-tokens to pixels, restricted by segment."""

    def __init__(self, dim: int, kv_dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, pixels: torch.Tensor, assign: torch.Tensor | None) -> torch.Tensor:
        """``tokens`` ``[B, N, K, D]``, ``pixels`` ``[B, P, C]``, ``assign`` ``[B, P]`` trajectory of each
        pixel (None: every token attends to every pixel, the unmasked Perceiver)."""
        B, N, K, D = tokens.shape
        H, d = self.heads, self.head_dim
        q = self.q(tokens).view(B, N, K, H, d)
        k = self.k(pixels).view(B, -1, H, d)
        v = self.v(pixels).view(B, -1, H, d)
        if assign is None or N * K <= DENSE_MAX_TOKENS:
            qf = q.reshape(B, N * K, H, d).transpose(1, 2)
            mask = None
            if assign is not None:   # same result as the segment path; few tokens make dense matmuls cheaper
                own = assign[:, None, :] == torch.arange(N, device=assign.device)[None, :, None]   # [B, N, P]
                empty = ~own.any(-1)
                mask = (own | empty[..., None]).repeat_interleave(K, dim=1)[:, None]        # [B, 1, N*K, P]
            out = F.scaled_dot_product_attention(qf, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
            out = out.transpose(1, 2).reshape(B, N, K, D)
            if assign is not None:   # an empty trajectory gets no update, as in the segment path
                out = out.masked_fill(empty[:, :, None, None], 0.0)
        else:   # fold the batch into segment ids: segment b*N + n
            seg = (assign + torch.arange(B, device=assign.device)[:, None] * N).masked_fill(assign < 0, -1)
            out = segment_attention(q.reshape(B * N, K, H, d), k.reshape(-1, H, d), v.reshape(-1, H, d),
                                    seg.reshape(-1), B * N).reshape(B, N, K, D)
        return self.out(out)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, kv_dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.cross = MaskedCrossAttention(dim, kv_dim, heads)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, pixels: torch.Tensor, assign: torch.Tensor | None) -> torch.Tensor:
        B, N, K, D = x.shape
        x = x + self.cross(self.norm_q(x), self.norm_kv(pixels), assign)
        if K > 1:   # among the sub-tokens of one trajectory only
            x = x + self.self_attn(self.norm_self(x).reshape(B * N, K, D)).reshape(B, N, K, D)
        return x + self.mlp(self.norm_mlp(x))


def align_features(features: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Features ``[B, T', C, h', w']`` -> ``[B, T, C, h, w]`` on the mask grid ``(T, h, w)``:
    bilinear in space, nearest frame in time (a backbone's tubelets cover several frames)."""
    T, h, w = grid
    B, Tf, C = features.shape[:3]
    if features.shape[-2:] != (h, w):
        features = F.interpolate(features.flatten(0, 1), size=(h, w), mode="bilinear",
                                 align_corners=False).view(B, Tf, C, h, w)
    if Tf != T:
        index = torch.div(torch.arange(T, device=features.device) * Tf, T, rounding_mode="floor")
        features = features[:, index]
    return features


class TrajectoryEncoder(nn.Module):
    def __init__(self, cfg: TrajectoryEncoderConfig):
        super().__init__()
        if not cfg.sub_tokens or any(k < 1 for k in cfg.sub_tokens):
            raise ValueError(f"sub_tokens must be positive counts, got {cfg.sub_tokens}")
        self.cfg = cfg
        self.in_norm = nn.LayerNorm(cfg.in_dim)
        self.in_proj = nn.Linear(cfg.in_dim, cfg.dim)
        self.appearance_dropout = nn.Dropout(cfg.appearance_dropout)
        self.geometry = MLP(N_GEOMETRY, out_dim=cfg.dim, hidden=cfg.dim)
        self.sub_queries = nn.ParameterDict({str(k): nn.Parameter(fourier_queries(k, cfg.dim))
                                             for k in cfg.sub_tokens})
        self.layers = nn.ModuleList(EncoderLayer(cfg.dim, cfg.in_dim, cfg.heads, cfg.mlp_ratio)
                                    for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.out_proj = nn.Linear(cfg.dim, cfg.out_dim)

    def forward(self, features: torch.Tensor, masks: torch.Tensor, assign: torch.Tensor | None = None,
                k: int | None = None, masked: bool = True) -> dict[str, torch.Tensor]:
        """``features`` ``[B, T', C, h', w']`` (any grid; resized to the masks'), soft ``masks``
        ``[B, N, T, h, w]``, ``assign`` ``[B, T, h, w]`` hard trajectory index per pixel (default:
        argmax of ``masks``), ``k`` sub-tokens per trajectory (default: the largest choice).
        ``masked=False`` lets every token see every pixel (the unmasked Perceiver baseline).

        Returns ``tokens`` ``[B, N*k, out_dim]`` (trajectory-major), ``valid`` ``[B, N*k]`` and
        ``trajectory`` ``[N*k]`` (the trajectory of each token).
        """
        B, N, T, h, w = masks.shape
        k = max(self.cfg.sub_tokens) if k is None else int(k)
        if str(k) not in self.sub_queries:
            raise ConfigError(f"k={k} sub-tokens not trained; choose from {self.cfg.sub_tokens}")
        features = align_features(features, (T, h, w))
        if assign is None:
            assign = masks.detach().argmax(dim=1)
        own = F.one_hot(assign.clamp_min(0), N).permute(0, 4, 1, 2, 3).to(masks.dtype)
        own = own * (assign >= 0).unsqueeze(1).to(masks.dtype)            # [B, N, T, h, w] hard
        weights = masks * own
        pooled = torch.einsum("bnthw,btchw->bnc", weights, features)
        pooled = pooled / weights.sum(dim=(2, 3, 4)).clamp_min(1e-6).unsqueeze(-1)
        geometry = trajectory_geometry(weights, self.cfg.velocity_gain)
        proposal = self.in_proj(self.appearance_dropout(self.in_norm(pooled))) + self.geometry(geometry)
        x = proposal.unsqueeze(2) + self.sub_queries[str(k)].to(proposal.dtype)   # [B, N, k, dim]
        pixels = self.appearance_dropout(features.permute(0, 1, 3, 4, 2).reshape(B, T * h * w, -1))
        flat_assign = assign.reshape(B, -1) if masked else None
        for layer in self.layers:
            x = layer(x, pixels, flat_assign)
        tokens = self.out_proj(self.out_norm(x)).reshape(B, N * k, -1)
        valid = own.flatten(2).any(-1)                                    # [B, N]
        return {"tokens": tokens, "valid": valid.repeat_interleave(k, dim=1),
                "trajectory": torch.arange(N, device=masks.device).repeat_interleave(k)}


class Tokenizer(nn.Module):
    """Video -> trajectory tokens: the segmenter plus the trajectory encoder.

    ``valid`` marks tokens of queries that win at least one pixel under hard assignment;
    the others belong to empty trajectories a video model should mask.
    """

    def __init__(self, seg_cfg: SegmenterConfig, enc_cfg: TrajectoryEncoderConfig):
        super().__init__()
        if enc_cfg.in_dim != seg_cfg.dim:
            raise ValueError(f"trajectory encoder in_dim {enc_cfg.in_dim} != segmenter dim {seg_cfg.dim}")
        self.segmenter = Segmenter(seg_cfg)
        self.encoder = TrajectoryEncoder(enc_cfg)

    def forward(self, video: torch.Tensor, k: int | None = None) -> dict[str, torch.Tensor]:
        out = self.segmenter(video)
        # With a no-object query its pixels belong to no trajectory (assign -1): no token pools them.
        enc = self.encoder(out["features"], soft_masks(out), assign=assign_queries(out).detach(), k=k)
        return {**enc, **out}
