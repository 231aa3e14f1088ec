"""The listing streams into labelling, in blocks that grow, and a retried block redoes only what is missing.

* ``chunk_blocks``: one chunk per block for the first chunks, then blocks that double up to
  their caps; every chunk task exactly once, in listing order.
* ``annotate_chunk`` on a chunk whose manifest part is already written returns its summary
  without labelling or writing anything (a block retried after its worker died).
* With Ray, the listing runs on the dataset's read side: a source whose listing blocks after
  a few samples still gets its first chunks labelled and written while it is blocked; the
  progress total grows as the listing goes on; the output equals an in-process run's bytes.
"""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from dataengine.config import build_annotate_config, load_source
from dataengine.format import manifest
from dataengine.format.outputfs import Output
from dataengine.format.shards import list_shards
from dataengine.sources import SampleRef, list_samples
from dataengine.stages.writer import ChunkTask, annotate_chunk, chunk_blocks, plan_chunks
from dataengine.tools.synth import make_corpus
from pipelines.annotate import Resources, annotate


def config(media: Path, per_shard: int):
    return build_annotate_config(source=vars(load_source("local", str(media))),
                                 output={"samples_per_shard": per_shard})


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in list_shards(directory) + [directory / "README.md"]}


def task(chunk: int, samples: int) -> ChunkTask:
    refs = [SampleRef(key=f"k{chunk}_{i}", source="s", uri="", media_type="", ext="", index=chunk * 100 + i)
            for i in range(samples)]
    return ChunkTask(chunk, refs, retry=False)


def test_blocks_start_single_then_double_up_to_their_caps():
    tasks = [task(c, 2) for c in range(40)]
    blocks = list(chunk_blocks(iter(tasks), single=3, max_chunks=8, max_samples=100))
    assert [len(b) for b in blocks] == [1, 1, 1, 2, 4, 8, 8, 8, 7]
    assert [t.chunk for b in blocks for t in b] == list(range(40))
    # the sample cap: 8 chunks of 2 samples would be 16 > 6 samples
    capped = list(chunk_blocks(iter(tasks), single=0, max_chunks=8, max_samples=6))
    assert max(sum(len(t.refs) for t in b) for b in capped) == 6
    assert [t.chunk for b in capped for t in b] == list(range(40))
    # a chunk larger than the sample cap still goes, alone
    assert [len(b) for b in chunk_blocks(iter([task(0, 9), task(1, 9)]), single=0, max_samples=4)] == [1, 1]
    # small runs: one chunk per block throughout
    assert all(len(b) == 1 for b in chunk_blocks(iter(tasks), single=256))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream-corpus")
    make_corpus(out, videos=2, images=6, seed=41, n_frames=16)
    return out / "media"


@pytest.fixture(scope="module")
def reference(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream-reference")
    annotate(config(media, 1), str(out), use_ray=False)
    return out


def test_a_chunk_already_written_is_not_redone(media, reference, tmp_path):
    cfg = config(media, 1)
    out = Output(str(reference))
    first = next(plan_chunks(list_samples(cfg.source), out, set(), 1))
    before = {p.name: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    # no labeller: a chunk that is done must not reach it
    summary = annotate_chunk(first, cfg, None, out)
    assert summary["chunk"] == first.chunk and summary["samples"] == len(first.refs) == 1
    assert summary["ok"] + summary["error"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()} == before


def test_labelling_starts_while_the_listing_is_blocked(media, reference, tmp_path, monkeypatch):
    import ray

    from dataengine import sources
    from pipelines.runtime import shutdown_ray

    release, blocked_mark = tmp_path / "release-listing", tmp_path / "listing-blocked"
    blocked_after = 4

    def slow_listing() -> None:
        """The folder lister stops after a few samples until the test releases it; in the test's own
        process (a listing on the driver would block the whole run) and, as a Ray worker setup
        hook, in every Ray worker."""
        import os as _os
        import time as _time

        from dataengine import sources

        real = sources._LISTERS["folder"]

        def blocked(src):
            for i, item in enumerate(real(src)):
                if i == blocked_after:
                    open(blocked_mark, "w").close()
                    while not _os.path.exists(release):
                        _time.sleep(0.05)
                yield item

        sources._LISTERS["folder"] = blocked

    out = tmp_path / "out"
    totals: list[tuple[int, int | None]] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            annotate(config(media, 1), str(out), Resources(cpus=2, object_store_mb=256),
                     on_progress=lambda done, total: totals.append((done, total)))
        except BaseException as e:  # reported by the test thread
            failure.append(e)

    monkeypatch.setitem(sources._LISTERS, "folder", sources._LISTERS["folder"])  # restored afterwards
    slow_listing()
    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": slow_listing})
    try:
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        deadline = time.time() + 240
        while not list((out / "manifest").glob("part-*.parquet")) and time.time() < deadline and runner.is_alive():
            time.sleep(0.1)
        parts = sorted(p.name for p in (out / "manifest").glob("part-*.parquet"))
        assert parts, f"no chunk was written while the listing was blocked: {failure}"
        assert blocked_mark.exists() and not release.exists()   # so it was written while the listing waited
        # only chunks listed before the block can be done; the run waits for the rest of the listing
        assert all(int(name[5:-8]) < blocked_after for name in parts), parts
        assert runner.is_alive() and not (out / "README.md").exists()
        release.touch()
        runner.join(timeout=300)
        assert not runner.is_alive() and not failure, failure
    finally:
        release.touch()
        shutdown_ray()
    n = manifest.read_manifest(reference).num_rows
    keys = manifest.read_manifest(out).column("key").to_pylist()
    assert sorted(keys) == sorted(set(keys)) and len(keys) == n
    assert digests(out) == digests(reference)
    # the bar's total grew with the listing: the first results came before the whole listing
    assert totals[0][1] < n and totals[-1] == (n, n)
