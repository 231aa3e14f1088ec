"""Exports read by other tools' own code: SAM 2's training datasets (SA-V, SA-1B, PNG) and HF ``datasets``.

The SAM 2 checks run the installed ``sam2`` package's ``training/`` code
(JSONRawDataset / SA1BRawDataset / PNGRawDataset + VOSDataset + its samplers)
on exports of the project's synthetic corpus and compare every sampled
frame's masks with the labels of the source frame export.json names.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from dataengine.format import manifest, shards, trajformat
from dataengine.config import build_annotate_config, load_source
from dataengine.media.decode import sample_indices
from dataengine.tools.export import ExportConfig, export_dataset
from dataengine.tools.synth import make_corpus
from dataengine.format.validate import validate_dataset
from dataengine.media.decode import decode_frames
from pipelines.annotate import annotate

# The sam2 wheel (pip sam2==1.1.0, installed by `make install`) ships SAM 2's training package as `training`.
from training.dataset import vos_raw_dataset as vos_raw
from training.dataset.vos_dataset import VOSDataset
from training.dataset.vos_sampler import EvalSampler, RandomUniformSampler

N_FRAMES, ANNOTATED = 48, 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, videos=2, images=2, seed=3, n_frames=N_FRAMES)   # video_001 has a cut at frame 24
    return out


@pytest.fixture(scope="module")
def truth(corpus):
    """Ground truth of every source frame: key -> (labels [T,H,W], media bytes, ext)."""
    return {s.key: (s.labels, s.media, s.media_ext) for s in shards.read_dataset(corpus / "gt")}


@pytest.fixture(scope="module")
def gappy(corpus, truth, tmp_path_factory):
    """The ground truth at the engine's uniform frame sampling (gaps of 3 and 4 source frames),
    with the cut as a scene cut: the case SAM 2 misreads when frames are named by position."""
    out = tmp_path_factory.mktemp("gappy")
    samples, rows = [], []
    for n, src in enumerate(shards.read_dataset(corpus / "gt")):
        labels = truth[src.key][0]
        video = src.media_ext == "mp4"
        idx = sample_indices(N_FRAMES, ANNOTATED) if video else [0]
        cuts = [p for c in src.meta["scene_cuts"] for p in range(1, len(idx)) if idx[p - 1] < c <= idx[p]]
        traj = trajformat.labels_to_traj(labels[idx], idx, [i / 16 for i in idx], [0] + cuts, scene_cuts=cuts,
                                         fps=16 if video else None, media_type=src.meta["media_type"])
        samples.append(shards.ShardSample(src.key, src.media_ext, src.media, src.caption, src.meta, traj))
        rows.append({"key": src.key, "status": "ok", "input_index": n, "media_type": src.meta["media_type"],
                     "shard": shards.series_shard_name("gt", src.media_ext, 0), "n_trajectories": len(traj["masklet_id"])})
    shards.write_series(out, "gt", 0, samples)
    manifest.write_part(out, 0, rows)
    assert validate_dataset(out) == []
    return out


def frame_truth(truth, info, frame):
    return truth[info["key"]][0][frame]


def source_frame(export, info, name):
    """The source frame of the exported frame file ``name`` (export.json's mapping)."""
    return name if export["frame_names"] == "source" else info["frames"][name // export["ann_every"]]


def check_vos(dataset, export, truth, draws):
    """Every object mask of every sampled frame equals the source frame's ground truth."""
    checked = 0
    for _ in range(draws):
        for i in range(len(dataset)):
            point = dataset[i]
            info = export["videos"][dataset.video_dataset.video_names[i]]
            for frame in point.frames:
                for obj in frame.objects:
                    source = source_frame(export, info, obj.frame_index)     # from the frame's file name
                    assert source in info["frames"]
                    want = frame_truth(truth, info, source) == info["masklet_id"][obj.object_id]
                    assert np.array_equal(obj.segment.numpy().astype(bool), want), (info["key"], source)
                    checked += 1
    return checked


@pytest.mark.parametrize("names", ["source", "position"])
def test_sam2_reads_the_sav_export_frame_for_frame(gappy, truth, tmp_path, names):
    out = tmp_path / "sav"
    summary = export_dataset(gappy, out, ExportConfig(frame_names=names))
    assert summary["ann_every"] == 1 and summary["counts"]["videos"] == 3 and summary["counts"]["images"] == 2
    export = json.loads((out / "export.json").read_text())
    # the cut video is two videos, split exactly at the cut
    assert [export["videos"][v]["frames"][0] for v in ("video_001_000", "video_001_001")] == [0, 25]
    assert max(export["videos"]["video_001_000"]["frames"]) < 24
    raw = vos_raw.JSONRawDataset(str(out / "JPEGImages"), str(out / "Annotations"),
                                 file_list_txt=str(out / "train_list.txt"), ann_every=export["ann_every"])
    assert len(raw) == 3
    random.seed(0)
    sampled = VOSDataset([], training=False, video_dataset=raw, multiplier=1,
                         sampler=RandomUniformSampler(num_frames=8, max_num_objects=3))
    assert check_vos(sampled, export, truth, draws=3) > 0
    every = VOSDataset([], training=False, video_dataset=raw, sampler=EvalSampler(), multiplier=1)
    for i in range(len(every)):
        point = every[i]
        info = export["videos"][raw.video_names[i]]
        # no frame lost or added, and the JPEG of each name is that source frame
        assert [source_frame(export, info, f.objects[0].frame_index) for f in point.frames] == info["frames"]
        source = decode_frames(truth[info["key"]][1], "video", info["frames"], point.frames[0].data.size)
        for frame, want in zip(point.frames, source):
            assert np.abs(np.asarray(frame.data, np.int16) - want).mean() < 4
    check_vos(every, export, truth, draws=1)


def test_sam2_reads_the_sa1b_export(gappy, truth, tmp_path):
    out = tmp_path / "sa1b"
    export = export_dataset(gappy, out, ExportConfig(format="sa1b"))
    n_frames = 2 * ANNOTATED + 2                      # two videos of 16 annotated frames, two images
    assert export["counts"]["images"] == n_frames and not export["skipped"]
    raw = vos_raw.SA1BRawDataset(str(out / "sa1b"), str(out / "sa1b"),
                                 file_list_txt=str(out / "sa1b" / "train_list.txt"))
    dataset = VOSDataset([], training=False, video_dataset=raw, multiplier=1,
                         sampler=RandomUniformSampler(num_frames=1, max_num_objects=1000))
    assert len(dataset) == n_frames
    for i in range(len(dataset)):
        name = raw.video_names[i]
        info = export["images"][name]
        ann = json.loads((out / "sa1b" / f"{name}.json").read_text())["annotations"]
        truth_frame = truth[info["key"]][0][info["frame"]]
        objects = dataset[i].frames[0].objects
        assert len(objects) == len(ann) == len(np.unique(truth_frame)) - 1
        for obj in objects:
            assert np.array_equal(obj.segment.numpy().astype(bool), truth_frame == ann[obj.object_id]["id"])


def test_sam2_reads_the_png_export(gappy, truth, tmp_path):
    out = tmp_path / "png"
    export = export_dataset(gappy, out, ExportConfig(format="png"))
    assert export["counts"]["videos"] == 3 + 2                 # images are one-frame videos here
    raw = vos_raw.PNGRawDataset(str(out / "JPEGImages"), str(out / "Annotations"),
                                file_list_txt=str(out / "train_list.txt"))
    dataset = VOSDataset([], training=False, video_dataset=raw, sampler=EvalSampler(), multiplier=1)
    for i in range(len(dataset)):
        info = export["videos"][raw.video_names[i]]
        for frame in dataset[i].frames:
            for obj in frame.objects:                      # pixel value v is trajectory masklet_id[v - 1]
                want = frame_truth(truth, info, obj.frame_index) == info["masklet_id"][int(obj.object_id) - 1]
                assert np.array_equal(obj.segment.numpy().astype(bool), want)


def test_short_pieces_are_skipped_with_the_reason(gappy, tmp_path):
    export = export_dataset(gappy, tmp_path / "x", ExportConfig(min_frames=9))
    assert sorted(export["videos"]) == ["video_000_000"]
    reasons = {(s["key"], s["piece"]): s["reason"] for s in export["skipped"]}
    assert reasons == {("video_001", 0): "8 annotated frames < 9 (SAM 2 samples 9 consecutive frames)",
                       ("video_001", 1): "8 annotated frames < 9 (SAM 2 samples 9 consecutive frames)"}
    with pytest.raises(ValueError, match="exists"):
        export_dataset(gappy, tmp_path / "x")


@pytest.fixture(scope="module")
def strided(corpus, tmp_path_factory):
    """The engine's own output, annotated at every 3rd source frame."""
    out = tmp_path_factory.mktemp("strided")
    cfg = build_annotate_config(source=vars(load_source("local", str(corpus / "media"))),
                                decode={"frame_stride": 3, "frames": 0}, output={"samples_per_shard": 3})
    annotate(cfg, str(out), use_ray=False)
    return out


def test_frame_stride_exports_source_frame_numbers(strided, tmp_path):
    engine = {s.key: s for s in shards.read_dataset(strided, with_media=False)}
    assert engine["video_000"].traj["frame_indices"] == list(range(0, N_FRAMES, 3))
    out = tmp_path / "sav"
    export = export_dataset(strided, out)
    assert export["ann_every"] == 3                         # from run.json
    for video_id, info in export["videos"].items():
        names = sorted(int(p.stem) for p in (out / "JPEGImages" / video_id).iterdir())
        assert names == info["frames"] and all(f % 3 == 0 for f in names)
    raw = vos_raw.JSONRawDataset(str(out / "JPEGImages"), str(out / "Annotations"),
                                 file_list_txt=str(out / "train_list.txt"), ann_every=3)
    dataset = VOSDataset([], training=False, video_dataset=raw, sampler=EvalSampler(), multiplier=1)
    labels = {k: (s.labels, s.traj["frame_indices"]) for k, s in engine.items()}
    for i in range(len(dataset)):
        info = export["videos"][raw.video_names[i]]
        lab, frames = labels[info["key"]]
        for frame in dataset[i].frames:
            for obj in frame.objects:
                want = lab[frames.index(obj.frame_index)] == info["masklet_id"][obj.object_id]
                assert np.array_equal(obj.segment.numpy().astype(bool), want)


def test_hugging_face_datasets_reads_every_sample_with_its_traj(strided, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    ours = {s.key: s for s in shards.read_dataset(strided, with_media=False)}
    series = sorted({p.name.split("-")[1] for p in shards.list_shards(strided)})
    assert series == ["jpg", "mp4"]
    seen = {}
    for ext in series:         # the directory as it is: its README.md names the series and their columns
        ds = datasets.load_dataset(str(strided), ext, split="train", cache_dir=str(tmp_path / "hf"))
        ds = ds.cast_column(ext, datasets.Video(decode=False) if ext == "mp4" else datasets.Image(decode=False))
        for row in ds:
            traj = row[trajformat.MEMBER]                      # decompressed and parsed by datasets itself
            assert row[ext]["bytes"] and row["json"]["media_type"] == ("video" if ext == "mp4" else "image")
            assert np.array_equal(trajformat.traj_to_labels(traj), ours[row["__key__"]].labels)
            seen[row["__key__"]] = traj
    assert sorted(seen) == sorted(ours)
    assert all(t["fps"] is None for k, t in seen.items() if k.startswith("image"))
    assert any(t["scene_cuts"] for t in seen.values())     # what the builder's own inference cannot cast


def test_the_documented_sam2_config_block_loads_the_export(gappy, tmp_path):
    import re
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    out = tmp_path / "sav"
    export = export_dataset(gappy, out)
    doc = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    dataset_block, entry_block = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S)]
    cfg = OmegaConf.create({**OmegaConf.to_container(OmegaConf.create(dataset_block)),
                            "scratch": {"num_frames": 8, "max_num_objects": 3}, "vos": {"train_transforms": []},
                            "entry": OmegaConf.create(entry_block)[0]})
    cfg.dataset.update(img_folder=str(out / "JPEGImages"), gt_folder=str(out / "Annotations"),
                       file_list_txt=str(out / "train_list.txt"), ann_every=export["ann_every"])
    dataset = instantiate(cfg.entry, _convert_="all")
    assert len(dataset) == export["counts"]["videos"]
    assert all(len(dataset[i].frames) == 8 for i in range(len(dataset)))


def test_source_resolution_export_scales_masks_by_the_stated_rule(corpus, tmp_path):
    """Masks annotated at half size come out at the media's size, where the ground truth lives."""
    small = tmp_path / "small"
    cfg = build_annotate_config(source=vars(load_source("local", str(corpus / "media"))),
                                decode={"max_side": 128, "frames": 8})
    annotate(cfg, str(small), use_ray=False)
    engine = {s.key: s for s in shards.read_dataset(small, with_media=False)}
    t = engine["video_000"].traj
    assert (t["width"], t["height"], t["source_width"], t["source_height"]) == (128, 96, 256, 192)
    export = export_dataset(small, tmp_path / "png", ExportConfig(format="png", resolution="source"))
    raw = vos_raw.PNGRawDataset(str(tmp_path / "png" / "JPEGImages"), str(tmp_path / "png" / "Annotations"))
    point = VOSDataset([], training=False, video_dataset=raw, sampler=EvalSampler(), multiplier=1)[
        raw.video_names.index("video_000_000")]
    info = export["videos"]["video_000_000"]
    assert point.frames[0].data.size == (256, 192)
    for frame in point.frames:      # each mask is its half-size mask scaled up 2x, nearest neighbour
        small = engine["video_000"].labels[t["frame_indices"].index(frame.objects[0].frame_index)]
        for obj in frame.objects:
            want = (small == info["masklet_id"][int(obj.object_id) - 1]).repeat(2, 0).repeat(2, 1)
            assert np.array_equal(obj.segment.numpy().astype(bool), want)


def test_png_min_frames_skips_short_video_pieces_not_stills(gappy, tmp_path):
    export = export_dataset(gappy, tmp_path / "png", ExportConfig(format="png", min_frames=9))
    # stills are one-frame videos here, and kept: the option is about video pieces (before, they were skipped)
    assert sorted(export["videos"]) == ["image_000_000", "image_001_000", "video_000_000"]
