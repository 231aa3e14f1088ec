"""Assemble processed rows into shards: one manifest part per input chunk, one shard per chunk and series.

Input sample ``index`` belongs to chunk ``index // samples_per_shard``. When
every sample of a chunk has come back (in any order) the chunk's shards are
written, one per media series (``traj-mp4-000003.tar``, ``traj-jpg-000003.tar``;
temporary name, then rename), and then its manifest part: the part is the
"done" marker, so a crash between the two only repeats that chunk.
Rows are sorted by input index, so shards do not depend on scheduling.

On ``resume`` finished chunks are skipped, except that their ``error`` rows
are retried; the chunk is then rewritten from its old samples plus the new.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from dataengine import ENGINE_VERSION

from dataengine.format import atomic, manifest
from dataengine.config import AnnotateConfig, to_dict
from dataengine.errors import UserError
from dataengine.format.shards import (ShardSample, chunk_shards, read_shard, series_shard_name, write_dataset_card,
                     write_series)
from dataengine.sources import MediaError, SampleRef, read_media

log = logging.getLogger(__name__)


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


class DatasetWriter:
    def __init__(self, out_dir: str | Path, cfg: AnnotateConfig, resume: bool,
                 meta_fn: Callable[[dict[str, Any]], dict[str, Any]]):
        self.out = Path(out_dir)
        self.cfg = cfg
        self.per_shard = cfg.output.samples_per_shard
        self.meta_fn = meta_fn
        self.expected: dict[int, int] = defaultdict(int)
        self.pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.retry: dict[int, set[int]] = {}
        self.max_chunk_seen = -1
        self.listing_done = False
        self.started = time.time()
        self._prepare(resume)

    # -------------------------------------------------------------- setup
    def _prepare(self, resume: bool) -> None:
        run_json = self.out / "run.json"
        self.done = manifest.done_parts(self.out)
        if self.done and not resume:
            raise RunConfigMismatch(f"{self.out} already holds annotated shards; pass --resume to continue "
                                    f"or choose a new --output")
        if resume and run_json.is_file():
            old = json.loads(run_json.read_text())
            if old.get("config_hash") != self.cfg.model_hash():
                raise RunConfigMismatch(f"{self.out} was annotated with a different labelling config "
                                        f"(hash {old.get('config_hash')} vs {self.cfg.model_hash()}); "
                                        f"use a new --output")
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(".*.tmp-*"):  # partial tars of a killed run, never under a final name
            stale.unlink()
        for stale in (self.out / "manifest").glob(".*.tmp-*") if (self.out / "manifest").is_dir() else []:
            stale.unlink()
        for c in sorted(self.done):
            errors = {r["input_index"] for r in manifest.read_part(self.out, c) if r["status"] == "error"}
            if errors:
                self.retry[c] = errors
        self.write_run_json(status="running")

    def write_run_json(self, status: str, extra: dict[str, Any] | None = None) -> None:
        import numpy, pyarrow  # noqa: E401  (versions only)
        data = {
            "status": status, "engine_version": ENGINE_VERSION, "config": to_dict(self.cfg),
            "config_hash": self.cfg.model_hash(), "python": platform.python_version(),
            "versions": {"numpy": numpy.__version__, "pyarrow": pyarrow.__version__},
            **(extra or {}),
        }
        atomic.write_bytes(self.out / "run.json", json.dumps(data, indent=2, sort_keys=True))

    # ----------------------------------------------------------- planning
    def plan(self, refs: Iterable[SampleRef]) -> Iterator[SampleRef]:
        """Pass through the refs that still need work, counting what each chunk waits for."""
        for ref in refs:
            c = ref.index // self.per_shard
            if c > self.max_chunk_seen:
                self.max_chunk_seen = c
            if c in self.done and ref.index not in self.retry.get(c, ()):
                continue
            self.expected[c] += 1
            yield ref
        self.listing_done = True

    # ------------------------------------------------------------ writing
    def add(self, row: dict[str, Any]) -> list[int]:
        c = row["index"] // self.per_shard
        self.pending[c].append(row)
        return self.flush()

    def flush(self) -> list[int]:
        """Write every chunk that is complete; returns their indices."""
        written = []
        for c in sorted(self.pending):
            closed = self.listing_done or c < self.max_chunk_seen
            if closed and len(self.pending[c]) == self.expected[c]:
                self._write_chunk(c, self.pending.pop(c))
                written.append(c)
        return written

    def close(self) -> dict[str, Any]:
        self.listing_done = True
        self.flush()
        if self.pending:
            missing = {c: self.expected[c] - len(r) for c, r in self.pending.items()}
            raise RuntimeError(f"rows missing for chunks {missing}; rerun with --resume")
        write_dataset_card(self.out, self.cfg.output.prefix)
        table = manifest.read_manifest(self.out)
        counts: dict[str, int] = defaultdict(int)
        for s in table.column("status").to_pylist():
            counts[s] += 1
        totals = {"samples": table.num_rows, "by_status": dict(counts),
                  "seconds_wall": round(time.time() - self.started, 3)}
        self.write_run_json(status="complete", extra={"totals": totals})
        return totals

    def _write_chunk(self, c: int, rows: list[dict[str, Any]]) -> None:
        prefix = self.cfg.output.prefix
        samples: list[tuple[int, ShardSample]] = []
        manifest_rows: list[dict[str, Any]] = []
        if c in self.done:  # a retried chunk: keep what was already fine
            retried = {r["index"] for r in rows}
            manifest_rows = [r for r in manifest.read_part(self.out, c) if r["input_index"] not in retried]
            for path in chunk_shards(self.out, prefix, c):
                samples += [(s.meta["input_index"], s) for s in read_shard(path)]
            # the manifest names the shard a kept sample now lives in (a pre-series name moves)
            series = {s.key: series_shard_name(prefix, s.media_ext, c) for _, s in samples}
            for r in manifest_rows:
                if r["status"] == "ok" and r["key"] in series:
                    r["shard"] = series[r["key"]]
        for row in rows:
            name = series_shard_name(prefix, row["ext"], c)
            if not row["error"]:
                try:
                    ref = SampleRef(**{k: row[k] for k in SampleRef.__dataclass_fields__})
                    media = read_media(ref, self.cfg.decode.max_media_bytes)
                    samples.append((row["index"], ShardSample(
                        key=row["key"], media_ext=row["ext"], media=media, caption=row["caption"],
                        meta=self.meta_fn(row), traj=json.loads(row["traj"]))))
                except (MediaError, OSError) as e:
                    row["error"] = f"media unreadable when writing the shard: {e}"
            manifest_rows.append(manifest_row(row, name))
        samples.sort(key=lambda p: p[0])
        manifest_rows.sort(key=lambda r: r["input_index"])
        write_series(self.out, prefix, c, [s for _, s in samples])
        manifest.write_part(self.out, c, manifest_rows)
        self.done.add(c)
        self.retry.pop(c, None)
