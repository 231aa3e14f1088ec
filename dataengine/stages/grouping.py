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

import numpy as np

from dataengine.ops.motionlayers import camera_model
from dataengine.ops.regions import unique_pairs


def _design(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([xy, np.ones(len(xy))])


_RIDGE = 1e-6 * np.eye(3)


def _fit_residual(a: np.ndarray, uv: np.ndarray) -> float:
    """Mean end-point error of the least-squares affine flow model of points with design matrix ``a``
    (``_design`` of their positions, made once per piece) and flow ``uv``."""
    # normal equations (3x3), ridge-stabilised: pieces can be thin lines
    coef = np.linalg.solve(a.T @ a + _RIDGE, a.T @ uv)
    r = a @ coef - uv
    return float(np.sqrt(np.add.reduce(r * r, axis=1)).mean())     # = np.linalg.norm(r, axis=1), less overhead


def _adjacent_pairs(lab: np.ndarray) -> np.ndarray:
    pairs = np.concatenate([np.stack([lab[:, :-1].ravel(), lab[:, 1:].ravel()], 1),
                            np.stack([lab[:-1, :].ravel(), lab[1:, :].ravel()], 1)])
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs[:, 0] != 0) & (pairs[:, 1] != 0)]
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    return unique_pairs(pairs, int(lab.max()) + 1)


def common_fate_lut(labels: np.ndarray, flows: dict[int, np.ndarray], tolerance: float = 0.3,
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
    """
    T = len(labels)
    counts = np.stack([np.bincount(labels[t].ravel(), minlength=int(labels.max()) + 1) for t in range(T)])
    frames_present = np.maximum((counts > 0).sum(axis=0), 1)
    area = counts.sum(axis=0) / frames_present / labels[0].size      # mean share of the frame, per id
    group_area: dict[int, float] = {}
    rng = np.random.default_rng(seed)
    agree: dict[tuple[int, int], int] = {}
    agree_moving: dict[tuple[int, int], int] = {}   # agreed only within the speed-relative tolerance
    seen: dict[tuple[int, int], int] = {}
    speeds: dict[int, list[float]] = {}
    for t, flow in sorted(flows.items()):
        if t >= len(labels):
            continue
        lab = labels[t]
        pairs = _adjacent_pairs(lab)
        if len(pairs) == 0:
            continue
        ids = np.unique(pairs)
        points: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        flat = lab.ravel()
        order = np.argsort(flat, kind="stable")             # pixels grouped by id, one sort per frame
        starts = np.searchsorted(flat[order], ids, side="left")
        ends = np.searchsorted(flat[order], ids, side="right")
        uv_all = flow.reshape(-1, 2)
        for i, a0, a1 in zip(ids, starts, ends):
            if a1 - a0 < min_pixels:
                continue
            idx = order[a0 + rng.choice(a1 - a0, size=min(sample, a1 - a0), replace=False)]
            xy = np.column_stack([idx % lab.shape[1], idx // lab.shape[1]]).astype(np.float64)
            points[int(i)] = (xy, uv_all[idx].astype(np.float64))
        design = {i: _design(xy) for i, (xy, _) in points.items()}
        own = {i: _fit_residual(design[i], uv) for i, (_, uv) in points.items()}
        speed_now: dict[int, float] = {}
        if moving_speed > 0:
            camera = camera_model(flow)
            if camera is not None:
                for i, (xy, uv) in points.items():
                    residual = uv - (xy @ camera[:, :2].T + camera[:, 2] - xy)
                    speed_now[i] = float(np.linalg.norm(residual.mean(axis=0)))
                    speeds.setdefault(i, []).append(speed_now[i])
        for a, b in pairs:
            a, b = int(a), int(b)
            if a not in points or b not in points:
                continue
            seen[(a, b)] = seen.get((a, b), 0) + 1
            uv = np.concatenate([points[a][1], points[b][1]])
            na, nb = len(points[a][0]), len(points[b][0])
            separate = (own[a] * na + own[b] * nb) / (na + nb)
            excess = _fit_residual(np.concatenate([design[a], design[b]]), uv) - separate
            if excess <= tolerance:
                agree[(a, b)] = agree.get((a, b), 0) + 1
            elif excess <= moving_tolerance * min(speed_now.get(a, 0.0), speed_now.get(b, 0.0)):
                agree_moving[(a, b)] = agree_moving.get((a, b), 0) + 1
    moving = {i for i, v in speeds.items() if moving_speed > 0 and float(np.median(v)) > moving_speed}

    def joins(a: int, b: int, n: int) -> bool:
        if n >= min_frames and n == seen[(a, b)]:
            return True
        n += agree_moving.get((a, b), 0)
        return a in moving and b in moving and n >= min_frames and n >= moving_share * seen[(a, b)]

    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for (a, b) in sorted(seen):
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
    from dataengine.ops.regions import nearest_label
    from dataengine.metrics.scores import trajectory_lengths

    if min_frames <= 1 or labels.size == 0:
        return labels
    T = len(labels)
    bounds = [0] + sorted(c for c in cuts if 0 < c < T) + [T]
    out = labels.copy()
    for a, b in zip(bounds, bounds[1:]):
        shot = out[a:b]
        if b - a < min_frames:
            continue
        ids = np.unique(shot[shot != 0])
        short = ids[trajectory_lengths(shot) < min_frames]
        if len(short) == 0:
            continue
        drop = np.isin(shot, short)
        for t in np.flatnonzero(drop.any(axis=(1, 2))):
            frame = np.where(drop[t], 0, shot[t])
            if (frame != 0).any():
                shot[t] = np.where(drop[t], nearest_label(frame), frame)
    return out
