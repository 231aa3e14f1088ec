"""The engine end to end on the project's synthetic corpus: local runner and Ray, filter, validate."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataengine.format import manifest
from dataengine.config import FilterConfig, build_annotate_config, load_source
from dataengine.tools.filtering import filter_dataset
from dataengine.metrics.scores import trajectory_recall
from dataengine.format.shards import chunk_shard_names, list_shards, read_dataset
from dataengine.tools.synth import make_corpus
from dataengine.format.validate import validate_dataset
from pipelines.annotate import Resources, annotate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, videos=3, images=2, seed=7)
    return out


def config(media: Path, **kw):
    return build_annotate_config(source=vars(load_source("local", str(media))), output={"samples_per_shard": 3}, **kw)


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(directory)}


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    totals = annotate(config(corpus / "media"), str(out), use_ray=False)
    return out, totals


def test_every_input_once_and_valid(corpus, local_run):
    out, totals = local_run
    inputs = sorted(p.stem for p in (corpus / "media").iterdir() if p.suffix in (".mp4", ".jpg"))
    rows = manifest.read_manifest(out).to_pylist()
    assert sorted(r["key"] for r in rows) == inputs
    assert {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]
    assert totals["samples"] == len(inputs)
    assert validate_dataset(out) == []
    for r in rows:
        assert r["n_trajectories"] > 0 and 0.5 < r["coverage"] <= 1.0


def _gt_by_key(corpus):
    return {s.key: s for s in read_dataset(corpus / "gt", with_media=False)}


def test_recall_against_ground_truth_and_no_trajectory_spans_a_cut(corpus, local_run):
    out, _ = local_run
    gt = _gt_by_key(corpus)
    hits, n_gt, cut_checked = 0, 0, False
    for pred in read_dataset(out, with_media=False):
        if pred.meta["media_type"] != "video":
            continue
        plab = pred.labels
        g = gt[pred.key]
        glab = g.labels[pred.traj["frame_indices"]]
        glab = np.stack([cv2.resize(f, plab.shape[:0:-1], interpolation=cv2.INTER_NEAREST) for f in glab])
        r = trajectory_recall(glab, plab)
        hits += sum(t["best_iou"] >= 0.5 for t in r["per_trajectory"])
        n_gt += r["n_trajectories"]
        for cut in g.meta["scene_cuts"]:
            before = [p for p, f in enumerate(pred.traj["frame_indices"]) if f < cut]
            after = [p for p, f in enumerate(pred.traj["frame_indices"]) if f >= cut]
            ids_before = set(np.unique(plab[before])) - {0}
            ids_after = set(np.unique(plab[after])) - {0}
            assert not ids_before & ids_after
            assert after[0] in pred.meta["scene_cuts"]
            cut_checked = True
    assert cut_checked
    # Pooled over GT trajectories (as `trajdata eval` and bench/quality.py pool), strict rule.
    # An end-to-end sanity bar on 3 photo videos (~22 trajectories): it catches a broken
    # pipeline, not a small quality change; bench/quality.py scores quality on held-out seeds.
    assert hits / n_gt >= 0.4, (hits, n_gt)


def test_filter_keeps_or_explains_every_row(local_run, tmp_path):
    out, _ = local_run
    rows = {r["key"]: r for r in manifest.read_manifest(out).to_pylist()}
    threshold = sorted(r["n_trajectories"] for r in rows.values())[len(rows) // 2]
    totals = filter_dataset(out, tmp_path / "f", FilterConfig(min_coverage=0.0, min_objects=threshold))
    frows = {r["key"]: r for r in manifest.read_manifest(tmp_path / "f").to_pylist()}
    assert frows.keys() == rows.keys()
    for k, r in frows.items():
        if rows[k]["n_trajectories"] >= threshold:
            assert r["status"] == "ok"
        else:
            assert r["status"] == "filtered" and r["reason"] == f"trajectories {rows[k]['n_trajectories']} < {threshold}"
    assert 0 < totals["by_status"]["filtered"] < len(rows)
    kept = {s.key for s in read_dataset(tmp_path / "f", with_media=False)}
    assert kept == {k for k, r in frows.items() if r["status"] == "ok"}
    assert validate_dataset(tmp_path / "f") == []


def test_filter_turns_the_samples_of_a_broken_shard_into_error_rows(local_run, tmp_path):
    """A truncated shard costs its own kept samples (error rows with the reason), nothing else."""
    out, _ = local_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    broken = list_shards(copy)[0]
    broken.write_bytes(broken.read_bytes()[:3000])
    rows = {r["key"]: r for r in manifest.read_manifest(copy).to_pylist()}
    lost = {k for k, r in rows.items() if r["shard"] == broken.name and r["status"] == "ok"}
    assert lost and len(lost) < sum(r["status"] == "ok" for r in rows.values())
    totals = filter_dataset(copy, tmp_path / "f", FilterConfig(min_coverage=0.0, min_objects=0))
    frows = {r["key"]: r for r in manifest.read_manifest(tmp_path / "f").to_pylist()}
    assert frows.keys() == rows.keys() and totals["by_status"]["error"] >= len(lost)
    for k in lost:
        assert frows[k]["status"] == "error" and frows[k]["reason"].startswith(f"shard {broken.name} unreadable")
    kept = {s.key for s in read_dataset(tmp_path / "f", with_media=False)}
    assert kept == {k for k, r in rows.items() if r["status"] == "ok"} - lost
    assert validate_dataset(tmp_path / "f") == []


def test_a_retried_chunk_written_twice_holds_each_sample_once(corpus, tmp_path):
    """A retry task run again after its shards were written (its part never was: a killed attempt, or a block
    Ray ran again) replaces the retried samples, never adds them twice; so does a new chunk whose killed
    attempt left the shard of a series its inputs no longer fill."""
    from dataengine.format.outputfs import Output
    from dataengine.sources import list_samples
    from dataengine.stages.labeller import Labeller
    from dataengine.stages.writer import annotate_chunk, plan_chunks, write_chunk

    media = tmp_path / "media"
    shutil.copytree(corpus / "media", media)
    bad = sorted(media.glob("*.jpg"))[0]
    good = bad.read_bytes()
    bad.write_bytes(good[:200])
    out = tmp_path / "out"
    annotate(config(media), str(out), use_ray=False)
    bad.write_bytes(good)
    cfg = config(media)
    o = Output(str(out))
    tasks = [t for t in plan_chunks(list_samples(cfg.source), o, {0, 1}, 3) if t.retry]
    assert len(tasks) == 1 and [r.key for r in tasks[0].refs] == [bad.stem]
    labeller = Labeller(cfg)
    rows = None
    for _ in range(2):          # the second time as if the first's part had not been written
        from dataengine.stages.writer import _decoded
        from dataengine.stages.annotate import encode_row, label_row
        rows = [encode_row(label_row(r, labeller), cfg) for r in _decoded(tasks[0].refs, cfg, 0)]
        write_chunk(o, cfg, tasks[0].chunk, rows, retry=True)
    keys = [s.key for p in list_shards(out) for s in read_dataset(p, with_media=False)]
    fresh = tmp_path / "fresh"
    annotate(config(media), str(fresh), use_ray=False)      # a run that never failed, same media
    assert sorted(keys) == sorted(set(keys)) and digests(out) == digests(fresh)
    assert validate_dataset(out) == []

    # a new chunk whose earlier attempt wrote an mp4 shard; its video now fails: that shard goes
    video = sorted(media.glob("*.mp4"))[0]
    f = Output(str(fresh))
    chunk = next(r["input_index"] for r in manifest.read_manifest(fresh).to_pylist() if r["key"] == video.stem) // 3
    (fresh / "manifest" / f"part-{chunk:06d}.parquet").unlink()            # the attempt "was killed" here
    video.write_bytes(b"not a video any more")
    annotate(config(media), str(fresh), use_ray=False, resume=True)
    rows = {r["key"]: r for r in manifest.read_manifest(fresh).to_pylist()}
    assert rows[video.stem]["status"] == "error"
    assert validate_dataset(fresh) == [], validate_dataset(fresh)


def test_the_writer_streams_media_into_the_shard_not_the_whole_chunk(corpus, tmp_path, monkeypatch):
    """Media are read while the shard is written: a chunk of large local videos never sits in memory whole
    (it did: every sample's media were read before the first was written)."""
    from dataengine.stages import writer

    media = tmp_path / "media"
    media.mkdir()
    jpgs = sorted((corpus / "media").glob("*.jpg"))
    for i in range(8):
        shutil.copy(jpgs[i % len(jpgs)], media / f"img_{i}.jpg")
    live: set[int] = set()
    peak = [0]

    class Tracked(bytes):
        def __del__(self):
            live.discard(id(self))

    def tracking(ref, limit):
        return tracking_bytes(real(ref, limit))

    def tracked_shard(f, with_media=True):
        for sample in real_shard(f, with_media):
            if sample.media is not None:
                sample.media = tracking_bytes(sample.media)
            yield sample

    def tracking_bytes(data):
        data = Tracked(data)
        live.add(id(data))
        peak[0] = max(peak[0], len(live))
        return data

    real, real_shard = writer.read_media, writer.read_shard
    monkeypatch.setattr(writer, "read_media", tracking)
    monkeypatch.setattr(writer, "read_shard", tracked_shard)
    good = (media / "img_3.jpg").read_bytes()
    (media / "img_3.jpg").write_bytes(good[:100])
    cfg = build_annotate_config(source=vars(load_source("local", str(media))), output={"samples_per_shard": 8})
    annotate(cfg, str(tmp_path / "out"), use_ray=False)
    rows = manifest.read_manifest(tmp_path / "out").to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 3 + ["error"] + ["ok"] * 4
    assert 1 <= peak[0] <= 2, peak[0]
    # the retry of the error row: the chunk's seven kept samples stream from its old shard
    (media / "img_3.jpg").write_bytes(good)
    peak[0] = 0
    annotate(cfg, str(tmp_path / "out"), use_ray=False, resume=True)
    rows = manifest.read_manifest(tmp_path / "out").to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 8 and len({r["shard"] for r in rows}) == 1
    assert [s.media for s in read_dataset(tmp_path / "out")] == [(media / f"img_{i}.jpg").read_bytes()
                                                                  for i in range(8)]
    assert 1 <= peak[0] <= 3, peak[0]
    # trajdata filter copies kept samples the same way
    from dataengine.tools import filtering
    monkeypatch.setattr(filtering, "read_shard", tracked_shard)
    peak[0] = 0
    totals = filter_dataset(tmp_path / "out", tmp_path / "kept", FilterConfig(min_coverage=0.0, min_objects=0))
    assert totals["by_status"]["ok"] == 8 and digests(tmp_path / "kept") == digests(tmp_path / "out")
    assert 1 <= peak[0] <= 2, peak[0]


def test_shards_of_chunk_one_million_and_above_are_found(tmp_path):
    from dataengine.format.shards import ShardSample, chunk_shard_names, series_shard_name, write_series
    from dataengine.format import trajformat
    labels = np.zeros((1, 8, 8), np.int32)
    labels[0, 2:5, 2:5] = 1
    traj = trajformat.labels_to_traj(labels, [0], [0.0], [0])
    for c in (999_999, 1_000_000, 12_345_678):
        write_series(tmp_path, "traj", c, [ShardSample(f"k{c}", "jpg", b"x", "", {}, traj)], replaces=[])
    names = [p.name for p in list_shards(tmp_path)]
    assert names == [series_shard_name("traj", "jpg", c) for c in (999_999, 1_000_000, 12_345_678)]
    assert chunk_shard_names(names, "traj", 1_000_000) == ["traj-jpg-1000000.tar"]


def copy_without_second_chunk(out: Path, tmp_path: Path) -> Path:
    """A copy of a finished run whose second chunk (manifest part and shards) is gone, as a killed run leaves it."""
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "manifest" / "part-000001.parquet").unlink()
    for name in chunk_shard_names((p.name for p in copy.iterdir()), "traj", 1):
        (copy / name).unlink()
    return copy


