"""DirectSAM: a Segformer that predicts one boundary logit per pixel; regions are what boundaries enclose.

The model is loaded from a local ``save_pretrained`` folder or a model already
in the local Hugging Face cache (``chendelong/DirectSAM-1800px-0424``), never
downloaded. Keyframes are resized to a square ``resolution`` input, batched,
and the boundary map is thresholded back at the keyframe's own size. The
non-boundary area splits into 4-connected components (so a one-pixel diagonal
boundary still separates two regions); components below ``min_area`` are
dropped, the ``max_regions`` largest kept, and boundary pixels then go to the
nearest kept region, so the label map is a disjoint partition with ids 1..n.
"""
from __future__ import annotations

import cv2
import numpy as np

from dataengine.config import SegmenterConfig
from dataengine.errors import CheckpointError, CheckpointNotFound, ConfigError, first_line
from dataengine.backends.models import autocast, directsam_checkpoint, torch_device
from dataengine.ops.regions import fill_unlabelled, kept_regions

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # SegformerImageProcessor's defaults
IMAGENET_STD = (0.229, 0.224, 0.225)


def regions_from_boundary(boundary: np.ndarray, min_pixels: int, max_regions: int) -> np.ndarray:
    """Label map ``[H, W]`` int32 (ids 1..n, every pixel labelled if any region survives) from a boolean boundary map."""
    _, components = cv2.connectedComponents((~boundary).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    # ids made consecutive before the fill rather than after: the fill copies ids, so the result is the same
    return fill_unlabelled(kept_regions(components, min_pixels, max_regions))


def _normalisation(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the checkpoint's image processor when it ships one, else Segformer's defaults."""
    try:
        from transformers import SegformerImageProcessor
        proc = SegformerImageProcessor.from_pretrained(source, local_files_only=True)
        return tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError):  # a model-only folder has no preprocessor_config.json
        return IMAGENET_MEAN, IMAGENET_STD


class DirectSamSegmenter:
    name = "directsam"

    def __init__(self, cfg: SegmenterConfig, device: str = "cpu"):
        import torch
        from transformers import SegformerForSemanticSegmentation

        if cfg.resolution < 32:
            raise ConfigError(f"DirectSAM resolution must be at least 32, got {cfg.resolution}")
        if cfg.batch < 1:
            raise ConfigError(f"DirectSAM batch must be at least 1, got {cfg.batch}")
        self.cfg = cfg
        self.device = torch_device(device)
        found = directsam_checkpoint(cfg)
        try:
            # fp32 weights whatever the checkpoint stores (transformers loads a half-precision save as half by
            # default, and fp32 inputs then fail on CPU; CUDA runs under bf16 autocast); loaded strictly below
            model, info = SegformerForSemanticSegmentation.from_pretrained(
                found.path, local_files_only=True, dtype=torch.float32, output_loading_info=True)
        except (OSError, ValueError) as e:
            raise CheckpointNotFound(f"DirectSAM checkpoint {found.path} cannot be loaded: {first_line(e)}") from None
        except Exception as e:     # damaged weights, another model's folder, shapes that do not fit
            raise CheckpointError(f"DirectSAM checkpoint {found.path} cannot be loaded: "
                                  f"{type(e).__name__}: {first_line(e)}") from None
        # transformers only logs keys it could not fill and leaves those weights random: refused here
        problems = [f"{len(keys)} {label} (e.g. {sorted(map(str, keys))[0]})" for keys, label in
                    ((info.get("missing_keys"), "missing keys"), (info.get("unexpected_keys"), "unexpected keys"),
                     (info.get("mismatched_keys"), "keys of another shape")) if keys]
        if problems:
            raise CheckpointError(f"DirectSAM checkpoint {found.path} does not fit a Segformer boundary model: "
                                  f"{', '.join(problems)}")
        if model.config.num_labels != 1:
            raise CheckpointError(f"DirectSAM checkpoint {found.path} has {model.config.num_labels} output channels; "
                             "a boundary model has 1")
        self.model = model.to(self.device).eval()
        self.checkpoint = found
        mean, std = _normalisation(found.path)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def boundary_probability(self, frames: np.ndarray) -> np.ndarray:
        """``[K, H, W]`` float32 boundary probabilities at the frames' own size."""
        import torch
        import torch.nn.functional as F

        out = []
        h, w = frames.shape[1:3]
        r = self.cfg.resolution
        with torch.inference_mode():
            for start in range(0, len(frames), self.cfg.batch):
                x = torch.from_numpy(np.ascontiguousarray(frames[start:start + self.cfg.batch])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255)
                x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
                x = (x - self.mean) / self.std
                with autocast(self.device):
                    logits = self.model(pixel_values=x).logits      # [B, 1, r/4, r/4]
                logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
                out.append(logits[:, 0].sigmoid().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, h, w), np.float32)

    def segment(self, frames: np.ndarray) -> list[np.ndarray]:
        if len(frames) == 0:
            return []
        prob = self.boundary_probability(frames)
        min_pixels = max(1, int(self.cfg.min_area * prob[0].size))
        return [regions_from_boundary(p > self.cfg.boundary_threshold, min_pixels, self.cfg.max_regions)
                for p in prob]
