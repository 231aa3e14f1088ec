"""The Parquet manifest: one row per input sample, whatever happened to it.

``DIR/manifest/part-{index:06d}.parquet`` holds the rows of the input samples
assigned to shard ``index``. It is written last and atomically: a shard counts
as done exactly when its manifest part exists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataengine.format import atomic

STAGES = ("read", "decode", "segment", "track", "encode")

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("source_uri", pa.string()),
        ("media_type", pa.string()),
        ("status", pa.string()),        # ok | filtered | error
        ("reason", pa.string()),
        ("shard", pa.string()),         # shard file name holding the sample ('' when none)
        ("input_index", pa.int64()),
        ("n_frames", pa.int32()),       # frames in the decoded source
        ("n_annotated", pa.int32()),    # frames with masks
        ("n_keyframes", pa.int32()),
        ("n_trajectories", pa.int32()),
        ("coverage", pa.float64()),
        ("height", pa.int32()),         # mask resolution
        ("width", pa.int32()),
        ("mean_trajectory_length", pa.float64()),
    ]
    + [(f"seconds_{s}", pa.float64()) for s in STAGES]
)

DEFAULTS: dict[str, Any] = {
    "key": "", "source": "", "source_uri": "", "media_type": "", "status": "error", "reason": "",
    "shard": "", "input_index": -1, "n_frames": 0, "n_annotated": 0, "n_keyframes": 0,
    "n_trajectories": 0, "coverage": 0.0, "height": 0, "width": 0, "mean_trajectory_length": 0.0,
    **{f"seconds_{s}": 0.0 for s in STAGES},
}


def part_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / "manifest" / f"part-{index:06d}.parquet"


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    return {name: (row.get(name) if row.get(name) is not None else DEFAULTS[name]) for name in SCHEMA.names}


def write_part(directory: str | Path, index: int, rows: list[dict[str, Any]]) -> Path:
    """Write manifest part ``index`` atomically (temporary file, then rename)."""
    path = part_path(directory, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([normalise_row(r) for r in rows], schema=SCHEMA)
    atomic.write_via(path, lambda tmp: pq.write_table(table, tmp))
    return path


def _url_parts(url: str) -> tuple[Any, list[str]]:
    """A URL dataset's location and its manifest part names, in index order."""
    from dataengine.format.outputfs import Output
    location = Output(url)
    return location, [n for n in location.names("manifest") if n.startswith("part-") and n.endswith(".parquet")]


def done_parts(directory: str | Path) -> set[int]:
    if isinstance(directory, str) and "://" in directory:
        return {int(n[len("part-"):-len(".parquet")]) for n in _url_parts(directory)[1]}
    d = Path(directory) / "manifest"
    if not d.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in d.glob("part-*.parquet")}


def read_part(directory: str | Path, index: int) -> list[dict[str, Any]]:
    return pq.read_table(part_path(directory, index), schema=SCHEMA).to_pylist()


def read_manifest(directory: str | Path) -> pa.Table:
    """All manifest rows of a dataset directory or URL (empty table when there are none)."""
    if isinstance(directory, str) and "://" in directory:
        location, names = _url_parts(directory)
        tables = []
        for n in names:
            with location.open_read(f"manifest/{n}") as f:
                tables.append(pq.read_table(f, schema=SCHEMA))
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    parts = sorted((Path(directory) / "manifest").glob("part-*.parquet"))
    if not parts:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])
