"""Label one clip: segment keyframes, track each clip, merge tracks across clips.

The frames between two keyframes form a clip. The keyframe is segmented, its
regions take the ids of the tracks they continue (``merge``), and the tracker
carries them to the frame before the next keyframe, plus that keyframe itself
so the next merge has something to match. At a scene cut nothing is carried.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import AnnotateConfig
from .merge import merge_keyframe
from .segmenters import build_segmenter
from .trackers import build_tracker


@dataclass
class ClipLabels:
    labels: np.ndarray                  # [T, H, W] int32 trajectory ids, 0 = none
    keyframes: list[int]
    cuts: list[int]
    merges: list[dict] = field(default_factory=list)
    seconds_segment: float = 0.0
    seconds_track: float = 0.0


class Labeller:
    """Holds one segmenter and one tracker (one model set per worker)."""

    def __init__(self, cfg: AnnotateConfig, device: str = "cpu"):
        self.cfg = cfg
        self.segmenter = build_segmenter(cfg.segmenter, device)
        # A video segmenter (trained TrajTok) tracks by itself: no separate tracker.
        self.joint = bool(getattr(self.segmenter, "segments_video", False))
        self.tracker = None if self.joint else build_tracker(cfg.tracker, device)

    @property
    def backends(self) -> dict[str, str]:
        return {"segmenter": self.segmenter.name,
                "tracker": self.segmenter.name if self.joint else self.tracker.name}

    def label(self, frames: np.ndarray, keyframes: list[int], cuts: list[int]) -> ClipLabels:
        if self.joint:
            return self.label_jointly(frames, cuts)
        T = len(frames)
        t0 = time.perf_counter()
        # All keyframes in one call: model backends batch them on the GPU.
        segmentations = self.segmenter.segment(frames[keyframes])
        t_segment = time.perf_counter() - t0
        labels = np.zeros(frames.shape[:3], dtype=np.int32)
        merges: list[dict] = []
        propagated = None
        next_id = 1
        t_track = 0.0
        bounds = keyframes[1:] + [T]
        for k, end, seg in zip(keyframes, bounds, segmentations):
            carried = None if (k in cuts) else propagated
            result, next_id = merge_keyframe(carried, seg, next_id, self.cfg.merge.iou_threshold)
            labels[k] = result.labels
            if carried is not None:
                merges.append({"position": k, "matched": [[i, iou] for i, iou in result.matched],
                               "new": result.new_ids, "ended": result.ended_ids})
            # Track through the clip and into the next keyframe (unless it is a cut).
            stop = end + 1 if (end < T and end not in cuts) else end
            t1 = time.perf_counter()
            tracked = self.tracker.track(frames[k:stop], result.labels)
            t_track += time.perf_counter() - t1
            labels[k + 1:end] = tracked[1:end - k]
            propagated = tracked[end - k] if stop > end else None
        return ClipLabels(labels, list(keyframes), list(cuts), merges, t_segment, t_track)

    def label_jointly(self, frames: np.ndarray, cuts: list[int]) -> ClipLabels:
        """Video segmenter: one pass per clip; clips of a shot linked by IoU, never across a cut."""
        T = len(frames)
        t0 = time.perf_counter()
        raw = self.segmenter.segment_video(frames)
        t_segment = time.perf_counter() - t0
        step = self.segmenter.clip_frames
        shots = [0] + [c for c in cuts if 0 < c < T] + [T]
        starts = sorted({s for a, b in zip(shots, shots[1:]) for s in range(a, b, step)})
        labels = np.zeros_like(raw)
        merges: list[dict] = []
        next_id = 1
        for s, end in zip(starts, starts[1:] + [T]):
            carried = None if (s == 0 or s in cuts) else labels[s - 1]
            result, next_id = merge_keyframe(carried, raw[s], next_id, self.cfg.merge.iou_threshold)
            # The clip's own ids -> trajectory ids, read off the merged first frame.
            lut = np.zeros(int(raw[s:end].max()) + 1, dtype=np.int32)
            lut[raw[s].ravel()] = result.labels.ravel()
            unseen = [int(i) for i in np.unique(raw[s:end]) if i and not lut[i]]
            for i in unseen:  # objects that appear later in the clip
                lut[i], next_id = next_id, next_id + 1
            labels[s:end] = lut[raw[s:end]]
            if carried is not None:
                merges.append({"position": s, "matched": [[i, iou] for i, iou in result.matched],
                               "new": result.new_ids, "ended": result.ended_ids})
        return ClipLabels(labels, starts, list(cuts), merges, t_segment, 0.0)
