"""Past one machine: output URLs, shards written by workers, a real two-node Ray cluster.

* The tar writer gives exactly webdataset's ``TarWriter`` bytes (it replaces it in workers).
* ``--output`` as a ``file://`` URL and as an fsspec ``memory://`` URL gives the bytes of a
  plain-path run; a resumed URL run retries its errors like a path run.
* Slow: a head and a second node started with ``ray start`` (separate processes, one CPU
  each, own temp dirs); ``trajdata annotate --address`` labels on both (run.json names the
  nodes) and writes the bytes of a single-process run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataengine.format import manifest, trajformat
from dataengine.config import build_annotate_config, load_source
from dataengine.format.outputfs import Output
from dataengine.format.shards import ShardSample, list_shards, write_shard_to
from dataengine.tools.synth import make_corpus
from pipelines.annotate import annotate

ROOT = Path(__file__).resolve().parent.parent


def config(media: Path, per_shard: int):
    return build_annotate_config(source=vars(load_source("local", str(media))),
                                 output={"samples_per_shard": per_shard})


def digests(directory: Path) -> dict[str, str]:
    files = list_shards(directory) + [directory / "README.md"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale-corpus")
    make_corpus(out, videos=4, images=4, seed=31, n_frames=16)
    return out / "media"


@pytest.fixture(scope="module")
def single_process(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    annotate(config(corpus, 1), str(out), use_ray=False)
    return out


def test_tar_bytes_are_webdatasets(tmp_path):
    import webdataset as wds

    labels = np.zeros((2, 8, 8), np.int32)
    labels[:, 2:6, 3:7] = 1
    traj = trajformat.labels_to_traj(labels, [0, 1], [0.0, 0.1], [0])
    samples = [ShardSample(f"k{i}", ("mp4", "jpg", None)[i % 3], bytes(range(256)) * (i + 1) if i % 3 < 2 else None,
                           f"caption {i} \u00fc", {"i": i}, traj) for i in range(7)]
    ours, theirs = io.BytesIO(), io.BytesIO()
    size = write_shard_to(ours, samples)
    writer = wds.TarWriter(theirs, encoder=False, mtime=0, user="trajtok", group="trajtok", mode=0o644)
    for s in samples:
        writer.write(s.to_members())
    writer.close()
    assert ours.getvalue() == theirs.getvalue() and size == len(ours.getvalue())


def test_url_outputs_give_the_path_run_bytes(corpus, single_process, tmp_path):
    url_out = tmp_path / "url"
    annotate(config(corpus, 1), url_out.as_uri(), use_ray=False)
    assert digests(url_out) == digests(single_process)
    assert json.loads((url_out / "run.json").read_text())["status"] == "complete"
    assert not (url_out / ".listing").exists()

    # fsspec's in-memory filesystem: nothing of pyarrow's own, so every call goes through fsspec
    mem = Output("memory://trajtok-test/out")
    annotate(config(corpus, 1), mem.uri, use_ray=False)
    want = digests(single_process)
    got = {n: hashlib.sha256(mem.read_bytes(n)).hexdigest() for n in mem.names() if n in want}
    assert got == want
    rows = manifest.read_manifest(single_process).num_rows
    assert len(mem.names("manifest")) == rows == len(list((url_out / "manifest").glob("part-*.parquet")))


def test_filter_reads_and_writes_urls(corpus, single_process, tmp_path):
    """`trajdata filter` on a run annotated to a URL, into a URL (fsspec memory://, and file://): the files of
    a filter of the same run on plain paths (one thread there, four here), every input row once; `trajdata stats`,
    `validate` and `eval` read the result there."""
    from dataengine.config import FilterConfig
    from dataengine.tools.filtering import filter_dataset
    from dataengine.format.validate import validate_dataset
    from dataengine.tools.evaluate import evaluate_dirs
    from dataengine.tools.stats import collect

    counts = sorted(manifest.read_manifest(single_process).column("n_trajectories").to_pylist())
    cfg = FilterConfig(min_coverage=0.0, min_objects=counts[len(counts) // 2])      # keeps some, drops some
    local = tmp_path / "kept"
    totals = filter_dataset(single_process, local, cfg, workers=1)
    assert totals["by_status"]["ok"] and totals["by_status"]["filtered"]
    import pyarrow.parquet as pq

    def rows(data: bytes) -> list[dict]:     # the manifest less its timings (two annotate runs differ there)
        return [{k: v for k, v in r.items() if not k.startswith("seconds_")}
                for r in pq.read_table(io.BytesIO(data)).to_pylist()]

    want = {p.name: p.read_bytes() for p in local.iterdir() if p.is_file() and p.name != "run.json"}
    want.update({p.name: rows(p.read_bytes()) for p in (local / "manifest").iterdir()})
    mem_in = Output("memory://trajtok-filter/in")
    annotate(config(corpus, 1), mem_in.uri, use_ray=False)
    # 4 threads over the 8 parts here: the same files as one
    for target in ("memory://trajtok-filter/kept", (tmp_path / "kept-url").as_uri()):
        assert filter_dataset(mem_in.uri, target, cfg, workers=4) == totals
        out = Output(target)
        got = {n: out.read_bytes(n) for n in out.names() if n != "run.json"}
        got.update({n: rows(out.read_bytes(f"manifest/{n}")) for n in out.names("manifest")})
        assert got == want, target
        assert json.loads(out.read_bytes("run.json"))["upstream"]["status"] == "complete"
        # `trajdata stats` reads the URL too (the manifest and the filter's run.json)
        assert (collect(target).by_status, collect(target).filter) == (collect(local).by_status, collect(local).filter)
        # and `validate` / `eval` (the kept samples against themselves on disk: perfect)
        assert validate_dataset(target) == []
        assert evaluate_dirs(target, str(local))["recall_at_0.5"] == evaluate_dirs(str(local), target)["STQ"] == 1.0
    for same in (mem_in.uri, mem_in.uri + "/"):
        with pytest.raises(Exception, match="must differ"):
            filter_dataset(mem_in.uri, same, cfg)


def test_resume_on_a_url_retries_errors(tmp_path):
    media = tmp_path / "media"
    make_corpus(tmp_path / "c", videos=1, images=2, seed=33, n_frames=12)
    media.mkdir()
    for p in sorted((tmp_path / "c" / "media").iterdir()):
        (media / p.name).write_bytes(p.read_bytes())
    good = next(p for p in media.iterdir() if p.suffix == ".jpg")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])          # broken for the first run
    out = tmp_path / "out"
    annotate(config(media, 2), out.as_uri(), use_ray=False)
    status = {r["key"]: r["status"] for r in manifest.read_manifest(out).to_pylist()}
    assert status[good.stem] == "error" and sorted(set(status.values())) == ["error", "ok"]
    good.write_bytes(data)
    annotate(config(media, 2), out.as_uri(), use_ray=False, resume=True)
    assert set(manifest.read_manifest(out).column("status").to_pylist()) == {"ok"}
    fresh = tmp_path / "fresh"
    annotate(config(media, 2), str(fresh), use_ray=False)
    assert digests(out) == digests(fresh)


@pytest.mark.slow
def test_two_node_cluster_labels_on_both_nodes_and_matches_one_process(corpus, single_process, tmp_path):
    from pipelines.runtime import LoopbackCluster

    out = tmp_path / "two-nodes"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    with LoopbackCluster(nodes=2, cpus_per_node=1) as cluster:
        proc = subprocess.run(
            [sys.executable, "-c", "import cli; cli.trajdata_main()", "annotate", "--source", "local",
             "--input", str(corpus), "--output", out.as_uri(), "--samples-per-shard", "1",
             "--address", cluster.address],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert len(cluster.processes()) >= 4        # both raylets (and the head's GCS) were up
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not cluster.processes()                  # and are gone
    run = json.loads((out / "run.json").read_text())
    n = manifest.read_manifest(single_process).num_rows
    assert run["status"] == "complete" and run["totals"]["samples"] == n
    nodes = run["nodes"]
    assert len(nodes) == 2 and all(v["chunks"] >= 1 for v in nodes.values()), nodes
    assert sum(v["samples"] for v in nodes.values()) == n
    assert digests(out) == digests(single_process)


def test_decoding_ahead_in_a_thread_keeps_order_and_bytes(corpus):
    """GPU actors decode the next samples in a thread while the current one is labelled."""
    from dataengine.sources import list_samples
    from dataengine.stages.writer import _decoded

    cfg = config(corpus, 1)
    refs = list(list_samples(cfg.source))
    plain = [(r["key"], r["frames"], r["info"]) for r in _decoded(refs, cfg, 0)]
    ahead = [(r["key"], r["frames"], r["info"]) for r in _decoded(refs, cfg, 2)]
    assert [k for k, _, _ in plain] == [r.key for r in refs] and all(f for _, f, _ in plain)
    assert ahead == plain
