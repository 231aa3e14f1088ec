"""``trajdata validate``: integrity of shards and manifest, reported as a list of problems."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from dataengine.format import manifest, trajformat
from dataengine.format.outputfs import is_url
from dataengine.format.shards import (KEY_RE, MEDIA_EXTS, group_members, iter_tar_members, list_shards, read_traj,
                                     shard_file_name)

REQUIRED = ("json", "txt")   # and one traj member: traj.json.gz (v2) or traj.json (v1)


def _check_v2(traj: dict, where: str) -> list[str]:
    """The fields v2 added: source size, resize rule, fps, scene cuts."""
    p = []
    for k in ("source_width", "source_height"):
        if not isinstance(traj.get(k), int) or traj[k] < 1:
            p.append(f"{where}: {k} {traj.get(k)!r} is not a positive integer")
    if not isinstance(traj.get("resize"), dict) or "rule" not in traj["resize"]:
        p.append(f"{where}: resize {traj.get('resize')!r} does not state its rule")
    fps = traj.get("fps", "missing")
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        p.append(f"{where}: fps {fps!r} is neither null nor positive")
    cuts = traj.get("scene_cuts")
    T = len(traj["frame_indices"])
    if not isinstance(cuts, list) or any(not isinstance(c, int) or not 0 < c < T for c in cuts):
        p.append(f"{where}: scene_cuts {cuts!r} are not frame positions after the first")
    return p


def check_traj(traj: dict, where: str) -> list[str]:
    """Problems of one decoded traj.json, v1 or v2 (empty list when it is sound)."""
    p = []
    if traj.get("version") not in trajformat.READABLE_VERSIONS:
        return [f"{where}: traj.json version {traj.get('version')!r} is not one of {trajformat.READABLE_VERSIONS}"]
    if traj["version"] >= 2:
        p += _check_v2(traj, where)
    H, W = traj["height"], traj["width"]
    T = len(traj["frame_indices"])
    ids = traj["masklet_id"]
    if len(traj["timestamps"]) != T or len(traj["masklet"]) != T:
        p.append(f"{where}: frame_indices/timestamps/masklet lengths differ")
    if sorted(t["id"] for t in traj["trajectories"]) != sorted(ids) or len(set(ids)) != len(ids):
        p.append(f"{where}: trajectories and masklet_id disagree or repeat ids")
    # id 0 is "no trajectory" in every id map the readers make (eval, show, export, training)
    # ... and readers hold ids as int32
    bad_ids = sorted({i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i < 2 ** 31},
                     key=str)
    if bad_ids:
        p.append(f"{where}: trajectory ids must be integers from 1 to 2**31 - 1 (0 means no trajectory), "
                 f"got {bad_ids[:5]}")
    indices = traj["frame_indices"]
    if any(not isinstance(f, int) or f < 0 for f in indices) or any(b <= a for a, b in zip(indices, indices[1:])):
        p.append(f"{where}: frame_indices must be increasing source frame numbers >= 0")
    if any(not (0 <= k < T) for k in traj["keyframes"]):
        p.append(f"{where}: keyframe position out of range")
    areas = np.zeros((len(ids), T), dtype=np.int64)
    for t, rles in enumerate(traj["masklet"]):
        if len(rles) != len(ids):
            p.append(f"{where}: frame {t} has {len(rles)} masks for {len(ids)} ids")
            continue
        if any(r is None or list(r.get("size", [])) != [H, W] for r in rles):
            p.append(f"{where}: frame {t} has an RLE whose size is not [{H}, {W}] (or a null)")
            continue
        masks = trajformat.decode_masks(rles, H, W)
        if masks.size and masks.sum(axis=0).max() > 1:
            p.append(f"{where}: masks of frame {t} overlap")
        areas[:, t] = masks.reshape(len(ids), H * W).sum(axis=1)  # -1 fails with no ids
    by_id = {tr["id"]: tr for tr in traj["trajectories"]}
    for j, i in enumerate(ids):
        if i in by_id and list(by_id[i].get("area", [])) != areas[j].tolist():
            p.append(f"{where}: trajectory {i} area does not match its masks")
    return p


def validate_dataset(directory: str | Path, on_shard: Callable[[int, int], None] | None = None) -> list[str]:
    """Problems of a dataset directory or URL (manifest and shards against each other); empty when valid."""
    d = directory if is_url(directory) else Path(directory)
    problems: list[str] = []
    table = manifest.read_manifest(d, problems)
    if table.num_rows == 0:
        return problems + [f"{d}: no manifest rows (manifest/part-*.parquet missing or empty)"]
    rows = table.to_pylist()
    for key, n in Counter(r["key"] for r in rows).items():
        if n > 1:
            problems.append(f"manifest: key {key} appears {n} times")
    for r in rows:
        if r["status"] not in ("ok", "filtered", "error"):
            problems.append(f"manifest: key {r['key']} has status {r['status']!r}")
        if r["status"] != "ok" and not r["reason"]:
            problems.append(f"manifest: key {r['key']} is {r['status']} without a reason")
    expected = {(r["shard"], r["key"]): r for r in rows if r["status"] == "ok"}
    seen: set[tuple[str, str]] = set()
    shards = list_shards(d)
    for n, path in enumerate(shards):
        name = shard_file_name(path)
        try:
            for key, group in group_members(iter_tar_members(path)):
                where = f"{name}:{key}"
                if (name, key) in seen:
                    problems.append(f"{where}: sample appears twice")
                seen.add((name, key))
                if not KEY_RE.match(key):
                    problems.append(f"{where}: unsafe key")
                missing = [m for m in REQUIRED if m not in group]
                if not trajformat.find_member(group):
                    missing.append(trajformat.MEMBER)
                if missing:
                    problems.append(f"{where}: missing members {missing}")
                    continue
                row = expected.get((name, key))
                if row is None:
                    problems.append(f"{where}: no 'ok' manifest row points at this sample")
                elif row["media_type"] and not any(e in MEDIA_EXTS for e in group):
                    problems.append(f"{where}: media member missing")
                try:
                    json.loads(group["json"])
                    group["txt"].decode("utf-8")
                    traj = read_traj(group)
                    problems += check_traj(traj, where)
                    if row is not None and row["n_trajectories"] != len(traj["masklet_id"]):
                        problems.append(f"{where}: manifest says {row['n_trajectories']} trajectories, shard has "
                                        f"{len(traj['masklet_id'])}")
                except (ValueError, KeyError, TypeError) as e:
                    problems.append(f"{where}: unreadable member ({type(e).__name__}: {e})")
        except (tarfile.TarError, OSError, EOFError) as e:
            problems.append(f"{name}: unreadable tar ({type(e).__name__}: {e})")
        if on_shard:
            on_shard(n + 1, len(shards))
    for shard, key in sorted(set(expected) - seen):
        problems.append(f"manifest: ok sample {key} is not in shard {shard or '(none)'}")
    return problems
