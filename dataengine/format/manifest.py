"""The Parquet manifest: one row per input sample, whatever happened to it.

``DIR/manifest/part-{index:06d}.parquet`` holds the rows of the input samples
assigned to shard ``index``. It is written last and atomically: a shard counts
as done exactly when its manifest part exists.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from dataengine.errors import InputError, first_line
from dataengine.format import atomic
from dataengine.format.outputfs import Output

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


def part_name(index: int) -> str:
    """Manifest part ``index`` relative to its dataset (``manifest/part-000042.parquet``)."""
    return f"manifest/{part_path('', index).name}"


def part_indices(location: Output) -> list[int]:
    """The indices of a dataset's finished manifest parts, ascending (temporary files excluded)."""
    return sorted(int(n[len("part-"):-len(".parquet")]) for n in location.names("manifest")
                  if n.startswith("part-") and n.endswith(".parquet"))


def _location(directory: str | Path | Output) -> Output:
    return directory if isinstance(directory, Output) else Output(str(directory))


def done_parts(directory: str | Path | Output) -> set[int]:
    """The finished manifest parts of a dataset directory or URL."""
    return set(part_indices(_location(directory)))


def read_part(directory: str | Path, index: int) -> list[dict[str, Any]]:
    return pq.read_table(part_path(directory, index), schema=SCHEMA).to_pylist()


@contextmanager
def readable_part(name: str) -> Iterator[None]:
    """Turn a damaged manifest part (not Parquet, truncated, unreadable) into one ``InputError`` naming it."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{name}: unreadable manifest part ({first_line(e)})") from e


def read_manifest(directory: str | Path | Output, problems: list[str] | None = None) -> pa.Table:
    """All manifest rows of a dataset directory or URL (empty table when there are none).

    A part that is not a readable manifest part is an ``InputError`` naming it, or, when a
    ``problems`` list is given (``trajdata validate``), a line there while the other parts are read."""
    location = _location(directory)
    tables = []
    for index in part_indices(location):
        try:
            with readable_part(part_name(index)), location.open_read(part_name(index)) as f:
                tables.append(pq.read_table(f, schema=SCHEMA))
        except InputError as e:
            if problems is None:
                raise
            problems.append(str(e))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
