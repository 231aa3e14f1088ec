"""Broken, odd and hostile inputs: each becomes exactly one manifest row with the right status.

The corpus (``fixtures.badcorpus``) holds ~70 inputs in three layouts (folder,
video2dataset tars, img2dataset tars + parquet), good samples beside bad ones.
Each layout is annotated in-process; the folder is annotated once more with
Ray (a different shard size, two label actors; ``slow``), which must
agree row for row and give the same ``traj.json`` for every sample. Around every run the whole temporary
tree (corpus, outputs, working directory) is snapshotted: nothing may change
outside the output directory.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from pathlib import Path

import pytest

from dataengine.format import manifest
from fixtures.badcorpus import LAYOUTS, make_bad_corpus
from dataengine.config import build_annotate_config
from dataengine.format.shards import list_shards, read_dataset
from dataengine.sources import MediaError, list_samples, media_path, read_media
from dataengine.format.validate import validate_dataset
from pipelines.annotate import Resources, annotate


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Every entry under ``root`` (bytes paths: some names are not UTF-8), never following links."""
    snap: dict[bytes, tuple] = {}
    for d, dirs, files in os.walk(os.fsencode(root), followlinks=False):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    snap[p] = ("file", st.st_size, hashlib.sha256(f.read()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                snap[p] = ("link", os.readlink(p))
            else:
                snap[p] = ("other", stat.S_IFMT(st.st_mode))
    return snap


def changed_outside(before: dict, after: dict, out: Path) -> list[str]:
    prefix = os.fsencode(out) + b"/"
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(os.fsdecode(p) for p in changed if not (p + b"/").startswith(prefix))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    expect = make_bad_corpus(root / "corpus")
    (root / "cwd").mkdir()
    return root, expect


def config(root: Path, layout: str, per_shard: int):
    return build_annotate_config(source={"name": layout, "format": LAYOUTS[layout], "path": str(root / "corpus" / layout)},
                                 output={"samples_per_shard": per_shard})


def run_guarded(root: Path, out: Path, fn) -> list[str]:
    """Run ``fn`` from a working directory inside ``root``; return paths changed outside ``out``."""
    before = snapshot(root)
    cwd = os.getcwd()
    os.chdir(root / "cwd")      # a relative "../x" write would land inside the snapshot
    try:
        fn()
    finally:
        os.chdir(cwd)
    return changed_outside(before, snapshot(root), out)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def local_run(request, world):
    root, expect = world
    layout = request.param
    out = root / f"out-{layout}"
    outside = run_guarded(root, out, lambda: annotate(config(root, layout, 8), str(out), use_ray=False))
    return layout, out, outside, {k.split("/", 1)[1]: e for k, e in expect.items() if e.layout == layout}


def check_rows(out: Path, expect: dict) -> dict[str, dict]:
    rows = manifest.read_manifest(out).to_pylist()
    counts = Counter(r["key"] for r in rows)
    assert [k for k, n in counts.items() if n > 1] == []
    assert set(counts) == set(expect), (set(counts) ^ set(expect))
    wrong = []
    for r in rows:
        e = expect[r["key"]]
        if r["status"] != e.status or (e.reason and not re.search(e.reason, r["reason"], re.I)):
            wrong.append(f"{r['key']} ({e.kind}): got {r['status']} {r['reason']!r}, want {e.status} /{e.reason}/")
        if r["status"] == "error":
            assert r["reason"] and "\n" not in r["reason"] and len(r["reason"]) <= 500
            assert r["shard"] == ""
        else:
            assert r["reason"] == "" and r["shard"], r
    assert not wrong, "\n".join(wrong)
    return {r["key"]: r for r in rows}


def test_corpus_covers_the_kinds(world):
    _, expect = world
    kinds = {e.kind for e in expect.values()}
    assert len(kinds) >= 40
    for layout in LAYOUTS:
        statuses = {e.status for e in expect.values() if e.layout == layout}
        assert statuses == {"ok", "error"}, layout
    reasons = {e.reason for e in expect.values() if e.status == "error"}
    assert len(reasons) >= 15


def test_every_input_once_with_its_status_and_reason(local_run):
    _, out, _, expect = local_run
    check_rows(out, expect)


def test_output_is_valid_and_holds_exactly_the_ok_samples(local_run):
    layout, out, _, expect = local_run
    assert validate_dataset(out) == []
    ok = {k for k, e in expect.items() if e.status == "ok"}
    samples = list(read_dataset(out))
    assert sorted(s.key for s in samples) == sorted(ok)
    for s in samples:
        assert s.media and s.traj["masklet"], s.key
        assert s.meta["source"] == layout


def test_nothing_written_outside_the_output(local_run):
    _, out, outside, _ = local_run
    assert outside == []
    assert list_shards(out)


@pytest.mark.slow
def test_ray_run_agrees_with_the_local_run(world):
    """One Ray run (3 logical CPUs, 2 label actors, other shard size) over the folder."""
    root, expect = world
    expect = {k.split("/", 1)[1]: e for k, e in expect.items() if e.layout == "media"}
    local = root / "out-media"
    if not (local / "run.json").is_file():     # the local run of this module normally made it
        annotate(config(root, "media", 8), str(local), use_ray=False)
    out = root / "ray-media"
    res = Resources(cpus=3, label_actors=2, object_store_mb=256)
    try:
        outside = run_guarded(root, out, lambda: annotate(config(root, "media", 5), str(out), res))
    finally:
        from pipelines.runtime import shutdown_ray
        shutdown_ray()
    assert outside == []
    rows = check_rows(out, expect)
    local_rows = {r["key"]: r for r in manifest.read_manifest(local).to_pylist()}
    assert {k: (r["status"], r["reason"]) for k, r in rows.items()} == \
        {k: (r["status"], r["reason"]) for k, r in local_rows.items()}
    assert validate_dataset(out) == []
    ray_traj = {s.key: s.traj for s in read_dataset(out, with_media=False)}
    local_traj = {s.key: s.traj for s in read_dataset(local, with_media=False)}
    assert ray_traj == local_traj


def test_media_path_checks_like_read_media(world, tmp_path):
    root, _ = world
    refs = {r.key: r for r in list_samples(config(root, "media", 8).source)}
    ok = refs["good_video_0"]
    assert media_path(ok) == ok.uri and Path(ok.uri).read_bytes() == read_media(ok)
    for key, match in (("fifo", "not a regular file"), ("dangling", "marked bad"), ("bad_caption", "marked bad")):
        if key in refs:
            with pytest.raises(MediaError, match=match):
                media_path(refs[key])
    with pytest.raises(MediaError, match="too large"):
        media_path(ok, max_bytes=10)
    from dataclasses import replace
    with pytest.raises(MediaError, match="changed since listing"):
        media_path(replace(ok, size=ok.size + 1))
    member = next(r for r in list_samples(config(root, "v2d", 8).source) if not r.error)
    with pytest.raises(MediaError, match="not a plain file"):
        media_path(member)
