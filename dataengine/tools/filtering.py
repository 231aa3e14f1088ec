"""``trajdata filter``: keep samples with enough coverage and objects; no model runs.

Decisions come from the manifest alone; kept samples are copied member for
member into new shards with the same chunk numbering. Every input row ends in
the output manifest: kept rows stay ``ok``, dropped ones become ``filtered``
with the reason, earlier ``error`` / ``filtered`` rows are carried unchanged.
A kept row whose shard cannot be read (or lacks it) becomes ``error`` with
the reason; the other shards are filtered as usual.
"""
from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from dataengine import ENGINE_VERSION
from dataengine.config import FilterConfig, to_dict
from dataengine.errors import ConfigError, InputError, OutputExists, first_line
from dataengine.format import manifest
from dataengine.format.outputfs import Output
from dataengine.format.shards import CARD, ShardSample, dataset_card, read_shard, write_shard_stream


def filter_reason(row: dict[str, Any], cfg: FilterConfig) -> str:
    """'' when the sample is kept, else why it is not (e.g. 'coverage 0.62 < 0.80')."""
    reasons = []
    if (row["coverage"] or 0.0) < cfg.min_coverage:
        reasons.append(f"coverage {row['coverage'] or 0.0:.2f} < {cfg.min_coverage:.2f}")
    if (row["n_trajectories"] or 0) < cfg.min_objects:
        reasons.append(f"trajectories {row['n_trajectories'] or 0} < {cfg.min_objects}")
    return "; ".join(reasons)


def filter_dataset(input_dir: str | Path, output_dir: str | Path, cfg: FilterConfig,
                   on_part: Callable[[int, int], None] | None = None, workers: int = 8) -> dict[str, Any]:
    """Filter an annotate output into ``output_dir``; either may be a path or a URL ``--output`` takes
    (``s3://``, ``gs://``, ``file://``, fsspec), so a run annotated to object storage is filtered there."""
    src, out = Output(str(input_dir)), Output(str(output_dir))
    parts = manifest.part_indices(src)
    if not parts:
        raise InputError(f"{src} has no manifest (manifest/part-*.parquet); is it an annotate output?")
    same = (Path(src.root).resolve() == Path(out.root).resolve() if src.local and out.local else
            src.uri.split("://", 1)[0] == out.uri.split("://", 1)[0] and src.root == out.root)
    if same:
        raise ConfigError("--output must differ from the input directory")
    if not 0.0 <= cfg.min_coverage <= 1.0:
        raise ConfigError(f"--min-coverage is a share of the frame from 0 to 1, got {cfg.min_coverage:g}")
    if cfg.min_objects < 0:
        raise ConfigError(f"--min-objects must be >= 0, got {cfg.min_objects}")
    # New parts and shards written among another dataset's would mix the two (and its parts past ours stay)
    if out.exists("") and _holds_anything(out):
        raise OutputExists(f"--output {out} is not empty; filter into a new folder (or remove this one first)")
    out.makedirs()
    counts = {"ok": 0, "filtered": 0, "error": 0}
    # Parts are independent and the work is reading and writing files (object storage: round trips), so a few
    # threads overlap it; results come back in part order, so the output is the same for any number of them.
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        for n, part_counts in enumerate(pool.map(lambda c: _filter_part(src, out, c, cfg), parts)):
            for k, v in part_counts.items():
                counts[k] = counts.get(k, 0) + v
            if on_part:
                on_part(n + 1, len(parts))
    finally:   # a failed part ends the run: the parts not started yet are not started
        pool.shutdown(cancel_futures=True)
    run = {"engine_version": ENGINE_VERSION, "command": "filter", "input": str(src),
           "filter": to_dict(cfg), "totals": {"samples": sum(counts.values()), "by_status": counts},
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if src.exists("run.json"):
        run["upstream"] = json.loads(src.read_bytes("run.json"))
    card = dataset_card(out.names(), ((run.get("upstream") or {}).get("config") or {}).get("output", {})
                        .get("prefix", "traj"))
    if card is not None:
        out.write_bytes(CARD, card.encode("utf-8"))
    out.write_bytes("run.json", json.dumps(run, indent=2, sort_keys=True).encode())
    return run["totals"]


def _filter_part(src: Output, out: Output, c: int, cfg: FilterConfig) -> dict[str, int]:
    """Filter manifest part ``c`` and its shards into ``out``; returns its rows' counts by status."""
    part = manifest.part_name(c)
    with manifest.readable_part(part), src.open_read(part) as f:
        rows = pq.read_table(f, schema=manifest.SCHEMA).to_pylist()
    keep: dict[str, str] = {}  # key -> shard name
    for r in rows:
        if r["status"] == "ok":
            reason = filter_reason(r, cfg)
            if reason:
                r.update(status="filtered", reason=reason, shard="")
            else:
                keep[r["key"]] = r["shard"]
    for shard in sorted(set(keep.values())):
        wanted = {k for k, sh in keep.items() if sh == shard}
        found: set[str] = set()
        try:   # copied a sample at a time: a shard of large videos is never in memory whole
            write_shard_stream(out, shard, _kept_samples(src, shard, wanted, found))
        except _Unreadable as e:  # a broken shard costs its own samples: error rows, the run goes on
            cause = e.__cause__
            said = f": {first_line(cause)}" if str(cause).strip() else ""
            message = f"shard {shard} unreadable: {type(cause).__name__}{said}"
            for r in rows:
                if keep.get(r["key"]) == shard:
                    r.update(status="error", reason=message, shard="")
            continue
        for r in rows:
            if r["key"] in wanted - found:
                r.update(status="error", reason=f"sample not found in shard {shard}", shard="")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([manifest.normalise_row(r) for r in rows], schema=manifest.SCHEMA), buf)
    out.write_bytes(part, buf.getvalue())
    return counts


class _Unreadable(Exception):
    """The input shard failed while its kept samples were copied (the cause is chained)."""


def _kept_samples(src: Output, shard: str, wanted: set[str], found: set[str]) -> Iterator[ShardSample]:
    try:
        with src.open_read(shard) as f:
            for s in read_shard(f):
                if s.key in wanted:
                    found.add(s.key)
                    yield s
    except Exception as e:    # reading only: a failure writing the output is not the input's and ends the run
        raise _Unreadable() from e


def _holds_anything(out: Output) -> bool:
    from pyarrow import fs as pafs

    if out.fs.get_file_info(out.root).type == pafs.FileType.File:
        raise OutputExists(f"--output {out} is a file, not a directory")
    return bool(out.fs.get_file_info(pafs.FileSelector(out.root, allow_not_found=True, recursive=False)))
