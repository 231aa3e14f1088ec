"""Stage logic on frames rendered in memory: keyframes, segmentation, tracking, merge, labelling."""
import numpy as np

from fixtures.scenes import render_scene
from dataengine.config import AnnotateConfig, KeyframeConfig, SegmenterConfig, TrackerConfig
from dataengine.stages.keyframes import detect_keyframes
from dataengine.stages.labeller import Labeller
from dataengine.stages.merge import merge_keyframe
from dataengine.metrics.matching import iou_matrix
from dataengine.backends.segmenters.classical import ClassicalSegmenter
from dataengine.backends.trackers.flow import FlowTracker


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
    res, nxt = merge_keyframe(a, b, next_id=10)
    assert (res.labels[:4] == 7).all() and (res.labels[4:] == 9).all()
    assert nxt == 10 and res.new_ids == [] and [i for i, _ in res.matched] == [7, 9]


def test_merge_revives_a_track_whose_object_the_tracker_mostly_lost():
    carried = np.zeros((10, 10), np.int32)
    carried[:, 6:] = 9
    carried[2:4, 1:4] = 7                        # the tracker kept 6 pixels of a fast object; the rest is unlabelled
    seg = np.ones((10, 10), np.int32)
    seg[:, 6:] = 2                               # the fresh partition finds the whole object (region 1)
    plain, _ = merge_keyframe(carried, seg, next_id=20, keep_share=0.0)
    assert (plain.labels[:, :6] == 20).all() and plain.ended_ids == [7]     # new content: a new id, 7 ends
    revived, nxt = merge_keyframe(carried, seg, next_id=20, keep_share=0.0, revive_share=0.3)
    assert (revived.labels[:, :6] == 7).all() and (revived.labels[:, 6:] == 9).all()
    assert revived.new_ids == [] and revived.ended_ids == []
    # a region holding too little of the ending track stays new
    few = carried.copy()
    few[2:4, 1:4] = 0
    few[0, 0] = 7
    few[9, 6:] = 7                               # most of 7's carried pixels are in region 2 (which continues 9)
    assert 7 not in np.unique(merge_keyframe(few, seg, next_id=20, keep_share=0.0, revive_share=0.3)[0].labels[:, :6])


def test_merge_keeps_two_tracks_that_one_fresh_region_joins():
    carried = np.zeros((10, 10), np.int32)
    carried[:, :7] = 3                           # a wall
    carried[3:7, 4:7] = 8                        # a face in front of it (12 px)
    carried[:, 7:] = 5
    seg = np.ones((10, 10), np.int32)
    seg[:, 7:] = 2                               # the segmenter joined face and wall (similar colour)
    # region 1: wall 58 px, face 12 px (17 %, below the 25 % share): the face's track is swallowed
    swallowed, _ = merge_keyframe(carried, seg, next_id=20, keep_share=0.0, two_tracks_share=0.25)
    assert (swallowed.labels[:, :7] == 3).all() and swallowed.ended_ids == [8]
    # a larger face (21 of 70 px = 30 % of the region, all of its track): two tracked objects, ids kept
    carried[2:9, 4:7] = 8
    kept, _ = merge_keyframe(carried, seg, next_id=20, keep_share=0.0, two_tracks_share=0.25)
    assert (kept.labels == carried).all() and kept.ended_ids == []
    merged, _ = merge_keyframe(carried, seg, next_id=20, keep_share=0.0, two_tracks_share=0.0)
    assert (merged.labels[:, :7] == 3).all() and merged.ended_ids == [8]
    # ... unless the region holds under two_tracks_hold of the second track: drift correction as before
    carried[:, 7:9] = 8
    moved, _ = merge_keyframe(carried, seg, next_id=20, keep_share=0.0, two_tracks_share=0.25, two_tracks_hold=0.6)
    assert (moved.labels[:, :7] == 3).all() and 8 in np.unique(moved.labels)