def test_resume_redoes_only_missing_chunk_with_same_bytes(corpus, local_run, tmp_path):
    out, _ = local_run
    copy = copy_without_second_chunk(out, tmp_path)
    first_part = (copy / "manifest" / "part-000000.parquet").stat().st_mtime_ns
    annotate(config(corpus / "media"), str(copy), use_ray=False, resume=True)
    assert digests(copy) == digests(out)
    assert (copy / "manifest" / "part-000000.parquet").stat().st_mtime_ns == first_part
    assert validate_dataset(copy) == []


def test_refuses_to_overwrite_without_resume(corpus, local_run):
    out, _ = local_run
    with pytest.raises(RuntimeError, match="--resume"):
        annotate(config(corpus / "media"), str(out), use_ray=False)


def test_resume_refuses_other_labelling_settings_and_names_them(corpus, local_run, tmp_path):
    out, _ = local_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(RuntimeError, match=r"keyframes.max_gap: 4 -> 3.*run.json"):
        annotate(config(corpus / "media", keyframes={"max_gap": 3}), str(copy), use_ray=False, resume=True)


def test_resume_refuses_another_chunk_size(corpus, local_run, tmp_path):
    """Chunks are input index // samples_per_shard: resumed with another size, finished chunks' inputs would be
    written again (twice in the manifest), so the resume is refused and the output left as it was."""
    out, _ = local_run
    copy = copy_without_second_chunk(out, tmp_path)
    before = digests(copy)
    parts = sorted(p.name for p in (copy / "manifest").iterdir())
    cfg = build_annotate_config(source=vars(load_source("local", str(corpus / "media"))),
                                output={"samples_per_shard": 2})
    with pytest.raises(RuntimeError, match=r"output.samples_per_shard: 3 -> 2"):
        annotate(cfg, str(copy), use_ray=False, resume=True)
    assert digests(copy) == before and sorted(p.name for p in (copy / "manifest").iterdir()) == parts


