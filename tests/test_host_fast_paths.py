"""The model labeller's host post-processing (issue 15) gives, on its faster paths, the same labels as the
plain formulations they replace: DirectSAM's boundary map -> regions, the nearest-label fill of dropped
tracks, absorbing short tracks, and the common-fate grouping (which now fits only pairs that can join)."""
import numpy as np
import pytest
from scipy import ndimage

from dataengine.ops.motionlayers import camera_model


# ------------------------------------------------------------------ plain formulations (the code before)
def whole_frame_nearest(labels: np.ndarray) -> np.ndarray:
    _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return labels[iy, ix]


def plain_regions(boundary: np.ndarray, min_pixels: int, max_regions: int) -> np.ndarray:
    import cv2

    from dataengine.ops.regions import consecutive, drop_small, keep_largest

    _, components = cv2.connectedComponents((~boundary).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    labels = keep_largest(drop_small(components, min_pixels), max_regions)
    holes = labels == 0
    return consecutive(labels if holes.all() or not holes.any() else whole_frame_nearest(labels))


def plain_absorb_short(labels: np.ndarray, cuts: list[int], min_frames: int) -> np.ndarray:
    from dataengine.metrics.scores import trajectory_lengths

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
                shot[t] = np.where(drop[t], whole_frame_nearest(frame), frame)
    return out


def plain_fit(a: np.ndarray, uv: np.ndarray) -> float:
    coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(3), a.T @ uv)
    r = a @ coef - uv
    return float(np.sqrt(np.add.reduce(r * r, axis=1)).mean())


