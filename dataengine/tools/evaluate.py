"""``trajdata eval``: score a trajectory shard dataset against a ground-truth one.

Both directories hold trajectory shards v1 (``dataengine.format.shards``).  The
evaluation is class-agnostic: every trajectory is one entity (see
``metrics.evaluate_sequences``).

Matching a GT sample to its prediction
    1. the same ``__key__``;
    2. otherwise the same source address: the value of ``url`` or, when the
       meta json has no ``url``, ``source_uri`` in the sample's ``KEY.json``
       (GT value compared with the prediction's value of the same rule);
       the first prediction with a given address wins.
    A GT sample without a prediction counts as all misses (an empty
    prediction over all of its GT frames).  Predictions matching no GT sample
    are not scored; their number is reported as ``unmatched_pred``.

Frames
    The prediction's ``frame_indices`` (indices into the decoded source video)
    select the GT frames with the same indices; the GT may annotate every
    frame of the video.  Predicted frames the GT does not annotate are left out
    (counted in ``frames_without_gt``); a frame index the prediction repeats is
    scored once.  GT trajectories present only in frames the prediction does not
    annotate are not scored (counted in ``gt_outside_pred_frames``: a prediction
    cut short shows there).  A prediction sharing no frame with its GT is scored
    as missing.

Resolution
    When the GT masks differ in size from the predicted masks, the GT label
    maps are resized to the prediction's size with nearest neighbour
    (``cv2.INTER_NEAREST``).  A prediction of another aspect ratio (beyond the
    rounding of a resize: a crop, a stretch) is scored as missing.

Videos and images
    When the ground truth holds both (its samples' ``media_type``), the
    trajectory figures (strict recall, mean best IoU, fragmentation) are also
    pooled per media type (``by_media``): a still is labelled without motion
    or tracking, so its figures differ in kind from a video's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from rich.table import Table

from dataengine.errors import InputError, InputNotFound
from dataengine.metrics import scores as metrics
from dataengine.metrics.scores import POOLED_KEYS, pooled_by_trajectory

from dataengine.format import trajformat
from dataengine.format.manifest import done_parts
from dataengine.format.outputfs import Output
from dataengine.format.shards import list_shards, read_dataset

METRIC_KEYS = ("STQ", "AQ", "SQ", "VEQ", "VPQ", "recall_at_0.5", "mean_best_iou")
# Fragmentation: predicted ids covering a GT trajectory (>= metrics.COVER_SHARE of it), and the
# predicted / GT ratio of mean trajectory length in frames.
FRAGMENTATION_KEYS = ("ids_per_gt_trajectory", "length_ratio")
COLUMN_NAMES = {"recall_at_0.5": "R@0.5", "mean_best_iou": "mIoU", "ids_per_gt_trajectory": "ids/GT",
                "length_ratio": "len ratio"}


def source_address(meta: dict[str, Any]) -> str | None:
    """The address used to match samples whose keys differ: ``url``, else ``source_uri``."""
    for name in ("url", "source_uri"):
        value = meta.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[T, H, W]`` id maps -> ``[T, height, width]`` with ``cv2.INTER_NEAREST``."""
    if labels.shape[1:] == (height, width):
        return labels
    labels = labels.astype(np.int32, copy=False)
    out = np.empty((labels.shape[0], height, width), dtype=np.int32)
    for t in range(labels.shape[0]):
        out[t] = cv2.resize(labels[t], (width, height), interpolation=cv2.INTER_NEAREST)
    return out


def prediction_grid(size: tuple[int, int], pred_area: float | None) -> tuple[int, int]:
    """The (height, width) a GT sample without a usable prediction is scored at: its aspect ratio at
    the median area of the run's predictions, so a missed sample weighs in the pooled pixel figures
    what a predicted one of its shape would (its storage size, e.g. source resolution against
    384 px labels, would weigh it ~10x more). Without predictions, its own size."""
    H, W = size
    if not pred_area or H * W <= pred_area:
        return H, W
    f = math.sqrt(pred_area / (H * W))
    return max(1, round(H * f)), max(1, round(W * f))


def same_shape(gt_size: tuple[int, int], pred_size: tuple[int, int]) -> bool:
    """Whether two (height, width) are one picture at two sizes: equal aspect ratios up to the rounding of a
    resize to whole pixels (a cropped or stretched prediction is not)."""
    (H, W), (h, w) = gt_size, pred_size
    return abs(h * W - H * w) <= W + H


# A GT sample's alignment figures before (or without) a prediction.
UNALIGNED = {"frames_without_gt": 0, "problem": None, "gt_outside_pred_frames": 0}