def test_merge_reconciles_fresh_regions_with_carried_tracks():
    carried = np.zeros((10, 10), np.int32)
    carried[:, :5] = 7
    carried[:, 5:8] = 9
    carried[4:6, 2:4] = 5                        # a small track inside 7's area
    # Over-segmentation: three fresh regions inside track 7 all continue it (IoU with 7 is < 0.5 each,
    # the old one-to-one matching started new ids); track 9's region continues 9.
    seg = np.zeros((10, 10), np.int32)
    seg[:3, :5], seg[3:7, :5], seg[7:, :5] = 1, 2, 3
    seg[:, 5:8] = 4
    seg[:, 8:] = 6                               # columns 8-9: nothing carried there -> new content
    res, nxt = merge_keyframe(carried, seg, next_id=20)
    out = res.labels
    assert (out[:, 5:8] == 9).all()
    assert (out[:, 8:] == 20).all() and res.new_ids == [20] and nxt == 21
    # track 5 lies inside region 2, which continues 7: it would lose every pixel, so it keeps them
    assert (out[4:6, 2:4] == 5).all()
    assert ((out[:, :5] == 7) | (out[:, :5] == 5)).all() and res.ended_ids == []
    # A fresh region over two tracks with neither dominant is no evidence to merge them.
    seg2 = np.ones((10, 10), np.int32)
    seg2[:, 8:] = 2
    c2 = np.zeros((10, 10), np.int32)
    c2[:, :4], c2[:, 4:7] = 7, 9                 # region 1: 40 % track 7, 30 % track 9, 10 px untracked
    res2, _ = merge_keyframe(c2, seg2, next_id=20)
    assert (res2.labels[:, :4] == 7).all() and (res2.labels[:, 4:7] == 9).all()
    assert (res2.labels[:, 7] == 7).all()        # untracked pixels go to the largest track of their region
    assert (res2.labels[:, 8:] == 20).all()
    # No carried tracks (first frame, after a cut): every region is new, in ascending region order.
    res3, nxt3 = merge_keyframe(None, seg, next_id=1)
    assert sorted(np.unique(res3.labels)) == [1, 2, 3, 4, 5] and nxt3 == 6 and (res3.labels[:3, :5] == 1).all()
    # Pixels the segmenter leaves at 0 (SAM covers only the left half; an empty keyframe) keep the carried ids:
    # the tracker still holds track 9 there (it was erased and ended).
    half = np.zeros((10, 10), np.int32)
    half[:, :5] = 1
    res4, _ = merge_keyframe(c2, half, next_id=20)
    assert (res4.labels[:, :4] == 7).all() and (res4.labels[:, 5:7] == 9).all() and res4.ended_ids == []
    res5, _ = merge_keyframe(c2, np.zeros((10, 10), np.int32), next_id=20)
    assert (res5.labels == c2).all() and res5.ended_ids == [] and res5.new_ids == []


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

    from dataengine.backends.segmenters.classical import colour_rag

    rgb, _ = render_scene(2)
    lab = color.rgb2lab(rgb)
    sp = slic(rgb, n_segments=200, compactness=10, start_label=1, channel_axis=-1)
    ref, ours = graph.rag_mean_color(lab, sp, mode="distance"), colour_rag(lab, sp)
    edges = lambda g: {tuple(sorted(e)): round(w, 9) for *e, w in g.edges(data="weight")}  # noqa: E731
    assert edges(ref) == edges(ours)
    for n in ref.nodes:
        assert ref.nodes[n]["pixel count"] == ours.nodes[n]["pixel count"]
        assert np.allclose(ref.nodes[n]["mean color"], ours.nodes[n]["mean color"])


