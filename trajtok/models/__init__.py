"""Models of the trajtok package."""
from .segmenter import Segmenter, SegmenterConfig, build_segmenter, segment
from .trajectory_encoder import Tokenizer, TrajectoryEncoder, TrajectoryEncoderConfig

__all__ = ["Segmenter", "SegmenterConfig", "build_segmenter", "segment",
           "Tokenizer", "TrajectoryEncoder", "TrajectoryEncoderConfig"]