def _align(gt_traj: dict[str, Any], pred_traj: dict[str, Any]) -> dict[str, Any]:
    """GT and prediction label maps on the prediction's frames and resolution.

    Returns ``gt``, ``pred`` (None when no predicted frame is annotated in the GT, or the two differ in
    aspect ratio: ``problem`` says which), ``frames_without_gt`` and ``gt_outside_pred_frames`` (GT
    trajectories present only in frames the prediction does not annotate: not scored). A frame index the
    prediction repeats is scored once (its first map).
    """
    gt_pos: dict[int, int] = {}
    for i, f in enumerate(gt_traj["frame_indices"]):
        gt_pos.setdefault(int(f), i)
    seen: set[int] = set()
    sel_pred = []
    for j, f in enumerate(pred_traj["frame_indices"]):
        if int(f) in gt_pos and int(f) not in seen:
            sel_pred.append(j)
        seen.add(int(f))
    out = {**UNALIGNED, "frames_without_gt": len(pred_traj["frame_indices"]) - len(sel_pred)}
    if not sel_pred:
        return {**out, "gt": trajformat.traj_to_labels(gt_traj), "pred": None, "problem": "no shared frame"}
    gt_size, pred_size = (gt_traj["height"], gt_traj["width"]), (pred_traj["height"], pred_traj["width"])
    if not same_shape(gt_size, pred_size):
        return {**out, "gt": trajformat.traj_to_labels(gt_traj), "pred": None,
                "problem": f"other aspect ratio ({pred_size[0]}x{pred_size[1]} vs GT {gt_size[0]}x{gt_size[1]})"}
    sel_gt = [gt_pos[int(pred_traj["frame_indices"][j])] for j in sel_pred]
    areas = [t.get("area") or [] for t in gt_traj["trajectories"]]
    out["gt_outside_pred_frames"] = sum(1 for a in areas if any(a) and not any(a[i] for i in sel_gt if i < len(a)))
    gt = trajformat.labels_at(gt_traj, sel_gt)
    pred = trajformat.labels_at(pred_traj, sel_pred)
    return {**out, "gt": resize_nearest(gt, pred.shape[1], pred.shape[2]), "pred": pred}


def evaluate_dirs(pred_dir: str | Path, gt_dir: str | Path,
                  window_sizes: tuple[int, ...] = metrics.WINDOW_SIZES) -> dict[str, Any]:
    """Class-agnostic STQ / AQ / SQ / VEQ / VPQ / trajectory recall of ``pred_dir`` against ``gt_dir``.

    Predictions are indexed first (their ``traj.json`` only, RLE-compressed);
    GT samples are then streamed and decoded one at a time.  Returns the pooled
    metrics (``STQ``, ``AQ``, ``SQ``, ``VEQ``, ``VPQ``, ``recall_at_0.5``,
    ``mean_best_iou`` (strict IoU: predicted pixels on GT void count),
    ``pixel_recall`` (see ``metrics.evaluate_sequences`` for how it differs
    from ``SQ``), the fragmentation figures ``ids_per_gt_trajectory`` (mean
    number of predicted ids covering >= 5 % of a GT trajectory),
    ``length_ratio``, ``mean_gt_length``, ``mean_pred_length``), ``samples`` (GT samples scored), ``matched``,
    ``missing_pred`` (GT samples without a prediction, or whose prediction shares no frame with
    them: scored as all missed, at the predictions' median size), ``unmatched_pred`` and ``per_sample``
    (one row per GT sample: ``key``, ``pred_key``, ``matched_by`` ('key' | 'address' | None), ``scored``
    (False: scored as missing, ``problem`` says why when it has a prediction),
    ``frames``, ``frames_without_gt``, ``gt_outside_pred_frames``, ``n_gt_trajectories``,
    ``n_pred_trajectories`` and the per-sample metrics).
    """
    for d in (pred_dir, gt_dir):
        if not Output(str(d)).exists(""):     # a directory or a URL, as annotate writes
            raise InputNotFound(f"no such dataset: {d}")
    # Predictions may hold no sample (an annotate run whose every sample failed still has its manifest: everything
    # counts as missed), but a folder with neither is the wrong folder, for either side.
    for what, d in (("ground truth", gt_dir), ("predictions", pred_dir)):
        if not list_shards(d) and not done_parts(d):
            raise InputError(f"{what} {d} holds neither trajectory shards nor a manifest (is it a synth gt/ "
                             f"or an annotate output?)")
    preds: dict[str, dict[str, Any]] = {}
    by_address: dict[str, str] = {}
    for s in read_dataset(pred_dir, with_media=False):
        preds[s.key] = s.traj
        addr = source_address(s.meta)
        if addr is not None:
            by_address.setdefault(addr, s.key)

    used: set[str] = set()
    rows: list[dict[str, Any]] = []
    areas = [t["height"] * t["width"] for t in preds.values()]
    pred_area = float(np.median(areas)) if areas else None

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for g in read_dataset(gt_dir, with_media=False):
            pred_key, how = None, None
            if g.key in preds:
                pred_key, how = g.key, "key"
            else:
                addr = source_address(g.meta)
                if addr is not None and addr in by_address:
                    pred_key, how = by_address[addr], "address"
            if pred_key is None:
                a = {**UNALIGNED, "gt": g.labels, "pred": None}
            else:
                used.add(pred_key)
                a = _align(g.traj, preds[pred_key])
            gt, pred = a.pop("gt"), a.pop("pred")
            if pred is None:    # scored as missing: on the grid the predictions use, not on the GT's storage size
                gt = resize_nearest(gt, *prediction_grid(gt.shape[1:], pred_area))
            rows.append({"key": g.key, "media_type": g.meta.get("media_type", "video"), "pred_key": pred_key,
                         "matched_by": how, "scored": pred is not None, **a})
            yield gt, pred

    res = metrics.evaluate_sequences(pairs(), window_sizes=window_sizes)
    per_sample = []
    for row, seq in zip(rows, res["per_sequence"]):
        seq = dict(seq)
        seq.pop("id", None)
        per_sample.append({**row, **seq})
    out = {k: res[k] for k in METRIC_KEYS}
    out["pixel_recall"] = res["pixel_recall"]
    out.update({k: res[k] for k in metrics.FRAGMENTATION_KEYS})
    out.update(samples=len(per_sample),
               matched=sum(1 for r in per_sample if r["scored"]),
               missing_pred=sum(1 for r in per_sample if not r["scored"]),
               unmatched_pred=len(set(preds) - used),
               gt_outside_pred_frames=sum(r["gt_outside_pred_frames"] for r in per_sample),
               per_sample=per_sample)
    media = sorted({r["media_type"] for r in per_sample})
    if len(media) > 1:
        out["by_media"] = {m: pooled_by_trajectory([r for r in per_sample if r["media_type"] == m]) for m in media}
    return out


