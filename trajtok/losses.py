"""Segmenter loss: Hungarian matching of queries to trajectories, Focal + Dice on matches.

The soft masks are a softmax over queries, so every pixel is shared out among
the K queries. Each ground-truth trajectory (a space-time mask over the whole
clip) is matched to one query by ``scipy.optimize.linear_sum_assignment`` on a
Dice + Focal cost; matched pairs get ``focal_weight * Focal + dice_weight * Dice``;
unmatched queries get the focal loss against an all-empty target, which pushes
their soft masks to zero so they stop winning pixels and are dropped at inference.
There is no cross-entropy / "no-object" class: emptiness *is* the no-object state.

Pixels no trajectory covers (label 0; pseudo-labels have coverage < 1) are
ignored: the annotation says nothing about them. A model with a no-object query
(``SegmenterConfig.no_object``) is told about them instead: its channel joins the
softmax and is trained like one more matched pair against the label-0 mask, so the
trajectories' masks learn to stop where the labelled objects stop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass
class LossConfig:
    focal_weight: float = 1.0
    dice_weight: float = 2.0
    empty_weight: float = 1.0     # focal-to-empty on unmatched queries
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    ignore_unlabeled: bool = True
    # Not in the TrajTok paper: a pixel-embedding term (``pixel_grouping_loss``) that tells the encoder
    # directly which pixels belong together. 0 = off (the paper's loss); the CPU presets turn it on.
    grouping_weight: float = 0.0
    grouping_scale: float = 10.0  # inverse temperature of its cosine logits


def _focal_terms(p: torch.Tensor, alpha: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel focal loss of probabilities ``p`` if the target were 1 / 0."""
    p = p.clamp(1e-6, 1 - 1e-6)
    pos = -alpha * (1 - p).pow(gamma) * p.log()
    neg = -(1 - alpha) * p.pow(gamma) * (1 - p).log()
    return pos, neg


