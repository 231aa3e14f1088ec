"""``trajdata filter``: keep samples with enough coverage and objects; no model runs.

Decisions come from the manifest alone; kept samples are copied member for
member into new shards with the same chunk numbering. Every input row ends in
the output manifest: kept rows stay ``ok``, dropped ones become ``filtered``
with the reason, earlier ``error`` / ``filtered`` rows are carried unchanged.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from dataengine import ENGINE_VERSION
from dataengine.config import FilterConfig, to_dict
from dataengine.errors import ConfigError, InputError
from dataengine.format import manifest
from dataengine.format.outputfs import Output
from dataengine.format.shards import CARD, dataset_card, read_shard, write_shard_to

MANIFEST = "manifest"


def filter_reason(row: dict[str, Any], cfg: FilterConfig) -> str:
    """'' when the sample is kept, else why it is not (e.g. 'coverage 0.62 < 0.80')."""
    reasons = []
    if (row["coverage"] or 0.0) < cfg.min_coverage:
        reasons.append(f"coverage {row['coverage'] or 0.0:.2f} < {cfg.min_coverage:.2f}")
    if (row["n_trajectories"] or 0) < cfg.min_objects:
        reasons.append(f"trajectories {row['n_trajectories'] or 0} < {cfg.min_objects}")
    return "; ".join(reasons)


def filter_dataset(input_dir: str | Path, output_dir: str | Path, cfg: FilterConfig,
                   on_part: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Filter an annotate output into ``output_dir``; either may be a path or a URL ``--output`` takes
    (``s3://``, ``gs://``, ``file://``, fsspec), so a run annotated to object storage is filtered there."""
    src, out = Output(str(input_dir)), Output(str(output_dir))
    parts = sorted(int(n[len("part-"):-len(".parquet")]) for n in src.names(MANIFEST)
                   if n.startswith("part-") and n.endswith(".parquet"))
    if not parts:
        raise InputError(f"{src} has no manifest (manifest/part-*.parquet); is it an annotate output?")
    same = (Path(src.root).resolve() == Path(out.root).resolve()) if src.local and out.local else src.uri == out.uri
    if same:
        raise ConfigError("--output must differ from the input directory")
    out.makedirs()
    counts = {"ok": 0, "filtered": 0, "error": 0}
    for n, c in enumerate(parts):
        part = f"{MANIFEST}/{manifest.part_path('', c).name}"
        with src.open_read(part) as f:
            rows = pq.read_table(f, schema=manifest.SCHEMA).to_pylist()
        keep: dict[str, str] = {}  # key -> shard name
        for r in rows:
            if r["status"] == "ok":
                reason = filter_reason(r, cfg)
                if reason:
                    r.update(status="filtered", reason=reason, shard="")
                else:
                    keep[r["key"]] = r["shard"]
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        for shard in sorted(set(keep.values())):
            with src.open_read(shard) as f:
                kept = [s for s in read_shard(f) if s.key in keep]
            if kept:
                with out.replaced_when_done(shard) as f:
                    write_shard_to(f, kept)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([manifest.normalise_row(r) for r in rows], schema=manifest.SCHEMA), buf)
        out.write_bytes(part, buf.getvalue())
        if on_part:
            on_part(n + 1, len(parts))
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
