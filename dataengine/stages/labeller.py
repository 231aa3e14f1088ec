"""Label one clip: segment keyframes, track each clip, merge tracks across clips.

The frames between two keyframes form a clip. The keyframe is segmented, its
regions take the ids of the tracks they continue (``merge``: reconciliation,
not one-to-one matching), and the tracker carries them to the frame before the
next keyframe, plus that keyframe itself so the next merge has something to
match. Keyframes come from the decode stage (histogram change, scene cuts, a
long gap) and from the labeller itself: where the carried tracks stop
explaining the frame (occlusion, new content, flow that fails its
forward-backward check leave pixels unlabelled), that frame is segmented
again. At a scene cut nothing is carried.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dataengine.config import AnnotateConfig
from dataengine.stages.merge import merge_keyframe
from dataengine.backends import table as backends
from dataengine.backends.segmenters import build_segmenter
from dataengine.backends.trackers import build_tracker


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
        seg, _ = backends.check(cfg.segmenter, cfg.tracker)
        self.segmenter = build_segmenter(cfg.segmenter, device)
        # Single-frame samples (images) get their own settings where the segmenter has them: nothing after
        # the keyframe (motion, common fate) joins an object's pieces in a still.
        self.still_segmenter = build_segmenter(cfg.segmenter.for_stills(), device) if seg.stills else self.segmenter
        # A video segmenter (trained TrajTok) tracks by itself: no separate tracker.
        self.joint = seg.tracks
        self.uses_motion = seg.uses_motion
        self.tracker = None if self.joint else build_tracker(cfg.tracker, device)
        # keyframe position -> (forward, backward) flow to the next frame, made for its motion layers
        self.keyframe_steps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def backends(self) -> dict[str, str]:
        return {"segmenter": self.segmenter.name,
                "tracker": self.segmenter.name if self.joint else self.tracker.name}

    def label(self, frames: np.ndarray, keyframes: list[int], cuts: list[int]) -> ClipLabels:
        if self.joint:
            return self.label_jointly(frames, cuts)
        self.keyframe_steps = {}
        T = len(frames)
        t0 = time.perf_counter()
        # All planned keyframes in one call: model backends batch them on the GPU.
        segmentations = dict(zip(keyframes, self.segment(frames, keyframes, cuts)))
        t_segment = time.perf_counter() - t0
        # A tracker that encodes frames (sam2) encodes each frame of the video once, not once per clip.
        reuse = hasattr(self.tracker, "prepare_video")
        if reuse:
            t1 = time.perf_counter()
            self.tracker.prepare_video(frames)
            t_track = time.perf_counter() - t1
        else:
            t_track = 0.0
        labels = np.zeros(frames.shape[:3], dtype=np.int32)
        merges: list[dict] = []
        placed: list[int] = []
        propagated = None
        next_id = 1
        history: list[float] = []           # the tracker's forward-backward consistency so far
        flows: dict[int, np.ndarray] = {}   # forward flow of frame t -> t+1, where the tracker made one
        planned = sorted(keyframes)
        k = planned[0] if planned else T
        while k < T:
            end = next((p for p in planned if p > k), T)
            if k not in segmentations:      # placed by the labeller: the tracks lost too much of the frame
                t1 = time.perf_counter()
                segmentations[k] = self.segment(frames, [k], cuts)[0]
                t_segment += time.perf_counter() - t1
            carried = None if (k in cuts) else propagated
            result, next_id = self.merge(carried, segmentations.pop(k), next_id)
            placed.append(k)
            labels[k] = result.labels
            if carried is not None:
                merges.append({"position": k, "matched": [[i, share] for i, share in result.matched],
                               "new": result.new_ids, "ended": result.ended_ids})
            # Track through the clip and into the next keyframe (unless it is a cut).
            stop = end + 1 if (end < T and end not in cuts) else end
            t1 = time.perf_counter()
            first = self.keyframe_steps.pop(k, None)
            if first is not None and stop > k + 1 and getattr(self.tracker, "name", "") == "flow":
                tracked = self.tracker.track(frames[k:stop], result.labels, first_step=first)
            elif reuse:
                tracked = self.tracker.track(frames[k:stop], result.labels, start=k)
            else:
                tracked = self.tracker.track(frames[k:stop], result.labels)
            t_track += time.perf_counter() - t1
            for j, f in enumerate(getattr(self.tracker, "flows", None) or []):
                flows[k + j] = f
            shares = list(getattr(self.tracker, "consistent_share", None) or [])
            reference = float(np.median(history + shares)) if (history or shares) else 0.0
            history += shares
            cut = self.first_flow_cut(shares, reference, end - k)
            if cut is not None:             # the flow finds no correspondence: a cut the histograms missed
                labels[k + 1:k + cut] = tracked[1:cut]
                cuts = sorted(set(cuts) | {k + cut})
                propagated, k = None, k + cut
                continue
            lost = self.first_lost_frame(tracked[:end - k], result.labels)
            if lost is not None:            # segment again where the tracks stop explaining the frame
                labels[k + 1:k + lost] = tracked[1:lost]
                propagated, k = tracked[lost], k + lost
                continue
            labels[k + 1:end] = tracked[1:end - k]
            propagated = tracked[end - k] if stop > end else None
            if propagated is not None and self.first_flow_cut(shares, reference, end - k + 1) == end - k:
                cuts, propagated = sorted(set(cuts) | {end}), None
            k = end
        t1 = time.perf_counter()
        labels = self.join_common_fate(frames, labels, cuts, flows)
        t_track += time.perf_counter() - t1
        return ClipLabels(labels, placed, sorted(cuts), merges, t_segment, t_track)

    def join_common_fate(self, frames: np.ndarray, labels: np.ndarray, cuts: list[int],
                         flows: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """Join tracks that move as one piece and absorb too-short ones (``grouping``); flows across a cut
        are never used."""
        from dataengine.stages.grouping import absorb_short, apply_lut, common_fate_lut
        from dataengine.backends.trackers.flow import frame_motion
        m = self.cfg.merge
        if m.fate_tolerance > 0 and len(frames) > 1:
            flows = dict(flows or {})
            for t in range(len(frames) - 1):
                if t not in flows and (t + 1) not in cuts:
                    flow = frame_motion(frames[t:t + 2], 0)
                    if flow is not None:
                        flows[t] = flow
            for c in cuts:
                flows.pop(c - 1, None)
            labels = apply_lut(labels, common_fate_lut(labels, flows, m.fate_tolerance, m.fate_min_frames,
                                                       m.fate_max_share, moving_speed=m.fate_moving_speed,
                                                       moving_share=m.fate_moving_share,
                                                       moving_tolerance=m.fate_moving_tolerance))
        return absorb_short(labels, cuts, m.min_track_frames)

    def segment(self, frames: np.ndarray, positions: list[int], cuts: list[int]) -> list[np.ndarray]:
        """Segment the frames at ``positions``; a segmenter that uses motion gets each one's flow."""
        scfg = self.cfg.segmenter
        if len(frames) == 1:                # a still: no flow to take
            return self.still_segmenter.segment(frames[positions])
        if not (self.uses_motion and (scfg.motion_weight > 0 or scfg.motion_layers)):
            return self.segmenter.segment(frames[positions])
        from dataengine.backends.trackers.flow import frame_motion
        motion = []
        for k in positions:
            # the flow stays inside the keyframe's shot
            shot_end = min([c for c in cuts if c > k] + [len(frames)])
            shot_start = max([c for c in cuts if c <= k] + [0])
            steps: dict = {}
            motion.append(frame_motion(frames[shot_start:shot_end], k - shot_start, steps=steps,
                                       reliability=scfg.layer_consistency if scfg.motion_layers else 0.0))
            if steps:                       # the tracker's first step from this keyframe: computed once
                self.keyframe_steps[k] = steps[k - shot_start]
        return self.segmenter.segment(frames[positions], motion)

    def merge(self, carried: np.ndarray | None, segmentation: np.ndarray, next_id: int):
        m = self.cfg.merge
        return merge_keyframe(carried, segmentation, next_id, m.continue_share, m.new_share, m.keep_share,
                              m.revive_share, m.two_tracks_share, m.two_tracks_hold)

    def first_flow_cut(self, shares: list[float], reference: float, n: int) -> int | None:
        """The first frame (1..n-1 into the last tracked clip) that the flow could not reach from the frame
        before: the share of its pixels passing the forward-backward check fell below ``cut_consistency``
        times the video's typical share (``reference``, the median so far). Relative, because random-like
        texture passes the check by chance more often than smooth content does."""
        limit = self.cfg.keyframes.cut_consistency * reference
        for j, c in enumerate(shares[:max(n - 1, 0)]):
            if c < limit:
                return j + 1
        return None

    def first_lost_frame(self, tracked: np.ndarray, start: np.ndarray) -> int | None:
        """The first frame (index into ``tracked``, > ``min_keyframe_gap``-1) whose tracked coverage fell below
        ``min_coverage`` of the keyframe's; None when the tracks hold through the clip."""
        kcfg = self.cfg.keyframes
        if kcfg.min_coverage <= 0 or len(tracked) <= kcfg.min_keyframe_gap:
            return None
        base = max(float((start != 0).mean()), 1e-6)
        for t in range(kcfg.min_keyframe_gap, len(tracked)):
            if float((tracked[t] != 0).mean()) < kcfg.min_coverage * base:
                return t
        return None

    def label_jointly(self, frames: np.ndarray, cuts: list[int]) -> ClipLabels:
        """Video segmenter: one pass per clip; clips of a shot linked by IoU, never across a cut."""
        T = len(frames)
        shots = [0] + sorted({c for c in cuts if 0 < c < T}) + [T]
        t0 = time.perf_counter()
        # Shot by shot: the model's clips start at each shot's start, where the merges below link them (one
        # pass over the video cut clips every clip_frames from frame 0, and after a cut elsewhere than on that
        # grid no merge linked them: every object took a new id at those clip starts).
        raw = np.concatenate([self.segmenter.segment_video(frames[a:b]) for a, b in zip(shots, shots[1:])])
        t_segment = time.perf_counter() - t0
        step = self.segmenter.clip_frames
        starts = sorted({s for a, b in zip(shots, shots[1:]) for s in range(a, b, step)})
        labels = np.zeros_like(raw)
        merges: list[dict] = []
        next_id = 1
        for s, end in zip(starts, starts[1:] + [T]):
            carried = None if (s == 0 or s in cuts) else labels[s - 1]
            result, next_id = self.merge(carried, raw[s], next_id)
            lut = clip_ids(raw[s], result.labels, int(raw[s:end].max()) + 1)
            unseen = [int(i) for i in np.unique(raw[s:end]) if i and not lut[i]]
            for i in unseen:  # objects that appear later in the clip
                lut[i], next_id = next_id, next_id + 1
            labels[s:end] = lut[raw[s:end]]
            if carried is not None:
                merges.append({"position": s, **written_merge(carried, labels[s], result.new_ids)})
        t1 = time.perf_counter()
        labels = self.join_common_fate(frames, labels, list(cuts))
        return ClipLabels(labels, starts, list(cuts), merges, t_segment, time.perf_counter() - t1)


