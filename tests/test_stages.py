"""Stage logic on frames rendered in memory: keyframes, segmentation, tracking, merge, labelling."""
import numpy as np

from conftest import render_scene
from dataengine.config import AnnotateConfig, KeyframeConfig, SegmenterConfig, TrackerConfig
from dataengine.keyframes import detect_keyframes
from dataengine.labeller import Labeller
from dataengine.merge import merge_keyframe
from dataengine.regions import iou_matrix
from dataengine.segmenters.classical import ClassicalSegmenter
from dataengine.trackers.flow import FlowTracker


def best_iou(gt_mask, labels):
    ids, counts = np.unique(labels[gt_mask], return_counts=True)
    best = 0.0
    for i in ids[ids != 0]:
        m = labels == i
        best = max(best, (m & gt_mask).sum() / (m | gt_mask).sum())
    return best


def test_keyframes_find_cut_and_gap():
    frames = np.stack([render_scene(t)[0] for t in range(12)])
    frames[7:] = 255 - frames[7:]          # a hard cut: colours invert
    keys, cuts = detect_keyframes(frames, KeyframeConfig(max_gap=5))
    assert cuts == [7]
    assert keys[0] == 0 and 7 in keys and 5 in keys  # gap forces frame 5
    assert all(b - a <= 5 for a, b in zip(keys, keys[1:]))


def test_keyframes_static_video_has_one_keyframe():
    frames = np.stack([render_scene(0, seed=t)[0] for t in range(6)])
    assert detect_keyframes(frames, KeyframeConfig(max_gap=100))[0] == [0]


def test_classical_segmenter_partitions_and_finds_objects():
    rgb, gt = render_scene(0)
    labels = ClassicalSegmenter(SegmenterConfig()).segment_one(rgb)
    assert labels.shape == gt.shape and labels.dtype == np.int32
    assert (labels > 0).all()  # panoptic: every pixel in a region
    assert set(np.unique(labels)) == set(range(1, labels.max() + 1))
    for i in (1, 2, 3):
        assert best_iou(gt == i, labels) > 0.8


def test_flow_tracker_follows_moving_objects():
    frames = np.stack([render_scene(t)[0] for t in range(5)])
    gts = [render_scene(t)[1] for t in range(5)]
    tracked = FlowTracker(TrackerConfig()).track(frames, gts[0])
    assert (tracked[0] == gts[0]).all()
    for i in (1, 2, 3):
        inter = ((tracked[4] == i) & (gts[4] == i)).sum()
        union = ((tracked[4] == i) | (gts[4] == i)).sum()
        assert inter / union > 0.8, i


def test_iou_matrix_and_merge_keep_ids():
    a = np.zeros((10, 10), np.int32); a[:5] = 7; a[5:] = 9
    b = np.zeros((10, 10), np.int32); b[:4] = 1; b[4:] = 2
    ids_a, ids_b, iou = iou_matrix(a, b)
    assert ids_a.tolist() == [7, 9] and ids_b.tolist() == [1, 2]
    assert np.isclose(iou[0, 0], 40 / 50) and np.isclose(iou[1, 1], 50 / 60)
    res, nxt = merge_keyframe(a, b, next_id=10, iou_threshold=0.5)
    assert (res.labels[:4] == 7).all() and (res.labels[4:] == 9).all()
    assert nxt == 10 and res.new_ids == [] and [i for i, _ in res.matched] == [7, 9]
    # Below the threshold a region starts a new trajectory; the old one ends.
    res, nxt = merge_keyframe(a, b, next_id=10, iou_threshold=0.9)
    assert sorted(np.unique(res.labels)) == [10, 11] and res.ended_ids == [7, 9] and nxt == 12


def test_labeller_keeps_ids_through_clips_and_never_across_cut():
    frames = np.stack([render_scene(t)[0] for t in range(12)])
    frames[8:] = np.stack([render_scene(t, seed=5, background=(200, 190, 230))[0][:, ::-1] for t in range(4)])
    cfg = AnnotateConfig()
    cfg.keyframes.max_gap = 4
    keys, cuts = detect_keyframes(frames, cfg.keyframes)
    assert cuts == [8]
    out = Labeller(cfg).label(frames, keys, cuts)
    labels = out.labels
    before, after = set(np.unique(labels[:8])), set(np.unique(labels[8:]))
    assert (before & after) <= {0}  # no trajectory spans the cut
    # The red box keeps one id across the keyframes 0, 4 inside the first shot.
    gt3 = render_scene(0)[1] == 1
    rid = np.bincount(labels[0][gt3]).argmax()
    for t in range(8):
        m = render_scene(t)[1] == 1
        assert np.bincount(labels[t][m]).argmax() == rid
    assert out.merges and all(len(m["matched"]) > 0 for m in out.merges)


def test_colour_rag_matches_skimage_rag_mean_color():
    from skimage import color, graph
    from skimage.segmentation import slic

    from dataengine.segmenters.classical import colour_rag

    rgb, _ = render_scene(2)
    lab = color.rgb2lab(rgb)
    sp = slic(rgb, n_segments=200, compactness=10, start_label=1, channel_axis=-1)
    ref, ours = graph.rag_mean_color(lab, sp, mode="distance"), colour_rag(lab, sp)
    edges = lambda g: {tuple(sorted(e)): round(w, 9) for *e, w in g.edges(data="weight")}  # noqa: E731
    assert edges(ref) == edges(ours)
    for n in ref.nodes:
        assert ref.nodes[n]["pixel count"] == ours.nodes[n]["pixel count"]
        assert np.allclose(ref.nodes[n]["mean color"], ours.nodes[n]["mean color"])