def test_merge_regions_never_merges_across_motion_layers():
    # Two halves of one flat colour: static on the left, moving 5 px/frame on the right. Colour alone
    # merges them; the motion layers keep them apart.
    from dataengine.backends.segmenters.classical import merge_regions

    lab = np.zeros((40, 80, 3))
    lab[..., 0] = 50 + np.random.default_rng(0).normal(0, 0.5, (40, 80))
    sp = (np.arange(80)[None, :] // 10 + 1).repeat(40, axis=0)          # 8 superpixels, vertical strips
    residual = np.zeros((40, 80, 2))
    residual[:, 40:, 0] = 5.0
    assert len(np.unique(merge_regions(lab, sp, 14.0))) == 1
    split = merge_regions(lab, sp, 14.0, residual=residual, min_speed=2.5, layer_tolerance=1.0, layer_join=0.5,
                          layer_split=4.0)
    assert len(np.unique(split)) == 2
    assert len(np.unique(split[:, :40])) == 1 and len(np.unique(split[:, 40:])) == 1
    assert split[0, 0] != split[0, 79]


def test_refine_boundaries_moves_outline_to_the_matching_side():
    # A dark square on a bright background, labelled one pixel too small on every side (a straddling
    # superpixel's error): the refinement moves the outline back onto the colour edge.
    from dataengine.ops.regions import refine_boundaries

    rng = np.random.default_rng(1)
    img = np.full((40, 40, 3), 80.0) + rng.normal(0, 2, (40, 40, 3))
    img[10:30, 10:30] = 20.0 + rng.normal(0, 2, (20, 20, 3))
    truth = np.ones((40, 40), np.int32)
    truth[10:30, 10:30] = 2
    shrunk = np.ones((40, 40), np.int32)
    shrunk[11:29, 11:29] = 2
    fixed = refine_boundaries(shrunk, img, radius=3, iterations=2)
    assert (shrunk != truth).sum() > 70
    assert (fixed != truth).sum() == 0
    # nothing to move where the labels already follow the edge
    np.testing.assert_array_equal(refine_boundaries(truth, img, radius=3, iterations=2), truth)


def test_labeller_finds_a_cut_the_histograms_miss():
    # A panning photo-like texture, then the same texture rotated by 180 degrees: identical colour
    # histograms (no histogram cut), but no pixel of frame 6 can be reached from frame 5 by flow.
    from scipy import ndimage
    rng = np.random.default_rng(3)
    tex = np.stack([ndimage.gaussian_filter(rng.normal(size=(120, 200)), 2.5) for _ in range(3)], -1)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)
    shot1 = [tex[:96, 2 * t:2 * t + 128] for t in range(6)]
    flipped = tex[::-1, ::-1]
    shot2 = [flipped[:96, 2 * t:2 * t + 128] for t in range(6)]
    frames = np.ascontiguousarray(np.stack(shot1 + shot2))
    cfg = AnnotateConfig()
    keys, cuts = detect_keyframes(frames, cfg.keyframes)
    assert cuts == []
    out = Labeller(cfg).label(frames, keys, cuts)
    assert 6 in out.cuts and 6 in out.keyframes
    before, after = set(np.unique(out.labels[:6])), set(np.unique(out.labels[6:]))
    assert (before & after) <= {0}
    # within each shot the pan is followed: most of the frame keeps the ids of the shot's first frame
    for a, b in ((0, 5), (6, 11)):
        assert np.isin(out.labels[b], np.unique(out.labels[a])).mean() > 0.8


def test_common_fate_joins_pieces_that_move_together():
    from dataengine.stages.grouping import apply_lut, common_fate_lut
    T, H, W = 4, 48, 64
    labels = np.zeros((T, H, W), np.int32)
    flows = {}
    for t in range(T):
        lab = labels[t]
        lab[:, :32], lab[:, 32:] = 4, 5                      # static background, split in two halves
        lab[10:20, 10 + 2 * t:20 + 2 * t] = 1                 # object A: two pieces moving right together
        lab[10:20, 20 + 2 * t:30 + 2 * t] = 2
        lab[20 + 2 * t:30 + 2 * t, 12:22] = 3                 # object B below A, moving down
        if t < T - 1:
            f = np.zeros((H, W, 2), np.float32)
            f[np.isin(lab, [1, 2])] = (2, 0)
            f[lab == 3] = (0, 2)
            f += np.random.default_rng(t).normal(0, 0.05, f.shape).astype(np.float32)   # flow noise
            flows[t] = f
    lut = common_fate_lut(labels, flows, tolerance=0.2, min_frames=2, max_share=0.2)
    assert lut == {2: 1}                                     # A's pieces join; B and the background do not
    # the two static background halves agree too, but a group that large is background, not an object
    assert apply_lut(labels, lut)[0, 15, 25] == 1
    assert set(np.unique(apply_lut(labels, lut))) == {1, 3, 4, 5}


def test_common_fate_forgives_one_bad_frame_only_between_moving_tracks():
    from dataengine.stages.grouping import common_fate_lut
    T, H, W = 5, 48, 64
    labels = np.zeros((T, H, W), np.int32)
    flows = {}
    for t in range(T):
        lab = labels[t]
        lab[:, :32], lab[:, 32:] = 4, 5                      # static background
        lab[10:20, 2 + 3 * t:12 + 3 * t] = 1                  # object: two pieces moving right, 3 px/frame
        lab[10:20, 12 + 3 * t:22 + 3 * t] = 2
        lab[32:42, 40:50], lab[32:42, 50:60] = 6, 7           # two small static pieces side by side
        if t < T - 1:
            f = np.zeros((H, W, 2), np.float32)
            f[np.isin(lab, [1, 2])] = (3, 0)
            if t == 1:                                        # one frame of bad flow on piece 2 and piece 7
                f[lab == 2] = (3, 3)
                f[lab == 7] = (0, 3)
            f += np.random.default_rng(t).normal(0, 0.05, f.shape).astype(np.float32)
            flows[t] = f
    strict = common_fate_lut(labels, flows, tolerance=0.2, min_frames=2, max_share=0.2)
    assert strict == {}                                      # the all-frames rule: the bad frame keeps all apart
    lenient = common_fate_lut(labels, flows, tolerance=0.2, min_frames=2, max_share=0.2,
                              moving_speed=2.0, moving_share=0.66)
    assert lenient == {2: 1}                                 # the moving pieces join; the static ones do not


