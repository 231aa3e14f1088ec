"""Model backends (DirectSAM, SAM, SAM 2) with random weights at tiny sizes, loaded from disk.

Every model is built with random weights, written the way its real checkpoints
are (Segformer ``save_pretrained``, SAM 2 ``{"model": state_dict}``, SAM a bare
state dict) and built again through the engine's own loading path.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.scenes import render_scene
from dataengine.format import manifest, trajformat
from dataengine.config import SegmenterConfig, TrackerConfig, build_annotate_config, load_source
from dataengine.backends.table import describe, locate
from dataengine.backends.segmenters import build_segmenter
from dataengine.backends.segmenters.directsam import regions_from_boundary
from dataengine.backends.segmenters.sam import partition, sam_architecture
from dataengine.format.shards import read_dataset
from dataengine.tools.synth import encode_jpeg, render_image, write_video
from dataengine.backends.trackers import build_tracker
from dataengine.format.validate import validate_dataset
from pipelines.annotate import Resources, annotate

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_SIZE = 64          # the smallest input the Hiera strides allow
SAM_SMALL = {"points_per_side": 2, "pred_iou_thresh": -1e9, "stability_thresh": 0.0}  # random weights score low


@pytest.fixture(autouse=True)
def no_checkpoint_search(monkeypatch, tmp_path):
    """No test may find a checkpoint it was not given (an empty search path and Hugging Face cache)."""
    import huggingface_hub.constants

    monkeypatch.delenv("TRAJTOK_CHECKPOINTS", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from sam2.build_sam import build_sam2_video_predictor
    from segment_anything.build_sam import _build_sam
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    d = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    segformer = SegformerForSemanticSegmentation(SegformerConfig(
        num_labels=1, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16))
    segformer.save_pretrained(d / "directsam")
    sam2 = build_sam2_video_predictor(SAM2_CONFIG, None, device="cpu",
                                      hydra_overrides_extra=[f"++model.image_size={SAM2_SIZE}"])
    torch.save({"model": sam2.state_dict()}, d / "sam2.pt")
    sam = _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
    torch.save(sam.state_dict(), d / "sam.pth")
    return {"directsam": str(d / "directsam"), "sam2": str(d / "sam2.pt"), "sam": str(d / "sam.pth")}


def sam2_tracker_cfg(checkpoints, **kw) -> TrackerConfig:
    return TrackerConfig(**{"name": "sam2", "checkpoint": checkpoints["sam2"], "sam2_config": SAM2_CONFIG,
                            "image_size": SAM2_SIZE, **kw})


def directsam_cfg(checkpoints, **kw) -> SegmenterConfig:
    return SegmenterConfig(name="directsam", checkpoint=checkpoints["directsam"], resolution=64, **kw)


def assert_partition(labels: np.ndarray, max_regions: int, full: bool) -> None:
    assert labels.dtype == np.int32
    ids = np.unique(labels[labels != 0])
    assert list(ids) == list(range(1, len(ids) + 1)) and len(ids) <= max_regions
    if full and len(ids):
        assert (labels != 0).all()


# ---------------------------------------------------------------- pure region logic
def test_regions_from_boundary_partition_drops_small_and_caps_count():
    boundary = np.zeros((40, 60), bool)
    boundary[:, [10, 30, 50]] = True      # four vertical strips 10, 19, 19, 9 px wide
    boundary[20, :10] = True              # splits the first strip in two
    boundary[5, 52:] = True               # a 5x9 sliver (too small: absorbed)
    labels = regions_from_boundary(boundary, min_pixels=100, max_regions=3)
    assert_partition(labels, 3, full=True)
    assert len(np.unique(labels)) == 3
    # The two wide strips keep their own regions; the boundary column goes to a neighbour.
    assert len(np.unique(labels[:, 12:30])) == 1 and len(np.unique(labels[:, 32:50])) == 1


def test_partition_claims_by_score_then_area():
    a = np.zeros((10, 10), bool); a[:, :6] = True
    b = np.zeros((10, 10), bool); b[:, 4:] = True
    c = np.zeros((10, 10), bool); c[0, 9] = True
    masks = [{"segmentation": a, "area": 60, "predicted_iou": 0.9},
             {"segmentation": b, "area": 60, "predicted_iou": 0.95},
             {"segmentation": c, "area": 1, "predicted_iou": 0.99}]
    labels = partition(masks, (10, 10), min_pixels=2, max_regions=8)
    assert (labels[:, 4:] == 1).all() and (labels[:, :4] == 2).all()   # b scores higher: it claims the overlap
    equal = [dict(masks[0], predicted_iou=0.9), dict(masks[1], predicted_iou=0.9, area=40)]
    assert (partition(equal, (10, 10), 2, 8)[:, 4:6] == 1).all()       # a tie goes to the larger mask
    assert partition(masks, (10, 10), 2, max_regions=1).max() == 1


def test_a_sample_without_regions_is_valid():
    # A model backend can find nothing in a frame (SAM leaves it unclaimed, DirectSAM sees only boundary).
    from dataengine.format.validate import check_traj

    traj = trajformat.labels_to_traj(np.zeros((2, 8, 8), np.int32), [0, 1], [0.0, 0.1], [0])
    assert check_traj(json.loads(trajformat.dumps(traj)), "x") == []


def test_sam_type_is_read_from_checkpoint_shapes():
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        sd = sam_model_registry["vit_b"]().state_dict()
    assert sam_architecture(sd, "x") == {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
                                         "encoder_global_attn_indexes": [2, 5, 8, 11]}


# ---------------------------------------------------------------- backends through their checkpoints
def test_directsam_segments_batched_keyframes(checkpoints):
    frames = np.stack([render_scene(t)[0] for t in range(5)])
    seg = build_segmenter(directsam_cfg(checkpoints, batch=2, max_regions=6), "cpu")
    prob = seg.boundary_probability(frames)
    assert prob.shape == frames.shape[:3] and np.isfinite(prob).all()
    # Random weights: threshold at the median so the boundary map actually splits the frame.
    seg.cfg.boundary_threshold = float(np.median(prob))
    out = seg.segment(frames)
    assert len(out) == 5
    for labels in out:
        assert labels.shape == frames.shape[1:3]
        assert_partition(labels, 6, full=True)
    assert max(len(np.unique(x)) for x in out) > 1


def test_directsam_loads_from_local_hugging_face_cache(checkpoints, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--chendelong--DirectSAM-1800px-0424" / "snapshots" / "abc123"
    shutil.copytree(checkpoints["directsam"], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert locate(SegmenterConfig(name="directsam")).where == "Hugging Face cache"       # the default id, found offline
    seg = build_segmenter(SegmenterConfig(name="directsam", checkpoint="chendelong/DirectSAM-1800px-0424",
                                          resolution=64))
    assert seg.checkpoint.path == str(snapshot)


def test_sam_v1_and_sam2_generators_make_disjoint_regions(checkpoints):
    frame = render_scene(0)[0]
    sam = build_segmenter(SegmenterConfig(name="sam", checkpoint=checkpoints["sam"], max_regions=4, **SAM_SMALL))
    sam2 = build_segmenter(SegmenterConfig(name="sam", sam_type="sam2", sam2_config="sam2.1_hiera_t.yaml",
                                           checkpoint=checkpoints["sam2"], resolution=SAM2_SIZE, max_regions=4,
                                           **SAM_SMALL))
    for seg in (sam, sam2):
        [labels] = seg.segment(frame[None])
        assert labels.shape == frame.shape[:2]
        assert_partition(labels, 4, full=False)
        assert labels.max() >= 1
        counts = np.bincount(labels.ravel())[1:]
        assert counts.min() >= max(1, int(0.0015 * labels.size))


def test_sam2_state_matches_the_librarys_init_state(checkpoints, tmp_path):
    tracker = build_tracker(sam2_tracker_cfg(checkpoints))
    frames = np.stack([render_scene(t)[0] for t in range(2)])
    for t, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{t:05d}.jpg", quality=100)
    theirs = tracker.predictor.init_state(str(tmp_path))
    ours = tracker.new_state(tracker.images(frames), *frames.shape[1:3])
    assert set(ours) == set(theirs)
    for k in ("num_frames", "video_height", "video_width", "device", "storage_device"):
        assert ours[k] == theirs[k], k
    assert ours["images"].shape == theirs["images"].shape
    # Same normalisation; only the resampling (PIL vs torch) and the JPEG round trip differ.
    assert (ours["images"] - theirs["images"].float()).abs().mean() < 0.1


def test_sam2_tracker_output_is_disjoint_and_independent_of_object_batch(checkpoints):
    frames = np.stack([render_scene(t)[0] for t in range(3)])
    labels0 = render_scene(0)[1] * 7          # ids need not be small or consecutive; 0 is not an object
    one = build_tracker(sam2_tracker_cfg(checkpoints, object_batch=1)).track(frames, labels0)
    many = build_tracker(sam2_tracker_cfg(checkpoints, object_batch=8)).track(frames, labels0)
    assert one.shape == many.shape == (3,) + labels0.shape
    assert (one[0] == labels0).all()
    assert set(np.unique(one)) <= set(np.unique(labels0)) | {0}
    assert np.mean(one == many) > 0.99       # objects of one batch never influence each other


def counting_encoder(tracker) -> list[int]:
    """Wrap the predictor's image encoder; the list collects the batch size of every call."""
    calls: list[int] = []
    encode = tracker.predictor.forward_image

    def counted(images):
        calls.append(len(images))
        return encode(images)

    tracker.predictor.forward_image = counted
    return calls