def plain_common_fate_lut(labels, flows, tolerance, min_frames, max_share, min_pixels=30, sample=200, seed=0,
                          moving_speed=0.0, moving_share=1.0, moving_tolerance=0.0, fits=None):
    """Every touching pair fitted in every frame, as before (``fits`` counts the fits)."""
    from dataengine.ops.regions import unique_pairs

    def design(xy):
        return np.column_stack([xy, np.ones(len(xy))])

    def fit(a, uv):
        if fits is not None:
            fits.append(a.tobytes() + uv.tobytes())
        return plain_fit(a, uv)

    def adjacent_pairs(lab):
        pairs = np.concatenate([np.stack([lab[:, :-1].ravel(), lab[:, 1:].ravel()], 1),
                                np.stack([lab[:-1, :].ravel(), lab[1:, :].ravel()], 1)])
        pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs[:, 0] != 0) & (pairs[:, 1] != 0)]
        return unique_pairs(pairs, int(lab.max()) + 1) if len(pairs) else np.zeros((0, 2), np.int64)

    T = len(labels)
    counts = np.stack([np.bincount(labels[t].ravel(), minlength=int(labels.max()) + 1) for t in range(T)])
    area = counts.sum(axis=0) / np.maximum((counts > 0).sum(axis=0), 1) / labels[0].size
    rng = np.random.default_rng(seed)
    agree, agree_moving, seen, speeds, group_area = {}, {}, {}, {}, {}
    for t, flow in sorted(flows.items()):
        if t >= T:
            continue
        lab = labels[t]
        pairs = adjacent_pairs(lab)
        if len(pairs) == 0:
            continue
        ids = np.unique(pairs)
        points = {}
        flat = lab.ravel()
        order = np.argsort(flat, kind="stable")
        starts, ends = np.searchsorted(flat[order], ids, "left"), np.searchsorted(flat[order], ids, "right")
        for i, a0, a1 in zip(ids, starts, ends):
            if a1 - a0 < min_pixels:
                continue
            idx = order[a0 + rng.choice(a1 - a0, size=min(sample, a1 - a0), replace=False)]
            xy = np.column_stack([idx % lab.shape[1], idx // lab.shape[1]]).astype(np.float64)
            points[int(i)] = (xy, flow.reshape(-1, 2)[idx].astype(np.float64))
        own = {i: fit(design(xy), uv) for i, (xy, uv) in points.items()}
        speed_now = {}
        camera = camera_model(flow) if moving_speed > 0 else None
        if camera is not None:
            for i, (xy, uv) in points.items():
                speed_now[i] = float(np.linalg.norm((uv - (xy @ camera[:, :2].T + camera[:, 2] - xy)).mean(axis=0)))
                speeds.setdefault(i, []).append(speed_now[i])
        for a, b in pairs.tolist():
            if a not in points or b not in points:
                continue
            seen[(a, b)] = seen.get((a, b), 0) + 1
            na, nb = len(points[a][0]), len(points[b][0])
            excess = fit(np.concatenate([design(points[a][0]), design(points[b][0])]),
                         np.concatenate([points[a][1], points[b][1]])) - (own[a] * na + own[b] * nb) / (na + nb)
            if excess <= tolerance:
                agree[(a, b)] = agree.get((a, b), 0) + 1
            elif excess <= moving_tolerance * min(speed_now.get(a, 0.0), speed_now.get(b, 0.0)):
                agree_moving[(a, b)] = agree_moving.get((a, b), 0) + 1
    moving = {i for i, v in speeds.items() if moving_speed > 0 and float(np.median(v)) > moving_speed}
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in sorted(seen):
        n = agree.get((a, b), 0)
        m = n + agree_moving.get((a, b), 0)
        if (n >= min_frames and n == seen[(a, b)]) or \
                (a in moving and b in moving and m >= min_frames and m >= moving_share * seen[(a, b)]):
            ra, rb = find(a), find(b)
            joined = group_area.get(ra, area[ra]) + group_area.get(rb, area[rb])
            if ra != rb and joined <= max_share:
                parent[max(ra, rb)] = min(ra, rb)
                group_area[min(ra, rb)] = joined
    return {i: find(i) for i in parent if find(i) != i}


# ------------------------------------------------------------------ generated data
def block_labels(rng, h, w, block, n_ids):
    return rng.integers(1, n_ids + 1, size=(h // block + 1, w // block + 1)).repeat(block, 0).repeat(block, 1)[:h, :w]


def moving_pieces(seed: int):
    """A shot of rigid objects, each cut into pieces with ids of their own, moving over a panning background,
    and its forward flow: ``(labels [T, H, W], flows {t: [H, W, 2]})``. Some pieces' flow is noisy in a
    frame (the moving rule's case), one piece lives for a frame only, and a frame has no flow."""
    rng = np.random.default_rng(seed)
    T, h, w = 6, 72, 96
    labels = np.ones((T, h, w), np.int32)
    flows = {t: np.zeros((h, w, 2), np.float32) for t in range(T - 1)}
    pan = rng.uniform(-1, 1, 2)
    for t in flows:
        flows[t][:] = pan + rng.normal(0, 0.05, (h, w, 2))
    next_id = 2
    for _ in range(int(rng.integers(2, 5))):
        bh, bw = int(rng.integers(14, 30)), int(rng.integers(18, 36))
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw - 10))
        v = rng.uniform(-4, 4, 2)
        pieces = int(rng.integers(1, 4))
        cuts = np.linspace(0, bw, pieces + 1).astype(int)
        noisy_frame = int(rng.integers(0, T - 1)) if rng.random() < 0.5 else -1
        for p in range(pieces):
            for t in range(T):
                dx = int(round(v[0] * t / 3))
                x0, x1 = max(x + dx + cuts[p], 0), min(x + dx + cuts[p + 1], w)
                if x1 <= x0:
                    continue
                labels[t, y:y + bh, x0:x1] = next_id
                if t in flows:
                    spread = 2.5 if (t == noisy_frame and p == 0) else 0.1
                    flows[t][y:y + bh, x0:x1] = v + rng.normal(0, spread, (bh, x1 - x0, 2))
            next_id += 1
    by, bx = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
    labels[2, by:by + 8, bx:bx + 8] = next_id             # a piece that lives for one frame
    if seed % 2:        # a first frame whose tracks touch but can never join (seen once): no fit, same draws
        labels[0] = 900
        labels[0, :, w // 2:] = 901
    del flows[int(rng.integers(1, T - 1))]
    flows[T + 2] = flows[next(iter(flows))]                 # a flow past the shot is ignored
    return labels, flows


# ------------------------------------------------------------------ tests
def test_scipy_feature_transform_picks_the_nearest_pixel_with_the_smallest_column_then_row():
    """What makes any window that holds a pixel's nearest labelled pixels exact: scipy's choice among
    equally near ones depends on their positions only (brute force over every pixel, many ties)."""
    rng = np.random.default_rng(0)
    for _ in range(120):
        h, w = (int(v) for v in rng.integers(3, 22, 2))
        feature = rng.random((h, w)) < rng.choice([0.03, 0.1, 0.3])
        if not feature.any():
            continue
        iy, ix = ndimage.distance_transform_edt(~feature, return_distances=False, return_indices=True)
        fy, fx = np.nonzero(feature)
        for y in range(h):
            for x in range(w):
                d = (fy - y) ** 2 + (fx - x) ** 2
                near = d == d.min()
                col, row = min(zip(fx[near], fy[near]))
                assert (iy[y, x], ix[y, x]) == (row, col)


def test_nearest_label_at_equals_the_whole_frame_fill_of_the_targets(monkeypatch):
    from dataengine.ops import regions

    shapes = []
    transform = ndimage.distance_transform_edt
    monkeypatch.setattr(regions.ndimage, "distance_transform_edt",
                        lambda x, **k: (shapes.append(x.shape), transform(x, **k))[1])
    rng = np.random.default_rng(1)
    partial = whole = 0
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(24, 110, 2))
        labels = block_labels(rng, h, w, int(rng.integers(2, 9)), int(rng.integers(2, 7))).astype(np.int32)
        labels[rng.random((h, w)) < rng.choice([0.0, 0.02, 0.3])] = 0       # pixels nobody claimed
        if trial % 2:       # a large unclaimed area: a target's nearest labelled pixel can be far away
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            labels[y:y + int(rng.integers(10, 60)), x:x + int(rng.integers(10, 60))] = 0
        targets = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 40 if trial % 3 == 0 else 5))):    # dropped pieces: few or many
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            targets[y:y + int(rng.integers(1, 40)), x:x + int(rng.integers(1, 40))] = True
        frame = np.where(targets, 0, labels)
        if not (frame != 0).any():
            continue
        expected = np.where(targets, whole_frame_nearest(frame), frame)
        shapes.clear()
        np.testing.assert_array_equal(regions.nearest_label_at(frame, targets, margin=int(rng.integers(1, 20))),
                                      expected)
        partial += any(a * b < h * w for a, b in shapes)
        whole += (h, w) in shapes
    assert partial > 50 and whole > 50            # windows were used, and the whole frame where cheaper


