"""Shards written where the work is: one chunk of input samples in, its shards and manifest part out.

Input sample ``index`` belongs to chunk ``index // samples_per_shard``. The
listing is grouped into chunk tasks (``plan_chunks``) and those into blocks
(``chunk_blocks``: one chunk per block at first, growing blocks later) as it
streams, so nothing waits for the whole listing and nothing holds it. Whoever
runs a chunk (``annotate_chunk``: a Ray actor, or the in-process runner)
labels its samples and writes the chunk's shards itself, one per media series
(``traj-mp4-000003.tar``, ``traj-jpg-000003.tar``; temporary name, then move),
and then its manifest part: the part is the "done" marker, so a crash between
the two only repeats that chunk, a repeated chunk writes the same bytes, and a
chunk whose part is already there is not run again (``finished_chunk``).
Rows are sorted by input index, so shards do not depend on scheduling.

On ``resume`` finished chunks are skipped, except that their ``error`` rows
are retried; the chunk is then rewritten from its old samples plus the new.
The output is an ``Output`` (a local directory or a filesystem URL); workers
on every node open the same one.
"""
from __future__ import annotations

import heapq
import io
import itertools
import json
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from dataengine import ENGINE_VERSION
from dataengine.config import AnnotateConfig, labelling_part, setting_differences, to_dict
from dataengine.errors import OutputExists, UserError
from dataengine.format import manifest
from dataengine.format.outputfs import Output
from dataengine.format.shards import (CARD, ShardSample, chunk_shard_names, dataset_card, read_shard, series_of,
                                      series_shard_name, write_series_streams)
from dataengine.sources import MediaError, SampleRef, read_media
from dataengine.stages.annotate import encode_row, label_row, read_and_decode, ref_to_row, sample_meta
from dataengine.stages.labeller import Labeller

MANIFEST_DIR = "manifest"


def manifest_row(row: dict[str, Any], shard: str) -> dict[str, Any]:
    info = json.loads(row.get("info") or "{}")
    stats = info.get("stats", {})
    timings = json.loads(row.get("timings") or "{}")
    ok = not row["error"]
    return {
        "key": row["key"], "source": row["source"], "source_uri": row["uri"],
        "media_type": info.get("media_type") or row["media_type"],
        "status": "ok" if ok else "error", "reason": row["error"], "shard": shard if ok else "",
        "input_index": row["index"], "n_frames": info.get("n_source_frames", 0),
        **{k: stats.get(k) for k in ("n_annotated", "n_keyframes", "n_trajectories", "coverage",
                                     "height", "width", "mean_trajectory_length")},
        **{f"seconds_{s}": timings.get(s, 0.0) for s in manifest.STAGES},
    }


class RunConfigMismatch(UserError, RuntimeError):
    pass


# ------------------------------------------------------------------ setup (driver) and planning (read side)
def read_part(out: Output, chunk: int, columns: list[str] | None = None) -> pa.Table:
    with out.open_read(manifest.part_name(chunk)) as f:
        return pq.read_table(f, schema=manifest.SCHEMA, columns=columns)


def write_run_json(out: Output, cfg: AnnotateConfig, status: str, extra: dict[str, Any] | None = None) -> None:
    import numpy  # noqa: F401  (versions only)
    data = {
        "status": status, "engine_version": ENGINE_VERSION, "config": to_dict(cfg),
        "config_hash": cfg.model_hash(), "python": platform.python_version(),
        "versions": {"numpy": numpy.__version__, "pyarrow": pa.__version__},
        **(extra or {}),
    }
    out.write_bytes("run.json", json.dumps(data, indent=2, sort_keys=True).encode())


