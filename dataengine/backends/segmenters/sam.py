"""SAM / SAM 2 automatic mask generation, made panoptic.

The automatic mask generators (segment-anything's ``SamAutomaticMaskGenerator``,
sam2's ``SAM2AutomaticMaskGenerator``) prompt a grid of points and return
overlapping masks. They become one disjoint label map by letting masks claim
pixels in order of predicted IoU, then area: a mask keeps only the pixels no
better mask took, and is dropped when fewer than ``min_area`` remain. Pixels no
mask covers stay 0 (SAM says nothing about them; the tracker and the next
keyframe may).

SAM (v1) checkpoints are plain state dicts. With ``sam_type: auto`` the
encoder's width, depth, heads and global-attention blocks are read from the
checkpoint's tensor shapes, so vit_b / vit_l / vit_h (and smaller encoders of
the same family) build through segment-anything's own builder without naming
the type. ``sam_type: sam2`` builds SAM 2 from ``sam2_config`` at
``resolution`` with an ``{"model": state_dict}`` checkpoint.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dataengine.config import SegmenterConfig
from dataengine.errors import CheckpointError, ConfigError
from dataengine.backends.models import autocast, build_sam2, load_strict, read_state_dict, sam_checkpoint, torch_device

SAM_TYPES = ("auto", "vit_b", "vit_l", "vit_h", "sam2")
_PREFIX = "image_encoder.blocks."


def partition(masks: list[dict[str, Any]], shape: tuple[int, int], min_pixels: int, max_regions: int) -> np.ndarray:
    """Overlapping generator masks -> disjoint ``[H, W]`` int32 ids 1..n (higher score, then larger, first)."""
    order = sorted(range(len(masks)), key=lambda i: (-float(masks[i]["predicted_iou"]), -int(masks[i]["area"]), i))
    labels = np.zeros(shape, np.int32)
    n = 0
    for i in order:
        if n >= max_regions:
            break
        claim = masks[i]["segmentation"] & (labels == 0)
        if claim.sum() < min_pixels:
            continue
        n += 1
        labels[claim] = n
    return labels


def sam_architecture(sd: dict[str, Any], path: str) -> dict[str, Any]:
    """``_build_sam`` arguments read from a SAM (v1) state dict's shapes."""
    patch = sd.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        if any(k.startswith("image_encoder.trunk.") for k in sd):
            raise CheckpointError(f"{path} is a SAM 2 checkpoint: use sam_type 'sam2' (--sam-type sam2) and its "
                             "--sam2-config")
        raise CheckpointError(f"{path} is not a SAM checkpoint (no image_encoder.patch_embed weights)")
    dim = int(patch.shape[0])
    blocks = sorted({int(k[len(_PREFIX):].split(".")[0]) for k in sd if k.startswith(_PREFIX)})
    rel = [sd.get(f"{_PREFIX}{i}.attn.rel_pos_h") for i in blocks]
    if not blocks or any(r is None for r in rel):
        raise CheckpointError(f"{path} is not a SAM checkpoint (encoder blocks without relative positions)")
    # Windowed blocks (window 14) have 2*14-1 relative positions; global blocks span the whole 64x64 grid.
    return {"encoder_embed_dim": dim, "encoder_depth": len(blocks),
            "encoder_num_heads": dim // int(rel[0].shape[1]),
            "encoder_global_attn_indexes": [i for i, r in zip(blocks, rel) if r.shape[0] != 2 * 14 - 1]}


def build_sam(sam_type: str, path: str):
    """A segment-anything model from its builders, weights loaded strictly (weights_only)."""
    from segment_anything.build_sam import _build_sam, sam_model_registry

    sd = read_state_dict(path, "SAM")
    if "model" in sd and isinstance(sd["model"], dict):   # a training checkpoint wrapping the weights
        sd = sd["model"]
    if sam_type == "auto":
        # _build_sam is the builder behind every registry entry; it takes the sizes read above.
        model = _build_sam(**sam_architecture(sd, path), checkpoint=None)
    else:
        model = sam_model_registry[sam_type](checkpoint=None)
    load_strict(model, sd, f"SAM ({sam_type})", path)
    return model.eval()


class SamSegmenter:
    name = "sam"

    def __init__(self, cfg: SegmenterConfig, device: str = "cpu"):
        if cfg.sam_type not in SAM_TYPES:
            raise ConfigError(f"unknown sam_type {cfg.sam_type!r} (choose from {', '.join(SAM_TYPES)})")
        self.cfg = cfg
        self.device = torch_device(device)
        self.checkpoint = sam_checkpoint(cfg)
        options = dict(points_per_side=cfg.points_per_side, pred_iou_thresh=cfg.pred_iou_thresh,
                       stability_score_thresh=cfg.stability_thresh, output_mode="binary_mask")
        if cfg.sam_type == "sam2":
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

            model = build_sam2(cfg.sam2_config, self.checkpoint.path, self.device, cfg.resolution, video=False)
            self.generator = SAM2AutomaticMaskGenerator(model, **options)
            # The image predictor hard-codes the backbone feature sizes of a 1024 input.
            s = cfg.resolution
            self.generator.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        else:
            from segment_anything import SamAutomaticMaskGenerator

            model = build_sam(cfg.sam_type, self.checkpoint.path).to(self.device)
            self.generator = SamAutomaticMaskGenerator(model, **options)

    def segment(self, frames: np.ndarray) -> list[np.ndarray]:
        # The generators take one image at a time (their point batches fill the device).
        return [self.segment_one(f) for f in frames]

    def segment_one(self, frame: np.ndarray) -> np.ndarray:
        import contextlib

        import torch

        # SAM 2 was trained for bf16; SAM (v1) post-processing (NMS, boxes) stays in fp32.
        ctx = autocast(self.device) if self.cfg.sam_type == "sam2" else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            masks = self.generator.generate(np.ascontiguousarray(frame))
        min_pixels = max(1, int(self.cfg.min_area * frame.shape[0] * frame.shape[1]))
        return partition(masks, frame.shape[:2], min_pixels, self.cfg.max_regions)
