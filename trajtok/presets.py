"""Presets: one dataclass bundling model, data, loss and optimisation settings.

``paper`` follows the TrajTok setting (224 px, 16-frame clips, ConvNeXt-Tiny,
128 queries, 2-layer / 8-head Perceiver, AdamW 1e-3, wd 0.01); schedule length,
warm-up and per-GPU batch are our defaults, not numbers from the paper.
``tiny`` is the same architecture shrunk to train on one CPU core in minutes.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dataengine.errors import ConfigError
from .augment import AugmentConfig
from .data import DataConfig
from .losses import LossConfig
from .models.segmenter import SegmenterConfig
from .models.trajectory_encoder import TrajectoryEncoderConfig


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 2000
    max_steps: int = 100_000        # also the length of the linear decay
    grad_clip: float = 1.0          # max global grad norm; 0 disables
    log_every: int = 1
    save_every: int = 1000
    num_workers: int = -1           # loader workers per process; -1: from the CPUs this process may use


@dataclass
class Preset:
    name: str
    model: SegmenterConfig
    encoder: TrajectoryEncoderConfig
    data: DataConfig
    train: TrainConfig
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        self.sync()

    def sync(self) -> "Preset":
        """One source of truth for clip geometry: the data follow the model."""
        self.data.image_size = self.model.image_size
        self.data.frames = self.model.frames
        if self.encoder.in_dim != self.model.dim:
            raise ValueError(f"preset {self.name}: encoder in_dim {self.encoder.in_dim} != model dim {self.model.dim}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _paper() -> Preset:
    return Preset(
        name="paper",
        model=SegmenterConfig(backbone="convnext_tiny", image_size=224, frames=16, dim=512,
                              num_queries=128, depth=2, heads=8),
        encoder=TrajectoryEncoderConfig(in_dim=512, dim=512, out_dim=1024, depth=2, heads=8),
        data=DataConfig(batch_size=8, shuffle_buffer=128),
        train=TrainConfig(warmup_steps=2000, max_steps=100_000, save_every=1000, num_workers=-1),
    )


def _tiny() -> Preset:
    return Preset(
        name="tiny",
        # 128 px: smaller inputs leave the synthetic objects only a few pixels wide. Crops of at least
        # half the frame: smaller crops blow objects up far beyond their size in uncropped evaluation.
        # Image batches as small as video ones: larger ones make steps dearer without better recall.
        # (The measurements behind these choices: bench/REPORT.md, "Segmenter presets".)
        model=SegmenterConfig(backbone="convnext_atto", image_size=128, frames=8, dim=128,
                              num_queries=32, depth=2, heads=4),
        encoder=TrajectoryEncoderConfig(in_dim=128, dim=128, out_dim=192, depth=2, heads=4),
        data=DataConfig(batch_size=2, image_batch_size=2, shuffle_buffer=32,
                        augment=AugmentConfig(crop_scale=(0.5, 1.0))),
        train=TrainConfig(warmup_steps=20, max_steps=1200, save_every=200, num_workers=0),
        # The pixel-grouping term (not in the paper): from scratch on a CPU budget the encoder learns what
        # belongs together far sooner with it (held-out strict recall 0.09 -> 0.27 after 2400 steps on
        # photo-style ground truth; bench/REPORT.md, issue 10, ninth pass).
        loss=LossConfig(grouping_weight=1.0, grouping_scale=5.0),
    )


def _cpu() -> Preset:
    """The segmenter of the ``cpu`` video-text preset, so ``train-segmenter --preset cpu`` gives a
    checkpoint that ``train-trajvit2 --preset cpu --segmenter`` can warm-start from."""
    P = _tiny()
    P.name = "cpu"
    P.loss = LossConfig()     # train-trajvit2's cpu preset trains this segmenter with the paper's loss
    P.model = _cpu_segmenter()
    P.encoder = TrajectoryEncoderConfig(in_dim=64, dim=64, out_dim=128, depth=2, heads=4)
    return P.sync()


def _cpu_segmenter() -> SegmenterConfig:
    return SegmenterConfig(backbone="convnext_atto", image_size=64, frames=8, dim=64, num_queries=16, depth=1,
                           heads=4, backbone_kwargs={"depths": (1, 1, 2, 1), "dims": (32, 64, 128, 256)})


PRESETS = {"paper": _paper, "tiny": _tiny, "cpu": _cpu}


def get_preset(name: str | Preset) -> Preset:
    """A fresh copy of a named preset (or of a given ``Preset``), safe to modify."""
    if isinstance(name, Preset):
        return copy.deepcopy(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()


# ------------------------------------------------------------------ video-text (TrajViT2 / ViT3D)
@dataclass
class VideoTextPreset:
    """Everything ``trajtok train-trajvit2`` needs; ``model.video_model`` picks TrajViT2 or ViT3D.

    ``seg_weight`` scales the segmentation loss trained jointly with the CLIP loss (TrajViT2
    only; ViT3D has no segmenter). Augmentation is geometric only and never flips: captions
    name colours and directions, so colour jitter and mirroring would make them false.
    """
    name: str
    model: Any       # VideoTextConfig (typed loosely: models.video_text imports the text towers)
    data: DataConfig
    train: TrainConfig
    loss: LossConfig = field(default_factory=LossConfig)
    seg_weight: float = 1.0

    def __post_init__(self):
        self.sync()

    def sync(self) -> "VideoTextPreset":
        self.data.image_size = self.model.segmenter.image_size
        self.data.frames = self.model.segmenter.frames
        self.model.check()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CAPTION_SAFE_AUGMENT = dict(hflip=0.0, color_jitter=0.0, grayscale=0.0, blur=0.0)


def _video_text_paper() -> VideoTextPreset:
    from .models.text import TextConfig
    from .models.video import TransformerConfig
    from .models.video_text import VideoTextConfig
    seg = _paper()
    return VideoTextPreset(
        name="paper",
        model=VideoTextConfig(segmenter=seg.model, encoder=seg.encoder,
                              transformer=TransformerConfig(width=1024, depth=24, heads=16),
                              text=TextConfig(kind="word", width=512, depth=12, heads=8, context_length=77)),
        data=DataConfig(batch_size=16, shuffle_buffer=256,
                        augment=AugmentConfig(crop_scale=(0.5, 1.0), **CAPTION_SAFE_AUGMENT)),
        train=TrainConfig(lr=1e-4, weight_decay=1e-2, betas=(0.9, 0.98), warmup_steps=2000,
                          max_steps=100_000, save_every=1000, num_workers=-1),
    )


def _video_text_cpu() -> VideoTextPreset:
    from .models.text import TextConfig
    from .models.video import TransformerConfig
    from .models.video_text import VideoTextConfig
    return VideoTextPreset(
        name="cpu",
        model=VideoTextConfig(
            segmenter=_cpu_segmenter(), encoder=_cpu().encoder,
            transformer=TransformerConfig(width=128, depth=2, heads=4),
            text=TextConfig(kind="word", width=128, depth=2, heads=4, context_length=64)),
        data=DataConfig(batch_size=16, shuffle_buffer=64,
                        augment=AugmentConfig(crop_scale=(0.7, 1.0), **CAPTION_SAFE_AUGMENT)),
        train=TrainConfig(lr=1e-3, weight_decay=1e-2, betas=(0.9, 0.98), warmup_steps=40, max_steps=400,
                          save_every=500, num_workers=0),
    )


VIDEO_TEXT_PRESETS = {"paper": _video_text_paper, "cpu": _video_text_cpu}


def get_video_text_preset(name: "str | VideoTextPreset") -> VideoTextPreset:
    if isinstance(name, VideoTextPreset):
        return copy.deepcopy(name)
    if name not in VIDEO_TEXT_PRESETS:
        raise ConfigError(f"unknown video-text preset {name!r}; choose from {sorted(VIDEO_TEXT_PRESETS)}")
    return VIDEO_TEXT_PRESETS[name]()