def recording_logits(tracker) -> list:
    """Wrap propagate_in_video; the list collects every frame's mask logits (random weights claim few pixels,
    so the logits, not only the labels, are what two paths must agree on)."""
    seen: list = []
    propagate = tracker.predictor.propagate_in_video

    def recorded(state):
        for t, ids, logits in propagate(state):
            seen.append((t, list(ids), logits.clone()))
            yield t, ids, logits

    tracker.predictor.propagate_in_video = recorded
    return seen


def test_sam2_fast_path_equals_the_librarys_per_object_path(checkpoints):
    """Batched prompts + each frame encoded once give the mask logits of sam2's add_new_mask per object with
    per-clip, per-frame encoding, for clips that share frames and objects split over several states."""
    frames = np.stack([render_scene(t)[0] for t in range(7)])
    labels0 = render_scene(0)[1].copy()
    labels0[labels0 == 0] = 9                 # the background as a fourth object
    labels0[:, :40][labels0[:, :40] == 9] = 4  # and a fifth
    library = build_tracker(sam2_tracker_cfg(checkpoints, object_batch=2, feature_batch=0, batched_prompts=False))
    fast = build_tracker(sam2_tracker_cfg(checkpoints, object_batch=2, feature_batch=3))
    library_calls, fast_calls = counting_encoder(library), counting_encoder(fast)
    library_logits, fast_logits = recording_logits(library), recording_logits(fast)
    fast.prepare_video(frames)
    clips = [(0, 4), (3, 7)]                  # frame 3 ends one clip and starts the next, as keyframes do
    theirs = [library.track(frames[a:b], labels0) for a, b in clips]
    ours = [fast.track(frames[a:b], labels0, start=a) for a, b in clips]
    assert fast_calls == [3, 3, 1]            # every frame once, feature_batch at a time
    assert library_calls == [1] * len(library_calls) and len(library_calls) > len(frames)
    assert len(library_logits) == len(fast_logits) == 2 * 3 * 4   # 2 clips x 3 object states x 4 frames
    for (t, ids, a), (u, jds, b) in zip(library_logits, fast_logits):
        assert (t, ids) == (u, jds) and a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4), (t, float((a - b).abs().max()))
    assert any(float(a.std()) > 0.1 for _, _, a in library_logits[1:])   # the logits vary: not a constant
    for a, b in zip(theirs, ours):
        assert np.array_equal(a, b)
    # Without prepare_video the clip's own frames are encoded here, still batched.
    assert np.array_equal(fast.track(frames[:4], labels0), ours[0]) and fast_calls[-2:] == [3, 1]


