"""Shard media gets the same guards as annotate: `trajdata show` and the training loader run the
bad-input corpus.

Every media file of the corpus's folder layout (``fixtures.badcorpus``: bombs, playlists and
ffconcat scripts named .mp4, EPS named .jpg, truncated, empty, tiny, audio-only ... and the good
ones beside them) is written into trajectory shards with the format's own writer and a valid
traj.json, as a shard downloaded from elsewhere could hold it. Annotate's verdict on each file
is the corpus's expectation (``tests/test_bad_inputs.py`` holds annotate to it); here:

* ``trajdata show`` draws exactly the samples annotate accepts; every other one is a one-line
  error naming annotate's reason, and no file (not even a partial one) is left behind;
* the training loader yields exactly the samples annotate accepts, and skips each other one
  with one warning line naming it and the reason, finishing the epoch.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dataengine.config import DecodeConfig, SourceConfig
from dataengine.format import trajformat
from dataengine.format.shards import ShardSample, series_shard_name, write_shard
from dataengine.media.decode import decode_media
from dataengine.sources import MediaError, list_samples, read_media
from dataengine.tools import visualize
from fixtures.badcorpus import EPS_IMAGE, HLS_PLAYLIST, make_bad_corpus, png_bomb, video_bomb
from trajtok.augment import AugmentConfig
from trajtok.data import DataConfig, ShardDataset

H, W = 48, 64                    # the masks' size; frames are resized to it
GOOD_VIDEO_FRAMES = 16           # the corpus's good clip, from which most broken ones are cut


def _traj(frame_indices: list[int], media_type: str) -> dict:
    labels = np.zeros((len(frame_indices), H, W), np.int32)
    labels[:, 8:30, 10:40] = 1
    labels[:, 30:, 40:] = 2
    return trajformat.labels_to_traj(labels, frame_indices, [f / 16 for f in frame_indices], [0],
                                     media_type=media_type)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]]]:
    """Shards holding every media file of the corpus's folder; ``{key: (status, reason regex)}``."""
    root = tmp_path_factory.mktemp("guards")
    expect = make_bad_corpus(root / "corpus", special_files=False)
    src = SourceConfig(name="media", format="folder", path=str(root / "corpus" / "media"))
    samples: dict[str, list[ShardSample]] = {}
    verdicts: dict[str, tuple[str, str]] = {}
    for ref in list_samples(src):
        e = expect[f"media/{ref.key}"]
        if ref.error:   # refused at listing (file name, caption): no media question to ask
            continue
        try:
            data = read_media(ref)
        except MediaError:   # dangling links and the like: nothing to put in a shard
            continue
        if ref.media_type == "video":
            # The frames annotate would have labelled: its own sampling for a clip it decodes,
            # the good clip's frames for one cut or corrupted from it.
            frames = (decode_media(data, "video", DecodeConfig()).frame_indices if e.status == "ok"
                      else list(range(GOOD_VIDEO_FRAMES)))
        else:
            frames = [0]
        sample = ShardSample(ref.key, ref.ext, data, "", {"media_type": ref.media_type}, _traj(frames, ref.media_type))
        samples.setdefault(ref.ext, []).append(sample)
        verdicts[ref.key] = (e.status, e.reason)
    # the hand-made hostile inputs of the security tests, as shard members too
    for key, ext, media_type, data, reason in (
            ("sec_png_bomb", "png", "image", png_bomb(30000, 30000), r"too large"),
            ("sec_video_bomb", "mkv", "video", video_bomb(8200, 8200), r"too large"),
            ("sec_eps", "jpg", "image", EPS_IMAGE, r"unrecognised image format"),
            ("sec_hls", "mp4", "video", HLS_PLAYLIST, r"not a decodable video")):
        frames = [0] if media_type == "image" else list(range(4))
        samples.setdefault(ext, []).append(ShardSample(key, ext, data, "", {"media_type": media_type},
                                                       _traj(frames, media_type)))
        verdicts[key] = ("error", reason)
    out = root / "shards"
    for ext, group in samples.items():
        write_shard(out / series_shard_name("traj", ext, 0), group)
    kinds = {status for status, _ in verdicts.values()}
    assert kinds == {"ok", "error"} and sum(s == "error" for s, _ in verdicts.values()) >= 15
    return out, verdicts


