"""Tests of dataengine.metrics.scores.

Reference numbers:
* STQ "complex example": google-research/deeplab2,
  evaluation/numpy/segmentation_and_tracking_quality_test.py,
  ``STQualityTest.test_complex_example`` (its arrays are vendored in
  tests/fixtures/stq_deeplab2_complex_case.npz, see tests/fixtures/README.md).
* STQ "basic examples" 0-11: the same deeplab2 test file,
  ``STQualityTest.test_basic_examples`` (inputs re-expressed below as
  semantic / instance rows; expected [STQ, AQ, IoU] as published there).
* VPQ / VEQ / trajectory recall: small cases worked out by hand in the
  comments, following VIPSeg's ``ClipPanoFCN/eval_vpq_vspw.py`` and
  EntitySAM's ``eval/metric/eval_veq.py`` rules.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from dataengine.metrics import scores as M

TESTDATA = Path(__file__).parent / "fixtures" / "stq_deeplab2_complex_case.npz"


def enc(sem, inst, shift=16):
    return (np.asarray(sem, dtype=np.int64) << shift) + np.asarray(inst, dtype=np.int64)


# --------------------------------------------------------------------------- STQ, deeplab2 reference

def test_stq_deeplab2_complex_example():
    d = np.load(TESTDATA)
    r = M.stq(d["gt"], d["pred"], num_classes=3, things=[2], ignore_label=255, label_bit_shift=16)
    assert r["STQ"] == pytest.approx(0.66841773352, abs=1e-6)
    assert r["AQ"] == pytest.approx(0.55366581415, abs=1e-6)
    assert r["IoU"] == pytest.approx(0.8069529580309542, abs=1e-6)
    (seq,) = r["per_sequence"]
    assert seq["STQ"] == pytest.approx(0.66841773352, abs=1e-6)
    assert seq["AQ"] == pytest.approx(0.55366581415, abs=1e-6)
    assert seq["IoU"] == pytest.approx(0.8069529580309542, abs=1e-6)
    assert seq["length"] == 3
    # the same sequence given as a dict / list gives the same numbers
    r2 = M.stq({"seq": d["gt"]}, {"seq": d["pred"]}, 3, [2])
    assert r2["STQ"] == pytest.approx(r["STQ"], abs=1e-12)
    assert r2["per_sequence"][0]["id"] == "seq"


# deeplab2 test_basic_examples: 2 classes (0 = cars, a thing; 1 = sky, stuff), ignore 255.
# Each case: GT (semantic, instance), prediction (semantic, instance), expected [STQ, AQ, IoU].
_GT_A = ([0, 0, 0, 0, 0], [1, 1, 1, 1, 1])
_GT_CROWD = ([0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1])     # first pixel crowd
_GT_SKY = ([1, 0, 0, 0, 0], [0, 1, 1, 1, 1])             # first pixel sky
DEEPLAB2_BASIC = [
    ("example 0", _GT_A, ([0, 0, 0, 0, 0], [1, 1, 1, 1, 1]), [1.0, 1.0, 1.0]),
    ("example 1", _GT_A, ([0, 0, 0, 0, 0], [1, 1, 2, 2, 2]), [0.72111026, 0.52, 1.0]),
    ("example 2", _GT_A, ([0, 0, 0, 0, 0], [1, 2, 2, 2, 2]), [0.82462113, 0.68, 1.0]),
    ("example 3", _GT_A, ([0, 0, 0, 0, 0], [1, 2, 3, 4, 5]), [0.447213596, 0.2, 1.0]),
    ("example 4", _GT_A, ([0, 0, 0, 0, 0], [1, 2, 1, 2, 2]), [0.72111026, 0.52, 1.0]),
    ("example 5", _GT_A, ([1, 0, 0, 0, 0], [0, 1, 1, 1, 1]), [0.50596443, 0.64, 0.4]),
    ("example 6", _GT_CROWD, ([0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]), [1.0, 1.0, 1.0]),
    ("example 7", _GT_CROWD, ([0, 0, 0, 0, 0, 0], [2, 2, 2, 2, 1, 1]), [0.72111026, 0.52, 1.0]),
    ("example 8", _GT_CROWD, ([0, 0, 1, 0, 0, 0], [2, 2, 0, 1, 1, 1]), [0.40824829, 0.4, 5.0 / 12.0]),
    ("example 9", _GT_SKY, ([0, 0, 0, 0, 0], [1, 1, 1, 1, 1]), [0.56568542, 0.8, 0.4]),
    ("example 10", _GT_SKY, ([0, 0, 0, 0, 0], [2, 2, 2, 1, 1]), [0.42426407, 0.45, 0.4]),
    ("example 11", _GT_SKY, ([0, 0, 1, 0, 0], [2, 2, 0, 1, 1]), [0.3, 0.3, 0.3]),
]


@pytest.mark.parametrize("name,gt,pred,expected", DEEPLAB2_BASIC, ids=[c[0] for c in DEEPLAB2_BASIC])
def test_stq_deeplab2_basic_examples(name, gt, pred, expected):
    g = enc(*gt)[None, None]        # one frame [1, 1, W]
    p = enc(*pred)[None, None]
    r = M.stq(g, p, num_classes=2, things=[0], ignore_label=255)
    assert [r["STQ"], r["AQ"], r["IoU"]] == pytest.approx(expected, abs=1e-6)
    seq = r["per_sequence"][0]
    assert [seq["STQ"], seq["AQ"], seq["IoU"]] == pytest.approx(expected, abs=1e-6)


def test_stq_pools_tracks_over_sequences():
    # AQ is pooled over all GT tracks of all sequences, not averaged per sequence.
    g1, p1 = enc(*_GT_A)[None, None], enc([0] * 5, [1, 1, 2, 2, 2])[None, None]    # AQ 0.52, one track
    g2 = enc([0] * 4, [1, 1, 2, 2])[None, None]                                     # two perfect tracks
    r = M.stq([g1, g2], [p1, g2.copy()], 2, [0])
    assert r["AQ"] == pytest.approx((0.52 + 1 + 1) / 3)
    assert [s["AQ"] for s in r["per_sequence"]] == pytest.approx([0.52, 1.0])
    assert r["STQ"] == pytest.approx(math.sqrt(r["AQ"] * r["IoU"]))


def test_stq_missing_prediction_is_all_void():
    g = enc(*_GT_A)[None, None]
    for pred in (None, [None], {}):
        gt = g if pred is None else ([g] if isinstance(pred, list) else {"a": g})
        r = M.stq(gt, pred, 2, [0])
        assert r["AQ"] == 0 and r["IoU"] == 0 and r["STQ"] == 0
        assert len(r["per_sequence"]) == 1


def test_stq_rejects_unknown_class():
    with pytest.raises(ValueError):
        M.stq(enc([[[5]]], [[[1]]]), enc([[[0]]], [[[1]]]), 2, [0])


def test_agnostic_stq_equals_encoded_stq():
    rng = np.random.default_rng(0)
    pairs, gts, preds = [], [], []
    for _ in range(3):
        g = rng.integers(0, 5, size=(3, 6, 7))
        p = np.where(rng.random(g.shape) < 0.7, g, rng.integers(0, 6, size=g.shape))
        pairs.append((g, p))
        # class-agnostic = one thing class 0, id 0 -> ignore label
        gts.append(np.where(g == 0, 255 << 16, g))
        preds.append(np.where(p == 0, 255 << 16, p))
    a = M.evaluate_sequences(pairs)
    b = M.stq(gts, preds, num_classes=1, things=[0])
    assert a["STQ"] == pytest.approx(b["STQ"], abs=1e-12)
    assert a["AQ"] == pytest.approx(b["AQ"], abs=1e-12)
    assert a["SQ"] == pytest.approx(b["IoU"], abs=1e-12)


# --------------------------------------------------------------------------- VPQ / VEQ, hand-checked

def test_veq_vpq_perfect():
    g = np.zeros((8, 6, 6), np.int64)
    g[:, :3, :3], g[:, 3:, :], g[:, :3, 3:] = 1, 2, 0          # two entities and some void
    r = M.evaluate_sequences([(g, g.copy())])
    for k in ("STQ", "AQ", "SQ", "VEQ", "VPQ", "recall_at_0.5", "mean_best_iou"):
        assert r[k] == pytest.approx(1.0), k
    v = M.veq(g, g.copy())
    assert v["VEQ"] == pytest.approx(1.0)
    assert {k: v["per_k"][k]["windows"] for k in M.WINDOW_SIZES} == {1: 8, 2: 7, 4: 5, 6: 3, 8: 1}


def test_id_switch():
    # one object on a 2x2 frame (4 px), GT id 1 throughout; prediction id 1 then id 2
    g = np.ones((4, 2, 2), np.int64)
    p = np.array([1, 1, 2, 2])[:, None, None] * np.ones((1, 2, 2), np.int64)
    r = M.veq(g, p)
    # k=1: 4 windows, each a perfect TP                      -> PQ 1
    # k=2: [0,1] and [2,3] TP (IoU 1); [1,2]: IoU 4/8 = 0.5 is not > 0.5 -> 1 FN + 2 FP
    #      PQ = 2 / (2 + 0.5*2 + 0.5*1) = 4/7
    # k=4: one window, IoU 0.5 for both predictions -> 1 FN, 2 FP, PQ 0
    # k=6, 8: no window (T = 4): undefined, left out of the mean
    assert r["per_k"][1]["PQ"] == pytest.approx(1.0)
    assert r["per_k"][2]["PQ"] == pytest.approx(4 / 7)
    assert (r["per_k"][2]["tp"], r["per_k"][2]["fp"], r["per_k"][2]["fn"]) == (2, 2, 1)
    assert r["per_k"][4]["PQ"] == 0.0
    assert math.isnan(r["per_k"][6]["PQ"]) and r["per_k"][8]["windows"] == 0
    assert r["VEQ"] == pytest.approx((1 + 4 / 7 + 0) / 3)
    e = M.evaluate_sequences([(g, p)])
    assert e["VEQ"] == e["VPQ"] == pytest.approx(r["VEQ"])
    # STQ: TPA 8 with each prediction, |g| = 16: AQ = (8*8/16 + 8*8/16) / 16 = 0.5
    assert e["AQ"] == pytest.approx(0.5) and e["SQ"] == pytest.approx(1.0)
    assert e["STQ"] == pytest.approx(math.sqrt(0.5))
    # trajectory recall: best spatio-temporal IoU 8/16 = 0.5, which counts (>=)
    assert e["mean_best_iou"] == pytest.approx(0.5) and e["recall_at_0.5"] == 1.0


def test_merge():
    # GT: A = 12 px, B = 4 px of a 4x4 frame, 2 frames; prediction: one id over both
    g = np.ones((2, 4, 4), np.int64)
    g[:, 3, :] = 2
    p = np.full_like(g, 7)
    r = M.veq(g, p)
    # per window: IoU(A, P) = 12/16 > 0.5 -> TP 0.75; B -> FN.  PQ = 0.75 / (1 + 0.5) = 0.5 for k = 1, 2
    assert r["per_k"][1]["PQ"] == pytest.approx(0.5) and r["per_k"][2]["PQ"] == pytest.approx(0.5)
    assert (r["per_k"][1]["tp"], r["per_k"][1]["fp"], r["per_k"][1]["fn"]) == (2, 0, 2)
    assert r["VEQ"] == pytest.approx(0.5)
    e = M.evaluate_sequences([(g, p)])
    # AQ = (24*24/32/24 + 8*8/32/8) / 2 = (0.75 + 0.25) / 2
    assert e["AQ"] == pytest.approx(0.5)
    # recall: A 0.75, B 0.25
    assert e["recall_at_0.5"] == pytest.approx(0.5) and e["mean_best_iou"] == pytest.approx(0.5)


def test_split():
    # GT one object of 16 px; prediction splits it 12 + 4
    g = np.ones((2, 4, 4), np.int64)
    p = np.ones_like(g)
    p[:, 3, :] = 2
    r = M.veq(g, p)
    # per window TP with IoU 0.75, the 4-px piece is a FP: PQ = 0.75 / (1 + 0.5) = 0.5
    assert (r["per_k"][1]["tp"], r["per_k"][1]["fp"], r["per_k"][1]["fn"]) == (2, 2, 0)
    assert r["VEQ"] == pytest.approx(0.5)
    e = M.evaluate_sequences([(g, p)])
    assert e["AQ"] == pytest.approx((24 * 24 / 32 + 8 * 8 / 32) / 32)      # 0.625
    assert e["mean_best_iou"] == pytest.approx(0.75) and e["recall_at_0.5"] == 1.0


def test_missing_video_counts_as_misses():
    a = np.ones((2, 2, 2), np.int64)                  # one entity, predicted perfectly
    b = np.ones((2, 2, 2), np.int64)
    b[:, 1] = 2                                      # two entities, no prediction
    # k=1: TP 2 (IoU 1) + FN 4 -> 2 / (2 + 2) = 0.5;  k=2: TP 1 + FN 2 -> 1 / (1 + 1) = 0.5
    for gt, pred in [([a, b], [a.copy(), None]), ({"a": a, "b": b}, {"a": a.copy()})]:
        r = M.veq(gt, pred)
        assert r["VEQ"] == pytest.approx(0.5)
        assert [s["VEQ"] for s in r["per_sequence"]] == pytest.approx([1.0, 0.0])
    e = M.evaluate_sequences([(a, a.copy()), (b, None)])
    assert e["VEQ"] == pytest.approx(0.5)
    assert e["AQ"] == pytest.approx(1 / 3)                            # 3 tracks, one found
    # 8 of 16 GT pixels covered: trajectory-class IoU 0.5; the void prediction on 8 labelled
    # pixels adds deeplab2's zero-IoU void column to the class mean: SQ = (0.5 + 0) / 2
    assert e["pixel_recall"] == pytest.approx(0.5)
    assert e["SQ"] == pytest.approx(0.25)
    assert e["STQ"] == pytest.approx(math.sqrt(0.25 / 3))
    assert e["recall_at_0.5"] == pytest.approx(1 / 3)
    assert [s["recall_at_0.5"] for s in e["per_sequence"]] == [1.0, 0.0]
    assert e["sequences"] == 2
    # vpq with panoptic ids: a missing video is all misses as well
    v = M.vpq({"a": enc(1, a), "b": enc(1, b)}, {"a": enc(1, a)}, num_classes=2, things=[1])
    assert v["VPQ"] == pytest.approx(0.5)


def test_void_and_crowd_rules():
    # 1 frame 4x4: GT entity 1 on the left half, right half void (0)
    g = np.zeros((1, 4, 4), np.int64)
    g[0, :, :2] = 1
    p = g.copy()
    p[0, :, 2:] = 5                                  # an extra prediction lying entirely on void
    r = M.veq(g, p)
    assert (r["per_k"][1]["tp"], r["per_k"][1]["fp"], r["per_k"][1]["fn"]) == (1, 0, 0)
    assert r["VEQ"] == pytest.approx(1.0)
    # the void part of a prediction is not in its union: prediction = entity + all void -> IoU 8/8
    p2 = np.ones_like(g)
    assert M.veq(g, p2)["VEQ"] == pytest.approx(1.0)
    # a prediction half on void, half on another entity: 4/8 void is not > 0.5 -> a FP
    g3 = g.copy()
    g3[0, :, 2] = 2
    p3 = g3.copy()
    p3[0, :, 2:] = 5                                 # covers entity 2 (4 px) and void (4 px)
    r3 = M.veq(g3, p3)
    # entity 2: IoU(2, 5) = 4 / (4 + 8 - 4 - 4) = 1 -> TP after removing the void part
    assert (r3["per_k"][1]["tp"], r3["per_k"][1]["fp"], r3["per_k"][1]["fn"]) == (2, 0, 0)
    # crowd: GT id 9 is a crowd region; a prediction on it is neither matched nor a FP
    g4 = g.copy()
    g4[0, :, 2:] = 9
    p4 = g.copy()
    p4[0, :, 2:] = 5
    r4 = M.veq(g4, p4, crowd_ids=[9])
    assert (r4["per_k"][1]["tp"], r4["per_k"][1]["fp"], r4["per_k"][1]["fn"]) == (1, 0, 0)
    r5 = M.veq(g4, p4)                               # not crowd: 9 and 5 match perfectly
    assert (r5["per_k"][1]["tp"], r5["per_k"][1]["fp"], r5["per_k"][1]["fn"]) == (2, 0, 0)


def test_vpq_categories_things_stuff_and_crowd():
    # 2 classes: 0 stuff, 1 thing.  4x4 frame: left half stuff, right half thing instance 3
    sem = np.zeros((1, 4, 4), np.int64)
    sem[0, :, 2:] = 1
    inst = np.where(sem == 1, 3, 0)
    g = enc(sem, inst)
    assert M.vpq(g, g.copy(), 2, [1])["VPQ"] == pytest.approx(1.0)
    # same masks, the thing predicted as class 0: the stuff segment (0, 0) is a TP; the
    # prediction (0, 3) on the thing has class 0 != 1 so it cannot match -> thing FN, class-0 FP
    p = enc(np.zeros_like(sem), inst)
    r = M.vpq(g, p, 2, [1])
    k1 = r["per_k"][1]
    assert (k1["tp"], k1["fp"], k1["fn"]) == (1, 1, 1)
    # class 0: 1 / (1 + 0.5) ; class 1: 0 -> mean over the two classes
    assert k1["PQ"] == pytest.approx((1 / 1.5 + 0) / 2)
    assert k1["PQ_stuff"] == pytest.approx(1 / 1.5) and k1["PQ_thing"] == 0.0
    # thing crowd (instance 0 of class 1): a class-1 prediction on it is ignored, a class-0 one is a FP
    gc = enc(sem, np.zeros_like(sem))
    assert M.vpq(gc, enc(sem, inst), 2, [1])["per_k"][1]["fp"] == 0
    assert M.vpq(gc, enc(np.zeros_like(sem), inst), 2, [1])["per_k"][1]["fp"] == 1
    # void via the ignore label is excluded from the union of a prediction
    gv = enc(np.where(sem == 1, 255, 0), 0)
    assert M.vpq(gv, enc(np.zeros_like(sem), 0), 2, [1])["VPQ"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- trajectory recall

def test_fragmentation_and_length_ratio():
    # GT: trajectory 1 in all 4 frames (8 px each), trajectory 2 in frames 0-1 (4 px each)
    g = np.zeros((4, 4, 4), np.int64)
    g[:, :2, :] = 1
    g[:2, 3, :] = 2
    p = np.zeros_like(g)
    p[:2][g[:2] == 1] = 10                            # trajectory 1 broken at frame 2 into two ids
    p[2:][g[2:] == 1] = 11
    p[0, 0, 0] = 12                                   # a 1-px sliver: 1/32 < 5 % of trajectory 1, not counted
    p[:2][g[:2] == 2] = 20                            # trajectory 2 found whole
    r = M.trajectory_recall(g, p)
    assert {x["id"]: x["n_covering"] for x in r["per_trajectory"]} == {1: 2, 2: 1}
    assert r["ids_per_gt_trajectory"] == pytest.approx(1.5)
    # lengths (frames): GT 4 and 2 -> mean 3; predicted 10: 2, 11: 2, 12: 1, 20: 2 -> mean 7/4
    assert r["mean_gt_length"] == pytest.approx(3.0) and r["mean_pred_length"] == pytest.approx(1.75)
    assert r["length_ratio"] == pytest.approx(1.75 / 3)
    e = M.evaluate_sequences([(g, p), (g, None)])
    # pooled: the missing prediction adds two GT trajectories covered by no id and no predicted length
    assert e["ids_per_gt_trajectory"] == pytest.approx(3 / 4)
    assert e["length_ratio"] == pytest.approx(1.75 / 3)
    assert e["per_sequence"][0]["ids_per_gt_trajectory"] == pytest.approx(1.5)
    assert e["per_sequence"][1]["length_ratio"] == 0.0
    assert list(M.trajectory_lengths(np.array([[[0]], [[3]], [[0]], [[3]]]))) == [3]


def test_trajectory_recall_cases():
    g = np.zeros((2, 4, 4), np.int64)
    g[:, :2, :2] = 1                                  # 8 px
    g[:, 2:, :] = 2                                   # 16 px
    p = np.zeros_like(g)
    p[0, :2, :2] = 4                                  # half of trajectory 1: IoU 4/8
    p[:, 2:, :2] = 6                                  # half of trajectory 2: IoU 8/16
    p[:, 2:, 2:] = 7                                  # other half of trajectory 2
    p[1, :2, 2:] = 8                                  # elsewhere
    r = M.trajectory_recall(g, p)
    rows = {row["id"]: row for row in r["per_trajectory"]}
    assert rows[1]["best_iou"] == pytest.approx(0.5) and rows[1]["best_pred"] == 4
    assert rows[2]["best_iou"] == pytest.approx(0.5) and rows[2]["best_pred"] == 6    # ties: lowest id
    assert r["recall_at_0.5"] == 1.0 and r["mean_best_iou"] == pytest.approx(0.5)
    # spatio-temporal IoU sums over frames: a prediction present in one frame of two
    p2 = np.zeros_like(g)
    p2[0][g[0] == 2] = 3
    r2 = M.trajectory_recall(g, p2)
    assert {x["id"]: x["best_iou"] for x in r2["per_trajectory"]} == {1: 0.0, 2: pytest.approx(0.5)}
    assert r2["recall_at_0.5"] == 0.5
    # a prediction larger than the trajectory: 8 / 12 px
    p3 = np.zeros_like(g)
    p3[:, :3, :2] = 1
    assert M.trajectory_recall(g, p3)["per_trajectory"][0]["best_iou"] == pytest.approx(8 / 12)
    # strict rule: a spill onto GT void (0) costs IoU just like a spill onto trajectory 2 (p3 above);
    # the same prediction is still a perfect VEQ match, which leaves its void pixels out of the union
    p4 = np.zeros_like(g)
    p4[:, :2, :] = 5                                  # trajectory 1 (8 px) + void (8 px)
    assert M.trajectory_recall(g, p4)["per_trajectory"][0]["best_iou"] == pytest.approx(8 / 16)
    g1 = np.where(g == 1, 1, 0)
    assert M.veq(g1, p4)["VEQ"] == pytest.approx(1.0)
    assert M.evaluate_sequences([(g1, p4)])["mean_best_iou"] == pytest.approx(0.5)
    # missing prediction and pooling over sequences
    r4 = M.trajectory_recall([g, g], [g.copy(), None])
    assert r4["n_trajectories"] == 4 and r4["recall_at_0.5"] == 0.5 and r4["mean_best_iou"] == 0.5
    assert [s["recall_at_0.5"] for s in r4["per_sequence"]] == [1.0, 0.0]
    # no GT trajectory: undefined
    assert math.isnan(M.trajectory_recall(np.zeros_like(g), g)["recall_at_0.5"])


def test_evaluate_sequences_accepts_mapping_and_generator():
    g = np.ones((2, 3, 3), np.int64)
    r = M.evaluate_sequences({"x": (g, g.copy())})
    assert r["per_sequence"][0]["id"] == "x" and r["per_sequence"][0]["n_pred_trajectories"] == 1
    r2 = M.evaluate_sequences(((g, g.copy()) for _ in range(3)))
    assert r2["sequences"] == 3 and r2["STQ"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.evaluate_sequences([(g, np.ones((2, 3, 4), np.int64))])


def test_speed_16x384x384():
    rng = np.random.default_rng(0)
    T, H, W = 16, 384, 384
    g = np.zeros((T, H, W), np.int32)
    for j in range(1, 41):
        y, x = rng.integers(0, H - 60), rng.integers(0, W - 60)
        h, w = rng.integers(20, 60, size=2)
        for t in range(T):
            g[t, y + t:y + t + h, x + t:x + t + w] = j
    p = g.copy()
    p[8:][p[8:] == 5] = 77
    t0 = time.perf_counter()
    r = M.evaluate_sequences([(g, p)])
    assert time.perf_counter() - t0 < 10.0          # ~0.5 s on one core
    assert 0 < r["VEQ"] < 1 and r["recall_at_0.5"] == 1.0


def test_the_two_recalls_differ_where_one_prediction_covers_two_trajectories():
    from dataengine.metrics.matching import iou_matrix, match_one_to_one, matched_ious
    gt = np.array([[[1, 1, 2, 2]]])
    pred = np.full_like(gt, 5)          # one prediction over both GT trajectories: IoU 0.5 with each
    strict = M.trajectory_recall(gt, pred)
    assert strict["recall_at_0.5"] == 1.0                        # best-IoU: both GT share prediction 5
    assert matched_ious(pred, gt).tolist() == [0.5, 0.0]         # one-to-one: only one GT gets it
    ids_a, ids_b, iou = iou_matrix(gt, pred)
    assert ids_a.tolist() == [1, 2] and ids_b.tolist() == [5] and iou.tolist() == [[0.5], [0.5]]
    rows, cols = match_one_to_one(iou)
    assert len(rows) == 1 and cols.tolist() == [0]
    # ``where`` restricts the pixels that count: off GT void, prediction 5 equals trajectory 1
    _, _, iou = iou_matrix(gt, np.array([[[5, 5, 0, 0]]]), where=gt == 1)
    assert iou.tolist() == [[1.0]]


def test_matched_ious_never_match_what_a_no_object_model_left_at_0():
    """trajtok's matched recall: predicted 0 is "no object"; it was matched as a region (an all-0 prediction
    scored IoU 1.0)."""
    from dataengine.metrics.matching import matched_ious
    assert matched_ious(np.array([[[0, 0, 0, 0]]]), np.array([[[0, 1, 1, 0]]])).tolist() == [0.0]
    assert matched_ious(np.array([[[0, 0, 5, 5, 0, 0]]]), np.array([[[1, 1, 2, 2, 0, 0]]])).tolist() == [0.0, 1.0]


def test_aq_is_nan_without_a_ground_truth_trajectory():
    gt = np.zeros((2, 4, 4), np.int32)
    pred = np.ones_like(gt)
    r = M.evaluate_sequences([(gt, pred)])
    assert math.isnan(r["AQ"]) and math.isnan(r["per_sequence"][0]["AQ"]) and math.isnan(r["STQ"])