def open_run(out: Output, cfg: AnnotateConfig, resume: bool) -> set[int]:
    """Check the output is fit for this run, clear what a killed run left; returns the done chunks."""
    if out.fs.get_file_info(out.root).type == FileType.File:
        raise OutputExists(f"--output {out} is a file, not a directory")
    done = manifest.done_parts(out)
    if done and not resume:
        raise RunConfigMismatch(f"{out} already holds annotated shards; pass --resume to continue "
                                f"or choose a new --output")
    if resume and out.exists("run.json"):
        old = json.loads(out.read_bytes("run.json"))
        differences = [] if old.get("config_hash") == cfg.model_hash() else _differences(old, cfg)
        # The chunks (input index // samples_per_shard) and their shard names must be the recorded ones, or the
        # resumed run would write inputs again that a finished chunk already holds.
        recorded = (old.get("config") or {}).get("output") or {}
        for key in ("samples_per_shard", "prefix"):
            if key in recorded and recorded[key] != getattr(cfg.output, key):
                differences.append(f"output.{key}: {recorded[key]!r} -> {getattr(cfg.output, key)!r}")
        if differences:
            raise RunConfigMismatch(f"{out} was annotated with other labelling settings ({'; '.join(differences[:6])}"
                                    f"{f'; and {len(differences) - 6} more' if len(differences) > 6 else ''}); "
                                    f"resume with the settings in its run.json or choose a new --output")
    out.makedirs()
    # partial files of a killed run, never under a final name; no worker of this run writes yet
    out.sweep_tmp()
    out.sweep_tmp(MANIFEST_DIR)
    write_run_json(out, cfg, status="running")
    return done


def _differences(old_run: dict[str, Any], cfg: AnnotateConfig) -> list[str]:
    """The labelling settings that differ between an output's run.json and this run (``section.key: old ->
    new``; speed-only settings never differ). A run.json without its config (not written by this engine)
    differs by its hash alone. Runs whose hash still covered the speed-only settings resume by their recorded
    settings."""
    recorded = old_run.get("config")
    if not isinstance(recorded, dict):
        return [f"config hash {old_run.get('config_hash')} vs {cfg.model_hash()}"]
    mine = json.loads(json.dumps(cfg.labelling_settings()))      # as run.json holds it (tuples read as lists)
    theirs = {k: v for k, v in labelling_part(recorded).items() if k in mine}
    # Settings added since the run was written took the value of an older one then: stills were cut with the
    # video settings (so such a run resumes with `segmenter: {still_superpixels: ..., ...}` set to those).
    seg = theirs.get("segmenter")
    if isinstance(seg, dict):
        for new_key, old_key in (("still_superpixels", "superpixels"), ("still_merge_threshold", "merge_threshold")):
            if new_key not in seg and old_key in seg:
                seg[new_key] = seg[old_key]
    return setting_differences(theirs, mine)