def match_cost(probs: torch.Tensor, targets: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Cost ``[K, N]`` of assigning query k (``probs`` ``[K, P]``) to target n (``targets`` ``[N, P]``)."""
    pos, neg = _focal_terms(probs, cfg.focal_alpha, cfg.focal_gamma)
    P = max(probs.shape[1], 1)
    focal = (pos @ targets.T + neg @ (1 - targets).T) / P
    inter = probs @ targets.T
    dice = 1 - (2 * inter + 1) / (probs.sum(1)[:, None] + targets.sum(1)[None, :] + 1)
    return cfg.focal_weight * focal + cfg.dice_weight * dice


@torch.no_grad()
def hungarian_match(probs: torch.Tensor, targets: torch.Tensor, cfg: LossConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(queries, targets)`` of the minimum-cost one-to-one assignment."""
    if targets.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cost = match_cost(probs.float(), targets.float(), cfg).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


def targets_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """Label map ``[T, h, w]`` (0 = none) -> binary trajectory masks ``[N, T*h*w]``."""
    flat = labels.reshape(-1)
    ids = torch.unique(flat)
    ids = ids[ids != 0]
    return (flat[None, :] == ids[:, None]).float()


def _pair_terms(p: torch.Tensor, t: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed focal and dice losses of soft masks ``p`` ``[M, P]`` against targets ``t``."""
    P = max(p.shape[1], 1)
    focal = ((pos * t + neg * (1 - t)).sum(1) / P).sum()
    dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum()
    return focal, dice


def pixel_grouping_loss(features: torch.Tensor, labels: torch.Tensor, scale: float,
                        no_object: bool) -> torch.Tensor:
    """Each pixel's feature is classified among its clip's trajectory prototypes (the mean unit
    feature of each trajectory's pixels; label 0 one more group when it means "no object", else
    left out): cross-entropy of cosine logits x ``scale``, averaged over clips with >= 2 groups.

    Why: the mask loss reaches the pixel encoder only through the queries it is matched to, which
    from scratch takes thousands of steps to organise; this term gives every pixel a gradient from
    the first step towards features that group by trajectory, which the queries then find. On a
    15 CPU-minute budget it is what lets the tiny segmenter learn (bench/REPORT.md, issue 10).
    ``features`` ``[B, T, D, h, w]``, ``labels`` ``[B, T, h, w]``."""
    f = F.normalize(features.float(), dim=2)
    total, clips = f.new_zeros(()), 0
    for b in range(f.shape[0]):
        x = f[b].permute(0, 2, 3, 1).reshape(-1, f.shape[2])
        lab = labels[b].reshape(-1)
        if not no_object:
            keep = lab != 0
            x, lab = x[keep], lab[keep]
        ids, group = torch.unique(lab, return_inverse=True)
        if len(ids) < 2:
            continue
        prototypes = F.normalize(F.one_hot(group, len(ids)).to(x.dtype).T @ x, dim=1)
        total = total + F.cross_entropy(scale * x @ prototypes.T, group)
        clips += 1
    return total / max(clips, 1)


def segmenter_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: LossConfig | None = None,
                   no_object_logits: torch.Tensor | None = None,
                   features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``logits`` ``[B, K, T, h, w]``, ``labels`` ``[B, T, h, w]`` -> dict of scalar losses.

    ``no_object_logits`` ``[B, 1, T, h, w]`` (a model with a no-object query): its channel
    joins the softmax, every pixel counts and label 0 is its target (``ignore_unlabeled``
    does not apply). ``loss`` is the total to optimise; ``focal``/``dice``/``empty`` are its
    parts, ``matched`` the number of matched trajectories (normaliser, detached; the
    no-object channel counts as one per clip).
    """
    cfg = cfg or LossConfig()
    B, K = logits.shape[:2]
    if labels.shape[-2:] != logits.shape[-2:] or labels.shape[1] != logits.shape[2]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    if no_object_logits is not None:
        if no_object_logits.shape != (B, 1, *logits.shape[2:]):
            raise ValueError(f"no-object logits {tuple(no_object_logits.shape)} do not match logits "
                             f"{tuple(logits.shape)}")
        logits = torch.cat([logits, no_object_logits], dim=1)
    probs_all = logits.float().softmax(dim=1).flatten(2)                # [B, K(+1), P]
    focal_sum = logits.new_zeros((), dtype=torch.float32)
    dice_sum = focal_sum.clone()
    empty_sum = focal_sum.clone()
    n_matched = 0
    for b in range(B):
        lab = labels[b].reshape(-1)
        probs = probs_all[b]
        if no_object_logits is not None:
            void_pos, void_neg = _focal_terms(probs[K:], cfg.focal_alpha, cfg.focal_gamma)
            f, d = _pair_terms(probs[K:], (lab == 0).float()[None], void_pos, void_neg)
            focal_sum, dice_sum, n_matched = focal_sum + f, dice_sum + d, n_matched + 1
            probs = probs[:K]
        elif cfg.ignore_unlabeled:
            keep = lab != 0
            probs, lab = probs[:, keep], lab[keep]
        tgt = targets_from_labels(lab)
        rows, cols = hungarian_match(probs, tgt, cfg)
        P = max(probs.shape[1], 1)
        pos, neg = _focal_terms(probs, cfg.focal_alpha, cfg.focal_gamma)
        if len(rows):
            r, c = torch.as_tensor(rows, device=probs.device), torch.as_tensor(cols, device=probs.device)
            f, d = _pair_terms(probs[r], tgt[c], pos[r], neg[r])
            focal_sum, dice_sum = focal_sum + f, dice_sum + d
            n_matched += len(rows)
        unmatched = torch.ones(K, dtype=torch.bool, device=probs.device)
        unmatched[torch.as_tensor(rows, device=probs.device)] = False
        if unmatched.any():
            empty_sum = empty_sum + (neg[unmatched].sum(1) / P).mean()
    norm = max(n_matched, 1)
    focal, dice, empty = focal_sum / norm, dice_sum / norm, empty_sum / B
    loss = cfg.focal_weight * focal + cfg.dice_weight * dice + cfg.empty_weight * empty
    grouping = torch.zeros((), device=loss.device)
    if cfg.grouping_weight > 0:
        if features is None:
            raise ValueError("grouping_weight > 0 needs the pixel features")
        grouping = pixel_grouping_loss(features, labels, cfg.grouping_scale, no_object_logits is not None)
        loss = loss + cfg.grouping_weight * grouping
    return {"loss": loss, "focal": focal.detach(), "dice": dice.detach(), "empty": empty.detach(),
            "grouping": grouping.detach(), "matched": torch.tensor(float(n_matched))}


def clip_loss(video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
              groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over L2-normalised embeddings ``[B, E]``; ``scale`` = 1 / temperature.

    ``groups`` ``[B]`` (e.g. caption ids): samples of one group are joint positives, so two
    clips with the same caption are not pushed apart; the loss is the negative log of the
    probability mass on all positives of a row.
    """
    logits = scale * video @ text.T
    if groups is None:
        groups = torch.arange(video.shape[0], device=video.device)
    positive = groups[:, None] == groups[None, :]
    neg_inf = torch.finfo(logits.dtype).min

    def one_way(lg: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(lg, dim=1) - torch.logsumexp(lg.masked_fill(~positive, neg_inf), dim=1)).mean()

    return 0.5 * (one_way(logits) + one_way(logits.T))
