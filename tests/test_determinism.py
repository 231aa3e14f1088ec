"""Same input and labelling config, same ``traj.json`` -- whatever the batching or process.

``tests/test_annotate.py`` already checks two identical runs (local and Ray) for
byte-identical shards. Here the things that must *not* matter are varied:
samples per shard, ``--limit``, hash seed and OpenCV thread count (fresh
processes). Ray shard size and actor count are varied in
``tests/test_bad_inputs.py::test_ray_run_agrees_with_the_local_run``.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataengine.config import build_annotate_config, load_source
from dataengine.format.shards import SHARD_RE, iter_tar_members, list_shards, read_dataset
from dataengine.tools.synth import make_corpus
from pipelines.annotate import annotate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("det-corpus")
    make_corpus(out, videos=2, images=2, seed=21, n_frames=24)
    return out / "media"


def config(media: Path, per_shard: int, **kw):
    return build_annotate_config(source=vars(load_source("local", str(media))),
                                 output={"samples_per_shard": per_shard}, **kw)


def members(directory: Path) -> dict[tuple[str, str], str]:
    """``(key, member ext) -> sha256`` over all shards: independent of how samples are sharded."""
    return {(k, e): hashlib.sha256(d).hexdigest() for p in list_shards(directory) for k, e, d in iter_tar_members(p)}


@pytest.fixture(scope="module")
def one_per_shard(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("det-1")
    annotate(config(corpus, 1), str(out), use_ray=False)
    return out


def test_shard_size_and_limit_do_not_change_any_member(corpus, one_per_shard, tmp_path):
    annotate(config(corpus, 3), str(tmp_path / "three"), use_ray=False)
    annotate(config(corpus, 2, limit=3), str(tmp_path / "limited"), use_ray=False)
    a, b, c = members(one_per_shard), members(tmp_path / "three"), members(tmp_path / "limited")
    chunks = lambda d: {int(SHARD_RE.match(p.name)["index"]) for p in list_shards(d)}  # noqa: E731
    assert chunks(one_per_shard) == {0, 1, 2, 3} and chunks(tmp_path / "three") == {0, 1}
    assert a == b
    assert c and c == {m: h for m, h in a.items() if m[0] in {k for k, _ in c}}
    assert len({k for k, _ in c}) == 3
    assert {s.key for s in read_dataset(one_per_shard, with_media=False)} == {k for k, _ in a}


def test_folder_and_tar_layouts_give_the_same_labels(corpus, one_per_shard, tmp_path):
    """A plain file is decoded from its path, a tar member from its bytes: same frames, same traj.json."""
    wds = corpus.parent / "wds" / "videos"
    cfg = build_annotate_config(source={"name": "v", "format": "video2dataset", "path": str(wds)})
    annotate(cfg, str(tmp_path / "v2d"), use_ray=False)
    folder = {s.key: s.traj for s in read_dataset(one_per_shard, with_media=False)}
    tars = {s.meta["url"].split("//")[1].rsplit(".", 1)[0]: s.traj for s in read_dataset(tmp_path / "v2d", with_media=False)}
    assert len(tars) == 2 and tars == {k: v for k, v in folder.items() if k in tars}


@pytest.mark.slow
def test_fresh_processes_with_other_hash_seed_and_threads_agree(corpus, one_per_shard, tmp_path):
    cmd = [str(Path(sys.executable).parent / "trajdata"), "annotate", "--no-ray", "--source", "local",
           "--input", str(corpus), "--samples-per-shard", "1"]
    for name, extra in (("a", {"PYTHONHASHSEED": "1", "OPENCV_FOR_THREADS_NUM": "1", "OMP_NUM_THREADS": "1"}),
                        ("b", {"PYTHONHASHSEED": "4242", "OPENCV_FOR_THREADS_NUM": "2", "OMP_NUM_THREADS": "2"})):
        subprocess.run(cmd + ["--output", str(tmp_path / name)], env={**os.environ, **extra}, check=True,
                       capture_output=True)
    digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(d)}  # noqa: E731
    assert digest(tmp_path / "a") == digest(tmp_path / "b") == digest(one_per_shard)
