"""The CPU default segmenter: no weights, a panoptic partition of the frame.

SLIC superpixels are merged bottom-up on a region adjacency graph by mean
Lab colour (skimage's hierarchical merge recomputes the means after every
merge, so regions do not chain across gradients the way single linkage
would). Regions below ``min_area`` are absorbed by their nearest neighbour so
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

With ``smooth`` "bilateral" (the default, see bench/REPORT.md) the keyframe is first smoothed by an
edge-preserving bilateral filter: grain, compression noise and fine texture inside a region fade while
edges stay, so the superpixels, the merge's means and the outline refinement see less of them.

A SLIC superpixel that straddles an object's outline goes whole to one side,
so merged regions carry a sliver of their neighbour along their outlines.
``boundary_refine`` passes then move each outline pixel to the adjacent
region whose colour *near that pixel* it matches (``ops.regions.
refine_boundaries``); each pass moves an outline by at most one pixel.
"""
from __future__ import annotations

import math

import numpy as np
from skimage import color, graph
from skimage.segmentation import slic

from dataengine.config import SegmenterConfig
from dataengine.errors import ConfigError
from dataengine.ops.motionlayers import camera_residual, region_motion, textured
from dataengine.ops.regions import consecutive, drop_small, fill_unlabelled, keep_largest, refine_boundaries, unique_pairs


def colour_rag(lab: np.ndarray, labels: np.ndarray, flow: np.ndarray | None = None,
               motion_weight: float = 0.0, residual: np.ndarray | None = None, min_speed: float = 1.0,
               layer_tolerance: float = 1.0, reliable: np.ndarray | None = None,
               layer_join: float = 0.0, layer_split: float | None = None) -> graph.RAG:
    """The region adjacency graph of ``labels`` weighted by mean-colour distance.

    Same graph as ``skimage.graph.rag_mean_color(mode="distance")``, but the
    adjacency comes from vectorised neighbour pairs instead of a per-pixel
    Python filter (about 10x faster at working resolution).
    """
    n = int(labels.max()) + 1
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    totals = np.stack([np.bincount(flat, weights=lab[..., c].ravel(), minlength=n) for c in range(3)], axis=1)
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
        # diagonals too: skimage's RAG uses 8-connectivity
        np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], axis=1),
    ])
    pairs = unique_pairs(pairs[pairs[:, 0] != pairs[:, 1]], n)
    if flow is None:
        motion = np.zeros((n, 2))
    else:
        motion = np.stack([np.bincount(flat, weights=flow[..., c].ravel(), minlength=n) for c in range(2)], axis=1)
    if residual is None:
        res_total, res_count, layer = np.zeros((n, 2)), np.ones(n), np.zeros(n, dtype=int)
    else:
        res_total, res_count, layer = region_motion(labels, residual, min_speed, reliable)
    rag = graph.RAG()
    for i in np.unique(flat):
        rag.add_node(int(i), labels=[int(i)], **{"pixel count": counts[i], "total color": totals[i].copy(),
                                                "mean color": totals[i] / counts[i],
                                                "total motion": motion[i].copy(), "mean motion": motion[i] / counts[i],
                                                "total residual": res_total[i].copy(), "residual count": res_count[i],
                                                "mean residual": tuple(res_total[i] / max(res_count[i], 1.0)),
                                                "layer": int(layer[i])})
    rag.graph["motion_weight"] = motion_weight
    rag.graph["layer_tolerance"] = layer_tolerance if residual is not None else None
    rag.graph["layer_join"] = layer_join
    rag.graph["layer_split"] = min_speed if layer_split is None else layer_split
    means = totals / np.maximum(counts, 1)[:, None]
    weights = np.linalg.norm(means[pairs[:, 0]] - means[pairs[:, 1]], axis=1)
    if flow is not None and motion_weight > 0:
        mmeans = motion / np.maximum(counts, 1)[:, None]
        weights = weights * (1 + motion_weight * np.linalg.norm(mmeans[pairs[:, 0]] - mmeans[pairs[:, 1]], axis=1))
    if residual is not None:
        # only pairs where both regions have a layer are constrained (``_layer_weight`` returns the
        # colour distance otherwise): the per-pair Python call is made for those alone
        both = np.flatnonzero((layer[pairs[:, 0]] != 0) & (layer[pairs[:, 1]] != 0))
        weights = weights.copy()
        weights[both] = [_layer_weight(rag, a, b, w)
                         for a, b, w in zip(pairs[both, 0].tolist(), pairs[both, 1].tolist(), weights[both].tolist())]
    rag.add_weighted_edges_from(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), weights.tolist()))
    return rag


