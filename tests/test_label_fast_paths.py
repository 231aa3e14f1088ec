"""The CPU labeller's faster paths give the same numbers, bit for bit, as the plain formulations they
replace (so a speed-up never changes a label)."""
import numpy as np
from skimage import color, data, graph
from skimage.segmentation import slic

from fixtures.scenes import render_scene
from dataengine.config import TrackerConfig


def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[::3, ::3])          # textured, 171 x 171


def test_colour_distance_is_numpy_norm_bit_for_bit():
    from dataengine.backends.segmenters.classical import _colour_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 40, (2, 5000, 3))
    assert [_colour_distance(x, y) for x, y in zip(a, b)] == [float(np.linalg.norm(x - y)) for x, y in zip(a, b)]


def test_merge_regions_equals_skimage_mean_colour_merge_on_a_photo():
    # Reference: skimage's own RAG (rag_mean_color) merged with the mean-colour callbacks of its docs.
    from dataengine.backends.segmenters.classical import merge_regions

    rgb = photo()
    lab = color.rgb2lab(rgb)
    sp = slic(rgb, n_segments=250, compactness=20, start_label=1, channel_axis=-1)

    def merge(g, src, dst):
        g.nodes[dst]["total color"] += g.nodes[src]["total color"]
        g.nodes[dst]["pixel count"] += g.nodes[src]["pixel count"]
        g.nodes[dst]["mean color"] = g.nodes[dst]["total color"] / g.nodes[dst]["pixel count"]

    def weight(g, src, dst, n):
        return {"weight": float(np.linalg.norm(g.nodes[dst]["mean color"] - g.nodes[n]["mean color"]))}

    ref = graph.merge_hierarchical(sp, graph.rag_mean_color(lab, sp, mode="distance"), thresh=14.0, rag_copy=False,
                                   in_place_merge=True, merge_func=merge, weight_func=weight)
    ours = merge_regions(lab, sp, 14.0)
    assert len(np.unique(ours)) > 10                       # a real merge happened, not one region
    np.testing.assert_array_equal(ours, ref)


def test_colour_rag_layer_weights_only_touch_pairs_with_layers():
    # The vectorised edge weights equal the per-pair rule applied to every edge.
    from dataengine.backends.segmenters.classical import _layer_weight, colour_rag

    rgb = photo()
    lab = color.rgb2lab(rgb)
    sp = slic(rgb, n_segments=150, compactness=20, start_label=1, channel_axis=-1)
    residual = np.zeros(sp.shape + (2,))
    residual[:, 60:, 0] = 5.0                               # right part moves, left static
    reliable = np.ones(sp.shape, bool)
    reliable[:, 10:35] = False                              # a band of unknown motion (layer 0)
    rag = colour_rag(lab, sp, residual=residual, min_speed=2.5, reliable=reliable, layer_tolerance=1.0,
                     layer_join=0.5, layer_split=4.0)
    layers = {rag.nodes[n]["layer"] for n in rag.nodes}
    assert layers == {-1, 0, 1}
    plain = colour_rag(lab, sp)
    weights = {tuple(sorted((a, b))): w for a, b, w in rag.edges(data="weight")}
    assert any(np.isinf(w) for w in weights.values())
    for a, b, w in plain.edges(data="weight"):
        assert weights[tuple(sorted((a, b)))] == _layer_weight(rag, a, b, w)


def test_fit_residuals_from_design_matrices_are_the_plain_fits():
    from dataengine.stages.grouping import _design, _fit_residuals

    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 100, (150, 2))
    uv = np.column_stack([0.1 * xy[:, 0] + 2, -0.05 * xy[:, 1]]) + rng.normal(0, 0.3, (150, 2))
    a = _design(xy)
    coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(3), a.T @ uv)
    plain = float(np.linalg.norm(a @ coef - uv, axis=1).mean())
    assert 0.1 < plain < 1.0
    assert _fit_residuals([(a, uv)]) == [plain]
    # two pieces' designs joined, in one batch with other fits (each 3x3 system solved as it would be alone)
    other = _design(rng.uniform(0, 50, (40, 2)))
    batch = _fit_residuals([(other, rng.normal(0, 1, (40, 2))), (np.concatenate([a[:70], a[70:]]), uv)])
    assert batch[1] == plain and _fit_residuals([]) == []


def test_fill_matching_colour_equals_the_whole_frame_rule():
    import cv2

    from dataengine.backends.trackers.flow import FlowTracker
    from dataengine.ops.regions import nearest_label

    rgb, gt = render_scene(1)
    labels = gt + 1
    labels[40:60, 30:90] = 0                                # a hole across two regions and the background
    cfg = TrackerConfig(fill_colour_distance=20.0)
    filled = FlowTracker(cfg).fill_matching_colour(labels, rgb)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    flat = labels.ravel()
    means = np.stack([np.bincount(flat, weights=lab[:, c]) for c in range(3)], 1) / np.maximum(np.bincount(flat), 1)[:, None]
    cand = nearest_label(labels).ravel()
    ok = (flat == 0) & (np.linalg.norm(lab - means[cand].astype(np.float32), axis=1) <= 20.0)
    expected = np.where(ok, cand, flat).reshape(labels.shape)
    assert 0 < (filled != labels).sum() < (labels == 0).sum()   # fills some, not all (colour decides)
    np.testing.assert_array_equal(filled, expected)


def test_bilateral_smoothing_flattens_grain_and_keeps_the_edge():
    import pytest

    from dataengine.backends.segmenters.classical import ClassicalSegmenter, smoothed
    from dataengine.config import SegmenterConfig
    from dataengine.errors import ConfigError

    rng = np.random.default_rng(3)
    img = np.full((40, 40, 3), 60.0)
    img[:, 20:] = 180.0
    noisy = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    out = smoothed(noisy, "bilateral", 3, 10.0)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert out[:, 3:17].std() < 0.6 * noisy[:, 3:17].astype(float).std()       # grain inside a side fades
    assert abs(float(out[:, 19].mean()) - 60) < 5 and abs(float(out[:, 20].mean()) - 180) < 5   # edge kept
    assert smoothed(noisy, "none", 3, 10.0) is noisy
    with pytest.raises(ConfigError, match="segmenter.smooth"):
        ClassicalSegmenter(SegmenterConfig(smooth="gaussian"))


def test_nearest_label_in_a_window_equals_the_whole_frame_transform():
    """The bounding-box window of the holes gives exactly the whole-frame answer (ties included: label maps
    of 4 px blocks), and both the window and the whole-frame fallback are exercised."""
    from scipy import ndimage

    from dataengine.ops.regions import nearest_label

    def whole_frame(labels):
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        return labels[iy, ix]

    rng = np.random.default_rng(0)
    windowed = 0
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(20, 120, size=2))
        labels = rng.integers(1, 6, size=(h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w].astype(np.int32)
        for _ in range(int(rng.integers(1, 4))):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            labels[y:y + int(rng.integers(1, 12)), x:x + int(rng.integers(1, 12))] = 0
        margin = int(rng.integers(2, 20))
        assert np.array_equal(nearest_label(labels, margin), whole_frame(labels))
        rows, cols = np.flatnonzero((labels == 0).any(1)), np.flatnonzero((labels == 0).any(0))
        box = (min(rows[-1] + 1 + margin, h) - max(rows[0] - margin, 0)) * \
              (min(cols[-1] + 1 + margin, w) - max(cols[0] - margin, 0))
        windowed += box <= h * w // 2
    assert 100 < windowed < 400