@dataclass
class ChunkTask:
    chunk: int
    refs: list[SampleRef]
    retry: bool          # the chunk is done: these refs are its error rows, to be merged with the rest

    def to_json(self) -> dict[str, Any]:
        return {"chunk": self.chunk, "retry": self.retry, "refs": [asdict(r) for r in self.refs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ChunkTask":
        return cls(int(data["chunk"]), [SampleRef(**d) for d in data["refs"]], bool(data["retry"]))


def tasks_to_text(tasks: list[ChunkTask]) -> str:
    # JSON (ASCII) keeps listed names that are not valid UTF-8 intact through Arrow strings
    return json.dumps([t.to_json() for t in tasks])


def tasks_from_text(text: str) -> list[ChunkTask]:
    return [ChunkTask.from_json(d) for d in json.loads(text)]


def plan_chunks(refs: Iterable[SampleRef], out: Output, done: set[int], per_shard: int) -> Iterator[ChunkTask]:
    """Group the (lazy, index-ordered) listing into the chunk tasks that still need work.

    Chunks before the last finished one are held back until the listing has passed it: every finished
    chunk is checked against the listing (``_check_unchanged``) before any gap between them is labelled,
    so a changed input is refused before it is written anywhere."""
    last = -1                # the listing order is checked, not assumed
    last_done = max(done, default=-1)
    held: list[ChunkTask] = []
    for c, group in itertools.groupby(refs, key=lambda r: r.index // per_shard):
        if c <= last:
            raise RuntimeError(f"the listing returned chunk {c} after chunk {last}; sample indices must increase")
        last = c
        task = None
        if c not in done:
            task = ChunkTask(c, list(group), retry=False)
        else:
            part = read_part(out, c, ["input_index", "status", "key", "source_uri"]).to_pydict()
            group = list(group)
            recorded = {i: (k, _file_name(u)) for i, k, u in
                        zip(part["input_index"], part["key"], part["source_uri"])}
            grown = _check_unchanged(c, group, recorded)
            errors = {i for i, s in zip(part["input_index"], part["status"]) if s == "error"}
            retry = [r for r in group if r.index in errors] + grown
            if retry:
                task = ChunkTask(c, retry, retry=True)
        if c < last_done:
            if task is not None:
                held.append(task)
            continue
        yield from held          # every finished chunk has been checked
        held = []
        if task is not None:
            yield task
    yield from held              # a listing that ended before the last finished chunk


class InputChanged(UserError, RuntimeError):
    pass


RESUME_HINT = "; resume with the input as it was, or annotate the new input into another --output"


def _file_name(uri: str) -> str:
    """The last name of a media address (a tar member's own name): the input folder may have moved."""
    return (uri or "").rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def _check_unchanged(chunk: int, refs: list[SampleRef], recorded: dict[int, tuple[str, str]]) -> list[SampleRef]:
    """A finished chunk's inputs, as a resumed run's listing gives them, must be those it was written with:
    inputs added, removed or renamed before its end shift the chunks, and finished ones would then hold other
    inputs than the listing says (some inputs twice in the manifest, some never). Inputs past the chunk's
    last recorded one (a listing that grew at its end, e.g. a larger ``--limit``) are fine: returned, to be
    labelled into the chunk."""
    last = max(recorded, default=-1)
    for r in refs:
        was = recorded.get(r.index)
        # keys alone are not enough: names that clean up to one key take -1, -2 by what else is listed
        # (an error row without a media address, e.g. a clip that was missing, may have one now)
        if was is not None and (was[0] != r.key or (was[1] and was[1] != _file_name(r.uri))):
            now = r.key if was[0] != r.key else f"{r.key} ({_file_name(r.uri)}, was {was[1]})"
            raise InputChanged(f"the input changed since this output was written: input {r.index} (chunk {chunk}) "
                               f"was {was[0]!r}, the listing now gives {now!r}" + RESUME_HINT)
        if was is None and r.index < last:
            raise InputChanged(f"the input changed since this output was written: chunk {chunk} has no input "
                               f"{r.index}, the listing now gives {r.key!r} there" + RESUME_HINT)
    return [r for r in refs if r.index > last]


def chunk_blocks(tasks: Iterable[ChunkTask], single: int = 256, max_chunks: int = 64,
                 max_samples: int = 1024) -> Iterator[list[ChunkTask]]:
    """Group chunk tasks into the units one worker call runs (one Ray Data block each).

    The first ``single`` chunks go one per block: a small run never waits behind a slow chunk
    and the first results show at once. After that blocks double in size, up to ``max_chunks``
    chunks and ``max_samples`` samples (at least one chunk): the scheduler's cost per block is
    then shared by many chunks, so the driver stays flat with the number of chunks.
    """
    size, listed, block, samples = 1, 0, [], 0
    for task in tasks:
        if block and (len(block) >= size or samples + len(task.refs) > max_samples):
            yield block
            if listed >= single:
                size = min(max_chunks, size * 2)
            block, samples = [], 0
        block.append(task)
        samples += len(task.refs)
        listed += 1
    if block:
        yield block


# ------------------------------------------------------------------ worker: one chunk
def _decoded(refs: list[SampleRef], cfg: AnnotateConfig, ahead: int) -> Iterator[dict[str, Any]]:
    """Decoded rows in order; with ``ahead`` > 0 a thread decodes that many samples ahead, so a GPU
    labeller is not idle while the next clip decodes (PyAV and OpenCV release the GIL)."""
    if ahead <= 0:
        for r in refs:
            yield read_and_decode(ref_to_row(r), cfg)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        queue = [pool.submit(read_and_decode, ref_to_row(r), cfg) for r in refs[:ahead]]
        for i in range(len(refs)):
            if i + ahead < len(refs):
                queue.append(pool.submit(read_and_decode, ref_to_row(refs[i + ahead]), cfg))
            yield queue.pop(0).result()


def annotate_chunk(task: ChunkTask, cfg: AnnotateConfig, labeller: Labeller, out: Output,
                   decode_ahead: int = 0) -> dict[str, Any]:
    """Run the stage calls on every sample of the chunk, then write its shards and manifest part.

    A chunk whose output is already complete is not redone: Ray retries a whole block when its
    worker dies, and the chunks of that block that were written before keep their files."""
    finished = finished_chunk(out, task)
    if finished is not None:
        return finished
    rows = [encode_row(label_row(row, labeller), cfg) for row in _decoded(task.refs, cfg, decode_ahead)]
    return write_chunk(out, cfg, task.chunk, rows, task.retry)


def finished_chunk(out: Output, task: ChunkTask) -> dict[str, Any] | None:
    """The summary of a chunk whose manifest part already covers the task, else None."""
    if not out.exists(manifest.part_name(task.chunk)):
        return None
    part = read_part(out, task.chunk, ["input_index", "status"]).to_pydict()
    status = dict(zip(part["input_index"], part["status"]))
    mine = [status.get(r.index) for r in task.refs]
    # a retry task is done once its samples are no longer errors; one that fails again is
    # redone (the same bytes: the labeller is deterministic)
    if None in mine or (task.retry and "error" in mine):
        return None
    counts = Counter(mine)
    return {"chunk": task.chunk, "samples": len(task.refs), "ok": counts["ok"], "error": counts["error"], "bytes": 0}


def write_chunk(out: Output, cfg: AnnotateConfig, c: int, rows: list[dict[str, Any]], retry: bool) -> dict[str, Any]:
    """Write chunk ``c``'s shards (one per media series) and then its manifest part; returns a summary.

    Media are read from the source while the shards are written, one sample at a time (a chunk of 64
    local videos of a few GB each never sits in memory whole); a retried chunk's kept samples stream from
    its old shards the same way. A medium that cannot be read any more is that sample's error row."""
    prefix = cfg.output.prefix
    manifest_rows: list[dict[str, Any]] = []
    old_shards: list[str] = []
    retried = {r["index"] for r in rows}
    old_sources: dict[str, list[str]] = {}      # series -> the old shards holding kept samples of it
    if retry:  # keep what was already fine
        manifest_rows = [r for r in read_part(out, c).to_pylist() if r["input_index"] not in retried]
        old_shards = chunk_shard_names(out.names(), prefix, c)
        moved: dict[str, str] = {}              # kept key -> the shard it lives in now
        for name in old_shards:                 # a pass over the members without keeping media
            with out.open_read(name) as f:
                for s in read_shard(f, with_media=False):
                    if s.meta["input_index"] not in retried:
                        sources = old_sources.setdefault(series_of(s.media_ext), [])
                        if name not in sources:
                            sources.append(name)
                        moved[s.key] = series_shard_name(prefix, s.media_ext, c)
        # the manifest names the shard a kept sample now lives in (a pre-series name moves)
        for r in manifest_rows:
            if r["status"] == "ok" and r["key"] in moved:
                r["shard"] = moved[r["key"]]
    rows = sorted(rows, key=lambda r: r["index"])
    new_rows: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if not row["error"]:
            new_rows.setdefault(series_of(row["ext"]), []).append(row)

    def kept(series: str, name: str) -> Iterator[tuple[int, ShardSample | dict[str, Any]]]:
        # a retried input already in a shard (an attempt killed before its part was written, or a block Ray
        # ran again) is replaced by this attempt's result, never kept beside it
        with out.open_read(name) as f:
            for s in read_shard(f):
                if series_of(s.media_ext) == series and s.meta["input_index"] not in retried:
                    yield s.meta["input_index"], s

    def labelled(row: dict[str, Any]) -> ShardSample | None:
        try:
            ref = SampleRef(**{k: row[k] for k in SampleRef.__dataclass_fields__})
            media = read_media(ref, cfg.decode.max_media_bytes)
        except (MediaError, OSError) as e:
            row["error"] = f"media unreadable when writing the shard: {e}"
            return None
        return ShardSample(key=row["key"], media_ext=row["ext"], media=media, caption=row["caption"],
                           meta=sample_meta(row, cfg), traj=json.loads(row["traj"]))

    def stream(series: str) -> Iterator[ShardSample]:
        # merged by input index; a new sample's media are read only when its turn comes
        parts = [kept(series, name) for name in old_sources.get(series, [])]
        parts.append((row["index"], row) for row in new_rows.get(series, []))
        # (heapq.merge keeps the first value of its last iterable alive to the end: not for the usual one part)
        merged = parts[0] if len(parts) == 1 else heapq.merge(*parts, key=lambda p: p[0])
        for _, item in merged:
            sample = item if isinstance(item, ShardSample) else labelled(item)
            if sample is not None:
                yield sample

    # old_shards: series the chunk no longer fills, a pre-series name (known; no listing per chunk). A new
    # chunk may have been written before by an attempt killed before its part: the series its inputs can
    # fill are the only names that attempt could have left, so those the samples do not fill now go.
    if not retry:
        old_shards = sorted({series_shard_name(prefix, r["ext"], c) for r in rows})
    streams = {series: stream(series) for series in set(new_rows) | set(old_sources)}
    written = write_series_streams(out, prefix, c, streams, replaces=old_shards)
    # after the shards: a row whose media could not be read while writing is an error row now
    manifest_rows += [manifest_row(row, series_shard_name(prefix, row["ext"], c)) for row in rows]
    manifest_rows.sort(key=lambda r: r["input_index"])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([manifest.normalise_row(r) for r in manifest_rows],
                                        schema=manifest.SCHEMA), buf)
    out.write_bytes(manifest.part_name(c), buf.getvalue())
    status = Counter("error" if r["error"] else "ok" for r in rows)
    return {"chunk": c, "samples": len(rows), "ok": status["ok"], "error": status["error"],
            "bytes": sum(written.values())}


# ------------------------------------------------------------------ driver: the end
def finish_run(out: Output, cfg: AnnotateConfig, started: float, extra: dict[str, Any] | None = None,
               new: Counter[str] | None = None, done_before: set[int] | None = None) -> dict[str, Any]:
    """Clear leftovers of killed workers, write the dataset card and run.json; returns the totals.

    ``new``: the statuses of the chunks this run wrote from scratch (their summaries say them);
    then only the parts of the chunks ``done_before`` this run are read, not one per chunk."""
    out.sweep_tmp()
    out.sweep_tmp(MANIFEST_DIR)
    names = out.names()
    card = dataset_card(names, cfg.output.prefix)
    if card is not None:
        out.write_bytes(CARD, card.encode("utf-8"))
    counts: Counter[str] = Counter(new or {})
    for c in sorted(manifest.done_parts(out) if new is None else done_before or ()):  # one part at a time
        counts.update(read_part(out, c, ["status"]).column("status").to_pylist())
    counts = Counter({k: v for k, v in counts.items() if v})
    totals = {"samples": sum(counts.values()), "by_status": dict(counts),
              "seconds_wall": round(time.time() - started, 3)}
    write_run_json(out, cfg, status="complete", extra={"totals": totals, **(extra or {})})
    return totals