def _layer_weight(g, a: int, b: int, colour: float) -> float:
    """Motion-layer constraint on a merge distance: regions whose residual flows differ by more than
    ``layer_split`` never merge (moving against static, or two objects moving apart); moving regions whose
    residuals agree within the tolerance get their colour distance scaled by ``layer_join`` (an object's
    differently coloured pieces move together); regions without reliable flow keep the colour distance."""
    tol = g.graph.get("layer_tolerance")
    if tol is None:
        return colour
    nodes = g.nodes
    na = nodes[a]
    if na["layer"] == 0:
        return colour
    nb = nodes[b]
    if nb["layer"] == 0:
        return colour
    ra, rb = na["mean residual"], nb["mean residual"]
    d = math.hypot(ra[0] - rb[0], ra[1] - rb[1])
    if d > g.graph["layer_split"]:
        return math.inf
    if na["layer"] == nb["layer"] == 1 and d <= tol:
        return colour * g.graph["layer_join"]
    return colour


def _merge_mean_colour(g, src, dst):
    d, s = g.nodes[dst], g.nodes[src]
    d["total color"] += s["total color"]
    d["total motion"] += s["total motion"]
    d["pixel count"] += s["pixel count"]
    d["mean color"] = d["total color"] / d["pixel count"]
    d["mean motion"] = d["total motion"] / d["pixel count"]
    d["total residual"] = d["total residual"] + s["total residual"]
    d["residual count"] = d["residual count"] + s["residual count"]
    d["mean residual"] = tuple(d["total residual"] / max(d["residual count"], 1.0))
    d["layer"] = 1 if max(d["layer"], s["layer"]) == 1 else min(d["layer"], s["layer"])


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``np.linalg.norm(a - b)`` of two Lab means, summed in the same order on Python floats (the same
    float, bit for bit, without numpy's per-call overhead: the merge calls this for every edge it updates)."""
    x, y, z = (a - b).tolist()
    return math.sqrt(x * x + y * y + z * z)


def _colour_weight(g, src, dst, n):
    return {"weight": _layer_weight(g, dst, n, _colour_distance(g.nodes[dst]["mean color"], g.nodes[n]["mean color"]))}


def _edge_weight(g, src, dst, n):
    diff = _colour_distance(g.nodes[dst]["mean color"], g.nodes[n]["mean color"])
    w = g.graph.get("motion_weight", 0.0)
    if w > 0:
        diff *= 1 + w * float(np.linalg.norm(g.nodes[dst]["mean motion"] - g.nodes[n]["mean motion"]))
    return {"weight": _layer_weight(g, dst, n, diff)}


def merge_regions(lab: np.ndarray, labels: np.ndarray, thresh: float, flow: np.ndarray | None = None,
                  motion_weight: float = 0.0, residual: np.ndarray | None = None, min_speed: float = 1.0,
                  layer_tolerance: float = 1.0, reliable: np.ndarray | None = None, layer_join: float = 0.0,
                  layer_split: float | None = None) -> np.ndarray:
    """``labels`` (superpixels) merged by skimage's ``merge_hierarchical`` over ``colour_rag`` while the
    cheapest edge weighs less than ``thresh``; means (colour, motion, residual) recomputed after each merge."""
    rag = colour_rag(lab, labels, flow, motion_weight, residual, min_speed, layer_tolerance, reliable,
                     layer_join, layer_split)
    return graph.merge_hierarchical(labels, rag, thresh=thresh, rag_copy=False, in_place_merge=True,
                                    merge_func=_merge_mean_colour,
                                    weight_func=_edge_weight if flow is not None and motion_weight > 0
                                    else _colour_weight)


SMOOTHING = ("bilateral", "none")


def check_smoothing(kind: str) -> None:
    if kind not in SMOOTHING:
        raise ConfigError(f"unknown segmenter.smooth {kind!r} (expected one of {list(SMOOTHING)})")


def smoothed(frame: np.ndarray, kind: str, radius: int, colour: float) -> np.ndarray:
    """``frame`` (uint8 RGB) after OpenCV's edge-preserving bilateral filter (``kind`` "bilateral": spatial
    sigma ``radius`` px over a ``2 radius + 1`` window, colour sigma ``colour`` grey levels), or unchanged
    ("none")."""
    check_smoothing(kind)
    if kind == "none":
        return frame
    import cv2
    return cv2.bilateralFilter(np.ascontiguousarray(frame), 2 * radius + 1, colour, radius)


class ClassicalSegmenter:
    name = "classical"

    def __init__(self, cfg: SegmenterConfig):
        check_smoothing(cfg.smooth)                 # fail when the labeller is built, not on the first keyframe
        self.cfg = cfg

    # The labeller passes each keyframe's optical flow to the next frame (``motion``): ``uses_motion``
    # in its entry of dataengine.backends.table.

    def segment(self, frames: np.ndarray, motion: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        motion = motion if motion is not None else [None] * len(frames)
        return [self.segment_one(f, m) for f, m in zip(frames, motion)]

    def segment_one(self, frame: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
        cfg = self.cfg
        raw = frame
        frame = smoothed(frame, cfg.smooth, cfg.smooth_radius, cfg.smooth_colour)
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
                plain = ~textured(raw, cfg.layer_min_texture)     # texture as the flow saw it
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
