"""The synthetic corpus: determinism, ground truth vs media, and the wds layouts of FORMATS.md."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dataengine import manifest, shards, synth, trajformat

FRAMES = 12          # short clips keep the module fast; the cut lands at frame 6
KW = dict(videos=2, images=1, n_frames=FRAMES)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    synth.make_corpus(out, seed=3, **KW)
    return out


@pytest.fixture(scope="module")
def gt(corpus) -> dict[str, shards.ShardSample]:
    return {s.key: s for s in shards.read_dataset(corpus / "gt")}


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    again = tmp_path / "b"
    summary = synth.make_corpus(again, seed=3, **KW)
    a, b = _files(corpus), _files(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert summary["keys"] == ["video_000", "video_001", "image_000"]
    assert summary["scene_cut_videos"] == ["video_001"]


def test_other_seed_differs(corpus, tmp_path):
    other = tmp_path / "c"
    synth.make_corpus(other, seed=4, **KW)
    a, b = _files(corpus), _files(other)
    for name in ("media/video_000.mp4", "media/video_001.mp4", "media/image_000.jpg", "gt/gt-000000.tar"):
        assert a[name] != b[name], name


def test_layout(corpus):
    names = set(_files(corpus))
    for stem, ext in (("video_000", "mp4"), ("video_001", "mp4"), ("image_000", "jpg")):
        assert {f"media/{stem}.{ext}", f"media/{stem}.txt"} <= names
    assert {"wds/videos/00000.tar", "wds/videos/00000.parquet", "wds/videos/00000_stats.json",
            "wds/images/00000.tar", "wds/images/00000.parquet", "wds/images/00000_stats.json",
            "gt/gt-000000.tar", "gt/manifest/part-000000.parquet"} <= names


def test_gt_matches_decoded_media(corpus, gt):
    assert set(gt) == {"video_000", "video_001", "image_000"}
    for key in ("video_000", "video_001"):
        s = gt[key]
        media = corpus / "media" / f"{key}.mp4"
        assert s.media_ext == "mp4" and s.media == media.read_bytes()
        assert s.caption == (corpus / "media" / f"{key}.txt").read_text()
        frames = _decode(media)
        labels = s.labels
        assert labels.shape == (len(frames),) + frames[0].shape[:2] == (FRAMES, 192, 256)
        assert s.traj["frame_indices"] == list(range(FRAMES))
        assert s.traj["timestamps"] == [round(i / 16, 6) for i in range(FRAMES)]
        assert s.meta["url"] == f"synth://{key}.mp4" and s.meta["fps"] == 16
        assert (s.meta["width"], s.meta["height"], s.meta["n_frames"]) == (256, 192, FRAMES)
    img = gt["image_000"]
    pil = Image.open(corpus / "media" / "image_000.jpg")
    assert img.media_ext == "jpg" and img.media == (corpus / "media" / "image_000.jpg").read_bytes()
    assert img.labels.shape == (1, pil.height, pil.width)
    assert img.traj["frame_indices"] == [0] and img.meta["scene_cuts"] == []


def test_masks_disjoint_and_objects_large(gt):
    for s in gt.values():
        H, W = s.traj["height"], s.traj["width"]
        for rles in s.traj["masklet"]:
            masks = trajformat.decode_masks(rles, H, W)
            assert masks.sum(axis=0).max() <= 1
        # Each object's largest visible area: most are at least 1.5% of the frame.
        peak = np.array([max(t["area"]) for t in s.traj["trajectories"]]) / (H * W)
        assert 6 <= len(peak) and np.mean(peak >= 0.015) >= 0.7


def test_objects_enter_and_leave(gt):
    for key in ("video_000", "video_001"):
        tr = gt[key].traj["trajectories"]
        T = len(gt[key].traj["frame_indices"])
        assert any(t["first"] > 0 for t in tr), f"{key}: nothing enters"
        assert any(t["last"] < T - 1 for t in tr), f"{key}: nothing leaves"
        # Absent somewhere, present elsewhere: some entries are empty RLEs, others are not.
        assert any(0 < sum(a > 0 for a in t["area"]) < T for t in tr)


def test_scene_cut(gt):
    cut = FRAMES // 2
    s = gt["video_001"]
    assert s.meta["scene_cuts"] == [cut] and s.traj["keyframes"] == [0, cut]
    labels = s.labels
    before, after = set(np.unique(labels[:cut])) - {0}, set(np.unique(labels[cut:])) - {0}
    assert before and after and not (before & after)
    assert min(after) > max(before)       # new ids, never reused
    assert gt["video_000"].meta["scene_cuts"] == [] and gt["video_000"].traj["keyframes"] == [0]


def test_manifest(corpus, gt):
    rows = manifest.read_part(corpus / "gt", 0)
    assert [r["key"] for r in rows] == ["video_000", "video_001", "image_000"]
    for r in rows:
        s = gt[r["key"]]
        assert r["status"] == "ok" and r["source"] == "synth" and r["shard"] == "gt-000000.tar"
        assert r["source_uri"] == f"media/{r['key']}.{s.media_ext}"
        assert r["n_trajectories"] == len(s.traj["trajectories"])
        assert r["n_frames"] == r["n_annotated"] == len(s.traj["frame_indices"])
        assert r["coverage"] == pytest.approx(trajformat.coverage(s.labels))


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def test_wds_videos(corpus):
    d = corpus / "wds" / "videos"
    m = _members(d / "00000.tar")
    ok = ["00000000_00000", "00000001_00000"]
    assert set(m) == {f"{k}.{e}" for k in ok for e in ("mp4", "txt", "json")} | {"00000002.txt", "00000002.json"}
    for i, k in enumerate(ok):
        meta = json.loads(m[f"{k}.json"])
        assert meta["key"] == k and meta["status"] == "success" and meta["error_message"] is None
        assert meta["url"] == f"synth://video_{i:03d}.mp4"
        assert meta["clips"] == [[0.0, FRAMES / 16]] and meta["yt_meta_dict"] == {} and meta["clip_subtitles"] == []
        assert m[f"{k}.txt"].decode() == meta["caption"]
        assert m[f"{k}.mp4"] == (corpus / "media" / f"video_{i:03d}.mp4").read_bytes()
    failed = json.loads(m["00000002.json"])
    assert failed["status"] == "failed_to_download" and failed["error_message"]
    rows = pq.read_table(d / "00000.parquet").to_pylist()
    assert [r["key"] for r in rows] == ok + ["00000002"]
    assert [r["status"] for r in rows] == ["success", "success", "failed_to_download"]
    stats = json.loads((d / "00000_stats.json").read_text())
    assert (stats["count"], stats["successes"], stats["failed_to_download"]) == (3, 2, 1)


def test_wds_images(corpus):
    d = corpus / "wds" / "images"
    m = _members(d / "00000.tar")
    assert set(m) == {"000000000.jpg", "000000000.txt", "000000000.json"}   # the failure is not in the tar
    meta = json.loads(m["000000000.json"])
    assert meta["url"] == "synth://image_000.jpg" and meta["status"] == "success"
    assert isinstance(meta["exif"], str) and json.loads(meta["exif"]) == {}
    assert (meta["width"], meta["height"]) == Image.open(corpus / "media" / "image_000.jpg").size
    rows = pq.read_table(d / "00000.parquet").to_pylist()
    assert [(r["key"], r["status"]) for r in rows] == [("000000000", "success"), ("000000001", "failed_to_download")]
    assert rows[1]["error_message"]
    with tarfile.open(d / "00000.tar") as tf:
        assert all(mem.mode == 0o444 for mem in tf)


def test_refuses_to_mix_with_an_old_corpus(corpus, tmp_path):
    out = tmp_path / "d"
    synth.make_corpus(out, videos=0, images=1, seed=1)
    with pytest.raises(FileExistsError):
        synth.make_corpus(out, videos=0, images=1, seed=1)
    synth.make_corpus(out, videos=0, images=1, seed=2, overwrite=True)
    assert [s.key for s in shards.read_dataset(out / "gt")] == ["image_000"]


def test_write_video_and_render_image(tmp_path):
    labels = synth.write_video(tmp_path / "v.mp4", seed=7, n_frames=5, width=96, height=64, fps=8, n_objects=3)
    frames = _decode(tmp_path / "v.mp4")
    assert labels.dtype == np.int32 and labels.shape == (5, 64, 96) == (len(frames),) + frames[0].shape[:2]
    with pytest.raises(ValueError):
        synth.write_video(tmp_path / "w.mp4", seed=7, n_frames=5, scene_cut_at=5)
    rgb, lab = synth.render_image(5, 120, 80)
    assert rgb.shape == (80, 120, 3) and rgb.dtype == np.uint8 and lab.shape == (80, 120)


def test_colours_are_separable():
    """Flat style: object colours sit apart from each other and from a less saturated background (Lab)."""
    from skimage.color import rgb2lab
    for seed in range(3):
        rgb, lab = synth.render_image(seed, 320, 240, style="flat")
        L = rgb2lab(rgb)
        ids = np.unique(lab)
        means = np.array([L[lab == i].mean(axis=0) for i in ids])
        dist = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(len(ids)) * 1e9
        assert dist.min() > 15
        chroma = np.hypot(means[:, 1], means[:, 2])
        assert chroma[0] < chroma[1:].min()          # ids[0] == 0 is the background