def test_nearest_label_matches_the_whole_frame_transform(monkeypatch):
    """Thin boundaries between regions and small dropped pieces (the look around each hole, then windows for
    the far ones), and holes everywhere (the frame at once)."""
    import cv2

    from dataengine.ops import regions

    looked_around = 0
    calls = []
    transform = ndimage.distance_transform_edt
    monkeypatch.setattr(regions.ndimage, "distance_transform_edt",
                        lambda x, **k: (calls.append(x.shape), transform(x, **k))[1])
    rng = np.random.default_rng(2)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(10, 160, 2))
        labels = block_labels(rng, h, w, int(rng.integers(10, 30)), 6).astype(np.int32)
        if trial % 3 == 0:
            labels[rng.random((h, w)) < rng.choice([0.1, 0.6, 0.95])] = 0
        elif trial % 3 == 1 and trial % 2:      # one wide hole (an occlusion): most holes lie deep
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            labels[y:y + int(rng.integers(8, 40)), x:x + int(rng.integers(8, 40))] = 0
        else:               # region outlines 1-3 px wide, and a few dropped pieces
            outline = np.zeros((h, w), np.uint8)
            outline[:, 1:] |= labels[:, 1:] != labels[:, :-1]
            outline[1:] |= labels[1:] != labels[:-1]
            labels[cv2.dilate(outline, np.ones((int(rng.integers(1, 3)),) * 2, np.uint8)) > 0] = 0
            for _ in range(int(rng.integers(0, 4))):
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                labels[y:y + int(rng.integers(1, 12)), x:x + int(rng.integers(1, 12))] = 0
        if (labels == 0).all():
            continue
        expected = whole_frame_nearest(labels)
        calls.clear()
        np.testing.assert_array_equal(regions.nearest_label(labels), expected)
        looked_around += (labels == 0).mean() <= 1 / 8 and (h, w) not in calls
    assert looked_around > 40


