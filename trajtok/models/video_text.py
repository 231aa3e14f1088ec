"""The video-text model trained with a CLIP loss: a video tower (TrajViT2 or ViT3D), a text
tower, 256-d projections and a learnable temperature; one config rebuilds all of it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataengine.errors import ConfigError
from .layers import check_config_keys
from .segmenter import SegmenterConfig
from .text import TextConfig, build_text_tower
from .trajectory_encoder import Tokenizer, TrajectoryEncoderConfig
from .video import TrajViT2Video, TransformerConfig, ViT3DVideo

VIDEO_MODELS = ("trajvit2", "vit3d")


@dataclass
class VideoTextConfig:
    video_model: str = "trajvit2"                    # trajvit2 | vit3d
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    encoder: TrajectoryEncoderConfig = field(default_factory=TrajectoryEncoderConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256                              # shared video-text space
    temperature: float = 0.07                         # initial; learned
    eval_k: int = 4                                   # sub-tokens per trajectory at inference

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VideoTextConfig":
        d = dict(d)
        check_config_keys(cls, d)
        for name, sub in (("segmenter", SegmenterConfig), ("encoder", TrajectoryEncoderConfig),
                          ("transformer", TransformerConfig), ("text", TextConfig)):
            if name in d:
                d[name] = sub.from_dict(d[name])
        return cls(**d)

    def check(self) -> "VideoTextConfig":
        if self.video_model not in VIDEO_MODELS:
            raise ConfigError(f"unknown video model {self.video_model!r}; choose from {VIDEO_MODELS}")
        if self.encoder.in_dim != self.segmenter.dim:
            raise ValueError(f"encoder in_dim {self.encoder.in_dim} != segmenter dim {self.segmenter.dim}")
        if self.encoder.out_dim != self.transformer.width:
            raise ValueError(f"encoder out_dim {self.encoder.out_dim} != transformer width {self.transformer.width}")
        if self.eval_k not in self.encoder.sub_tokens:
            raise ConfigError(f"eval_k {self.eval_k} not among sub_tokens {self.encoder.sub_tokens}")
        return self


class VideoTextModel(nn.Module):
    def __init__(self, cfg: VideoTextConfig, pretrained_text: bool = True):
        super().__init__()
        self.cfg = cfg.check()
        if cfg.video_model == "trajvit2":
            self.video = TrajViT2Video(Tokenizer(cfg.segmenter, cfg.encoder), cfg.transformer)
        else:
            self.video = ViT3DVideo(cfg.transformer, cfg.segmenter.image_size)
        self.text = build_text_tower(cfg.text, pretrained=pretrained_text)
        self.video_proj = nn.Linear(cfg.transformer.width, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text.width, cfg.embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    @property
    def segmenter(self) -> nn.Module | None:
        return self.video.tokenizer.segmenter if self.cfg.video_model == "trajvit2" else None

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def encode_video(self, video: torch.Tensor, k: int | None = None,
                     chunk_frames: int | None = None) -> dict[str, torch.Tensor]:
        out = self.video(video, k=k if k is not None else self.cfg.eval_k, chunk_frames=chunk_frames)
        return {**out, "video": F.normalize(self.video_proj(out["embedding"]), dim=-1)}

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(texts)), dim=-1)

    def forward(self, video: torch.Tensor, texts: list[str], k: int | None = None) -> dict[str, torch.Tensor]:
        out = self.encode_video(video, k=k)
        return {**out, "text": self.encode_text(texts), "scale": self.scale()}