def test_resume_after_a_larger_limit_labels_the_rest(corpus, local_run, tmp_path):
    """A run stopped by --limit 4 (chunks of 3: the second chunk holds one input) and resumed without it
    labels the fifth input into that chunk: the output equals a run that never stopped."""
    out, _ = local_run
    part = tmp_path / "part"
    annotate(config(corpus / "media", limit=4), str(part), use_ray=False)
    assert manifest.read_manifest(part).num_rows == 4
    annotate(config(corpus / "media"), str(part), use_ray=False, resume=True)
    assert digests(part) == digests(out) and manifest.read_manifest(part).num_rows == 5
    assert validate_dataset(part) == []


def test_resume_refuses_an_input_that_changed_under_finished_chunks(corpus, local_run, tmp_path):
    """A file added where the listing puts it before finished inputs shifts their indices: refused, named."""
    out, _ = local_run
    copy = copy_without_second_chunk(out, tmp_path)
    media = tmp_path / "media"
    shutil.copytree(corpus / "media", media)
    first = sorted(p for p in media.iterdir() if p.suffix in (".mp4", ".jpg"))[0]
    shutil.copy(first, media / ("a_" + first.name))       # sorts first: every index moves by one
    before = digests(copy)
    with pytest.raises(RuntimeError, match=r"the input changed since this output was written: input 0 \(chunk 0\)"):
        annotate(config(media), str(copy), use_ray=False, resume=True)
    assert digests(copy) == before