def test_sam2_features_of_a_long_video_stay_bounded(checkpoints):
    """Clips moving through a long video: each frame encoded once, only the frames near the clip kept."""
    frames = np.stack([render_scene(t % 7)[0] for t in range(20)])
    labels0 = render_scene(0)[1]
    tracker = build_tracker(sam2_tracker_cfg(checkpoints, feature_batch=4))
    calls = counting_encoder(tracker)
    tracker.prepare_video(frames)
    held = []
    for k in range(0, 18, 3):                 # clips of 4 frames sharing their first frame with the last
        tracker.track(frames[k:k + 4], labels0, start=k)
        held.append(sorted(tracker.video_features))
        assert min(held[-1]) == k and len(held[-1]) <= 4 + 4 - 1
    assert sum(calls) == 20 and max(calls) == 4   # every frame once, in passes of feature_batch


def test_sam2_labeller_encodes_each_frame_once(checkpoints):
    from dataengine.stages.labeller import Labeller

    cfg = build_annotate_config(segmenter=directsam_cfg(checkpoints, max_regions=6).__dict__,
                                tracker=sam2_tracker_cfg(checkpoints).__dict__)
    labeller = Labeller(cfg)
    calls = counting_encoder(labeller.tracker)
    frames = np.stack([render_scene(t)[0] for t in range(9)])
    result = labeller.label(frames, [0, 4], [])
    assert sum(calls) == len(frames) and len(result.keyframes) >= 2


