"""``trajdata filter``: keep samples with enough coverage and objects; no model runs.

Decisions come from the manifest alone; kept samples are copied member for
member into new shards with the same chunk numbering. Every input row ends in
the output manifest: kept rows stay ``ok``, dropped ones become ``filtered``
with the reason, earlier ``error`` / ``filtered`` rows are carried unchanged.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from dataengine import ENGINE_VERSION

from dataengine.format import atomic, manifest
from dataengine.config import FilterConfig, to_dict
from dataengine.errors import ConfigError, InputError
from dataengine.format.shards import read_shard, write_dataset_card, write_shard


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
    src, out = Path(input_dir), Path(output_dir)
    parts = sorted(manifest.done_parts(src))
    if not parts:
        raise InputError(f"{src} has no manifest (manifest/part-*.parquet); is it an annotate output?")
    if src.resolve() == out.resolve():
        raise ConfigError("--output must differ from the input directory")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "filtered": 0, "error": 0}
    for n, c in enumerate(parts):
        rows = manifest.read_part(src, c)
        keep: dict[str, str] = {}  # key -> shard name
        for r in rows:
            if r["status"] == "ok":
                reason = filter_reason(r, cfg)
                if reason:
                    r.update(status="filtered", reason=reason, shard="")
                else:
                    keep[r["key"]] = r["shard"]
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        by_shard: dict[str, list] = {}
        for shard in sorted(set(keep.values())):
            by_shard[shard] = [s for s in read_shard(src / shard) if s.key in keep]
            if by_shard[shard]:
                write_shard(out / shard, by_shard[shard])
        manifest.write_part(out, c, rows)
        if on_part:
            on_part(n + 1, len(parts))
    run = {"engine_version": ENGINE_VERSION, "command": "filter", "input": str(src),
           "filter": to_dict(cfg), "totals": {"samples": sum(counts.values()), "by_status": counts},
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    upstream = src / "run.json"
    if upstream.is_file():
        run["upstream"] = json.loads(upstream.read_text())
    write_dataset_card(out, ((run.get("upstream") or {}).get("config") or {}).get("output", {}).get("prefix", "traj"))
    atomic.write_bytes(out / "run.json", json.dumps(run, indent=2, sort_keys=True))
    return run["totals"]