def json_safe(value: Any) -> Any:
    """``value`` with NaN / infinite floats (a GT sample without objects has no recall) as None, numpy
    scalars as Python numbers: strict JSON readers (jq, JavaScript) refuse NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_table(result: dict[str, Any], max_rows: int = 30, title: str | None = None) -> Table:
    """A rich table of ``evaluate_dirs``'s result: the pooled row, then up to ``max_rows`` samples."""
    table = Table(title=title or (f"trajdata eval: {result['samples']} GT samples, {result['matched']} matched, "
                         f"{result['missing_pred']} without prediction, "
                         f"{result['unmatched_pred']} predictions without GT"
                         + (f"; {result['gt_outside_pred_frames']} GT trajectories only in frames no prediction "
                            f"annotates (not scored)" if result.get("gt_outside_pred_frames") else "")))
    table.add_column("sample")
    table.add_column("match")
    table.add_column("frames", justify="right")
    table.add_column("GT traj", justify="right")
    table.add_column("pred traj", justify="right")
    keys = METRIC_KEYS + FRAGMENTATION_KEYS
    for name in keys:
        table.add_column(COLUMN_NAMES.get(name, name), justify="right")
    rows = result["per_sample"]
    table.add_row("ALL", "", str(sum(r["frames"] for r in rows)),
                  str(sum(r["n_gt_trajectories"] for r in rows)), str(sum(r["n_pred_trajectories"] for r in rows)),
                  *(_fmt(result[k]) for k in keys), style="bold", end_section=not result.get("by_media"))
    for i, (media, pooled) in enumerate(result.get("by_media", {}).items()):
        table.add_row(f"ALL {media}s", "", str(sum(r["frames"] for r in rows if r["media_type"] == media)),
                      str(pooled["n_gt_trajectories"]),
                      str(sum(r["n_pred_trajectories"] for r in rows if r["media_type"] == media)),
                      *(_fmt(pooled[k]) if k in POOLED_KEYS else "" for k in keys),
                      style="bold", end_section=i == len(result["by_media"]) - 1)
    for r in rows[:max_rows]:
        match = "missing" if r["matched_by"] is None else r["matched_by"] if r["scored"] else r["problem"]
        table.add_row(r["key"], match, str(r["frames"]), str(r["n_gt_trajectories"]),
                      str(r["n_pred_trajectories"]), *(_fmt(r[k]) for k in keys))
    if len(rows) > max_rows:
        table.add_row(f"... {len(rows) - max_rows} more", *([""] * (4 + len(keys))))
    return table
