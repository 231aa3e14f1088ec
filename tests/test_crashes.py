"""Crashes: a killed Ray worker, a killed driver, and errors retried by ``--resume``.

* A label actor's process is SIGKILLed twice mid-run: Ray Data restarts it and
  retries its rows; every input lands in the manifest exactly once and the
  shards equal an undisturbed in-process run byte for byte.
* A label actor is SIGKILLed while it writes a shard (the tar is still a temporary
  file): the chunk is redone, no partial file is left, the bytes are the same.
* The ``trajdata annotate`` driver is SIGKILLed mid-run, then run again with
  ``--resume``: the result is byte-identical to an uninterrupted run, and a
  poller that reads every ``traj-*.tar`` it can see during both runs never
  finds an incomplete tar under a final shard name.
* A sample that failed and is then fixed becomes ``ok`` after ``--resume``;
  its shard is rewritten, every other sample keeps its exact bytes.

The first three start Ray (and one a CLI subprocess): they are ``slow``.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from dataengine.format import manifest, trajformat
from dataengine.config import build_annotate_config, load_source
from dataengine.format.shards import ShardSample, iter_tar_members, list_shards, read_shard, write_shard
from dataengine.tools.synth import encode_jpeg, make_corpus, render_image, write_video
from dataengine.format.validate import validate_dataset
from pipelines.annotate import Resources, annotate

VENV_BIN = Path(sys.executable).parent


def config(media: Path, per_shard: int):
    return build_annotate_config(source=vars(load_source("local", str(media))),
                                 output={"samples_per_shard": per_shard})


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(directory)}


def keys_once(out: Path) -> list[str]:
    keys = manifest.read_manifest(out).column("key").to_pylist()
    assert len(keys) == len(set(keys)), sorted(keys)
    return sorted(keys)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash-corpus")
    make_corpus(out, videos=5, images=3, seed=11, n_frames=32)
    return out


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An undisturbed in-process run (the existing tests show Ray gives the same bytes)."""
    out = tmp_path_factory.mktemp("reference")
    annotate(config(corpus / "media", 2), str(out), use_ray=False)
    return out


# ------------------------------------------------------------- worker killed
def label_actor_pids() -> list[int]:
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title.startswith("ray::") and "LabelActor" in title:
            pids.append(p.pid)
    return pids


@pytest.mark.slow
def test_killed_label_actor_is_restarted_and_nothing_is_lost(corpus, reference, tmp_path):
    out = tmp_path / "out"
    n_inputs = len(keys_once(reference))
    killed: list[int] = []

    calls = []

    def on_progress(done: int, total: int | None) -> None:
        # Kill the actors after the first chunk comes back and again (restarted selves) after the second.
        calls.append(done)
        if len(calls) in (1, 2):
            deadline = time.time() + 60
            while not (pids := [p for p in label_actor_pids() if p not in killed]) and time.time() < deadline:
                time.sleep(0.2)
            assert pids, "no live label actor process found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    try:
        annotate(config(corpus / "media", 2), str(out), Resources(cpus=2, object_store_mb=256),
                 on_progress=on_progress)
    finally:
        from pipelines.runtime import shutdown_ray
        shutdown_ray()
    assert len(killed) >= 2
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in killed)
    assert len(keys_once(out)) == n_inputs
    assert set(manifest.read_manifest(out).column("status").to_pylist()) == {"ok"}
    assert digests(out) == digests(reference)
    assert validate_dataset(out) == []


