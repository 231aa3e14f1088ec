"""Tests of dataengine.tools.evaluate on tiny GT / prediction shard datasets written here."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from rich.console import Console

from dataengine.format import manifest, shards, trajformat
from dataengine.tools.evaluate import evaluate_dirs, format_table, resize_nearest

METRICS = ("STQ", "AQ", "SQ", "VEQ", "VPQ", "recall_at_0.5", "mean_best_iou")


def scene(T=8, H=16, W=16, n=3, seed=0):
    """Moving rectangles, ids 1..n, background 0 (void)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((T, H, W), np.int32)
    for i in range(1, n + 1):
        y, x = rng.integers(0, H // 2, size=2)
        h, w = rng.integers(3, H // 2, size=2)
        for t in range(T):
            labels[t, y:y + h, x + t:x + t + w] = i
    return labels


def sample(key, labels, frame_indices=None, url=None, media_type="video"):
    T = labels.shape[0]
    fi = list(range(T)) if frame_indices is None else list(frame_indices)
    traj = trajformat.labels_to_traj(labels, fi, [f / 10 for f in fi], [0])
    meta = {"source": "test", "media_type": media_type, "height": labels.shape[1], "width": labels.shape[2]}
    if url:
        meta["url"] = url
    return shards.ShardSample(key=key, media_ext=None, media=None, caption="", meta=meta, traj=traj)


def write_dataset(directory, samples):
    shards.write_shard(directory / shards.shard_name("part", 0), samples)
    rows = [{"key": s.key, "source": "test", "source_uri": s.meta.get("url", ""), "status": "ok",
             "shard": shards.shard_name("part", 0), "n_annotated": len(s.traj["frame_indices"]),
             "n_trajectories": len(s.traj["masklet_id"]), "height": s.traj["height"],
             "width": s.traj["width"], "coverage": trajformat.coverage(trajformat.traj_to_labels(s.traj))}
            for s in samples]
    manifest.write_part(directory, 0, rows)
    return directory


@pytest.fixture
def gt_dir(tmp_path):
    return write_dataset(tmp_path / "gt", [sample("vid_a", scene(seed=1), url="http://x/a.mp4"),
                                           sample("vid_b", scene(seed=2, n=4), url="http://x/b.mp4")])


def test_gt_against_itself_is_perfect(gt_dir):
    r = evaluate_dirs(gt_dir, gt_dir)
    for k in METRICS + ("pixel_recall",):
        assert r[k] == pytest.approx(1.0), k
    assert r["samples"] == 2 and r["matched"] == 2 and r["missing_pred"] == 0 and r["unmatched_pred"] == 0
    assert [row["key"] for row in r["per_sample"]] == ["vid_a", "vid_b"]
    for row in r["per_sample"]:
        assert row["matched_by"] == "key" and row["frames"] == 8
        assert row["n_gt_trajectories"] == row["n_pred_trajectories"] > 0
        for k in METRICS:
            assert row[k] == pytest.approx(1.0)
    json.dumps(r)                                   # the CLI writes it with --json


def test_frame_selection_and_nearest_resize(tmp_path, gt_dir):
    gt_a = scene(seed=1)
    gt_b = scene(seed=2, n=4)
    frames = [0, 2, 5, 7]
    # prediction on 4 of the 8 frames, at half resolution (8x8), made with the same nearest resize
    small_a = resize_nearest(gt_a[frames], 8, 8)
    assert small_a.shape == (4, 8, 8)
    assert np.array_equal(small_a[1], cv2.resize(gt_a[2], (8, 8), interpolation=cv2.INTER_NEAREST))
    small_b = resize_nearest(gt_b[frames], 8, 8)
    pred = write_dataset(tmp_path / "pred", [sample("vid_a", small_a, frames), sample("vid_b", small_b, frames)])
    r = evaluate_dirs(pred, gt_dir)
    for k in METRICS:
        assert r[k] == pytest.approx(1.0), k
    assert [row["frames"] for row in r["per_sample"]] == [4, 4]
    # the same masks claimed at the wrong frame indices no longer fit (the objects move)
    wrong = write_dataset(tmp_path / "wrong", [sample("vid_a", small_a, [1, 3, 4, 6]),
                                               sample("vid_b", small_b, [1, 3, 4, 6])])
    assert evaluate_dirs(wrong, gt_dir)["mean_best_iou"] < 0.99
    # predicted frames the GT does not annotate are left out
    extra = write_dataset(tmp_path / "extra", [sample("vid_a", gt_a[:2], [0, 100])])
    row = evaluate_dirs(extra, gt_dir)["per_sample"][0]
    assert row["frames"] == 1 and row["frames_without_gt"] == 1 and row["STQ"] == pytest.approx(1.0)


def test_match_by_url(tmp_path, gt_dir):
    pred = write_dataset(tmp_path / "pred", [sample("other_key_1", scene(seed=1), url="http://x/a.mp4"),
                                             sample("other_key_2", scene(seed=2, n=4), url="http://x/b.mp4")])
    r = evaluate_dirs(pred, gt_dir)
    assert [(row["matched_by"], row["pred_key"]) for row in r["per_sample"]] == [
        ("address", "other_key_1"), ("address", "other_key_2")]
    assert r["STQ"] == pytest.approx(1.0) and r["recall_at_0.5"] == 1.0


def test_missing_sample_lowers_recall(tmp_path, gt_dir):
    pred = write_dataset(tmp_path / "pred", [sample("vid_a", scene(seed=1)),
                                             sample("stray", scene(seed=9))])
    r = evaluate_dirs(pred, gt_dir)
    assert r["samples"] == 2 and r["matched"] == 1 and r["missing_pred"] == 1 and r["unmatched_pred"] == 1
    n_a = len(np.unique(scene(seed=1))) - 1
    n_b = len(np.unique(scene(seed=2, n=4))) - 1
    assert n_a > 0 and n_b > 0
    # the trajectories of vid_a are found exactly, those of vid_b not at all
    assert r["recall_at_0.5"] == pytest.approx(n_a / (n_a + n_b))
    assert r["mean_best_iou"] == pytest.approx(n_a / (n_a + n_b))
    assert r["AQ"] == pytest.approx(n_a / (n_a + n_b))
    assert 0 < r["VEQ"] < 1 and 0 < r["STQ"] < 1
    missing = r["per_sample"][1]
    assert missing["key"] == "vid_b" and missing["matched_by"] is None
    assert missing["recall_at_0.5"] == 0.0 and missing["VEQ"] == 0.0 and missing["n_pred_trajectories"] == 0
    assert r["per_sample"][0]["recall_at_0.5"] == 1.0
    # an annotate output whose every sample failed (a manifest, no shard): everything missed
    empty = tmp_path / "empty"
    manifest.write_part(empty, 0, [{"key": "vid_a", "source": "test", "source_uri": "", "status": "error",
                                    "reason": "decode failed", "shard": ""}])
    r0 = evaluate_dirs(empty, gt_dir)
    assert r0["recall_at_0.5"] == 0.0 and r0["STQ"] == 0.0 and r0["missing_pred"] == 2
    # a folder that is no dataset at all (a mistyped --pred that exists): refused, not scored as all missed
    (tmp_path / "typo").mkdir()
    with pytest.raises(ValueError, match="predictions .* holds neither trajectory shards nor a manifest"):
        evaluate_dirs(tmp_path / "typo", gt_dir)


def test_format_table(tmp_path, gt_dir):
    pred = write_dataset(tmp_path / "pred", [sample("vid_a", scene(seed=1))])
    r = evaluate_dirs(pred, gt_dir)
    table = format_table(r)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "ALL" in text and "vid_a" in text and "vid_b" in text and "missing" in text
    assert "STQ" in text and "VEQ" in text
    small = format_table(r, max_rows=1)
    c2 = Console(record=True, width=200)
    c2.print(small)
    assert "1 more" in c2.export_text()


def test_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        evaluate_dirs(tmp_path / "nope", tmp_path / "nope")


def test_videos_and_images_are_also_pooled_apart(tmp_path):
    """A ground truth holding videos and images: ``by_media`` pools each kind as a run of that kind alone would,
    and the table shows both rows; a run of one kind has no split."""
    vids = [("vid_a", scene(seed=1)), ("vid_b", scene(seed=2, n=4))]
    imgs = [("img_a", scene(T=1, seed=3, n=4)), ("img_b", scene(T=1, seed=4, n=2))]
    wrong = {"vid_b": np.roll(scene(seed=2, n=4), 3, axis=2), "img_a": np.roll(scene(T=1, seed=3, n=4), 4, axis=1),
             "img_b": np.where(scene(T=1, seed=4, n=2) == 1, 2, scene(T=1, seed=4, n=2))}
    def gt(items, kind):
        return [sample(k, x, media_type=kind) for k, x in items]
    def pred(items, kind):
        return [sample(k, wrong.get(k, x), media_type=kind) for k, x in items]
    both = evaluate_dirs(write_dataset(tmp_path / "p", pred(vids, "video") + pred(imgs, "image")),
                         write_dataset(tmp_path / "g", gt(vids, "video") + gt(imgs, "image")))
    alone = {"video": evaluate_dirs(write_dataset(tmp_path / "pv", pred(vids, "video")),
                                    write_dataset(tmp_path / "gv", gt(vids, "video"))),
             "image": evaluate_dirs(write_dataset(tmp_path / "pi", pred(imgs, "image")),
                                    write_dataset(tmp_path / "gi", gt(imgs, "image")))}
    assert set(both["by_media"]) == {"video", "image"} and "by_media" not in alone["video"]
    for kind, r in alone.items():
        assert 0 < r["recall_at_0.5"] < 1                          # each kind has hits and misses
        for k in ("recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory", "length_ratio"):
            assert both["by_media"][kind][k] == pytest.approx(r[k]), (kind, k)
    assert both["by_media"]["image"]["samples"] == 2
    assert both["by_media"]["image"]["ids_per_gt_trajectory"] != both["by_media"]["video"]["ids_per_gt_trajectory"]
    console = Console(record=True, width=250)
    console.print(format_table(both))
    text = console.export_text()
    assert "ALL videos" in text and "ALL images" in text


def test_a_missing_sample_weighs_by_the_predictions_grid_not_its_storage_size(tmp_path):
    """A GT sample without prediction is scored at the predictions' size: storing it at 4x the
    resolution (as source-size GT against 384 px labels would be) changes none of the pooled figures."""
    a, b = scene(seed=1), scene(seed=2, n=4)
    big_b = np.repeat(np.repeat(b, 4, axis=1), 4, axis=2)
    pred = write_dataset(tmp_path / "pred", [sample("vid_a", a)])
    small = evaluate_dirs(pred, write_dataset(tmp_path / "gt1", [sample("vid_a", a), sample("vid_b", b)]))
    large = evaluate_dirs(pred, write_dataset(tmp_path / "gt4", [sample("vid_a", a), sample("vid_b", big_b)]))
    for k in METRICS + ("pixel_recall",):
        assert large[k] == pytest.approx(small[k]), k
    assert 0 < small["pixel_recall"] < 1


def test_a_prediction_sharing_no_frame_is_counted_and_shown_as_missing(tmp_path, gt_dir):
    pred = write_dataset(tmp_path / "pred", [sample("vid_a", scene(seed=1)),
                                             sample("vid_b", scene(seed=2, n=4), frame_indices=range(100, 108))])
    r = evaluate_dirs(pred, gt_dir)
    assert r["matched"] == 1 and r["missing_pred"] == 1
    row = r["per_sample"][1]
    assert row["matched_by"] == "key" and not row["scored"] and row["frames_without_gt"] == 8
    console = Console(record=True, width=250)
    console.print(format_table(r))
    assert "no shared frame" in console.export_text()


def test_json_of_a_sample_without_objects_is_strict_json(tmp_path):
    from dataengine.tools.evaluate import json_safe
    empty = np.zeros((8, 16, 16), np.int32)
    gt = write_dataset(tmp_path / "gt", [sample("vid_a", scene(seed=1)), sample("blank", empty)])
    r = evaluate_dirs(gt, gt)
    assert any(isinstance(v, float) and np.isnan(v) for v in r["per_sample"][1].values())
    text = json.dumps(json_safe(r), allow_nan=False)
    assert json.loads(text)["per_sample"][1]["recall_at_0.5"] is None


def test_a_cropped_prediction_a_repeated_frame_and_a_prediction_cut_short(tmp_path):
    """A prediction of another aspect ratio (here the left half) was squeezed onto the GT and scored 1.0; a
    repeated frame index was scored twice; GT trajectories only in frames the prediction lacks vanished from
    the scores without a count."""
    gt = np.zeros((8, 4, 8), np.int32)
    gt[:, :, :4], gt[:, :, 4:] = 1, 2                      # two halves, both in every frame
    gt[4:, :, 4:] = 3                                      # trajectory 3 replaces 2 from frame 4 on
    gt[4:, 0, 0] = 2                                       # ... 2 stays as one pixel (not only in frames 0-3)
    gt_dir = write_dataset(tmp_path / "gt", [sample("crop", gt), sample("twice", gt), sample("short", gt)])
    repeated = np.concatenate([gt[:1] * 0, gt])            # frame 0 twice: first an empty map, then the true one
    pred_dir = write_dataset(tmp_path / "pred", [sample("crop", gt[:, :, :4]),
                                                 sample("twice", repeated, frame_indices=[0] + list(range(8))),
                                                 sample("short", gt[:4] * (gt[:4] != 2), frame_indices=range(4))])
    rows = {r["key"]: r for r in evaluate_dirs(pred_dir, gt_dir)["per_sample"]}
    assert not rows["crop"]["scored"] and rows["crop"]["problem"].startswith("other aspect ratio (4x4 vs GT 4x8)")
    assert rows["crop"]["recall_at_0.5"] == 0.0
    assert rows["twice"]["scored"] and rows["twice"]["frames"] == 8       # 9 before: frame 0 scored twice
    r = evaluate_dirs(pred_dir, gt_dir)
    assert rows["short"]["gt_outside_pred_frames"] == 1 and r["gt_outside_pred_frames"] == 1
    text = _render(format_table(r))
    assert "other aspect ratio" in text and "1 GT trajectories only in frames no prediction annotates" in text


def _render(table) -> str:
    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()
