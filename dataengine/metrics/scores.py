"""Video segmentation metrics over in-memory id maps ``[T, H, W]``.

Everything here is plain vectorised numpy: every count is one ``bincount`` over
combined ids (``a * n_b + b``) after the ids have been made compact, so a
16 x 384 x 384 sequence takes a few tens of milliseconds per metric.

Metrics and the definitions they follow
---------------------------------------
``stq``
    Segmentation and Tracking Quality (Weber et al., "STEP", 2021), defined
    exactly as deeplab2's numpy ``STQuality``: labels are encoded
    ``(semantic << label_bit_shift) + instance``; pixels whose semantic class
    is ``ignore_label`` are void; instance 0 inside a thing class is *crowd*
    (left out of the association term, and predictions there are not
    penalised); the association quality AQ is pooled over all ground-truth
    tracks of all sequences; IoU is the mean class IoU of the summed semantic
    confusion matrix with the void row removed; STQ = sqrt(AQ * IoU).  As in
    deeplab2, predicted pixels outside the void rows keep their column, so a
    prediction of the ignore label on labelled pixels enters the class mean as
    one more class with IoU 0.
``vpq``
    Video Panoptic Quality with the VIPSeg protocol: for every window of k
    consecutive frames (start 0 .. T-k) segments become tubes; a GT tube and a
    predicted tube of the same category match when
    ``IoU = |G & P| / (|G| + |P| - |G & P| - |P & void|) > 0.5``; unmatched
    non-crowd GT tubes are false negatives; unmatched predicted tubes are false
    positives unless more than half of them lies on void or on the crowd region
    of their category.  TP / FP / FN / IoU sums are pooled per category over
    all windows of all videos, PQ_k is the mean over categories that occur,
    and VPQ is the mean over k in {1, 2, 4, 6, 8}.
``veq``
    Video Entity Quality, the class-agnostic variant EntitySAM evaluates on
    ViPEntitySeg: the VPQ procedure with a single category (no category check
    when matching; the FP rule counts void plus every crowd region).

Departures from the reference scripts, all in degenerate cases only:

* A video absent from the predictions is evaluated against an empty prediction
  (every GT tube a miss) instead of being skipped (EntitySAM's VEQ script skips
  it) or crashing (VIPSeg's VPQ script).
* A window size k for which nothing at all was counted (no windows because
  every video is shorter than k, or neither GT nor prediction has a segment)
  is left out of the mean over k and reported as NaN.  (The VEQ script would
  count it as 0, the VPQ script divides by zero.)  VPQ / VEQ are NaN when no
  k is defined.

``trajectory_recall`` and ``evaluate_sequences`` are this project's own:
class-agnostic trajectory id maps where 0 means "no trajectory" (void in GT).
Their trajectory IoU is strict: a predicted trajectory's pixels on GT void
count in its union (STQ / VEQ / VPQ keep their published void rules). AQ is
NaN, not deeplab2's 0, where a sequence has no GT trajectory. Their
``recall_at_0.5`` is best-IoU recall (each GT trajectory scored with its best
prediction, shared or not); the one-to-one matcher is ``matching``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

WINDOW_SIZES: tuple[int, ...] = (1, 2, 4, 6, 8)
MATCH_IOU = 0.5          # VPQ / VEQ tube match threshold (strictly greater)
VOID_FP_SHARE = 0.5      # an unmatched prediction more than this much on void/crowd is not a FP
RECALL_IOU = 0.5         # trajectory recall threshold (greater or equal)
COVER_SHARE = 0.05       # a predicted id covers a GT trajectory with at least this share of its volume
_EPSILON = 1e-15         # deeplab2's guard for empty denominators
_DENSE_LIMIT = 1 << 22   # largest id range counted with a dense bincount


# --------------------------------------------------------------------------- helpers

def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (non-negative ints, any shape) -> ``(uniq, inverse)`` with ``uniq[inverse] == values``.

    A dense bincount when the value range is small, ``np.unique`` otherwise.
    """
    flat = np.asarray(values, dtype=np.int64).ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(np.shape(values), np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < max(_DENSE_LIMIT, 2 * flat.size):
        present = np.bincount(flat, minlength=hi + 1) > 0
        uniq = np.flatnonzero(present).astype(np.int64)
        lut = np.cumsum(present, dtype=np.int64) - 1
        inv = lut[flat]
    else:
        uniq, inv = np.unique(flat, return_inverse=True)
        uniq = uniq.astype(np.int64)
    return uniq, inv.reshape(np.shape(values)).astype(np.int64)


def _as_video(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an id map [T, H, W] (or [H, W]), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{name}: ids must be integers")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"{name}: ids must be non-negative")
    return arr


def _sequences(gt: Any, pred: Any) -> Iterator[tuple[Any, np.ndarray, np.ndarray | None]]:
    """Normalise (gt, pred) containers to ``[(sequence_id, gt, pred_or_None)]``.

    ``gt`` is one array ``[T, H, W]`` (or ``[H, W]``), a list/tuple of arrays
    (ids 0, 1, ...) or a mapping id -> array.  ``pred`` has the same structure;
    a ``None`` entry, a missing mapping key, or ``pred=None`` mean "no
    prediction for that video" (every GT segment is missed).  Arrays are
    converted one sequence at a time, as they are consumed.
    """
    if isinstance(gt, Mapping):
        pm = pred if isinstance(pred, Mapping) else ({} if pred is None else None)
        if pm is None:
            raise TypeError("pred must be a mapping (or None) when gt is a mapping")
        items = [(k, g, pm.get(k)) for k, g in gt.items()]
    elif isinstance(gt, (list, tuple)):
        if pred is None:
            pl: Sequence[Any] = [None] * len(gt)
        elif isinstance(pred, (list, tuple)):
            pl = pred
        else:
            raise TypeError("pred must be a list (or None) when gt is a list")
        if len(pl) != len(gt):
            raise ValueError(f"{len(gt)} GT sequences but {len(pl)} predictions")
        items = [(i, g, p) for i, (g, p) in enumerate(zip(gt, pl))]
    else:
        items = [(0, gt, pred)]
    for sid, g, p in items:
        g = _as_video(g, f"gt[{sid!r}]")
        if p is not None:
            p = _as_video(p, f"pred[{sid!r}]")
            if p.shape != g.shape:
                raise ValueError(f"sequence {sid!r}: gt shape {g.shape} != pred shape {p.shape}")
        yield sid, g, p


def _nanmean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


# --------------------------------------------------------------------------- STQ

def _stq_stats(sem_g: np.ndarray, sem_p: np.ndarray, n_sem: int,
               label_mask: np.ndarray, pred_mask: np.ndarray,
               gt: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Sufficient statistics of one sequence for STQ.

    ``sem_g`` / ``sem_p`` are semantic indices in ``[0, n_sem)`` for the
    confusion matrix (void already mapped to its row/column); ``label_mask`` are
    the GT pixels of non-crowd thing tracks, ``pred_mask`` the predicted thing
    pixels outside GT crowd; ``gt`` / ``pred`` the full track ids.
    """
    conf = np.bincount((sem_g * n_sem + sem_p).ravel(), minlength=n_sem * n_sem).reshape(n_sem, n_sem)

    g_uniq, g_inv = _compact(gt[label_mask])
    p_uniq, p_inv = _compact(pred[pred_mask])
    g_size = np.bincount(g_inv, minlength=len(g_uniq)).astype(np.float64)
    p_size = np.bincount(p_inv, minlength=len(p_uniq)).astype(np.float64)

    aq_sum = 0.0
    both = label_mask & pred_mask
    if both.any():
        gi = np.searchsorted(g_uniq, gt[both])
        pi = np.searchsorted(p_uniq, pred[both])
        n_p = max(len(p_uniq), 1)
        pairs, pair_inv = _compact(gi * n_p + pi)
        tpa = np.bincount(pair_inv, minlength=len(pairs)).astype(np.float64)
        pg, pp = pairs // n_p, pairs % n_p
        # deeplab2: sum_g 1/|g| * sum_p TPA * TPA / (TPA + FPA + FNA)
        union = p_size[pp] + g_size[pg] - tpa
        aq_sum = float(np.sum(tpa * (tpa / union) / g_size[pg]))
    return {"conf": conf.astype(np.float64), "aq_sum": aq_sum, "n_tubes": int(len(g_uniq)),
            "length": int(gt.shape[0])}


def _class_iou(conf: np.ndarray, include: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean IoU of a confusion matrix (rows GT) after dropping the void rows, as deeplab2."""
    c = np.zeros_like(conf)
    c[include, :] = conf[include, :]
    inter = np.diagonal(c)
    union = c.sum(axis=0) + c.sum(axis=1) - inter
    ious = inter / np.maximum(union, _EPSILON)
    n = np.count_nonzero(union)
    mean = float(np.sum(ious) / n) if n else float("nan")
    return mean, ious


def _stq_result(stats: list[tuple[Any, dict[str, Any]]], include: np.ndarray) -> dict[str, Any]:
    aq_total = sum(s["aq_sum"] for _, s in stats)
    tubes_total = sum(s["n_tubes"] for _, s in stats)
    aq = float(aq_total / max(tubes_total, _EPSILON))
    if stats:
        iou, ious = _class_iou(sum(s["conf"] for _, s in stats), include)
    else:
        iou, ious = float("nan"), np.zeros(0)
    per_seq = []
    for sid, s in stats:
        aq_s = float(s["aq_sum"] / max(s["n_tubes"], _EPSILON))
        iou_s, _ = _class_iou(s["conf"], include)
        per_seq.append({"id": sid, "STQ": float(math.sqrt(aq_s * iou_s)) if not math.isnan(iou_s) else float("nan"),
                        "AQ": aq_s, "IoU": iou_s, "length": s["length"], "n_tracks": s["n_tubes"]})
    stq_v = float(math.sqrt(aq * iou)) if not math.isnan(iou) else float("nan")
    return {"STQ": stq_v, "AQ": aq, "IoU": iou, "IoU_per_class": [float(v) for v in ious],
            "per_sequence": per_seq}


def _stq_layout(num_classes: int, ignore_label: int) -> tuple[int, np.ndarray]:
    """Confusion-matrix size and the GT rows kept, as deeplab2 lays them out."""
    if ignore_label >= num_classes:
        return num_classes + 1, np.arange(num_classes)
    return num_classes, np.array([i for i in range(num_classes) if i != ignore_label], dtype=np.int64)


def stq(gt: Any, pred: Any, num_classes: int, things: Sequence[int], ignore_label: int = 255,
        label_bit_shift: int = 16) -> dict[str, Any]:
    """Segmentation and Tracking Quality, deeplab2's numpy definition.

    ``gt`` / ``pred``: one sequence ``[T, H, W]`` of ids
    ``(semantic << label_bit_shift) + instance``, or a list / dict of them
    (see ``_sequences``; a missing prediction is an all-void prediction).
    Returns ``STQ``, ``AQ``, ``IoU``, ``IoU_per_class`` and ``per_sequence``
    (``id``, ``STQ``, ``AQ``, ``IoU``, ``length``, ``n_tracks`` per sequence).
    """
    n_sem, include = _stq_layout(num_classes, ignore_label)
    thing_lut = np.zeros(n_sem, dtype=bool)
    for c in things:
        if not 0 <= c < n_sem:
            raise ValueError(f"thing class {c} outside [0, {num_classes})")
        thing_lut[c] = True
    bit_mask = (1 << label_bit_shift) - 1
    stats = []
    for sid, g, p in _sequences(gt, pred):
        if p is None:
            p = np.full_like(g, ignore_label << label_bit_shift)
        sem_g, sem_p = g >> label_bit_shift, p >> label_bit_shift
        if ignore_label > num_classes:
            sem_g = np.where(sem_g == ignore_label, num_classes, sem_g)
            sem_p = np.where(sem_p == ignore_label, num_classes, sem_p)
        for name, s in (("gt", sem_g), ("pred", sem_p)):
            if s.size and int(s.max()) >= n_sem:
                raise ValueError(f"sequence {sid!r}: {name} semantic class {int(s.max())} is neither in "
                                 f"[0, {num_classes}) nor the ignore label {ignore_label}")
        gt_thing = thing_lut[sem_g]
        crowd = gt_thing & ((g & bit_mask) == 0)
        label_mask = gt_thing & ~crowd
        pred_mask = thing_lut[sem_p] & ~crowd
        stats.append((sid, _stq_stats(sem_g, sem_p, n_sem, label_mask, pred_mask, g, p)))
    return _stq_result(stats, include)


# --------------------------------------------------------------------------- VPQ / VEQ

def _pq_stats(gt_c: np.ndarray, pred_c: np.ndarray, gt_cat: np.ndarray, gt_crowd: np.ndarray,
              pred_cat: np.ndarray, n_cat: int, window_sizes: Sequence[int],
              agnostic: bool) -> dict[int, dict[str, Any]]:
    """Per-k tube matching statistics of one video (VIPSeg protocol).

    ``gt_c`` / ``pred_c``: compact segment ids ``[T, H, W]``, 0 = void.
    ``gt_cat[g]`` / ``pred_cat[p]``: category of each segment (index 0 unused),
    ``gt_crowd[g]``: GT segment is a crowd region.  Returns, for each k, the
    per-category arrays ``tp``, ``fp``, ``fn``, ``iou`` (IoU sum of the TPs)
    and the number of windows.
    """
    T = gt_c.shape[0]
    G1, P1 = len(gt_cat), len(pred_cat)
    key = gt_c.reshape(T, -1) * P1 + pred_c.reshape(T, -1)
    pairs, inv = _compact(key)
    n = len(pairs)
    per_frame = np.bincount((inv + n * np.arange(T)[:, None]).ravel(), minlength=T * n).reshape(T, n)
    cum = np.concatenate([np.zeros((1, n), np.int64), np.cumsum(per_frame, axis=0)])
    pg, pp = pairs // P1, pairs % P1

    on_void = pg == 0
    real = (pg > 0) & (pp > 0)
    cand = real & ~gt_crowd[pg]
    crowd_pair = real & gt_crowd[pg]
    if not agnostic:
        same = gt_cat[pg] == pred_cat[pp]
        cand &= same
        crowd_pair &= same
    c_g, c_p = pg[cand], pp[cand]

    out: dict[int, dict[str, Any]] = {}
    for k in window_sizes:
        acc = {"tp": np.zeros(n_cat, np.int64), "fp": np.zeros(n_cat, np.int64),
               "fn": np.zeros(n_cat, np.int64), "iou": np.zeros(n_cat, np.float64), "windows": 0}
        for s in range(0, T - k + 1):
            inter = cum[s + k] - cum[s]
            gt_area = np.bincount(pg, inter, minlength=G1)
            pred_area = np.bincount(pp, inter, minlength=P1)
            void_inter = np.bincount(pp[on_void], inter[on_void], minlength=P1)
            ci = inter[cand].astype(np.float64)
            hit = ci > 0
            union = pred_area[c_p] + gt_area[c_g] - ci - void_inter[c_p]
            iou = np.divide(ci, union, out=np.zeros_like(ci), where=hit)
            match = hit & (iou > MATCH_IOU)
            g_matched = np.zeros(G1, bool)
            p_matched = np.zeros(P1, bool)
            g_matched[c_g[match]] = True
            p_matched[c_p[match]] = True
            cats = gt_cat[c_g[match]]
            acc["tp"] += np.bincount(cats, minlength=n_cat)
            acc["iou"] += np.bincount(cats, iou[match], minlength=n_cat)
            miss = (gt_area > 0) & ~g_matched & ~gt_crowd
            miss[0] = False
            acc["fn"] += np.bincount(gt_cat[miss], minlength=n_cat)
            crowd_inter = np.bincount(pp[crowd_pair], inter[crowd_pair], minlength=P1)
            extra = (pred_area > 0) & ~p_matched
            extra[0] = False
            ignored = (void_inter + crowd_inter) / np.maximum(pred_area, 1) > VOID_FP_SHARE
            acc["fp"] += np.bincount(pred_cat[extra & ~ignored], minlength=n_cat)
            acc["windows"] += 1
        out[k] = acc
    return out


def _pq_add(total: dict[int, dict[str, Any]] | None, stats: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    if total is None:
        return {k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in a.items()} for k, a in stats.items()}
    for k, a in stats.items():
        for n, v in a.items():
            total[k][n] = total[k][n] + v
    return total


def _pq_average(acc: dict[str, Any], cats: np.ndarray) -> dict[str, float]:
    """PQ / SQ / RQ averaged over the categories in ``cats`` that occur (VIPSeg's ``pq_average``)."""
    tp, fp, fn, iou = (acc[n][cats] for n in ("tp", "fp", "fn", "iou"))
    used = (tp + fp + fn) > 0
    if not used.any():
        return {"PQ": float("nan"), "SQ": float("nan"), "RQ": float("nan"), "n": 0}
    tp, fp, fn, iou = tp[used], fp[used], fn[used], iou[used]
    denom = tp + 0.5 * fp + 0.5 * fn
    pq = iou / denom
    sq = np.divide(iou, tp, out=np.zeros_like(iou), where=tp > 0)
    rq = tp / denom
    return {"PQ": float(pq.mean()), "SQ": float(sq.mean()), "RQ": float(rq.mean()), "n": int(used.sum())}


def _pq_summary(acc_by_k: dict[int, dict[str, Any]], n_cat: int, things: np.ndarray | None,
                name: str) -> dict[str, Any]:
    all_cats = np.arange(n_cat)
    per_k: dict[int, dict[str, Any]] = {}
    for k, acc in acc_by_k.items():
        row: dict[str, Any] = dict(_pq_average(acc, all_cats))
        row.update(tp=int(acc["tp"].sum()), fp=int(acc["fp"].sum()), fn=int(acc["fn"].sum()),
                   windows=int(acc["windows"]))
        if things is not None:
            row["PQ_thing"] = _pq_average(acc, all_cats[things])["PQ"]
            row["PQ_stuff"] = _pq_average(acc, all_cats[~things])["PQ"]
        per_k[k] = row
    out: dict[str, Any] = {name: _nanmean(r["PQ"] for r in per_k.values())}
    if things is not None:
        out[f"{name}_thing"] = _nanmean(r["PQ_thing"] for r in per_k.values())
        out[f"{name}_stuff"] = _nanmean(r["PQ_stuff"] for r in per_k.values())
    out["per_k"] = per_k
    return out


def _panoptic_segments(x: np.ndarray, ignore_label: int, label_bit_shift: int, num_classes: int,
                       thing_lut: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panoptic ids -> (compact ids with 0 = void, category per segment, crowd per segment)."""
    sem = x >> label_bit_shift
    void = sem == ignore_label
    bad = ~void & (sem >= num_classes)
    if bad.any():
        raise ValueError(f"{what}: semantic class {int(sem[bad].max())} is neither in [0, {num_classes}) "
                         f"nor the ignore label {ignore_label}")
    uniq, inv = _compact(np.where(void, -1, x) + 1)   # void -> 0, every segment -> its id + 1
    if len(uniq) == 0 or uniq[0] != 0:
        uniq, inv = np.concatenate([[0], uniq]), inv + 1
    seg_ids = uniq[1:] - 1
    cat = np.concatenate([[0], seg_ids >> label_bit_shift])
    crowd = np.concatenate([[False], thing_lut[seg_ids >> label_bit_shift] & ((seg_ids & ((1 << label_bit_shift) - 1)) == 0)])
    return inv, cat.astype(np.int64), crowd


def vpq(gt: Any, pred: Any, num_classes: int, things: Sequence[int], ignore_label: int = 255,
        label_bit_shift: int = 16, window_sizes: Sequence[int] = WINDOW_SIZES) -> dict[str, Any]:
    """Video Panoptic Quality, VIPSeg protocol (``eval_vpq_vspw.py``).

    Ids are encoded as for ``stq``: ``(semantic << label_bit_shift) + instance``;
    semantic ``ignore_label`` is void; instance 0 of a thing class is the crowd
    region of that class; a stuff class is one segment per (class, instance).
    Returns ``VPQ``, ``VPQ_thing``, ``VPQ_stuff``, ``per_k`` (PQ / SQ / RQ /
    PQ_thing / PQ_stuff / tp / fp / fn / windows for each k) and
    ``per_sequence`` (``id``, ``VPQ``).
    """
    is_thing = np.zeros(num_classes, dtype=bool)
    for c in things:
        if not 0 <= c < num_classes:
            raise ValueError(f"thing class {c} outside [0, {num_classes})")
        is_thing[c] = True
    thing_lut = np.zeros(max(num_classes, 1) + 1, dtype=bool)
    thing_lut[:num_classes] = is_thing
    categories = np.array([c for c in range(num_classes) if c != ignore_label], dtype=np.int64)
    total = None
    per_seq = []
    for sid, g, p in _sequences(gt, pred):
        gt_c, gt_cat, gt_crowd = _panoptic_segments(g, ignore_label, label_bit_shift, num_classes, thing_lut,
                                                    f"gt[{sid!r}]")
        if p is None:
            pred_c, pred_cat = np.zeros_like(g), np.zeros(1, np.int64)
        else:
            pred_c, pred_cat, _ = _panoptic_segments(p, ignore_label, label_bit_shift, num_classes, thing_lut,
                                                     f"pred[{sid!r}]")
        stats = _pq_stats(gt_c, pred_c, gt_cat, gt_crowd, pred_cat, num_classes, window_sizes, agnostic=False)
        total = _pq_add(total, stats)
        seq = _pq_summary({k: _restrict(a, categories) for k, a in stats.items()}, len(categories),
                          is_thing[categories], "VPQ")
        per_seq.append({"id": sid, "VPQ": seq["VPQ"]})
    if total is None:
        total = {k: {"tp": np.zeros(num_classes, np.int64), "fp": np.zeros(num_classes, np.int64),
                     "fn": np.zeros(num_classes, np.int64), "iou": np.zeros(num_classes), "windows": 0}
                 for k in window_sizes}
    out = _pq_summary({k: _restrict(a, categories) for k, a in total.items()}, len(categories),
                      is_thing[categories], "VPQ")
    out["per_sequence"] = per_seq
    return out


def _restrict(acc: dict[str, Any], cats: np.ndarray) -> dict[str, Any]:
    return {n: (v[cats] if isinstance(v, np.ndarray) else v) for n, v in acc.items()}


def _entity_segments(x: np.ndarray, void_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-agnostic ids -> (compact ids with 0 = void, original id of each compact id)."""
    uniq, inv = _compact(np.where(x == void_id, 0, x + 1))
    if len(uniq) == 0 or uniq[0] != 0:
        uniq, inv = np.concatenate([[0], uniq]), inv + 1
    return inv, uniq - 1


def _veq_video(g: np.ndarray, p: np.ndarray | None, void_id: int, crowd_ids: Iterable[int],
               window_sizes: Sequence[int]) -> dict[int, dict[str, Any]]:
    gt_c, gt_orig = _entity_segments(g, void_id)
    gt_crowd = np.isin(gt_orig, np.asarray(list(crowd_ids), dtype=np.int64))
    gt_crowd[0] = False
    if p is None:
        pred_c, n_pred = np.zeros_like(g), 1
    else:
        pred_c, pred_orig = _entity_segments(p, void_id)
        n_pred = len(pred_orig)
    return _pq_stats(gt_c, pred_c, np.zeros(len(gt_orig), np.int64), gt_crowd,
                     np.zeros(n_pred, np.int64), 1, window_sizes, agnostic=True)


def veq(gt: Any, pred: Any, void_id: int = 0, crowd_ids: Iterable[int] = (),
        window_sizes: Sequence[int] = WINDOW_SIZES) -> dict[str, Any]:
    """Video Entity Quality: class-agnostic VPQ as EntitySAM's ``eval_veq.py``.

    ``gt`` / ``pred``: entity id maps (any non-negative ints), ``void_id`` is
    void in both (unlabelled in GT, no segment in the prediction);
    ``crowd_ids`` are GT ids that are crowd regions.  Returns ``VEQ``,
    ``per_k`` (PQ / SQ / RQ / tp / fp / fn / windows) and ``per_sequence``.
    """
    crowd_ids = list(crowd_ids)
    total = None
    per_seq = []
    for sid, g, p in _sequences(gt, pred):
        stats = _veq_video(g, p, void_id, crowd_ids, window_sizes)
        total = _pq_add(total, stats)
        per_seq.append({"id": sid, "VEQ": _pq_summary(stats, 1, None, "VEQ")["VEQ"]})
    if total is None:
        total = {k: {"tp": np.zeros(1, np.int64), "fp": np.zeros(1, np.int64), "fn": np.zeros(1, np.int64),
                     "iou": np.zeros(1), "windows": 0} for k in window_sizes}
    out = _pq_summary(total, 1, None, "VEQ")
    out["per_sequence"] = per_seq
    return out


# --------------------------------------------------------------------------- trajectory recall

def _recall_video(g: np.ndarray, p: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best spatio-temporal IoU of each GT trajectory: ``(gt_ids, best_iou, best_pred_id, n_covering)``.

    IoU of trajectories a, b = sum_t |a_t & b_t| / sum_t |a_t | b_t|, i.e. the
    IoU of the two space-time volumes.  The rule is *strict*: every predicted
    pixel of the trajectory is in the union, including pixels where the
    reference is 0 (void), so a trajectory that bleeds into unlabelled
    background loses IoU; STQ / VEQ / VPQ instead keep their published rules
    (VEQ / VPQ leave a prediction's void pixels out of the union; STQ's SQ
    ignores void pixels, its AQ counts them in the predicted id's size).
    ``best_pred_id`` is 0 when nothing overlaps.  ``n_covering`` counts, per GT
    trajectory, the predicted ids whose overlap is at least ``COVER_SHARE`` of
    the GT trajectory's volume (fragmentation: 1 is ideal).
    """
    g_uniq, g_inv = _compact(g)
    keep = g_uniq != 0
    gt_ids = g_uniq[keep]
    n = int(keep.sum())
    if not keep.any():
        return gt_ids, np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if p is None:
        return gt_ids, np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
    p_uniq, p_inv = _compact(p)
    G, P = len(g_uniq), len(p_uniq)
    g_vol = np.bincount(g_inv.ravel(), minlength=G).astype(np.float64)
    p_vol = np.bincount(p_inv.ravel(), minlength=P).astype(np.float64)   # strict: void pixels included
    pairs, pair_inv = _compact(g_inv * P + p_inv)
    inter = np.bincount(pair_inv.ravel(), minlength=len(pairs)).astype(np.float64)
    pg, pp = pairs // P, pairs % P
    sel = (g_uniq[pg] != 0) & (p_uniq[pp] != 0)
    pg, pp, inter = pg[sel], pp[sel], inter[sel]
    iou = inter / (g_vol[pg] + p_vol[pp] - inter)
    covering = np.bincount(pg[inter >= COVER_SHARE * g_vol[pg]], minlength=G)
    best = np.zeros(G)
    best_pred = np.zeros(G, np.int64)
    if len(iou):
        # order by (gt, iou) so the last entry of each gt holds its best IoU
        order = np.lexsort((-pp, iou, pg))
        last = np.ones(len(order), bool)
        last[:-1] = pg[order][1:] != pg[order][:-1]
        winners = order[last]
        best[pg[winners]] = iou[winners]
        best_pred[pg[winners]] = p_uniq[pp[winners]]
    return gt_ids, best[keep], best_pred[keep], covering[keep]


def trajectory_lengths(x: np.ndarray | None) -> np.ndarray:
    """Length in frames (last - first + 1) of every nonzero id of an id map ``[T, H, W]``."""
    if x is None or x.size == 0:
        return np.zeros(0, np.int64)
    T = x.shape[0]
    uniq, inv = _compact(x.reshape(T, -1))
    present = np.zeros((T, len(uniq)), bool)
    present[np.repeat(np.arange(T), inv.shape[1]), inv.ravel()] = True
    present = present[:, uniq != 0]
    if present.shape[1] == 0:
        return np.zeros(0, np.int64)
    first = present.argmax(axis=0)
    last = T - 1 - present[::-1].argmax(axis=0)
    return (last - first + 1).astype(np.int64)


def _recall_summary(best: np.ndarray) -> dict[str, float]:
    """``recall_at_0.5``: share of GT trajectories whose *best* strict IoU with any prediction is >= 0.5
    (not one-to-one: see ``matching.matched_ious`` for trajtok's Hungarian ``matched_recall@0.5``)."""
    if len(best) == 0:
        return {"mean_best_iou": float("nan"), "recall_at_0.5": float("nan")}
    return {"mean_best_iou": float(np.mean(best)), "recall_at_0.5": float(np.mean(best >= RECALL_IOU))}


def _fragmentation_summary(covering: np.ndarray, gt_lengths: np.ndarray, pred_lengths: np.ndarray) -> dict[str, float]:
    """``ids_per_gt_trajectory``: mean number of predicted ids covering a GT trajectory (>= ``COVER_SHARE``
    of its volume; a missed GT trajectory counts 0, recall reports it); ``length_ratio``: mean predicted
    trajectory length / mean GT trajectory length, in frames (first to last frame present)."""
    ids = float(np.mean(covering)) if len(covering) else float("nan")
    g_len = float(np.mean(gt_lengths)) if len(gt_lengths) else float("nan")
    p_len = float(np.mean(pred_lengths)) if len(pred_lengths) else 0.0
    ratio = p_len / g_len if len(gt_lengths) else float("nan")
    return {"ids_per_gt_trajectory": ids, "length_ratio": ratio,
            "mean_gt_length": g_len, "mean_pred_length": p_len}


FRAGMENTATION_KEYS = ("ids_per_gt_trajectory", "length_ratio", "mean_gt_length", "mean_pred_length")


def trajectory_recall(gt: Any, pred: Any) -> dict[str, Any]:
    """Per GT trajectory, its best spatio-temporal IoU with any predicted trajectory.

    ``gt`` / ``pred``: class-agnostic id maps (0 = no trajectory), one sequence
    or a list / dict of them.  Returns ``per_trajectory`` (rows ``sequence``,
    ``id``, ``best_iou``, ``best_pred``), ``mean_best_iou``, ``recall_at_0.5``
    (share of GT trajectories with best IoU >= 0.5), ``n_trajectories``,
    the fragmentation figures (``ids_per_gt_trajectory``, ``length_ratio``:
    see ``_fragmentation_summary``) and ``per_sequence``.  Pooled over all
    trajectories of all sequences; NaN when there is no GT trajectory.  The
    IoU is strict (see ``_recall_video``): predicted pixels on GT void count.
    """
    rows, all_best, all_cov, all_gl, all_pl, per_seq = [], [], [], [], [], []
    for sid, g, p in _sequences(gt, pred):
        ids, best, best_pred, cov = _recall_video(g, p)
        gl, pl = trajectory_lengths(g), trajectory_lengths(p)
        rows += [{"sequence": sid, "id": int(i), "best_iou": float(b), "best_pred": int(bp), "n_covering": int(c)}
                 for i, b, bp, c in zip(ids, best, best_pred, cov)]
        all_best.append(best)
        all_cov.append(cov)
        all_gl.append(gl)
        all_pl.append(pl)
        per_seq.append({"id": sid, "n_trajectories": int(len(ids)), **_recall_summary(best),
                        **_fragmentation_summary(cov, gl, pl)})
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    best = cat(all_best)
    return {"per_trajectory": rows, **_recall_summary(best), "n_trajectories": int(len(best)),
            **_fragmentation_summary(cat(all_cov), cat(all_gl), cat(all_pl)), "per_sequence": per_seq}


# --------------------------------------------------------------------------- class-agnostic bundle

def _agnostic_stq_stats(g: np.ndarray, p: np.ndarray | None) -> dict[str, Any]:
    """STQ statistics of one class-agnostic sequence.

    Equivalent to ``stq`` with one thing class (0), ignore label above it, GT 0
    and prediction 0 encoded as the ignore label, every other id an instance:
    semantic index 0 = trajectory, 1 = void; there is no crowd.
    """
    if p is None:
        p = np.zeros_like(g)
    sem_g = (g == 0).astype(np.int64)
    sem_p = (p == 0).astype(np.int64)
    return _stq_stats(sem_g, sem_p, 2, g != 0, p != 0, g, p)


_AGNOSTIC_INCLUDE = np.array([0])


def _pixel_recall(conf: np.ndarray) -> float:
    """Covered GT trajectory pixels / GT trajectory pixels, from an agnostic confusion matrix."""
    total = conf[0].sum()
    return float(conf[0, 0] / total) if total else float("nan")


def _aq(aq: float, n_tracks: int) -> float:
    """AQ where there is a ground-truth trajectory to associate; NaN where there is none (deeplab2 divides by an
    epsilon and says 0, which reads as a bad score beside the NaN of STQ and SQ)."""
    return aq if n_tracks else float("nan")


def evaluate_sequences(pairs: Iterable[tuple[Any, Any]] | Mapping[Any, tuple[Any, Any]],
                       window_sizes: Sequence[int] = WINDOW_SIZES) -> dict[str, Any]:
    """Class-agnostic evaluation of trajectory id maps.

    ``pairs``: an iterable (consumed once, so a generator streams) of
    ``(gt_ids, pred_ids or None)``, or a mapping ``key -> (gt_ids, pred_ids)``;
    arrays ``[T, H, W]`` with 0 = void in GT / no trajectory in the prediction;
    every trajectory is one entity of a single thing class.  ``None`` means the
    prediction is missing: every GT trajectory is a miss.

    Returns ``STQ``, ``AQ``, ``SQ``, ``pixel_recall``, ``VEQ``, ``VPQ`` (with
    a single thing class VPQ and VEQ coincide), ``recall_at_0.5``,
    ``mean_best_iou``, ``sequences`` and ``per_sequence`` (the same metrics
    for each sequence plus ``id``, ``frames``, ``n_gt_trajectories``,
    ``n_pred_trajectories``).

    ``STQ`` / ``AQ`` / ``SQ`` are exactly ``stq`` (deeplab2) with one thing
    class and both GT 0 and prediction 0 encoded as the ignore label, the
    encoding EntitySAM's class-agnostic STQ uses.  ``SQ`` is the STQ IoU term
    and so keeps deeplab2's rule that a void prediction on a labelled pixel
    counts for a "void class" with IoU 0 in the class mean: SQ = IoU of the
    trajectory class when the prediction covers every GT trajectory pixel, and
    half of it as soon as it leaves any of them uncovered.
    ``pixel_recall`` is the trajectory-class IoU alone (covered GT trajectory
    pixels / GT trajectory pixels, GT void excluded).
    ``recall_at_0.5`` / ``mean_best_iou`` use the strict IoU of
    ``trajectory_recall`` (a prediction's pixels on GT void count in its
    union), and the fragmentation figures ``ids_per_gt_trajectory`` /
    ``length_ratio`` (with ``mean_gt_length``, ``mean_pred_length``) come
    from ``_fragmentation_summary``.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else enumerate(pairs)
    stq_stats, pq_total, best_all, per_seq = [], None, [], []
    cov_all, gl_all, pl_all = [], [], []
    conf_total = None
    for sid, pair in items:
        gt, pred = pair
        ((_, g, p),) = _sequences(gt, pred)
        s = _agnostic_stq_stats(g, p)
        stq_stats.append((sid, s))
        pq = _veq_video(g, p, 0, (), window_sizes)
        pq_total = _pq_add(pq_total, pq)
        _, best, _, cov = _recall_video(g, p)
        gl, pl = trajectory_lengths(g), trajectory_lengths(p)
        best_all.append(best)
        cov_all.append(cov)
        gl_all.append(gl)
        pl_all.append(pl)
        srow = _stq_result([(sid, s)], _AGNOSTIC_INCLUDE)["per_sequence"][0]
        conf_total = s["conf"] if conf_total is None else conf_total + s["conf"]
        veq_s = _pq_summary(pq, 1, None, "VEQ")["VEQ"]
        n_pred = 0 if p is None else int(np.count_nonzero(_compact(p)[0]))
        per_seq.append({"id": sid, "frames": int(g.shape[0]), "n_gt_trajectories": int(len(best)),
                        "n_pred_trajectories": n_pred, "STQ": srow["STQ"], "AQ": _aq(srow["AQ"], s["n_tubes"]),
                        "SQ": srow["IoU"],
                        "pixel_recall": _pixel_recall(s["conf"]), "VEQ": veq_s, "VPQ": veq_s, **_recall_summary(best),
                        **_fragmentation_summary(cov, gl, pl)})
    res = _stq_result(stq_stats, _AGNOSTIC_INCLUDE)
    if pq_total is None:
        veq_v = float("nan")
    else:
        veq_v = _pq_summary(pq_total, 1, None, "VEQ")["VEQ"]
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    best = cat(best_all)
    return {"STQ": res["STQ"], "AQ": _aq(res["AQ"], sum(s["n_tubes"] for _, s in stq_stats)), "SQ": res["IoU"],
            "pixel_recall": float("nan") if conf_total is None else _pixel_recall(conf_total), "VEQ": veq_v, "VPQ": veq_v,
            **_recall_summary(best), **_fragmentation_summary(cat(cov_all), cat(gl_all), cat(pl_all)),
            "sequences": len(per_seq), "per_sequence": per_seq}


# The figures that pool exactly from the per-sample rows (weighted by their trajectory counts).
POOLED_KEYS = ("recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory", "length_ratio")


def pooled_by_trajectory(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Strict recall, mean best IoU, ids per GT trajectory and length ratio of a subset of ``per_sample``
    rows, pooled over their GT trajectories as the whole run's are (mean lengths weighted by their
    trajectory counts); also ``samples`` and ``n_gt_trajectories``."""
    n_gt = np.array([r["n_gt_trajectories"] for r in rows], float)
    n_pred = np.array([r["n_pred_trajectories"] for r in rows], float)
    out: dict[str, Any] = {"samples": len(rows), "n_gt_trajectories": int(n_gt.sum())}
    if n_gt.sum() == 0:
        return {**out, **dict.fromkeys(POOLED_KEYS, float("nan"))}
    for k in ("recall_at_0.5", "mean_best_iou", "ids_per_gt_trajectory"):
        v = np.array([r[k] for r in rows], float)
        out[k] = float(np.sum(np.where(n_gt > 0, v, 0.0) * n_gt) / n_gt.sum())
    g_len = float(np.sum([r["mean_gt_length"] * n for r, n in zip(rows, n_gt) if n > 0]) / n_gt.sum())
    p_len = (float(np.sum([r["mean_pred_length"] * n for r, n in zip(rows, n_pred) if n > 0]) / n_pred.sum())
             if n_pred.sum() else 0.0)
    out["length_ratio"] = p_len / g_len
    return out