def test_every_entry_of_the_backend_table_builds_and_labels(checkpoints, tmp_path):
    """Each backend of dataengine.backends.table, built through the table (model ones with random weights)."""
    from dataengine.backends.table import BACKENDS, build
    from fixtures.trajtok_toy import toy_preset
    from trajtok.checkpoint import save_segmenter
    from trajtok.models.segmenter import build_segmenter as build_trajtok

    torch.manual_seed(0)
    trajtok = save_segmenter(build_trajtok(toy_preset().model), tmp_path / "trajtok.safetensors")
    configs = {
        "classical": SegmenterConfig(name="classical"),
        "directsam": directsam_cfg(checkpoints, max_regions=6),
        "sam": SegmenterConfig(name="sam", checkpoint=checkpoints["sam"], max_regions=4, **SAM_SMALL),
        "trajtok": SegmenterConfig(name="trajtok", checkpoint=str(trajtok)),
        "none": SegmenterConfig(name="none"),
        "flow": TrackerConfig(name="flow"),
        "sam2": sam2_tracker_cfg(checkpoints),
    }
    assert sorted(configs) == sorted(BACKENDS), "a new table entry needs its config here"
    scene = [render_scene(t) for t in range(3)]
    frames, labels0 = np.stack([rgb for rgb, _ in scene]), scene[0][1]
    for name, cfg in configs.items():
        backend = build(cfg)
        assert backend.name == name
        if BACKENDS[name].kind == "segmenter":
            [labels] = backend.segment(frames[:1])
            assert labels.shape == labels0.shape and labels.dtype == np.int32, name
            assert (labels.max() == 0) == (name == "none"), name   # only the no-op labeller finds nothing
        else:
            tracked = backend.track(frames, labels0)
            assert tracked.shape == (3,) + labels0.shape and (tracked[0] == labels0).all(), name