def test_show_draws_what_annotate_accepts_and_refuses_the_rest(shard_dir, tmp_path):
    directory, verdicts = shard_dir
    wrong = []
    for key, (status, reason) in sorted(verdicts.items()):
        out = tmp_path / f"{key}.png"
        try:
            visualize.show(directory, key, out, max_frames=4)
        except ValueError as e:
            msg = str(e)
            if status == "ok" or not re.search(reason, msg, re.I) or "\n" in msg or key not in msg:
                wrong.append(f"{key}: want {status} /{reason}/, show said {msg!r}")
            if out.exists():
                wrong.append(f"{key}: refused, yet {out.name} was written")
            continue
        if status != "ok":
            wrong.append(f"{key}: annotate refuses it (/{reason}/) but show drew it")
        elif not out.is_file():
            wrong.append(f"{key}: no picture")
    assert not wrong, "\n".join(wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{k}.png" for k, (status, _) in verdicts.items() if status == "ok")   # no temporary left over


def test_show_command_fails_in_one_line_and_writes_nothing(shard_dir, tmp_path):
    from cli import trajdata

    directory, _ = shard_dir
    for key, ext in (("sec_hls", "gif"), ("sec_video_bomb", "mp4"), ("postscript", "png")):
        out = tmp_path / f"x.{ext}"
        r = CliRunner().invoke(trajdata, ["show", str(directory), key, "--out", str(out)])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and "cannot decode the" in r.output and key in r.output
        assert list(tmp_path.iterdir()) == []


def test_loader_yields_what_annotate_accepts_and_skips_the_rest(shard_dir, caplog):
    directory, verdicts = shard_dir
    cfg = DataConfig(image_size=32, frames=4, batch_size=2, shuffle_buffer=4, epochs=1,
                     augment=AugmentConfig(enabled=False))
    with caplog.at_level(logging.WARNING, logger="trajtok.data"):
        batches = [b for b in ShardDataset(directory, cfg).iter_batches(0, 1) if "frames" in b]
    keys = [k for b in batches for k in b["keys"]]
    assert sorted(keys) == sorted(k for k, (status, _) in verdicts.items() if status == "ok")
    for b in batches:
        assert b["frames"].shape[0] == len(b["keys"]) and torch_finite(b["frames"])
    skipped = {}
    for rec in caplog.records:
        m = re.match(r"skipping sample (\S+): (.*)", rec.getMessage())
        assert m and "\n" not in rec.getMessage(), rec.getMessage()
        assert m[1] not in skipped, f"{m[1]} reported twice"
        skipped[m[1]] = m[2]
    bad = {k: reason for k, (status, reason) in verdicts.items() if status == "error"}
    assert set(skipped) == set(bad)
    wrong = [f"{k}: want /{bad[k]}/, loader said {why!r}" for k, why in skipped.items() if not re.search(bad[k], why, re.I)]
    assert not wrong, "\n".join(wrong)


def torch_finite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())


def test_decoder_scaling_gives_the_area_resize_geometry(tmp_path):
    """The loader lets the decoder scale (cheaper); frames match the area resize up to interpolation."""
    from dataengine.media.decode import decode_frames
    from dataengine.tools.synth import write_video

    write_video(tmp_path / "v.mp4", seed=4, n_frames=12, width=320, height=240)
    data = (tmp_path / "v.mp4").read_bytes()
    area = decode_frames(data, "video", [0, 5, 11], (160, 120))
    scaled = decode_frames(data, "video", [0, 5, 11], (160, 120), scaler="decoder")
    assert scaled.shape == area.shape == (3, 120, 160, 3) and scaled.dtype == np.uint8
    diff = np.abs(scaled.astype(int) - area.astype(int))
    assert diff.mean() < 4.0                                   # same picture, same place
    other = decode_frames(data, "video", [1, 6, 10], (160, 120), scaler="decoder")
    assert np.abs(other.astype(int) - area.astype(int)).mean() > diff.mean()   # and the right frames