def test_common_fate_tolerance_grows_with_the_speed_of_moving_pieces():
    from dataengine.stages.grouping import common_fate_lut
    T, H, W = 5, 48, 96
    labels = np.zeros((T, H, W), np.int32)
    flows = {}
    for t in range(T):
        lab = labels[t]
        lab[:, :48], lab[:, 48:] = 4, 5
        lab[10:20, 2 + 12 * t:12 + 12 * t] = 1                # a fast object (12 px/frame) in two pieces whose
        lab[10:20, 12 + 12 * t:22 + 12 * t] = 2               # flow differs by 1.5 px in every frame
        if t < T - 1:
            f = np.zeros((H, W, 2), np.float32)
            f[lab == 1], f[lab == 2] = (12, 0), (12, 1.5)
            f += np.random.default_rng(t).normal(0, 0.05, f.shape).astype(np.float32)
            flows[t] = f
    kwargs = dict(tolerance=0.2, min_frames=2, max_share=0.2, moving_speed=3.0, moving_share=0.66)
    assert common_fate_lut(labels, flows, **kwargs) == {}
    assert common_fate_lut(labels, flows, moving_tolerance=0.03, **kwargs) == {2: 1}


def test_absorb_short_gives_one_frame_tracks_to_their_neighbour():
    from dataengine.stages.grouping import absorb_short
    labels = np.zeros((6, 8, 8), np.int32)
    labels[:, :, :4], labels[:, :, 4:] = 1, 2
    labels[2, :2, :2] = 9                         # a track that lives one frame, inside 1's area
    labels[4:, :, :] = 5                          # after the cut at 4: a two-frame shot, kept whole
    out = absorb_short(labels, [4], min_frames=3)
    assert (out[2, :2, :2] == 1).all() and 9 not in out
    assert (out[4:] == 5).all() and (out[:4, :, 4:] == 2).all()
    assert (absorb_short(labels, [4], min_frames=1) == labels).all()


def test_classical_motion_term_keeps_regions_that_move_apart():
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(128, 2, (64, 96, 3)), 0, 255).astype(np.uint8)
    frame[:, 48:] += 20                             # two halves of similar colour (Lab distance ~8)
    flow = np.zeros((64, 96, 2), np.float32)
    flow[:, 48:, 0] = 4.0                           # the right half moves 4 px/frame
    seg = ClassicalSegmenter(SegmenterConfig(motion_weight=0.0))
    assert len(np.unique(seg.segment_one(frame, flow))) == 1
    seg = ClassicalSegmenter(SegmenterConfig(motion_weight=1.0))
    labels = seg.segment_one(frame, flow)
    assert len(np.unique(labels)) >= 2
    assert np.unique(labels[:, :44]).size == 1 and not set(np.unique(labels[:, 52:])) & set(np.unique(labels[:, :44]))


