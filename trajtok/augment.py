"""Clip augmentation: one set of random parameters per clip, applied to frames and masks alike.

Geometric ops (random resized crop, horizontal flip) move frames and label maps
together, so a trajectory id keeps covering the same pixels; colour ops
(jitter, grayscale, blur) touch frames only. Parameters are drawn once per
clip, not per frame: a flicker of brightness or crop between frames would be
a fake motion the tracker-free segmenter cannot explain.

Label maps are resized with ``nearest-exact`` (pixel-centre sampling), which is
aligned with bilinear ``align_corners=False`` resizing of the frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF


@dataclass
class AugmentConfig:
    enabled: bool = True                 # False: resize the whole frame, nothing random
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.8            # probability; strengths below
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)   # at 224 px; scaled with the output size
    grayscale: float = 0.2


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Random ``(top, left, h, w)`` covering ``scale`` of the area at aspect ``ratio`` (w/h)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    # Fallback: the largest centred box whose aspect lies inside ``ratio``.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0, 1)


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """``[T, H, W]`` integer label maps -> ``[T, size, size]``, pixel-centre nearest."""
    out = F.interpolate(labels[:, None].double(), size=(size, size), mode="nearest-exact")
    return out[:, 0].round().long()


def adjust_hue(frames: torch.Tensor, shift: float) -> torch.Tensor:
    """``TF.adjust_hue`` for float frames ``[T, 3, H, W]`` in [0, 1], through OpenCV's HSV conversion: the same
    rotation of the hue circle by ``shift`` turns (tests compare the two), at a fraction of the CPU time of
    torchvision's tensor path, which dominated a loader worker's time per clip."""
    rgb = np.array(frames.permute(0, 2, 3, 1).numpy(), dtype=np.float32, order="C")   # a copy: frames stay as given
    turn = (shift % 1.0) * 360.0       # OpenCV's float hue is in degrees
    for t in range(len(rgb)):
        hsv = cv2.cvtColor(rgb[t], cv2.COLOR_RGB2HSV)
        hue = hsv[..., 0]
        hue += turn
        hue[hue >= 360.0] -= 360.0
        rgb[t] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return torch.from_numpy(rgb).permute(0, 3, 1, 2)


def _color_jitter(frames: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    ops = rng.permutation(4)
    b = rng.uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness)
    c = rng.uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast)
    s = rng.uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation)
    h = rng.uniform(-cfg.hue, cfg.hue)
    for op in ops:
        if op == 0:
            frames = TF.adjust_brightness(frames, b)
        elif op == 1:
            frames = TF.adjust_contrast(frames, c)
        elif op == 2:
            frames = TF.adjust_saturation(frames, s)
        else:
            frames = adjust_hue(frames, h)
    return frames


def augment_clip(frames: torch.Tensor, labels: torch.Tensor, size: int, cfg: AugmentConfig,
                 rng: np.random.Generator, target_stride: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``frames`` ``[T, 3, H, W]`` (uint8 or float in [0, 1]), ``labels`` ``[T, H, W]``.

    Returns frames ``[T, 3, size, size]`` float in [0, 1] and labels
    ``[T, size/stride, size/stride]`` int64 (the segmenter's output grid).
    """
    if frames.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"frames {tuple(frames.shape)} and labels {tuple(labels.shape)} differ in size")
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    labels = labels.long()
    if cfg.enabled:
        top, left, h, w = crop_box(frames.shape[-2], frames.shape[-1], cfg.crop_scale, cfg.crop_ratio, rng)
        frames = frames[..., top:top + h, left:left + w]
        labels = labels[..., top:top + h, left:left + w]
        if rng.random() < cfg.hflip:
            frames, labels = frames.flip(-1), labels.flip(-1)
    frames = resize_frames(frames, size)
    labels = resize_labels(labels, size // target_stride)
    if cfg.enabled:
        if rng.random() < cfg.color_jitter:
            frames = _color_jitter(frames, cfg, rng).clamp(0, 1)
        if rng.random() < cfg.grayscale:
            frames = TF.rgb_to_grayscale(frames, num_output_channels=3)
        if rng.random() < cfg.blur:
            sigma = rng.uniform(*cfg.blur_sigma) * size / 224.0
            kernel = 2 * max(1, math.ceil(3 * sigma)) + 1
            kernel = min(kernel, size - 1 if size % 2 == 0 else size)
            frames = TF.gaussian_blur(frames, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    return frames.contiguous(), labels.contiguous()