# ---------------------------------------------------------------- errors
def test_missing_and_mismatched_checkpoints_are_one_line_errors(checkpoints, tmp_path):
    cases = [
        (lambda: build_segmenter(SegmenterConfig(name="directsam")), ValueError, "--checkpoint"),
        (lambda: build_segmenter(SegmenterConfig(name="directsam", checkpoint=str(tmp_path / "nope"))),
         FileNotFoundError, "nope"),
        (lambda: build_segmenter(SegmenterConfig(name="sam")), ValueError, "sam_vit_h_4b8939.pth"),
        (lambda: build_segmenter(SegmenterConfig(name="sam", checkpoint=checkpoints["sam2"])), ValueError,
         "SAM 2 checkpoint"),
        (lambda: build_tracker(TrackerConfig(name="sam2")), ValueError, "--sam2-checkpoint"),
        (lambda: build_tracker(TrackerConfig(name="sam2", checkpoint=str(tmp_path / "x.pt"))), FileNotFoundError,
         "x.pt"),
        (lambda: build_tracker(TrackerConfig(name="sam2", checkpoint=checkpoints["sam"])), ValueError, "'model'"),
        (lambda: build_tracker(TrackerConfig(name="sam2", checkpoint=checkpoints["sam2"],
                                             sam2_config="sam2.1_hiera_s.yaml", image_size=SAM2_SIZE)),
         ValueError, "missing keys"),
        (lambda: build_tracker(sam2_tracker_cfg(checkpoints, sam2_config="nope.yaml")), ValueError, "unknown SAM 2"),
        (lambda: build_tracker(sam2_tracker_cfg(checkpoints, feature_batch=-1)), ValueError, "feature_batch"),
        (lambda: build_segmenter(SegmenterConfig(name="nonsense")), ValueError, "unknown segmenter"),
        (lambda: build_tracker(TrackerConfig(name="nonsense")), ValueError, "unknown tracker"),
    ]
    for build, exc, text in cases:
        with pytest.raises(exc) as e:
            build()
        assert text in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_directsam_checkpoints_load_strictly_in_fp32_or_fail_in_one_line(checkpoints, tmp_path):
    """transformers fills weights a folder lacks with random ones and only logs it (an encoder-only folder labelled
    with a random head), loads a half-precision save as half (every sample failed on CPU), and raises multi-line
    errors of its own for damaged or foreign folders."""
    import json
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerModel

    good = SegformerForSemanticSegmentation.from_pretrained(checkpoints["directsam"], local_files_only=True)
    half = tmp_path / "half"
    good.to(torch.float16).save_pretrained(half)
    seg = build_segmenter(SegmenterConfig(name="directsam", checkpoint=str(half), resolution=64), "cpu")
    assert next(seg.model.parameters()).dtype == torch.float32
    [labels] = seg.segment(np.zeros((1, 48, 64, 3), np.uint8))
    assert labels.shape == (48, 64)

    encoder_only = tmp_path / "encoder_only"
    SegformerModel(SegformerConfig.from_pretrained(checkpoints["directsam"], local_files_only=True)
                   ).save_pretrained(encoder_only)
    config = json.loads((encoder_only / "config.json").read_text())
    (encoder_only / "config.json").write_text(json.dumps({**config, "num_labels": 1, "id2label": {"0": "boundary"},
                                                          "label2id": {"boundary": 0}}))
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoints["directsam"], damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    reshaped = tmp_path / "reshaped"
    shutil.copytree(checkpoints["directsam"], reshaped)
    config = json.loads((reshaped / "config.json").read_text())
    (reshaped / "config.json").write_text(json.dumps({**config, "decoder_hidden_size": 24}))
    for folder, text in ((encoder_only, "missing keys"), (damaged, "cannot be loaded"), (reshaped, "cannot be loaded")):
        with pytest.raises(ValueError) as e:
            build_segmenter(SegmenterConfig(name="directsam", checkpoint=str(folder), resolution=64), "cpu")
        assert text in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="batch must be at least 1"):
        build_segmenter(directsam_cfg(checkpoints, batch=0), "cpu")


def test_missing_checkpoint_fails_before_any_output(tmp_path):
    from typer.testing import CliRunner

    from cli import trajdata

    media = tmp_path / "media"
    media.mkdir()
    (media / "a.jpg").write_bytes(encode_jpeg(render_image(0, 64, 48)[0]))
    cfg = build_annotate_config(source=vars(load_source("local", str(media))), segmenter={"name": "directsam"})
    with pytest.raises(ValueError, match="needs a checkpoint"):
        annotate(cfg, str(tmp_path / "out"), use_ray=False)
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(trajdata, ["annotate", "--input", str(media), "--output", str(tmp_path / "o2"),
                                           "--tracker", "sam2", "--sam2-checkpoint", str(tmp_path / "gone.pt")])
    assert result.exit_code == 2, result.output
    assert "gone.pt" in result.output and not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- discovery
