"""Common fate: join tracks that move as one rigid piece for their whole shared life.

A colour segmenter splits a textured object into several regions, and each
becomes a track. Pieces of one object move together: at every frame, one
affine motion explains the optical flow of both pieces about as well as a
separate motion for each. Two adjacent tracks whose flow agrees that way in
every frame where they touch (at least ``min_frames`` of them) become one
trajectory. Agreement is tested on the *difference* of residuals (joint fit
minus separate fits), so flow noise on texture, which raises both, does not
count as disagreement; two pieces that move apart by more than
``tolerance`` px per frame somewhere are never joined, unless both move
apart from the camera (flow on a fast, blurred object is noisy in some
frames; the background, which the camera's motion explains, keeps the strict
rule). Runs per shot, never across a cut.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dataengine.ops.motionlayers import camera_model
from dataengine.ops.regions import unique_pairs


def _design(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([xy, np.ones(len(xy))])


_RIDGE = 1e-6 * np.eye(3)


def _fit_residuals(fits: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Per (design matrix ``a``, flow ``uv``) of points (``_design`` of their positions, made once per piece):
    the mean end-point error of the least-squares affine flow model. The 3x3 systems of all fits are solved
    in one call (LAPACK solves each as it would alone: the same numbers)."""
    if not fits:
        return []
    # normal equations (3x3), ridge-stabilised: pieces can be thin lines
    coef = np.linalg.solve(np.stack([a.T @ a + _RIDGE for a, _ in fits]), np.stack([a.T @ uv for a, uv in fits]))
    out = []
    for (a, uv), c in zip(fits, coef):
        r = a @ c - uv
        out.append(float(np.sqrt(np.add.reduce(r * r, axis=1)).mean()))   # = np.linalg.norm(r, axis=1)
    return out


def _adjacent_pairs(lab: np.ndarray) -> np.ndarray:
    # only the pixel pairs that differ (few: region outlines) are gathered
    parts = []
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :])):
        differ = (a != b) & (a != 0) & (b != 0)
        parts.append(np.stack([a[differ], b[differ]], 1))
    pairs = np.concatenate(parts)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    return unique_pairs(pairs, int(lab.max()) + 1)