def test_resume_sees_another_file_under_the_same_key(corpus, tmp_path):
    """x/a.jpg and x_a.jpg both clean up to the key x_a (the second gets x_a-1); with x/a.jpg gone, x_a.jpg
    takes the key x_a at index 0: the same key, another file, refused."""
    media = tmp_path / "media"
    (media / "x").mkdir(parents=True)
    jpg = sorted((corpus / "media").glob("*.jpg"))
    shutil.copy(jpg[0], media / "x" / "a.jpg")
    shutil.copy(jpg[1], media / "x_a.jpg")
    shutil.copy(jpg[0], media / "zz.jpg")
    def cfg(**kw):
        return build_annotate_config(source=vars(load_source("local", str(media))), output={"samples_per_shard": 1}, **kw)
    annotate(cfg(limit=1), str(tmp_path / "out"), use_ray=False)
    assert [r["key"] for r in manifest.read_manifest(tmp_path / "out").to_pylist()] == ["x_a"]
    (media / "x" / "a.jpg").unlink()
    with pytest.raises(RuntimeError, match=r"input 0 \(chunk 0\) was 'x_a'.*x_a.jpg, was a.jpg"):
        annotate(cfg(), str(tmp_path / "out"), use_ray=False, resume=True)


def test_resume_accepts_speed_only_settings_and_an_older_hash_of_the_same_settings(corpus, local_run,
                                                                                        tmp_path):
    import json

    out, _ = local_run
    copy = copy_without_second_chunk(out, tmp_path)
    # a run.json written before the speed-only settings left the hash: its hash covered every setting
    run = json.loads((copy / "run.json").read_text())
    cfg = config(corpus / "media")
    assert run["config_hash"] == cfg.model_hash()
    run["config_hash"] = "0123456789abcdef"
    (copy / "run.json").write_text(json.dumps(run))
    # resumed with another object batch (labels the same): the missing chunk is redone, nothing else differs
    annotate(config(corpus / "media", tracker={"object_batch": 3}), str(copy), use_ray=False, resume=True)
    assert digests(copy) == digests(out)
    assert json.loads((copy / "run.json").read_text())["config"]["tracker"]["object_batch"] == 3