def _panning_scene(seed: int = 0):
    """Two frames: a textured background panning 2 px/frame and a two-tone textured square (a red and a
    brown half, Lab distance ~26: apart for the colour merge alone) moving 6 px/frame the other way; returns the frames and the square's mask in frame 0."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    h, w, pad = 96, 128, 16
    canvas = ndimage.gaussian_filter(rng.normal(0, 1, (h, w + 2 * pad, 3)), (3, 3, 0))
    canvas = np.clip(128 + 60 * canvas / canvas.std(), 0, 255)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (32, 32, 3)), (1.5, 1.5, 0))
    tex = 30 * tex / tex.std()
    square = np.where(np.arange(32)[None, :, None] < 16, [170, 60, 60], [150, 95, 70]) + tex
    frames, mask = [], np.zeros((h, w), bool)
    for t in range(2):
        f = canvas[:, pad + 2 * t:pad + 2 * t + w].copy()
        x = 40 - 6 * t
        f[32:64, x:x + 32] = square
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    mask[32:64, 40:72] = True
    return np.stack(frames), mask


def test_motion_layers_join_a_moving_textured_object_over_a_panning_background():
    from dataengine.ops.motionlayers import camera_residual
    from dataengine.backends.trackers.flow import frame_motion
    frames, mask = _panning_scene()
    flow = frame_motion(frames, 0, reliability=1.5)    # as the labeller hands it over: flow + reliable mask
    residual = camera_residual(flow[..., :2])
    # the camera's pan is explained away: the background's residual is small, the square's is not
    assert np.median(np.abs(residual[~mask])) < 0.5 and np.median(residual[mask][:, 0]) < -2.5

    def pieces(labels):                     # regions holding >= 10 % of the square
        ids, counts = np.unique(labels[mask], return_counts=True)
        return int((counts >= 0.1 * mask.sum()).sum()), max(counts) / mask.sum()

    # motion layers alone: no pre-smoothing (it moves the colour merge's small pieces around the 10 % mark)
    base = SegmenterConfig(merge_threshold=14.0, motion_layers=False, smooth="none")
    without = ClassicalSegmenter(base).segment_one(frames[0], flow)
    layered = ClassicalSegmenter(SegmenterConfig(merge_threshold=14.0, motion_layers=True,
                                                 smooth="none")).segment_one(frames[0], flow)
    n_without, share_without = pieces(without)
    n_layered, share = pieces(layered)
    assert n_without >= 2 and share_without < 0.5
    assert n_layered == 1 and share > 0.6
    # and the object's region does not leak into the background
    obj = np.bincount(layered[mask]).argmax()
    assert (layered[~mask] == obj).sum() < 0.2 * mask.sum()


def test_flow_tracker_reuses_the_keyframe_step_unchanged():
    from dataengine.backends.trackers.flow import FlowTracker, frame_motion
    frames, mask = _panning_scene()
    steps: dict = {}
    frame_motion(frames, 0, reliability=1.5, steps=steps)
    tracker = FlowTracker(TrackerConfig())
    labels0 = mask.astype(np.int32) + 1
    plain = tracker.track(frames, labels0)
    reused = tracker.track(frames, labels0, first_step=steps[0])
    assert (plain == reused).all() and (plain[1] == 1).sum() > 0.8 * mask.sum()


def test_stills_are_segmented_with_the_still_settings(tmp_path):
    """A single-frame sample (an image) takes ``still_*``: nothing after the keyframe joins an object's pieces
    there; a video's keyframes keep the video settings. On a photo-style image the coarser cut has fewer
    regions."""
    from dataengine.media.decode import decode_media
    from dataengine.tools.synth import make_corpus

    c = make_corpus(tmp_path / "c", videos=0, images=1, seed=3, style="photo")
    cfg = AnnotateConfig()
    image = decode_media((tmp_path / "c" / "media" / "image_000.jpg").read_bytes(), "image", cfg.decode).frames
    assert image.shape[0] == 1 and c["images"] == 1
    still = ClassicalSegmenter(cfg.segmenter.for_stills()).segment_one(image[0])
    video = ClassicalSegmenter(cfg.segmenter).segment_one(image[0])
    assert cfg.segmenter.for_stills().superpixels == cfg.segmenter.still_superpixels != cfg.segmenter.superpixels
    assert still.max() < video.max()

    labeller = Labeller(cfg)
    assert np.array_equal(labeller.label(image, [0], []).labels[0], still)
    # the same frame twice is a video: its keyframe is cut with the video settings (and its flow)
    two = labeller.label(np.concatenate([image, image]), [0], []).labels[0]
    assert len(np.unique(two)) > still.max()


def test_thin_and_tiny_videos_label_with_the_cpu_default():
    """OpenCV's DIS flow raised on frames with a side under ~12 px and killed the process (SIGSEGV) at 12-15 px
    (a 1000 x 30 video works at 384 x 12): the flow pads such frames; they label like any other."""
    from dataengine.backends.trackers.flow import dis_flow
    import cv2

    rng = np.random.default_rng(0)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    base = (rng.random((12, 80)) * 255).astype(np.uint8)
    shifted = np.roll(base, 2, axis=1)
    flow = dis_flow(dis, base, shifted)
    assert flow.shape == (12, 80, 2) and np.median(flow[..., 0][:, 8:-8]) > 1.0   # it sees the shift right
    labeller = Labeller(AnnotateConfig())
    for h, w in ((12, 384), (14, 200), (8, 384), (384, 9), (1, 384), (3, 2)):
        frames = np.stack([np.roll((rng.random((h, w, 3)) * 255).astype(np.uint8), t, axis=1) for t in range(6)])
        result = labeller.label(frames, [0], [])
        assert result.labels.shape == (6, h, w) and (result.labels[0] > 0).all()
