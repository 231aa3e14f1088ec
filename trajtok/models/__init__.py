"""Models of the trajtok package (inference library; training loops live in ``trajtok.train``)."""
from .segmenter import Segmenter, SegmenterConfig, build_segmenter, segment
from .trajectory_encoder import Tokenizer, TrajectoryEncoder, TrajectoryEncoderConfig
from .video_text import VideoTextConfig, VideoTextModel

__all__ = ["Segmenter", "SegmenterConfig", "build_segmenter", "segment",
           "Tokenizer", "TrajectoryEncoder", "TrajectoryEncoderConfig", "VideoTextConfig", "VideoTextModel"]