def test_kept_regions_and_regions_from_boundary_equal_the_plain_steps():
    import cv2

    from dataengine.backends.segmenters.directsam import regions_from_boundary
    from dataengine.ops.regions import consecutive, drop_small, keep_largest, kept_regions

    rng = np.random.default_rng(3)
    for trial in range(80):
        h, w = (int(v) for v in rng.integers(20, 120, 2))
        smooth = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 3)))
        boundary = smooth > np.quantile(smooth, rng.uniform(0.2, 0.8))
        if trial % 10 == 0:
            boundary[:] = trial % 20 == 0                  # all boundary, or none
        min_pixels, max_regions = int(rng.integers(0, 30)), int(rng.integers(0, 12))
        np.testing.assert_array_equal(regions_from_boundary(boundary, min_pixels, max_regions),
                                      plain_regions(boundary, min_pixels, max_regions))
        _, components = cv2.connectedComponents((~boundary).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        np.testing.assert_array_equal(kept_regions(components, min_pixels, max_regions),
                                      consecutive(keep_largest(drop_small(components, min_pixels), max_regions)))
    ties = np.array([[1, 1, 2, 2, 3, 3, 4]], np.int32)        # three regions of 2 px: ids break the tie
    np.testing.assert_array_equal(kept_regions(ties, 1, 2), [[1, 1, 2, 2, 0, 0, 0]])


def test_absorb_short_equals_the_plain_formulation():
    from dataengine.stages.grouping import absorb_short

    rng = np.random.default_rng(4)
    changed = 0
    for trial in range(60):
        T, h, w = int(rng.integers(3, 9)), int(rng.integers(16, 60)), int(rng.integers(16, 60))
        base = block_labels(rng, h, w, int(rng.integers(3, 10)), int(rng.integers(2, 6))).astype(np.int32)
        labels = np.repeat(base[None], T, axis=0)
        next_id = 10
        for _ in range(int(rng.integers(1, 8))):           # tracks of 1..3 frames over the long ones
            t, y, x = int(rng.integers(0, T)), int(rng.integers(0, h)), int(rng.integers(0, w))
            n = int(rng.integers(1, 4))
            labels[t:t + n, y:y + int(rng.integers(2, 20)), x:x + int(rng.integers(2, 20))] = next_id
            next_id += 1
        labels[rng.random(labels.shape) < 0.05] = 0
        if trial % 7 == 0:
            labels = np.where(labels > 0, labels + 10**6, 0).astype(np.int32)   # ids far apart
        cuts = sorted({int(c) for c in rng.integers(0, T + 1, int(rng.integers(0, 3)))})
        min_frames = int(rng.integers(1, 4))
        expected = plain_absorb_short(labels, cuts, min_frames) if min_frames > 1 else labels
        out = absorb_short(labels, cuts, min_frames)
        np.testing.assert_array_equal(out, expected)
        assert out.dtype == labels.dtype
        changed += not np.array_equal(out, labels)
    assert changed > 20


@pytest.mark.parametrize("rule", [
    dict(tolerance=0.2, min_frames=2, max_share=0.2),
    dict(tolerance=0.3, min_frames=3, max_share=0.5, moving_speed=1.0, moving_share=0.66, moving_tolerance=0.03),
    dict(tolerance=0.5, min_frames=2, max_share=1.0, moving_speed=0.5, moving_share=0.5, moving_tolerance=0.3),
])
def test_common_fate_lut_equals_fitting_every_pair_in_every_frame(monkeypatch, rule):
    from dataengine.stages import grouping

    fits: list[bytes] = []
    batch = grouping._fit_residuals
    monkeypatch.setattr(grouping, "_fit_residuals",
                        lambda f: (fits.extend(a.tobytes() + uv.tobytes() for a, uv in f), batch(f))[1])
    plain_fits: list[bytes] = []
    joined = 0
    for seed in range(25):
        labels, flows = moving_pieces(seed)
        expected = plain_common_fate_lut(labels, flows, fits=plain_fits, **rule)
        assert grouping.common_fate_lut(labels, flows, **rule) == expected
        joined += len(expected)
    assert joined >= 10                                   # pieces did join
    # fewer fits (pairs that could not join were not fitted), each on the very points the plain path drew
    assert 0 < len(fits) < len(plain_fits) and set(fits) <= set(plain_fits)


def test_common_fate_lut_reads_no_flow_of_a_frame_without_a_pair_that_can_join():
    from collections.abc import Mapping

    from dataengine.stages.grouping import common_fate_lut

    labels, flows = moving_pieces(4)
    halves = np.full_like(labels[:1], 50)
    halves[..., labels.shape[2] // 2:] = 51               # two tracks, a frame each: they can never join
    labels = np.concatenate([labels, halves])
    flows = {t: f for t, f in flows.items() if t < len(labels) - 2}
    flows[len(labels) - 1] = flows[next(iter(flows))]
    read = []

    class Lazy(Mapping):                                  # flows made when read (a labeller could pass one)
        def __getitem__(self, t):
            read.append(t)
            return flows[t]

        def __iter__(self):
            return iter(flows)

        def __len__(self):
            return len(flows)

    rule = dict(tolerance=0.3, min_frames=2, max_share=0.5)
    lut = common_fate_lut(labels, Lazy(), **rule)
    assert lut == plain_common_fate_lut(labels, flows, **rule) and lut
    assert read == sorted(t for t in flows if t != len(labels) - 1)     # each other frame's, once