def common_fate_lut(labels: np.ndarray, flows: Mapping[int, np.ndarray], tolerance: float = 0.3,
                    min_frames: int = 3, max_share: float = 0.2, min_pixels: int = 30, sample: int = 200,
                    seed: int = 0, moving_speed: float = 0.0, moving_share: float = 1.0,
                    moving_tolerance: float = 0.0) -> dict[int, int]:
    """Track id -> the id it joins (the smallest of its group) for the tracks of one shot ``labels [T, H, W]``.

    ``flows[t]``: forward flow ``[H, W, 2]`` from frame t to t+1 (frames without one are skipped).
    A group never grows beyond ``max_share`` of the frame (mean area over the frames it is present in):
    the background moves as one piece too, and an object that slips into it would be lost.
    With ``moving_speed`` > 0, two tracks that both move apart from the camera (median over their frames of
    the mean flow left after the frame's global affine camera model, above ``moving_speed`` px/frame) join
    when they agree in at least ``moving_share`` of the frames where they touch: flow on a fast, blurred
    object is noisy, and one bad frame should not keep its pieces apart, while the background (which the
    camera model explains) keeps the all-frames rule. For such pairs a frame also agrees within
    ``moving_tolerance`` times the slower piece's speed in that frame (flow error grows with the motion).

    Only pairs that can still join are fitted. The labels alone say which pairs touch in how many frames
    and how large a group they would make: a pair touching in fewer than ``min_frames`` frames, or whose
    two tracks already exceed ``max_share``, never joins (a group's area is at least its members'). A pair
    that failed a frame is dropped once neither rule can hold any more. Every piece's points are still
    drawn, in the same order, so the fits that run see the same samples; ``flows`` is read only for frames
    where such a pair's pieces are (it may compute them lazily).
    """
    T = len(labels)
    n_ids = int(labels.max()) + 1
    counts = np.stack([np.bincount(labels[t].ravel(), minlength=n_ids) for t in range(T)])
    frames_present = np.maximum((counts > 0).sum(axis=0), 1)
    area = counts.sum(axis=0) / frames_present / labels[0].size      # mean share of the frame, per id
    # What the labels decide: per frame, the touching pairs whose pieces are both big enough to fit.
    steps = []
    seen: dict[tuple[int, int], int] = {}
    for t in sorted(flows):
        if t >= T:
            continue
        pairs = _adjacent_pairs(labels[t])
        if len(pairs) == 0:
            continue
        ids = np.unique(pairs)
        fitted = pairs[(counts[t][pairs] >= min_pixels).all(axis=1)].tolist()
        for a, b in fitted:
            seen[(a, b)] = seen.get((a, b), 0) + 1
        steps.append((t, ids, fitted))
    candidates = {k for k, n in seen.items() if n >= min_frames and area[k[0]] + area[k[1]] <= max_share}
    needed = {i for k in candidates for i in k}
    # Pass 1, frame by frame: the sampled points of the pieces of candidate pairs, and their speeds.
    rng = np.random.default_rng(seed)
    frames: list[tuple[dict, dict, list]] = []
    speeds: dict[int, list[float]] = {}
    for t, ids, fitted in steps:
        lab = labels[t]
        sizes = counts[t][ids]
        if not needed.intersection(ids[sizes >= min_pixels].tolist()):
            for n in sizes[sizes >= min_pixels]:         # the same draws, so later frames sample the same points
                rng.choice(n, size=min(sample, n), replace=False)
            continue
        flat = lab.ravel()
        order = np.argsort(flat, kind="stable")             # pixels grouped by id, one sort per frame
        offsets = np.concatenate([[0], np.cumsum(counts[t])])   # where each id's pixels start in ``order``
        starts, ends = offsets[ids], offsets[ids + 1]
        flow = flows[t]
        uv_all = flow.reshape(-1, 2)
        points: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, a0, a1 in zip(ids.tolist(), starts, ends):
            if a1 - a0 < min_pixels:
                continue
            pick = rng.choice(a1 - a0, size=min(sample, a1 - a0), replace=False)
            if i not in needed:
                continue
            idx = order[a0 + pick]
            xy = np.column_stack([idx % lab.shape[1], idx // lab.shape[1]]).astype(np.float64)
            points[i] = (xy, uv_all[idx].astype(np.float64))
        speed_now: dict[int, float] = {}
        if moving_speed > 0:
            camera = camera_model(flow)
            if camera is not None:
                for i, (xy, uv) in points.items():
                    residual = uv - (xy @ camera[:, :2].T + camera[:, 2] - xy)
                    speed_now[i] = float(np.linalg.norm(residual.mean(axis=0)))
                    speeds.setdefault(i, []).append(speed_now[i])
        frames.append((points, speed_now, [k for k in map(tuple, fitted) if k in candidates]))
    moving = {i for i, v in speeds.items() if moving_speed > 0 and float(np.median(v)) > moving_speed}

    # Pass 2: the fits, frame by frame, of the pairs that can still join.
    agree: dict[tuple[int, int], int] = {}
    agree_moving: dict[tuple[int, int], int] = {}   # agreed only within the speed-relative tolerance
    failed: dict[tuple[int, int], int] = {}
    alive = set(candidates)
    for points, speed_now, pairs_now in frames:
        pairs_now = [k for k in pairs_now if k in alive]
        pieces = sorted({i for k in pairs_now for i in k})
        design = {i: _design(points[i][0]) for i in pieces}
        # one batch per frame: each piece alone, then each pair together
        fits = [(design[i], points[i][1]) for i in pieces] + \
               [(np.concatenate([design[a], design[b]]), np.concatenate([points[a][1], points[b][1]]))
                for a, b in pairs_now]
        residuals = _fit_residuals(fits)
        own = dict(zip(pieces, residuals))
        for (a, b), joint in zip(pairs_now, residuals[len(pieces):]):
            na, nb = len(points[a][0]), len(points[b][0])
            separate = (own[a] * na + own[b] * nb) / (na + nb)
            excess = joint - separate
            if excess <= tolerance:
                agree[(a, b)] = agree.get((a, b), 0) + 1
                continue
            if excess <= moving_tolerance * min(speed_now.get(a, 0.0), speed_now.get(b, 0.0)):
                agree_moving[(a, b)] = agree_moving.get((a, b), 0) + 1
            else:
                failed[(a, b)] = failed.get((a, b), 0) + 1
            # the all-frames rule is lost; the moving rule holds only while enough frames can still agree
            left = seen[(a, b)] - failed.get((a, b), 0)
            if not (a in moving and b in moving and left >= min_frames and left >= moving_share * seen[(a, b)]):
                alive.discard((a, b))

    def joins(a: int, b: int, n: int) -> bool:
        if n >= min_frames and n == seen[(a, b)]:
            return True
        n += agree_moving.get((a, b), 0)
        return a in moving and b in moving and n >= min_frames and n >= moving_share * seen[(a, b)]

    group_area: dict[int, float] = {}
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for (a, b) in sorted(alive):
        if joins(a, b, agree.get((a, b), 0)):
            ra, rb = find(a), find(b)
            joined = group_area.get(ra, area[ra]) + group_area.get(rb, area[rb])
            if ra != rb and joined <= max_share:
                parent[max(ra, rb)] = min(ra, rb)
                group_area[min(ra, rb)] = joined
    return {i: find(i) for i in list(parent) if find(i) != i}


def apply_lut(labels: np.ndarray, lut: dict[int, int]) -> np.ndarray:
    if not lut:
        return labels
    table = np.arange(int(labels.max()) + 1, dtype=labels.dtype)
    for a, b in lut.items():
        table[a] = b
    return table[labels]


def absorb_short(labels: np.ndarray, cuts: list[int], min_frames: int) -> np.ndarray:
    """Give the pixels of trajectories shorter than ``min_frames`` frames to the nearest other trajectory.

    A region that a keyframe starts and the tracker loses at once is not a trajectory; its pixels
    belong to a neighbour. Shots shorter than ``min_frames`` keep everything.
    """
    from dataengine.ops.regions import nearest_label_at

    if min_frames <= 1 or labels.size == 0:
        return labels
    n = int(labels.max()) + 1
    if n > max(labels[0].size, 1 << 16) or labels.min() < 0:
        # ids far apart (or negative): the same on their ranks (only equality of ids and pixel positions count)
        values = np.union1d([0], labels)
        ranks = np.searchsorted(values, labels).astype(np.int32)
        return values[absorb_short(ranks, cuts, min_frames)].astype(labels.dtype)
    T = len(labels)
    bounds = [0] + sorted(c for c in cuts if 0 < c < T) + [T]
    out = labels.copy()
    for a, b in zip(bounds, bounds[1:]):
        shot = out[a:b]
        if b - a < min_frames:
            continue
        # which ids each frame holds: the first and last frame of every trajectory in one table
        present = np.stack([np.bincount(frame.ravel(), minlength=n) > 0 for frame in shot])
        present[:, 0] = False
        held = present.any(axis=0)
        first = present.argmax(axis=0)
        last = len(shot) - 1 - present[::-1].argmax(axis=0)
        short = held & (last - first + 1 < min_frames)
        if not short.any():
            continue
        for t in np.flatnonzero(present[:, short].any(axis=1)):
            drop = short[shot[t]]
            frame = np.where(drop, 0, shot[t])
            if (frame != 0).any():
                shot[t] = nearest_label_at(frame, drop)
    return out