def test_bad_files_are_error_rows_and_good_ones_survive(corpus, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(corpus / "media" / "video_000.mp4", media / "good.mp4")
    (media / "empty.mp4").write_bytes(b"")
    (media / "text.mp4").write_text("this is not a video\n" * 20)
    (media / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    out = tmp_path / "out"
    annotate(config(media), str(out), use_ray=False)
    rows = {r["key"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert rows["good"]["status"] == "ok"
    for k in ("empty", "text", "random"):
        assert rows[k]["status"] == "error" and rows[k]["reason"], k
    assert "empty" in rows["empty"]["reason"]
    assert validate_dataset(out) == []


def test_ray_pipeline_two_cpus_is_byte_identical_across_runs(corpus, local_run, tmp_path, capfd):
    out_local, _ = local_run
    res = Resources(cpus=2, object_store_mb=256)
    media = tmp_path / "media"
    shutil.copytree(corpus / "media", media)
    first = sorted(p for p in media.iterdir() if p.suffix in (".mp4", ".jpg"))[0]
    try:
        annotate(config(corpus / "media"), str(tmp_path / "a"), res)
        annotate(config(corpus / "media"), str(tmp_path / "b"), res)
        # a resume whose input changed is refused from the listing's worker, said by the driver in one line
        shutil.copytree(tmp_path / "b", tmp_path / "c")
        shutil.copy(first, media / ("a_" + first.name))
        runs_err = capfd.readouterr().err
        with pytest.raises(RuntimeError, match=r"^the input changed since this output was written: input 0"):
            annotate(config(media), str(tmp_path / "c"), res, resume=True)
        assert "Traceback" not in capfd.readouterr().err
    finally:
        from pipelines.runtime import shutdown_ray
        shutdown_ray()
    assert digests(tmp_path / "a") == digests(tmp_path / "b") == digests(tmp_path / "c") == digests(out_local)
    assert len(manifest.read_manifest(tmp_path / "a")) == len(manifest.read_manifest(out_local))
    assert validate_dataset(tmp_path / "a") == []
    # Ray core's ERROR line about Ray Data's actor constructor arguments is filtered (pipelines/runtime.py).
    # Nor do Ray Data's notices meant for its own progress bars, or the deprecation of the argument
    # that keeps the listing's read task from being retried, reach the user.
    err = runs_err + capfd.readouterr().err
    for noise in ("core_worker.cc", "Progress bars disabled", "execution finished", "DeprecationWarning"):
        assert noise not in err, noise


def test_a_relative_input_is_made_absolute_for_workers_elsewhere(corpus, tmp_path, monkeypatch):
    """Label actors on other nodes (and the listing's worker) do not share the driver's working directory:
    the driver resolves --input before anything is scheduled, and records that."""
    import json
    monkeypatch.chdir(corpus)
    annotate(config(Path("media")), str(tmp_path / "out"), use_ray=False)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["config"]["source"]["path"] == str(corpus / "media")
    assert all(Path(r["source_uri"]).is_absolute() for r in manifest.read_manifest(tmp_path / "out").to_pylist())


def test_resume_of_a_run_written_before_the_still_settings(corpus, local_run, tmp_path):
    """A run.json from before `still_*` existed: stills were cut with the video settings then. Resuming says
    so (not "(absent) -> 80") and resumes with those values set."""
    import json
    out, _ = local_run
    copy = copy_without_second_chunk(out, tmp_path)
    run = json.loads((copy / "run.json").read_text())
    for k in ("still_superpixels", "still_merge_threshold"):
        del run["config"]["segmenter"][k]
    run["config_hash"] = "0123456789abcdef"
    (copy / "run.json").write_text(json.dumps(run))
    with pytest.raises(RuntimeError, match=r"segmenter.still_superpixels: 250 -> 80"):
        annotate(config(corpus / "media"), str(copy), use_ray=False, resume=True)
    annotate(config(corpus / "media", segmenter={"still_superpixels": 250, "still_merge_threshold": 14.0}),
             str(copy), use_ray=False, resume=True)
    assert manifest.read_manifest(copy).num_rows == manifest.read_manifest(out).num_rows


def test_an_error_row_without_a_media_address_may_be_retried_with_one():
    from dataengine.sources import SampleRef
    from dataengine.stages.writer import _check_unchanged
    ref = SampleRef(key="clip_00000", source="panda", uri="/data/clips/clip.0.mp4", media_type="video", ext="mp4",
                    index=0)
    assert _check_unchanged(0, [ref], {0: ("clip_00000", "")}) == []           # was missing, now there
    with pytest.raises(RuntimeError, match="the input changed"):
        _check_unchanged(0, [ref], {0: ("clip_00000", "other.mp4")})


def test_a_changed_input_is_refused_before_a_gap_between_finished_chunks_is_labelled(corpus, local_run, tmp_path):
    """Finished chunks 0 and (last) 1 with chunk 0's part gone (a gap), and a file added that shifts chunk 1:
    the refusal comes before the gap is labelled with the shifted input."""
    out, _ = local_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "manifest" / "part-000000.parquet").unlink()
    media = tmp_path / "media"
    shutil.copytree(corpus / "media", media)
    first = sorted(p for p in media.iterdir() if p.suffix in (".mp4", ".jpg"))[0]
    shutil.copy(first, media / ("a_" + first.name))
    with pytest.raises(RuntimeError, match=r"the input changed since this output was written: input 3 \(chunk 1\)"):
        annotate(config(media), str(copy), use_ray=False, resume=True)
    assert not (copy / "manifest" / "part-000000.parquet").exists()


def test_validate_and_stats_say_when_the_annotate_run_has_not_finished(local_run, tmp_path):
    """A run killed part way is valid as far as it goes; validate said only "valid" and stats counted its
    samples as if they were all."""
    import json

    from typer.testing import CliRunner

    import cli

    out, _ = local_run
    copy = tmp_path / "killed"
    shutil.copytree(out, copy)
    run = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**run, "status": "running"}))
    for args in (["validate", str(copy)], ["stats", str(copy)], ["validate", str(out)]):
        result = CliRunner().invoke(cli.trajdata, args)
        assert result.exit_code == 0, result.output
        said = "the annotate run has not finished" in " ".join(result.output.split())
        assert said == (args[1] == str(copy)), result.output