def clip_ids(first: np.ndarray, merged: np.ndarray, size: int) -> np.ndarray:
    """A video segmenter's clip ids -> trajectory ids, read off the merge of the clip's first frame: each clip
    id takes the id that holds most of its pixels there (ties: the smaller). One id per clip id, because the
    later frames of the clip know only the clip's ids (where the merge kept two carried ids in one region,
    the clip's frames cannot say which pixel is whose); 0 (no object) stays 0."""
    lut = np.zeros(size, dtype=np.int32)
    width = int(merged.max()) + 1
    codes, counts = np.unique(first.astype(np.int64).ravel() * width + merged.ravel(), return_counts=True)
    clip, ids = codes // width, codes % width
    order = np.lexsort((ids, -counts, clip))
    head = np.r_[True, clip[order][1:] != clip[order][:-1]]
    lut[clip[order][head]] = ids[order][head]
    lut[0] = 0
    return lut


def written_merge(carried: np.ndarray, written: np.ndarray, new_ids: list[int]) -> dict:
    """The merge record (``matched``: carried id and the share of its carried pixels it keeps; ``new``;
    ``ended``) of what was written at a keyframe."""
    present = set(np.unique(written).tolist()) - {0}
    ids, inverse = np.unique(carried, return_inverse=True)
    kept = np.bincount(inverse.ravel(), weights=(written == carried).ravel(), minlength=len(ids))
    area = np.bincount(inverse.ravel(), minlength=len(ids))
    matched = [[int(t), round(float(kept[j] / area[j]), 4)] for j, t in enumerate(ids) if t and int(t) in present]
    return {"matched": matched, "new": [i for i in new_ids if i in present],
            "ended": [int(t) for t in ids if t and int(t) not in present]}