# ------------------------------------------------------------- worker killed while writing a shard
@pytest.mark.slow
def test_worker_killed_while_writing_a_shard(tmp_path):
    """A label actor is SIGKILLed while its shard is still a temporary file (large noise images make
    the write take long enough to see): the chunk is redone, nothing partial stays, same bytes."""
    import cv2

    media = tmp_path / "media"
    make_corpus(tmp_path / "corpus", videos=2, images=1, seed=12, n_frames=16)
    shutil.copytree(tmp_path / "corpus" / "media", media)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(media / f"noise_{i}.png"), rng.integers(0, 256, (1600, 1600, 3), dtype=np.uint8))
    reference = tmp_path / "reference"
    annotate(config(media, 2), str(reference), use_ray=False)

    out = tmp_path / "out"
    killed: list[tuple[int, str]] = []
    stop = threading.Event()

    def kill_first_writer() -> None:
        while not stop.is_set() and not killed:
            names = [e.name for e in os.scandir(out)] if out.is_dir() else []
            for name in names:
                if name.startswith(".traj-") and ".tar.tmp-" in name:
                    pid = int(name.split(".tmp-")[1].split("-")[0])
                    if pid != os.getpid() and pid in label_actor_pids():
                        os.kill(pid, signal.SIGKILL)
                        killed.append((pid, name))
                        break
            time.sleep(0.001)

    watcher = threading.Thread(target=kill_first_writer, daemon=True)
    watcher.start()
    try:
        # a file:// URL: the same code path as any remote filesystem
        annotate(config(media, 2), out.as_uri(), Resources(cpus=2, object_store_mb=256))
    finally:
        stop.set()
        watcher.join()
        from pipelines.runtime import shutdown_ray
        shutdown_ray()
    assert killed, "no shard was seen half-written"
    assert not psutil.pid_exists(killed[0][0]) or psutil.Process(killed[0][0]).status() == psutil.STATUS_ZOMBIE
    assert not list(out.glob(".*.tmp-*")) and not (out / ".listing").exists()
    assert keys_once(out) == keys_once(reference)
    assert set(manifest.read_manifest(out).column("status").to_pylist()) == {"ok"}
    assert digests(out) == digests(reference)
    assert (out / "README.md").read_bytes() == (reference / "README.md").read_bytes()
    assert validate_dataset(out) == []


# ------------------------------------------------------------- driver killed
def tar_is_complete(data: bytes) -> bool:
    """Every member's data is present and the archive ends with its two zero blocks."""
    if len(data) < 1024 or len(data) % 512:
        return False
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                if m.offset_data + m.size > len(data):
                    return False
            end = tf.offset
    except tarfile.TarError:
        return False
    return len(data) - end >= 1024 and not data[end:end + 1024].strip(b"\0")


