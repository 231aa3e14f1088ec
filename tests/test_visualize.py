"""`trajdata show` and `trajdata stats` on a tiny annotated corpus (one cut video, one image)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dataengine.format import manifest

from dataengine.tools import stats, visualize
from dataengine.config import FilterConfig, build_annotate_config, load_source
from dataengine.tools.filtering import filter_dataset
from dataengine.tools.synth import make_corpus
from pipelines.annotate import annotate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("vis")
    # Flat style: the outline-colour checks need objects larger than the id tags drawn on them.
    make_corpus(tmp, videos=1, images=1, seed=0, n_frames=12, style="flat")
    cfg = build_annotate_config(source=vars(load_source("local", str(tmp / "media"))))
    out = tmp / "out"
    annotate(cfg, str(out), use_ray=False)
    return out


@pytest.fixture(scope="module")
def shown(dataset) -> visualize.Shown:
    return visualize.load(dataset, "video_000")


def edge_mask(labels: np.ndarray, tid: int, scale: int) -> np.ndarray:
    """Pixels (at display scale) of trajectory ``tid`` that touch another label: its outline."""
    lab = np.repeat(np.repeat(labels, scale, 0), scale, 1)
    m = lab == tid
    edge = np.zeros_like(m)
    edge[:, 1:] |= m[:, 1:] & (lab[:, :-1] != tid)
    edge[:, :-1] |= m[:, :-1] & (lab[:, 1:] != tid)
    edge[1:, :] |= m[1:, :] & (lab[:-1, :] != tid)
    edge[:-1, :] |= m[:-1, :] & (lab[1:, :] != tid)
    return edge


def test_loaded_frames_match_masks(shown):
    T, H, W = shown.labels.shape
    assert T == len(shown.traj["frame_indices"]) > 1
    assert shown.frames.shape == (T, H, W, 3) and shown.has_media
    assert shown.cuts, "the one synthetic video has a scene cut"
    assert shown.cuts <= shown.keyframes
    # Decoded, not blank: the frames carry the scene's texture.
    assert shown.frames.std() > 10


def test_png_grid(dataset, shown, tmp_path):
    info = visualize.show(dataset, "video_000", tmp_path / "v.png")
    img = Image.open(tmp_path / "v.png")
    assert img.format == "PNG" and img.size == (info["width"], info["height"])
    T, H, W = shown.labels.shape
    tile = visualize.render_frame(shown, 0, visualize.auto_scale(H, W))
    cols = visualize._columns(T, T ** 0.5)
    rows = -(-T // cols)
    assert img.width >= cols * tile.shape[1] and img.height >= rows * tile.shape[0]
    assert visualize.auto_scale(H, W) * max(H, W) >= visualize.MIN_TILE_SIDE


def test_gif_and_mp4_have_one_frame_per_labelled_frame(dataset, shown, tmp_path):
    T, H, W = shown.labels.shape
    tile = visualize.render_frame(shown, 0, visualize.auto_scale(H, W))
    th, tw = tile.shape[:2]

    visualize.show(dataset, "video_000", tmp_path / "v.gif", fps=5)
    gif = Image.open(tmp_path / "v.gif")
    assert gif.format == "GIF" and gif.n_frames == T and gif.size == (tw, th)

    visualize.show(dataset, "video_000", tmp_path / "v.mp4", fps=5)
    with av.open(str(tmp_path / "v.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        frames = list(c.decode(video=0))
    assert len(frames) == T
    assert (frames[0].width, frames[0].height) == (tw + tw % 2, th + th % 2)


def test_colour_is_a_function_of_the_id():
    colours = [visualize.colour_of(i) for i in range(1, 65)]
    assert colours == [visualize.colour_of(i) for i in range(1, 65)]
    assert len(set(colours)) == len(colours)


def test_trajectory_colour_stable_across_frames(dataset, shown, tmp_path):
    T, H, W = shown.labels.shape
    scale = visualize.auto_scale(H, W)
    present = Counter(int(i) for t in range(T) for i in np.unique(shown.labels[t]) if i)
    long_lived = [i for i, n in present.items() if n >= 3]
    assert long_lived
    # The drawn overlay: every outline pixel of a trajectory has exactly its colour, in every frame.
    for t in range(T):
        drawn = visualize.overlay(shown.frames[t], shown.labels[t], scale)
        for tid in long_lived:
            edge = edge_mask(shown.labels[t], tid, scale)
            if edge.any():
                assert (drawn[edge] == visualize.colour_of(tid)).all()
    # The written GIF (one shared palette): the outline's dominant colour is the same in all frames.
    visualize.show(dataset, "video_000", tmp_path / "c.gif")
    gif = Image.open(tmp_path / "c.gif")
    top = visualize.make_fonts(scale * H)["strip"] + visualize.BORDER
    for tid in long_lived:
        seen = set()
        for t in range(T):
            edge = edge_mask(shown.labels[t], tid, scale)
            if edge.sum() < 20:
                continue
            gif.seek(t)
            rgb = np.asarray(gif.convert("RGB"))[top:top + H * scale, visualize.BORDER:visualize.BORDER + W * scale]
            seen.add(Counter(map(tuple, rgb[edge])).most_common(1)[0][0])
        assert len(seen) == 1, (tid, seen)


def test_image_sample_and_ground_truth_side_by_side(dataset, tmp_path):
    info = visualize.show(dataset, "image_000", tmp_path / "i.png")
    assert info["labelled_frames"] == 1 and Image.open(tmp_path / "i.png").format == "PNG"
    gt = dataset.parent / "gt"
    with_gt = visualize.show(dataset, "video_000", tmp_path / "g.png", gt=gt)
    without = visualize.show(dataset, "video_000", tmp_path / "n.png")
    assert with_gt["width"] * with_gt["height"] > 1.5 * without["width"] * without["height"]


def test_match_ground_truth_takes_the_overlapping_id():
    pred = np.zeros((2, 8, 8), np.int32)
    pred[:, :4] = 5
    pred[:, 4:] = 9
    gt = np.zeros_like(pred)
    gt[:, :4, :4] = 1     # inside 5
    gt[:, 5:, 5:] = 2     # inside 9
    gt[:, :1, 7:] = 3     # too small to win 9 against gt 2: a fresh id
    out = visualize.match_ground_truth(pred, gt)
    assert set(np.unique(out[gt == 1])) == {5} and set(np.unique(out[gt == 2])) == {9}
    assert set(np.unique(out[gt == 3])) == {10} and (out[gt == 0] == 0).all()


def test_unknown_key_lists_available_keys(dataset, tmp_path):
    with pytest.raises(ValueError, match="available keys: image_000, video_000") as e:
        visualize.show(dataset, "video_00", tmp_path / "x.png")
    assert "did you mean video_000" in str(e.value)
    with pytest.raises(ValueError, match=r"\.png, \.gif or \.mp4"):
        visualize.show(dataset, "video_000", tmp_path / "x.jpg")


def test_cli_show_and_stats(dataset, tmp_path):
    from cli import trajdata

    runner = CliRunner()
    r = runner.invoke(trajdata, ["show", str(dataset), "nope", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and not (tmp_path / "x.png").exists()
    r = runner.invoke(trajdata, ["show", str(dataset), "video_000", "--out", str(tmp_path / "x.gif")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "x.gif").n_frames == 12
    r = runner.invoke(trajdata, ["stats", str(dataset), "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    assert "video_000" not in r.output and "ok" in r.output
    assert Image.open(tmp_path / "s.png").format == "PNG"


def test_stats_counts_from_the_manifest(dataset, tmp_path):
    s = stats.collect(dataset)
    assert s.samples == 2 and s.by_status == {"ok": 2, "filtered": 0, "error": 0}
    assert s.by_media["ok"] == {"video": 1, "image": 1}
    assert s.reasons == []
    d = s.distributions()
    assert d["keyframes / video"]["n"] == 1 and d["keyframes / video"]["min"] >= 2  # the cut starts a clip
    assert 0 < d["coverage"]["mean"] <= 1
    assert sum(v["share"] for v in s.seconds().values()) == pytest.approx(1.0)

    # A filter that drops everything: reasons come from the manifest, thresholds from run.json.
    filter_dataset(dataset, tmp_path / "f", FilterConfig(min_coverage=1.0, min_objects=1000))
    f = stats.collect(tmp_path / "f")
    assert f.by_status["filtered"] == 2 and f.filter["min_objects"] == 1000
    kinds = {r["reason"]: r["samples"] for r in f.reasons}
    below = sum(r["coverage"] < 1.0 for r in manifest.read_manifest(dataset).to_pylist() if r["status"] == "ok")
    assert below >= 1 and kinds == {"coverage < 1.00": below, "trajectories < 1000": 2}
    assert Image.open(stats.plot(f, tmp_path / "f.png")).size == (1600, 1450)


def test_stats_reason_grouping_and_errors(tmp_path):
    rows = [
        {"key": "a", "status": "ok", "media_type": "video", "coverage": 0.9, "n_trajectories": 12},
        {"key": "b", "status": "error", "media_type": "video", "reason": "media file not found: /x/b.mp4"},
        {"key": "c", "status": "error", "media_type": "video", "reason": "media file not found: /y/c.mp4"},
        {"key": "d", "status": "error", "media_type": "image",
         "reason": "not a decodable image (UnidentifiedImageError: cannot identify)"},
        {"key": "e", "status": "filtered", "media_type": "image", "reason": "coverage 0.40 < 0.80",
         "coverage": 0.4, "n_trajectories": 11},
    ]
    manifest.write_part(tmp_path, 0, rows)
    s = stats.collect(tmp_path)
    assert s.by_status == {"ok": 1, "filtered": 1, "error": 3}
    assert s.reasons[0] == {"reason": "media file not found", "status": "error", "samples": 2,
                            "example": "media file not found: /x/b.mp4"}
    assert {r["reason"] for r in s.reasons} == {"media file not found", "not a decodable image", "coverage < 0.80"}
    assert s.distributions()["coverage"]["n"] == 2  # errors carry no mask stats
    stats.plot(s, tmp_path / "s.png")
    assert stats.reason_kind("k1: sample is marked bad: truncated", "k1") == "sample is marked bad"
    with pytest.raises(ValueError, match="no manifest"):
        stats.collect(tmp_path / "manifest")
