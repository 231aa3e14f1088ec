"""Shard format v2 (``traj.json.gz``, self-describing) and v1 shards still read by every reader."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from dataengine.format import manifest, shards, trajformat
from dataengine.media.decode import sample_indices
from dataengine.tools.export import export_dataset
from dataengine.format.validate import validate_dataset


def labels(T=3, H=12, W=16):
    lab = np.zeros((T, H, W), np.int32)
    lab[:, 2:6, 3:9] = 4
    lab[1:, 7:11, 10:15] = 9          # absent from frame 0
    return lab


def v1_traj(lab):
    """A traj.json as format v1 wrote it (no source size, no resize rule, no fps, no cuts)."""
    traj = trajformat.labels_to_traj(lab, list(range(len(lab))), [0.1 * t for t in range(len(lab))], [0])
    for k in ("source_width", "source_height", "resize", "fps", "scene_cuts"):
        del traj[k]
    traj["version"] = 1
    return traj


def write_v1_dataset(directory, n=2):
    """A v1 dataset byte for byte as the v1 writer made it: one mixed ``traj-000000.tar``, plain traj.json."""
    import webdataset as wds

    directory.mkdir()
    with open(directory / "traj-000000.tar", "wb") as f:
        w = wds.TarWriter(f, encoder=False, mtime=0)
        for i in range(n):
            w.write({"__key__": f"s{i}", "txt": b"", "json": b'{"media_type":""}',
                     "traj.json": trajformat.dumps(v1_traj(labels()))})
        w.close()
    manifest.write_part(directory, 0, [{"key": f"s{i}", "status": "ok", "shard": "traj-000000.tar",
                                        "input_index": i, "n_trajectories": 2} for i in range(n)])


def test_v2_says_what_it_is_and_round_trips():
    lab = labels()
    traj = trajformat.labels_to_traj(lab, [0, 5, 10], [0.0, 0.2, 0.4], [0, 2], source_size=(64, 48),
                                     resize=trajformat.fit_longest_side(16), scene_cuts=[2])
    assert traj["version"] == 2 and (traj["width"], traj["height"]) == (16, 12)
    assert (traj["source_width"], traj["source_height"]) == (64, 48)
    assert traj["resize"]["rule"] == "fit_longest_side" and traj["fps"] == 25.0 and traj["scene_cuts"] == [2]
    image = trajformat.labels_to_traj(lab[:1], [0], [0.0], [0], fps=0.0, media_type="image")
    assert image["fps"] is None and image["resize"] == trajformat.NO_RESIZE      # masks at source size
    member = trajformat.encode_member(traj)
    assert member == trajformat.encode_member(traj)                    # no mtime or name in the gzip header
    assert json.loads(gzip.decompress(member)) == traj                 # plain gzip + json
    assert np.array_equal(trajformat.traj_to_labels(trajformat.decode_member(trajformat.MEMBER, member)), lab)


def test_documented_pycocotools_idiom_decodes_every_frame():
    """docs/format.md: ``mask.decode(row) if row else zeros`` -- a bare ``decode([])`` is not an empty stack."""
    lab = np.zeros((2, 12, 16), np.int32)
    lab[1, 3:5, 3:5] = 1
    for traj in (trajformat.labels_to_traj(lab, [0, 1], [0, 1], [0]),
                 trajformat.labels_to_traj(np.zeros((1, 12, 16), np.int32), [0], [0], [0])):
        H, W = traj["height"], traj["width"]
        for t, row in enumerate(traj["masklet"]):
            masks = mask_utils.decode(row) if row else np.zeros((H, W, 0), np.uint8)
            assert masks.shape == (H, W, len(traj["masklet_id"]))
            got = (masks * np.asarray(traj["masklet_id"], np.int32)).sum(axis=-1) if row else np.zeros((H, W))
            want = lab[t] if traj["masklet_id"] else np.zeros((H, W))
            assert np.array_equal(got, want)


def test_v1_shards_are_still_read_validated_and_exported(tmp_path):
    d = tmp_path / "v1"
    write_v1_dataset(d)
    samples = list(shards.read_dataset(d))
    assert [s.traj["version"] for s in samples] == [1, 1]
    assert np.array_equal(samples[0].labels, labels())
    assert validate_dataset(d) == []
    # a v1 sample rewritten (filter, resume) keeps its content, now in the compressed member
    shards.write_shard(tmp_path / "re.tar", samples)
    assert [e for k, e, _ in shards.iter_tar_members(tmp_path / "re.tar") if k == "s0"] == \
        ["json", "traj.json.gz", "txt"]
    assert [s.traj for s in shards.read_shard(tmp_path / "re.tar")] == [s.traj for s in samples]
    export = export_dataset(d, tmp_path / "out")          # no media: every sample listed as skipped
    assert [s["reason"] for s in export["skipped"]] == ["no media member"] * 2


def test_validate_reports_unsound_v2_fields(tmp_path):
    traj = trajformat.labels_to_traj(labels(), [0, 1, 2], [0, 1, 2], [0])
    assert trajformat.labels_to_traj(labels(), [0, 1, 2], [0, 1, 2], [0])["fps"] == 1.0
    from dataengine.format.validate import check_traj
    assert check_traj(traj, "x") == []
    bad = {**traj, "source_width": 0, "fps": 0.0, "scene_cuts": [0], "resize": {}}
    problems = check_traj(bad, "x")
    assert len(problems) == 4 and all(p.startswith("x: ") for p in problems)
    assert check_traj({**traj, "version": 3}, "x") == ["x: traj.json version 3 is not one of (1, 2)"]


def test_validate_refuses_trajectory_id_0_and_negative_ids():
    """Every reader's id maps say 0 for "no trajectory": an id 0 (SA-V's masklets count from 0)
    would vanish from eval, show, export and training, a negative one breaks them."""
    from dataengine.format.validate import check_traj
    lab = labels()
    for bad_id in (0, -1, 2 ** 31):        # and readers hold ids as int32
        traj = trajformat.labels_to_traj(lab, [0, 1, 2], [0, 1, 2], [0])
        traj["masklet_id"] = [bad_id, 9]
        traj["trajectories"][0]["id"] = bad_id
        assert check_traj(traj, "x") == [f"x: trajectory ids must be integers from 1 to 2**31 - 1 (0 means no "
                                          f"trajectory), got [{bad_id}]"]
    # frame indices that repeat or go back (eval would score a frame twice)
    for indices in ([0, 0, 1], [0, 2, 1], [-1, 0, 1]):
        traj = trajformat.labels_to_traj(lab, indices, [0, 1, 2], [0])
        assert check_traj(traj, "x") == ["x: frame_indices must be increasing source frame numbers >= 0"]


def test_validate_lists_a_torn_manifest_part_and_reads_the_others(tmp_path):
    lab = labels()
    d = tmp_path / "d"
    for i, key in enumerate(("a", "b")):
        traj = trajformat.labels_to_traj(lab, [0, 1, 2], [0, 1, 2], [0])
        shards.write_shard(d / shards.shard_name("traj", i), [shards.ShardSample(key, None, None, "", {}, traj)])
        manifest.write_part(d, i, [{"key": key, "status": "ok", "shard": shards.shard_name("traj", i),
                                    "n_trajectories": 2}])
    assert validate_dataset(d) == []
    part = d / "manifest" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:50])
    problems = validate_dataset(d)
    assert problems[0].startswith("manifest/part-000001.parquet: unreadable manifest part")
    # part 0 was read: its sample is sound; shard 1's sample has no readable row now
    assert problems[1:] == ["traj-000001.tar:b: no 'ok' manifest row points at this sample"]
    from dataengine.errors import InputError
    with pytest.raises(InputError, match="part-000001.parquet: unreadable manifest part"):
        manifest.read_manifest(d)


def test_a_gzip_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(trajformat, "MAX_JSON_BYTES", 1000)
    bomb = gzip.compress(b"[" + b"0," * 10_000 + b"0]", mtime=0)
    with pytest.raises(ValueError, match="expands beyond 1000 bytes"):
        trajformat.decode_member(trajformat.MEMBER, bomb)
    with pytest.raises(ValueError, match="not gzip"):
        trajformat.decode_member(trajformat.MEMBER, b"{}")


def test_series_shards_and_dataset_card(tmp_path):
    traj = trajformat.labels_to_traj(labels(), [0, 1, 2], [0, 1, 2], [0])
    mk = lambda k, ext: shards.ShardSample(k, ext, b"x" if ext else None, "", {}, traj)  # noqa: E731
    (tmp_path / "traj-000000.tar").write_bytes(b"old pre-series shard of chunk 0")
    written = shards.write_series(tmp_path, "traj", 0, [mk("a", "mp4"), mk("b", "jpg"), mk("c", "mp4"), mk("d", None)])
    assert sorted(written) == ["traj-jpg-000000.tar", "traj-mp4-000000.tar", "traj-nomedia-000000.tar"]
    assert not (tmp_path / "traj-000000.tar").exists()
    assert [s.key for s in shards.read_shard(tmp_path / "traj-mp4-000000.tar")] == ["a", "c"]
    shards.write_series(tmp_path, "traj", 1, [mk("e", "webm")])
    assert [p.name for p in shards.list_shards(tmp_path)] == [
        "traj-jpg-000000.tar", "traj-mp4-000000.tar", "traj-nomedia-000000.tar", "traj-webm-000001.tar"]
    card = shards.write_dataset_card(tmp_path).read_text()
    for series in ("jpg", "mp4", "nomedia", "webm"):
        assert f'data_files: "traj-{series}-*.tar"' in card
    assert "{name: mp4, dtype: video}" in card and "{name: webm, dtype: binary}" in card


def test_frame_stride_sampling():
    assert sample_indices(10, 0, 3) == [0, 3, 6, 9]
    assert sample_indices(100, 4, 5) == [0, 5, 10, 15]
    assert sample_indices(48, 16) == sample_indices(48, 16, 0)            # default: uniform, unchanged


def test_atomic_write_appears_whole_or_not_at_all(tmp_path):
    from dataengine.format import atomic

    path = tmp_path / "x.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic.replaced_when_done(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("writer died")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]

    def dies(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic.write_via(path, dies)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    atomic.write_via(path, lambda tmp: tmp.write_text("new"), mode=0o640)
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o640