class TarPoller(threading.Thread):
    """Reads every final-named shard it sees, as fast as it can, until stopped."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.stop, self.checked, self.bad = out, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.out.glob("traj-*.tar") if self.out.is_dir() else []:
                try:
                    data = p.read_bytes()       # os.replace is atomic: old or new file, whole
                except FileNotFoundError:
                    continue
                self.checked += 1
                if not tar_is_complete(data):
                    self.bad.append((p.name, len(data)))
            time.sleep(0.005)


def run_cli(args: list[str], out: Path, kill_when=None, timeout: float = 600) -> tuple[int, list[psutil.Process]]:
    """Run ``trajdata annotate``; SIGKILL it when ``kill_when(out)`` turns true. Returns (rc, descendants)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen([str(VENV_BIN / "trajdata"), "annotate", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    descendants: dict[int, psutil.Process] = {}
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            try:
                for c in psutil.Process(proc.pid).children(recursive=True):
                    descendants.setdefault(c.pid, c)
            except psutil.NoSuchProcess:
                pass
            if kill_when is not None and kill_when(out):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        rc = proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, list(descendants.values())


def reap(processes: list[psutil.Process], grace: float = 10.0) -> None:
    """Ray's head processes outlive a SIGKILLed driver for a while; end the ones we started."""
    deadline = time.time() + grace
    while time.time() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes):
        time.sleep(0.5)
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
def test_driver_killed_then_resume_gives_the_same_shards(corpus, reference, tmp_path):
    out = tmp_path / "out"
    args = ["--source", "local", "--input", str(corpus / "media"), "--output", str(out), "--cpus", "2",
            "--samples-per-shard", "2"]
    n_parts = len(list((reference / "manifest").glob("part-*.parquet")))

    def mid_run(o: Path) -> bool:
        parts = list((o / "manifest").glob("part-*.parquet")) if (o / "manifest").is_dir() else []
        return 1 <= len(parts) < n_parts

    poller = TarPoller(out)
    poller.start()
    spawned: list[psutil.Process] = []
    try:
        rc, procs = run_cli(args, out, kill_when=mid_run)
        spawned += procs
        assert rc == -signal.SIGKILL, "the run finished before it could be killed"
        done_before = manifest.done_parts(out)
        assert 1 <= len(done_before) < n_parts
        reap(spawned)           # the killed run's Ray must not compete with the resumed one
        rc, procs = run_cli(args + ["--resume"], out)
        spawned += procs
        assert rc == 0
    finally:
        poller.stop.set()
        poller.join()
        reap(spawned, grace=5.0)
    assert poller.checked > 0 and poller.bad == []
    assert not list(out.glob(".*.tmp-*")), "a partial tar of the killed run was left behind"
    assert keys_once(out) == keys_once(reference)
    assert digests(out) == digests(reference)
    assert validate_dataset(out) == []


def test_tar_completeness_check_sees_a_cut_tar(tmp_path):
    labels = np.zeros((1, 8, 8), np.int32)
    labels[0, 2:6, 2:6] = 1
    traj = trajformat.labels_to_traj(labels, [0], [0.0], [0])
    write_shard(tmp_path / "s.tar", [ShardSample(f"k{i}", "jpg", bytes(3000), "", {}, traj) for i in range(3)])
    data = (tmp_path / "s.tar").read_bytes()
    assert tar_is_complete(data)
    assert not tar_is_complete(data[: len(data) // 2 // 512 * 512])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        tf.getmembers()
        end = tf.offset
    assert not tar_is_complete(data[:end])      # all members, but no end-of-archive blocks


# ------------------------------------------------------------- errors retried
def test_resume_retries_error_rows_after_the_input_is_fixed(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    video = tmp_path / "video.mp4"
    write_video(video, seed=5, n_frames=16, width=128, height=96)
    jpeg = encode_jpeg(render_image(6, 160, 120)[0])
    # samples_per_shard 2: chunk 0 = a_bad + b_good, chunk 1 = c_bad + d_bad, chunk 2 = e_good + f_good.
    (media / "a_bad.mp4").write_bytes(b"\0not a video" * 100)
    (media / "b_good.jpg").write_bytes(jpeg)
    (media / "c_bad.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (media / "d_bad.mp4").write_bytes(b"")
    shutil.copy(video, media / "e_good.mp4")
    (media / "f_good.jpg").write_bytes(jpeg)
    out = tmp_path / "out"
    annotate(config(media, 2), str(out), use_ray=False)
    status = {r["key"]: r["status"] for r in manifest.read_manifest(out).to_pylist()}
    assert status == {"a_bad": "error", "b_good": "ok", "c_bad": "error", "d_bad": "error",
                      "e_good": "ok", "f_good": "ok"}
    # one shard per chunk and media series; chunk 1 (two errors) has none
    assert [p.name for p in list_shards(out)] == ["traj-jpg-000000.tar", "traj-jpg-000002.tar",
                                                  "traj-mp4-000002.tar"]
    before = {p.name: p.read_bytes() for p in list_shards(out)}
    untouched = (out / "manifest" / "part-000002.parquet").stat().st_mtime_ns

    shutil.copy(video, media / "a_bad.mp4")      # fixed; d_bad stays broken
    (media / "c_bad.jpg").write_bytes(jpeg)
    annotate(config(media, 2), str(out), use_ray=False, resume=True)

    rows = {r["key"]: r for r in manifest.read_manifest(out).to_pylist()}
    assert len(rows) == 6 and keys_once(out) == sorted(rows)
    assert {k: r["status"] for k, r in rows.items()} == {
        "a_bad": "ok", "b_good": "ok", "c_bad": "ok", "d_bad": "error", "e_good": "ok", "f_good": "ok"}
    assert rows["a_bad"]["shard"] == "traj-mp4-000000.tar" and rows["c_bad"]["shard"] == "traj-jpg-000001.tar"
    assert rows["b_good"]["shard"] == "traj-jpg-000000.tar"
    # chunk 2 had no errors: neither its shards nor its manifest part was touched
    for name in ("traj-jpg-000002.tar", "traj-mp4-000002.tar"):
        assert (out / name).read_bytes() == before[name]
    assert (out / "manifest" / "part-000002.parquet").stat().st_mtime_ns == untouched
    # in the rewritten shard the old sample keeps every member byte for byte
    (tmp_path / "old.tar").write_bytes(before["traj-jpg-000000.tar"])
    old = {(k, e): d for k, e, d in iter_tar_members(tmp_path / "old.tar")}
    new = {(k, e): d for k, e, d in iter_tar_members(out / "traj-jpg-000000.tar")}
    assert {m: d for m, d in new.items() if m[0] == "b_good"} == {m: d for m, d in old.items() if m[0] == "b_good"}
    assert [s.key for s in read_shard(out / "traj-mp4-000000.tar")] == ["a_bad"]
    assert validate_dataset(out) == []
    # and the repaired dataset is exactly what a fresh run over the fixed inputs gives
    fresh = tmp_path / "fresh"
    annotate(config(media, 2), str(fresh), use_ray=False)
    assert digests(out) == digests(fresh)