def test_models_lists_backends_and_finds_checkpoints(checkpoints, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import trajdata

    store = tmp_path / "store"
    store.mkdir()
    (store / "sam2.1_hiera_tiny.pt").symlink_to(checkpoints["sam2"])
    (store / "sam_vit_b_01ec64.pth").symlink_to(checkpoints["sam"])
    monkeypatch.setenv("TRAJTOK_CHECKPOINTS", str(store))
    info = describe(checkpoint=checkpoints["directsam"], sam2_config="sam2.1_hiera_t.yaml")
    rows = {r["name"]: r for r in info["backends"]}
    assert rows["directsam"]["checkpoint"] == {"path": checkpoints["directsam"], "where": "given"}
    assert rows["sam2"]["checkpoint"]["path"] == str(store / "sam2.1_hiera_tiny.pt")
    assert rows["sam2"]["checkpoint"]["where"] == "$TRAJTOK_CHECKPOINTS" and rows["sam2"]["ready"]
    assert rows["sam"]["checkpoint"]["path"] == str(store / "sam_vit_b_01ec64.pth")
    assert rows["classical"]["ready"] and rows["flow"]["ready"]
    assert info["devices"]["torch"] == torch.__version__
    # The tracker finds the same file on its own.
    assert build_tracker(TrackerConfig(name="sam2", sam2_config=SAM2_CONFIG, image_size=SAM2_SIZE)).checkpoint.where \
        == "$TRAJTOK_CHECKPOINTS"
    result = CliRunner().invoke(trajdata, ["models", "--json", "--sam2-config", "sam2.1_hiera_t.yaml"])
    assert result.exit_code == 0, result.output
    assert {r["name"] for r in json.loads(result.stdout)["backends"]} >= {"directsam", "sam", "sam2", "flow"}
    table = CliRunner().invoke(trajdata, ["models"])
    assert table.exit_code == 0 and "directsam" in table.stdout and "TRAJTOK_CHECKPOINTS" in table.stdout


# ---------------------------------------------------------------- end to end
def media_folder(root: Path) -> Path:
    media = root / "media"
    media.mkdir()
    write_video(media / "clip.mp4", seed=3, n_frames=8, width=96, height=64)
    (media / "still.jpg").write_bytes(encode_jpeg(render_image(1, 96, 64)[0]))
    (media / "still.txt").write_text("a still")
    return media


def check_output(out: Path, media: Path) -> None:
    assert validate_dataset(out) == []
    rows = manifest.read_manifest(out).to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(p.stem for p in media.iterdir() if p.suffix != ".txt")
    assert {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]
    for sample in read_dataset(out, with_media=False):
        traj = sample.traj
        for rles in traj["masklet"]:
            masks = trajformat.decode_masks(rles, traj["height"], traj["width"])
            assert not masks.size or masks.sum(axis=0).max() <= 1


def test_directsam_and_sam2_through_ray(checkpoints, tmp_path):
    media = media_folder(tmp_path)
    seg = build_segmenter(directsam_cfg(checkpoints))
    frame = render_scene(0)[0][None]
    threshold = float(np.quantile(seg.boundary_probability(frame), 0.6))
    cfg = build_annotate_config(source=vars(load_source("local", str(media))),
                                segmenter={"name": "directsam", "checkpoint": checkpoints["directsam"],
                                           "resolution": 64, "boundary_threshold": threshold, "max_regions": 6},
                                tracker={"name": "sam2", "checkpoint": checkpoints["sam2"],
                                         "sam2_config": SAM2_CONFIG, "image_size": SAM2_SIZE, "object_batch": 4})
    try:
        totals = annotate(cfg, str(tmp_path / "out"), Resources(cpus=2, object_store_mb=256), use_ray=True)
    finally:
        from pipelines.runtime import shutdown_ray
        shutdown_ray()
    assert totals["samples"] == 2
    check_output(tmp_path / "out", media)
    meta = next(read_dataset(tmp_path / "out", with_media=False)).meta
    assert meta["backends"] == {"segmenter": "directsam", "tracker": "sam2"}


def test_sam_and_sam2_in_process(checkpoints, tmp_path):
    media = media_folder(tmp_path)
    cfg = build_annotate_config(source=vars(load_source("local", str(media))),
                                segmenter={"name": "sam", "checkpoint": checkpoints["sam"], "max_regions": 4,
                                           **SAM_SMALL},
                                tracker={"name": "sam2", "checkpoint": checkpoints["sam2"],
                                         "sam2_config": SAM2_CONFIG, "image_size": SAM2_SIZE})
    annotate(cfg, str(tmp_path / "out"), use_ray=False)
    check_output(tmp_path / "out", media)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["config"]["tracker"]["image_size"] == SAM2_SIZE and run["config"]["segmenter"]["name"] == "sam"
