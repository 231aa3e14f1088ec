"""Training loops (the inference library is ``trajtok.models``; nothing there imports from here).

    segmenter.py   TrajTok segmenter on trajectory shards   (``trajtok train-segmenter``)
    trajvit2.py    TrajViT2 / ViT3D video-text CLIP training (``trajtok train-trajvit2``)

``python -m trajtok.train`` / ``torchrun -m trajtok.train`` run the segmenter loop.
"""
from .segmenter import load_segmenter, lr_at, train_segmenter

__all__ = ["train_segmenter", "load_segmenter", "lr_at", "train_video_text"]


def train_video_text(*args, **kwargs):
    """See ``trajtok.train.trajvit2.train_video_text`` (imported lazily: it pulls in the text towers)."""
    from .trajvit2 import train_video_text as run
    return run(*args, **kwargs)
