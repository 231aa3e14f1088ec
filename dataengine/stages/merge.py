"""Keyframe reconciliation: a fresh segmentation continues the tracks carried into it.

At a keyframe the tracker's label map (the previous clip carried forward, 0
where it could not explain a pixel) meets the segmenter's fresh partition.
Segmenters over-split textured objects and their region boundaries rarely
match a tracked mask to IoU 0.5, so regions are not matched one-to-one;
instead each fresh region is judged by how much of it the carried tracks
cover:

* a region mostly covered by one track (``continue_share`` of its pixels)
  continues that track: many regions may continue one track, and the track
  takes the region's boundary (this is where drift is corrected);
* a region that the carried tracks mostly leave unexplained (less than
  ``new_share`` of it carried) is new content and starts a new trajectory,
  unless it holds ``revive_share`` of a carried track that nothing else
  continues (the tracker lost most of a fast object: it continues that track);
* a region covered by several tracks, none dominant, is no evidence to merge
  them: the carried ids stay, and its untracked pixels go to the largest one.
  Nor is a region that one track dominates but that also holds much of a
  second track (``two_tracks_share`` of the region, and ``two_tracks_hold`` of
  that track's carried pixels): two tracked objects the segmenter joined by
  colour (a face against a skin-coloured wall) stay two;
* a carried track that the fresh regions would take away (it would keep less
  than ``keep_share`` of its carried pixels) is still visible by the
  tracker's account: its carried pixels keep its id rather than being
  merged into a neighbour.

Pixels the segmenter leaves at 0 (no region) keep the carried ids. Tracks end
only where the tracker lost them. The same function serves every
labeller (segmenter + tracker, and video segmenters linking their clips).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MergeResult:
    labels: np.ndarray                      # the keyframe's regions with trajectory ids
    matched: list[tuple[int, float]] = field(default_factory=list)   # (id, share of its regions it covers)
    new_ids: list[int] = field(default_factory=list)
    ended_ids: list[int] = field(default_factory=list)


def _fresh(segmentation: np.ndarray, next_id: int) -> tuple[MergeResult, int]:
    seg_ids = np.unique(segmentation[segmentation != 0])
    lut = np.zeros(int(segmentation.max()) + 1, dtype=np.int32)
    lut[seg_ids] = np.arange(next_id, next_id + len(seg_ids), dtype=np.int32)
    new = list(range(next_id, next_id + len(seg_ids)))
    return MergeResult(lut[segmentation], [], new, []), next_id + len(seg_ids)


def merge_keyframe(propagated: np.ndarray | None, segmentation: np.ndarray, next_id: int,
                   continue_share: float = 0.5, new_share: float = 0.5,
                   keep_share: float = 0.5, revive_share: float = 0.0, two_tracks_share: float = 0.0,
                   two_tracks_hold: float = 0.5) -> tuple[MergeResult, int]:
    """Assign trajectory ids to ``segmentation`` (regions 1..n); returns the result and the next free id.

    ``revive_share`` > 0: a new region that holds at least this share of a carried track's pixels continues
    that track when nothing else does (the tracker lost most of a fast object's pixels, so its region looked
    new; the pixels it did carry are the evidence of which track it is).
    ``two_tracks_share`` > 0: a region its dominant track would continue keeps the carried ids instead when a
    second track covers at least that share of it and the region holds at least ``two_tracks_hold`` of that
    second track's carried pixels (the second track would be swallowed).
    """
    segmentation = np.asarray(segmentation, dtype=np.int32)
    if propagated is None or not (propagated != 0).any():
        return _fresh(segmentation, next_id)
    carried = np.asarray(propagated, dtype=np.int32)
    track_ids, c_inv = np.unique(carried, return_inverse=True)       # track_ids[0] == 0 (holes) when any
    c_inv = c_inv.reshape(carried.shape)
    if track_ids[0] != 0:
        track_ids = np.concatenate([[0], track_ids])
        c_inv = c_inv + 1
    seg_ids, s_inv = np.unique(segmentation, return_inverse=True)
    s_inv = s_inv.reshape(segmentation.shape)
    S, C = len(seg_ids), len(track_ids)
    joint = np.bincount((s_inv * C + c_inv).ravel(), minlength=S * C).reshape(S, C)
    size = joint.sum(axis=1)
    tracks = joint[:, 1:]
    dominant = tracks.argmax(axis=1) + 1                              # index into track_ids
    dom_count = tracks.max(axis=1) if C > 1 else np.zeros(S, np.int64)
    explained = tracks.sum(axis=1)

    # Region -> id: a track index (>0), a new id (<0 marker), or keep the carried ids (0).
    region_to = np.zeros(S, np.int64)
    cont = dom_count >= continue_share * np.maximum(size, 1)
    c_area = np.bincount(c_inv.ravel(), minlength=C)
    if two_tracks_share > 0 and C > 2:
        order = np.argsort(tracks, axis=1, kind="stable")
        second = order[:, -2] + 1                                     # index into track_ids
        second_count = np.take_along_axis(tracks, order[:, -2:-1], axis=1)[:, 0]
        cont &= ~((second_count >= two_tracks_share * np.maximum(size, 1))
                  & (second_count >= two_tracks_hold * np.maximum(c_area[second], 1)))
    region_to[cont] = dominant[cont]
    is_new = (~cont) & (explained < new_share * size) & (seg_ids != 0)
    region_to[seg_ids == 0] = 0
    fresh: list[int] = []
    new_lut = np.zeros(S, np.int32)
    for r in np.flatnonzero(is_new):                                  # ascending region id: deterministic
        new_lut[r] = next_id
        fresh.append(next_id)
        next_id += 1
    per_region = np.where(region_to > 0, track_ids[np.minimum(region_to, C - 1)], 0).astype(np.int32)
    per_region[is_new] = new_lut[is_new]
    out = per_region[s_inv]
    # Regions with several tracks and none dominant: the carried ids stay; holes go to the largest.
    mixed = (~cont) & (~is_new) & (seg_ids != 0)
    if mixed.any():
        in_mixed = mixed[s_inv]
        out[in_mixed] = carried[in_mixed]
        holes = in_mixed & (carried == 0)
        out[holes] = track_ids[dominant][s_inv[holes]]
    # Pixels the segmenter leaves at 0 (SAM's masks need not cover the frame) are no evidence either way: the
    # tracker's ids stay there.
    unsegmented = segmentation == 0
    if unsegmented.any():
        out[unsegmented] = carried[unsegmented]
    # A track the fresh partition would swallow keeps its carried pixels (no evidence it is gone).
    kept = np.bincount(c_inv.ravel(), weights=(out == carried).ravel(), minlength=C)
    restore = (kept < keep_share * c_area) & (c_area > 0)
    restore[0] = False
    if restore.any():
        mask = restore[c_inv]
        out[mask] = carried[mask]
    present = set(np.unique(out).tolist()) - {0}
    if revive_share > 0 and fresh:
        out, present, fresh = _revive(out, is_new, new_lut, track_ids, dominant, dom_count, c_area,
                                      present, fresh, revive_share)
    matched = []
    for j in range(1, C):
        tid = int(track_ids[j])
        if tid in present:
            matched.append((tid, round(float(kept[j] / max(c_area[j], 1)), 4)))
    ended = sorted(int(t) for t in track_ids[1:] if int(t) not in present)
    fresh = [i for i in fresh if i in present]
    return MergeResult(out.astype(np.int32), matched, fresh, ended), next_id


def _revive(out: np.ndarray, is_new: np.ndarray, new_lut: np.ndarray, track_ids: np.ndarray,
            dominant: np.ndarray, dom_count: np.ndarray, c_area: np.ndarray, present: set[int],
            fresh: list[int], share: float) -> tuple[np.ndarray, set[int], list[int]]:
    """New regions take the id of the carried track they hold most of, where that track would end."""
    best: dict[int, tuple[int, int]] = {}                  # ended track index -> (pixels, region)
    for r in np.flatnonzero(is_new):
        j = int(dominant[r])
        if int(track_ids[j]) in present or dom_count[r] < share * c_area[j]:
            continue
        if dom_count[r] > best.get(j, (0, -1))[0]:
            best[j] = (int(dom_count[r]), int(r))
    if not best:
        return out, present, fresh
    lut = {int(new_lut[r]): int(track_ids[j]) for j, (_, r) in best.items()}
    table = np.arange(int(out.max()) + 1, dtype=np.int32)
    for a, b in lut.items():
        table[a] = b
    out = table[out]
    return out, (present - set(lut)) | set(lut.values()), [i for i in fresh if i not in lut]
