"""`trajdata annotate --segmenter trajtok --checkpoint PATH`: a trained segmenter as the labeller."""
import numpy as np
import torch
from typer.testing import CliRunner

import cli
from dataengine.format import manifest
from dataengine.config import AnnotateConfig
from dataengine.stages.labeller import Labeller
from dataengine.format.shards import read_dataset
from dataengine.tools.synth import write_video
from dataengine.format.validate import validate_dataset
from fixtures.trajtok_toy import toy_preset, write_synthetic_dataset
from trajtok.train import train_segmenter

torch.set_num_threads(1)


def test_trajtok_backend_labels_clips_and_links_them(tmp_path):
    write_synthetic_dataset(tmp_path / "shards", videos=2, images=1, frames=8, samples_per_shard=2, seed=3)
    ckpt = train_segmenter(tmp_path / "shards", tmp_path / "run", preset=toy_preset(frames=4), max_steps=2)["checkpoint"]
    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "clip.mp4", seed=1, n_frames=24, width=96, height=64, scene_cut_at=12)
    (media / "clip.txt").write_text("a clip")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.trajdata, ["annotate", "--input", str(media), "--output", str(out),
                                               "--segmenter", "trajtok", "--checkpoint", ckpt,
                                               "--frames", "10", "--no-ray"])
    assert result.exit_code == 0, result.output
    [row] = manifest.read_manifest(out).to_pylist()
    assert row["status"] == "ok", row["reason"]
    assert validate_dataset(out) == []
    [sample] = read_dataset(out, with_media=False)
    assert sample.meta["backends"] == {"segmenter": "trajtok", "tracker": "trajtok"}
    # 10 frames, 4-frame clips, a cut between source frames 11 and 12 (positions 4 / 5).
    cuts = sample.meta["scene_cuts"]
    assert cuts and sample.traj["keyframes"][0] == 0 and set(cuts) <= set(sample.traj["keyframes"])
    labels = sample.labels
    before, after = set(np.unique(labels[:cuts[0]])) - {0}, set(np.unique(labels[cuts[0]:])) - {0}
    assert not before & after


def test_missing_trajtok_checkpoint_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(cli.trajdata, ["annotate", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                               "--segmenter", "trajtok", "--checkpoint", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 2
    assert "trajtok checkpoint not found" in result.output and "Traceback" not in result.output


class RenumberingSegmenter:
    """A video segmenter stand-in: two regions (left and right), renumbered in every clip of the frames it is
    given."""
    name = "fake"

    def __init__(self, clip_frames: int):
        self.clip_frames = clip_frames

    def segment_video(self, frames):
        out = np.zeros(frames.shape[:3], np.int32)
        for s in range(0, len(frames), self.clip_frames):
            out[s:s + self.clip_frames, :, :5] = 10 + s
            out[s:s + self.clip_frames, :, 5:] = 11 + s
        return out


def joint_labeller(segmenter) -> Labeller:
    lab = Labeller.__new__(Labeller)
    lab.cfg, lab.segmenter, lab.joint, lab.tracker = AnnotateConfig(), segmenter, True, None
    return lab


def test_joint_linking_keeps_ids_of_overlapping_regions():
    lab = joint_labeller(RenumberingSegmenter(2))
    res = lab.label(np.zeros((6, 4, 10, 3), np.uint8), [0], [4])
    assert res.keyframes == [0, 2, 4]
    assert (res.labels[:4, :, :5] == 1).all() and (res.labels[:4, :, 5:] == 2).all()  # linked across clip 0 -> 1
    assert set(np.unique(res.labels[4:])) == {3, 4}                                   # new ids after the cut


def test_joint_linking_after_a_cut_off_the_clip_grid():
    """The model's clips start at each shot's start: after a cut at 5 with 4-frame clips, the clips
    starting at 8 and 12 (counted from frame 0) were never merged, so every object took a new id there."""
    lab = joint_labeller(RenumberingSegmenter(4))
    res = lab.label(np.zeros((14, 4, 10, 3), np.uint8), [0], [5])
    assert res.keyframes == [0, 4, 5, 9, 13]
    assert (res.labels[:5, :, :5] == 1).all() and (res.labels[:5, :, 5:] == 2).all()
    assert (res.labels[5:, :, :5] == 3).all() and (res.labels[5:, :, 5:] == 4).all()   # one id each to the end


def test_joint_linking_writes_one_id_per_clip_region_and_records_what_it_wrote():
    """A clip region the merge keeps under two carried ids (two tracks one region joins) gets one id in every
    frame of the clip, and the merge record says that id continues and the other ends (it wrote the id of the
    region's last pixel and recorded both as continued)."""
    class Fake:
        name, clip_frames = "fake", 2

        def segment_video(self, frames):  # two regions in the first clip, one in the second
            out = np.zeros(frames.shape[:3], np.int32)
            out[:2, :, :5], out[:2, :, 5:], out[2:] = 1, 2, 7
            return out

    lab = joint_labeller(Fake())
    lab.cfg.merge.fate_tolerance, lab.cfg.merge.min_track_frames = 0.0, 1     # no grouping after the merge
    res = lab.label(np.zeros((4, 4, 10, 3), np.uint8), [0], [])
    assert (res.labels[:2, :, :5] == 1).all() and (res.labels[:2, :, 5:] == 2).all()
    assert len(np.unique(res.labels[2:])) == 1
    kept = int(res.labels[2, 0, 0])
    [record] = res.merges
    assert record["position"] == 2 and [i for i, _ in record["matched"]] == [kept]
    assert record["ended"] == [3 - kept] and record["new"] == []
