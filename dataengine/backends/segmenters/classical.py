"""The CPU default segmenter: no weights, a panoptic partition of the frame.

SLIC superpixels are merged bottom-up on a region adjacency graph by mean
Lab colour (a hierarchical merge that recomputes the means after every merge,
so regions do not chain across gradients the way single linkage would;
``ops.regionmerge``). Regions below ``min_area`` are absorbed by their nearest neighbour so
every pixel belongs to a region.

Optionally (``motion_weight`` > 0; off by default: on the photo corpus it
split textured objects more than it separated them from the background, see
bench/REPORT.md) the labeller hands over each keyframe's optical flow, and
the merge distance of two regions becomes their colour distance times
``1 + motion_weight * max(0, |mean flow difference| - motion_floor)``, so
regions that move apart are kept apart.

With ``motion_layers`` on (the default, see bench/REPORT.md), the keyframe's flow
is split into the camera's motion and each superpixel's residual
(``dataengine.ops.motionlayers``): regions whose residuals differ by more than
``layer_split`` never merge, and moving regions whose residuals agree have
their colour distance scaled by ``layer_join``.

A SLIC superpixel that straddles an object's outline goes whole to one side,
so merged regions carry a sliver of their neighbour along their outlines.
``boundary_refine`` passes then move each outline pixel to the adjacent
region whose colour *near that pixel* it matches (``ops.regions.
refine_boundaries``); each pass moves an outline by at most one pixel.
"""
from __future__ import annotations

import numpy as np
from skimage import color
from skimage.segmentation import slic

from dataengine.config import SegmenterConfig
from dataengine.ops.motionlayers import camera_residual, textured
from dataengine.ops.regionmerge import merge_regions
from dataengine.ops.regions import consecutive, drop_small, fill_unlabelled, keep_largest, refine_boundaries


class ClassicalSegmenter:
    name = "classical"

    def __init__(self, cfg: SegmenterConfig):
        self.cfg = cfg

    # The labeller passes each keyframe's optical flow to the next frame (``motion``): ``uses_motion``
    # in its entry of dataengine.backends.table.

    def segment(self, frames: np.ndarray, motion: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        motion = motion if motion is not None else [None] * len(frames)
        return [self.segment_one(f, m) for f, m in zip(frames, motion)]

    def segment_one(self, frame: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
        cfg = self.cfg
        lab = color.rgb2lab(frame)
        # slic converts to Lab itself and scales compactness for that space.
        sp = slic(frame, n_segments=cfg.superpixels, compactness=cfg.compactness, start_label=1,
                  enforce_connectivity=True, channel_axis=-1)
        residual = reliable = None
        if flow is not None and cfg.motion_layers:
            forward = flow[..., :2]
            residual = camera_residual(forward)
            if flow.shape[-1] == 3:                 # forward-backward check: occluded and halo pixels drop out
                reliable = flow[..., 2] > 0.5
            if cfg.layer_min_texture > 0:
                plain = ~textured(frame, cfg.layer_min_texture)
                reliable = ~plain if reliable is None else reliable & ~plain
        merged = merge_regions(lab, sp, cfg.merge_threshold, None if flow is None else flow[..., :2],
                               cfg.motion_weight, residual, cfg.layer_min_speed, cfg.layer_tolerance, reliable,
                               cfg.layer_join, cfg.layer_split)
        labels = consecutive(merged + 1)
        if cfg.boundary_refine > 0:
            labels = refine_boundaries(labels, lab, cfg.boundary_radius, cfg.boundary_refine)
        min_pixels = max(1, int(cfg.min_area * labels.size))
        labels = keep_largest(drop_small(labels, min_pixels), cfg.max_regions)
        return consecutive(fill_unlabelled(labels))
