"""The synthetic corpus: determinism, ground truth vs media, and the wds layouts of FORMATS.md.

The shared fixture uses the default (photo) style; tests of one style name it."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dataengine.format import manifest, shards, trajformat

from dataengine.tools import synth
from dataengine.tools.synth import photo, photos

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
    assert s.traj["scene_cuts"] == [cut]          # traj.json says it too (readers of traj.json alone)
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


# ------------------------------------------------------------ photo style
@pytest.fixture(scope="module")
def photo_a(tmp_path_factory) -> Path:
    """A few more photo clips, drawn from one half of the photo pool."""
    out = tmp_path_factory.mktemp("synth") / "photo_a"
    synth.make_corpus(out, videos=4, images=3, seed=11, n_frames=FRAMES, photos="a")
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-9))


def _scene_at(scenes, t):
    return max((s for s in scenes if s[0] <= t), key=lambda s: s[0])


def test_photo_labels_are_the_painters_order_of_each_objects_own_mask(tmp_path):
    """Re-render every object alone: the ground truth is the front-most object whose own mask covers a pixel,
    and the media decoded from H.264 is the rendered frame (web quality, not a different picture)."""
    seed, T = 21, 10
    labels = synth.write_video(tmp_path / "v.mp4", seed=seed, n_frames=T, scene_cut_at=5)
    frames = _decode(tmp_path / "v.mp4")
    scenes = photo.video_scenes(seed, T, 256, 192, 5, None)
    occluded = 0
    for t in range(T):
        start, scene = _scene_at(scenes, t)
        rgb, lab = scene.render(t - start)
        assert np.array_equal(lab, labels[t])
        assert _psnr(rgb, frames[t]) > 27, t
        expect = np.zeros_like(lab)
        covered = np.zeros(lab.shape, dtype=np.int32)
        everything = scene.objects
        for obj in everything:                      # back to front
            scene.objects = [obj]
            alone = scene.render(t - start)[1] == obj.id
            expect[alone] = obj.id
            covered += alone
        scene.objects = everything
        assert np.array_equal(expect, lab)
        occluded += int((covered > 1).sum())
    assert occluded > 0, "no object ever passes in front of another"


def test_photo_enter_and_leave_over_a_corpus(photo_a):
    samples = [s for s in shards.read_dataset(photo_a / "gt") if s.meta["media_type"] == "video"]
    enters = leaves = 0
    for s in samples:
        T = len(s.traj["frame_indices"])
        enters += sum(t["first"] > 0 and t["first"] not in s.meta["scene_cuts"] for t in s.traj["trajectories"])
        leaves += sum(t["last"] < T - 1 and t["last"] + 1 not in s.meta["scene_cuts"]
                      for t in s.traj["trajectories"])
        for rles in s.traj["masklet"]:
            assert trajformat.decode_masks(rles, 192, 256).sum(axis=0).max() <= 1
    assert enters >= len(samples) and leaves >= len(samples)


def test_photo_scenes_vary_camera_and_scale():
    """Pan, zoom, growing/shrinking objects and irregular shapes all occur over a handful of scenes."""
    scenes = [sc for seed in range(8) for _, sc in photo.video_scenes(seed, 24, 256, 192, None, None)]
    cams = [sc.camera for sc in scenes]
    assert sum(np.hypot(*c["pan"]) > 0.3 for c in cams) >= 3
    assert any(c["zoom"] > 1.08 for c in cams) and any(c["zoom"] < 1 / 1.08 for c in cams)
    objs = [o for sc in scenes for o in sc.objects]
    assert any(o.scale(23) > 1.25 for o in objs) and any(o.scale(23) < 0.8 for o in objs)
    assert {o.shape for o in objs} >= {"blob", "polygon", "horse"}
    assert len({sc.photo for sc in scenes}) >= 5


def test_photo_split_uses_only_its_half(photo_a):
    half = {p.name for p in photos.pool("a")}
    assert half and not half & {p.name for p in photos.pool("b")}
    assert {p.name for p in photos.pool("all")} == half | {p.name for p in photos.pool("b")}
    for s in shards.read_dataset(photo_a / "gt"):
        used = {c["photo"] for c in s.meta["camera"]} | {o["photo"] for o in s.meta["objects"]}
        assert used <= half, used - half
    with pytest.raises(ValueError):
        synth.make_corpus(photo_a.parent / "bad", videos=1, images=0, photos="c")


def test_photo_cut_changes_the_photograph(gt):
    cams = gt["video_001"].meta["camera"]
    assert len(cams) == 2 and cams[0]["photo"] != cams[1]["photo"]
    assert len(gt["video_000"].meta["camera"]) == 1


def test_photo_images_decode_to_the_rendered_picture(corpus, gt):
    from dataengine.tools.synth.common import seed_rng
    data = (corpus / "media" / "image_000.jpg").read_bytes()
    jpg = np.asarray(Image.open(corpus / "media" / "image_000.jpg").convert("RGB"))
    iseed = int(seed_rng("corpus", 3, "image", 0).integers(2**31))
    rgb, labels = photo.image_scene(iseed, 320, 240).render(0.0)
    assert np.array_equal(labels, gt["image_000"].labels[0]) and len(np.unique(labels)) > 2
    # Web-quality JPEG: the rendered picture, compressed well beyond the near-lossless q95 of the flat style.
    assert _psnr(rgb, jpg) > 26
    assert len(data) < len(synth.encode_jpeg(rgb, 95)) * 0.7


# ------------------------------------------------------- captions, labels
def _captions(root: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((root / "media").glob("*.txt"))}


def test_captions_are_distinct_and_describe_motion(photo_a, corpus):
    caps = {**_captions(photo_a), **{f"c-{k}": v for k, v in _captions(corpus).items()}}
    assert len(set(caps.values())) == len(caps)
    for key, text in caps.items():
        if "video" in key:
            assert "camera" in text and any(w in text for w in ("moves", "enters", "leaves", "stays put")), text
        else:
            assert "in front of" in text, text
    cut = _captions(corpus)["video_001"]
    assert "hard cut" in cut


_BORDER = {"left": (slice(None), 0), "right": (slice(None), -1), "top": (0, slice(None)), "bottom": (-1, slice(None))}


def test_captions_say_where_objects_enter_and_leave(photo_a, corpus):
    """Every "enters from the X" has an object appearing after the first frame at border X;
    every "leaves to the X" has one last seen at border X before the end (per scene)."""
    import re
    checked = 0
    for root in (photo_a, corpus):
        for s in shards.read_dataset(root / "gt"):
            if s.meta["media_type"] != "video":
                continue
            labels = s.labels
            T = labels.shape[0]
            starts = [0] + s.meta["scene_cuts"]
            for part, text in zip(starts, s.caption.split(". Then a hard cut: ")):
                end = ([c for c in starts if c > part] + [T])[0]
                tracks = [t for t in s.traj["trajectories"] if part <= t["first"] < end]
                for verb, where in re.findall(r"(enters from|leaves to) the (left|right|top|bottom)", text):
                    frame = (lambda t: t["first"]) if verb == "enters from" else (lambda t: t["last"])
                    ok = [t for t in tracks if (part < frame(t) if verb == "enters from" else frame(t) < end - 1)
                          and (labels[frame(t)][_BORDER[where]] == t["id"]).any()]
                    assert ok, (s.key, verb, where)
                    checked += 1
    assert checked >= 4


def _centroid_motion(s: shards.ShardSample) -> np.ndarray:
    """Summed frame-to-frame centroid shifts of objects that are wholly inside the frame in both frames."""
    labels = s.labels
    T, H, W = labels.shape
    total = np.zeros(2)
    for i in np.unique(labels[labels > 0]):
        for t in range(T - 1):
            a, b = labels[t] == i, labels[t + 1] == i
            if a.sum() < 30 or b.sum() < 30 or t + 1 in s.meta["scene_cuts"]:
                continue
            ya, xa = np.nonzero(a)
            yb, xb = np.nonzero(b)
            total += (xb.mean() - xa.mean(), yb.mean() - ya.mean())
    return total


@pytest.mark.parametrize("style", ["photo", "flat"])
def test_motion_and_count_labels(tmp_path, style):
    out = tmp_path / style
    synth.make_corpus(out, videos=6, images=1, seed=5, n_frames=FRAMES, style=style)
    agree = 0
    samples = list(shards.read_dataset(out / "gt"))
    for s in samples:
        side = json.loads((out / "media" / f"{s.key}.json").read_text())
        assert side["count"] == s.meta["count"] and side["n_objects"] == s.meta["n_objects"]
        assert s.meta["n_objects"] == len(s.traj["trajectories"])
        lo_hi = {name: (lo, hi) for lo, hi, name in synth.COUNT_BINS}[s.meta["count"]]
        assert lo_hi[0] <= s.meta["n_objects"] and (lo_hi[1] is None or s.meta["n_objects"] <= lo_hi[1])
        if s.meta["media_type"] == "image":
            assert "motion" not in s.meta
            continue
        assert s.meta["motion"] in ("left", "right", "up", "down") and side["motion"] == s.meta["motion"]
        v = _centroid_motion(s)
        measured = ("right" if v[0] > 0 else "left") if abs(v[0]) >= abs(v[1]) else ("down" if v[1] > 0 else "up")
        agree += measured == s.meta["motion"]
    assert agree >= 4, "the motion label should match what the masks do in most videos"
    wds_meta = [json.loads(v) for k, v in _members(out / "wds" / "videos" / "00000.tar").items()
                if k.endswith("_00000.json")]
    assert len(wds_meta) == 6 and all(m["motion"] in ("left", "right", "up", "down") and m["count"] for m in wds_meta)


def test_cli_styles_and_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from cli import trajdata
    runner = CliRunner()
    r = runner.invoke(trajdata, ["synth", str(tmp_path / "f"), "--videos", "1", "--images", "1", "--frames", "4",
                                 "--style", "flat"])
    assert r.exit_code == 0, r.output
    assert "flat style" in r.output and (tmp_path / "f" / "media" / "video_000.mp4").exists()
    assert "photo" not in (tmp_path / "f" / "media" / "video_000.json").read_text()
    for bad in (["--style", "sketch"], ["--photos", "c"]):
        r = runner.invoke(trajdata, ["synth", str(tmp_path / "g"), "--videos", "1", *bad])
        assert r.exit_code == 2 and "error:" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_motion_blur_kernels_are_centred_and_as_long_as_the_motion():
    """filter2D anchors a kernel at its centre: a kernel whose mass sits elsewhere shifts the blurred object off
    its sharp ground truth (cv2.line's whole-pixel runs did, by up to 0.7 px, and ran ~1.4 px long)."""
    from dataengine.tools.synth.photo import _blur_kernel

    rng = np.random.default_rng(0)
    for _ in range(300):
        angle, length, shutter = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 10), rng.uniform(0.3, 1.0)
        u = np.array([np.cos(angle), np.sin(angle)])
        k = _blur_kernel(u * length / shutter, shutter)
        n = k.shape[0]
        c = (n - 1) / 2
        ys, xs = np.mgrid[:n, :n]
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        assert abs((k * xs).sum() - c) < 1e-4 and abs((k * ys).sum() - c) < 1e-4
        along = (xs - c) * u[0] + (ys - c) * u[1]
        # a box of the motion's length has std length / sqrt(12); sharing a point among its taps adds <= 1/4 px^2
        spread = np.sqrt((k * along ** 2).sum())
        assert length / np.sqrt(12) <= spread <= np.sqrt(1.01 * length ** 2 / 12 + 1 / 4)
    assert _blur_kernel(np.array([1.0, 0.0]), 1.0) is None    # under 1.5 px: no blur
