"""Greedy hierarchical merge of a superpixel map by mean colour, with motion-layer constraints.

The same merge as ``skimage.graph.merge_hierarchical`` over a mean-colour region adjacency graph
(the cheapest edge below the threshold merges first, the merged region's mean colour is recomputed and
its edges re-weighted), on plain dicts and a heap instead of a networkx graph: the classical segmenter
spends most of its time in that graph's bookkeeping. Edge weights are the Lab distance of the two
regions' mean colours, optionally times ``1 + motion_weight * |mean flow difference|``, then the
motion-layer rule of ``layer_weight``.
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from dataengine.ops.motionlayers import region_motion
from dataengine.ops.regions import unique_pairs


def layer_weight(colour: float, layer_a: int, layer_b: int, res_a: tuple[float, float],
                 res_b: tuple[float, float], tolerance: float, join: float, split: float) -> float:
    """Motion-layer constraint on a merge distance: regions whose residual flows differ by more than
    ``split`` never merge (moving against static, or two objects moving apart); moving regions whose
    residuals agree within ``tolerance`` get their colour distance scaled by ``join`` (an object's
    differently coloured pieces move together); regions without reliable flow keep the colour distance."""
    if layer_a == 0 or layer_b == 0:
        return colour
    d = math.hypot(res_a[0] - res_b[0], res_a[1] - res_b[1])
    if d > split:
        return math.inf
    if layer_a == layer_b == 1 and d <= tolerance:
        return colour * join
    return colour


def merge_regions(lab: np.ndarray, labels: np.ndarray, thresh: float, flow: np.ndarray | None = None,
                  motion_weight: float = 0.0, residual: np.ndarray | None = None, min_speed: float = 1.0,
                  layer_tolerance: float = 1.0, reliable: np.ndarray | None = None, layer_join: float = 0.0,
                  layer_split: float | None = None) -> np.ndarray:
    """``labels`` (superpixels, ids >= 0) merged greedily while the cheapest edge weighs less than ``thresh``.

    Returns the merged map numbered as ``merge_hierarchical(in_place_merge=True)`` numbers it: 0..k-1 in the
    ascending order of the id that survived each chain of merges (ids absent from ``labels`` map to
    themselves)."""
    n = int(labels.max()) + 1
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    present = np.flatnonzero(counts > 0)
    colour = np.stack([np.bincount(flat, weights=lab[..., c].ravel(), minlength=n) for c in range(3)], axis=1)
    use_motion = flow is not None and motion_weight > 0
    motion = (np.stack([np.bincount(flat, weights=flow[..., c].ravel(), minlength=n) for c in range(2)], axis=1)
              if use_motion else np.zeros((n, 2)))
    layered = residual is not None
    if layered:
        res_total, res_count, layer = region_motion(labels, residual, min_speed, reliable)
    else:
        res_total, res_count, layer = np.zeros((n, 2)), np.ones(n), np.zeros(n, dtype=int)
    split = min_speed if layer_split is None else layer_split

    # per region, as Python floats (the merge loop is scalar work)
    cnt = counts.tolist()
    tot = colour.tolist()
    mot = motion.tolist()
    rtot = res_total.tolist()
    rcnt = res_count.tolist()
    lay = [int(v) for v in layer]
    mean = [[c / max(k, 1.0) for c in t] for t, k in zip(tot, cnt)]
    mmean = [[c / max(k, 1.0) for c in t] for t, k in zip(mot, cnt)]
    rmean = [(t[0] / max(k, 1.0), t[1] / max(k, 1.0)) for t, k in zip(rtot, rcnt)]

    def weight(a: int, b: int) -> float:
        ma, mb = mean[a], mean[b]
        w = math.sqrt((ma[0] - mb[0]) ** 2 + (ma[1] - mb[1]) ** 2 + (ma[2] - mb[2]) ** 2)
        if use_motion:
            w *= 1 + motion_weight * math.hypot(mmean[a][0] - mmean[b][0], mmean[a][1] - mmean[b][1])
        if layered:
            w = layer_weight(w, lay[a], lay[b], rmean[a], rmean[b], layer_tolerance, layer_join, split)
        return w

    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
        np.stack([labels[:-1, :-1].ravel(), labels[1:, 1:].ravel()], axis=1),   # 8-connectivity, as skimage
        np.stack([labels[:-1, 1:].ravel(), labels[1:, :-1].ravel()], axis=1),
    ])
    pairs = unique_pairs(pairs[pairs[:, 0] != pairs[:, 1]], n).tolist()
    adj: dict[int, dict[int, list]] = {int(i): {} for i in present}
    heap: list[list] = []
    for a, b in pairs:
        item = [weight(a, b), a, b, True]
        adj[a][b] = adj[b][a] = item
        heap.append(item)
    heapq.heapify(heap)
    parent = {}
    while heap and heap[0][0] < thresh:
        _, src, dst, valid = heapq.heappop(heap)
        if not valid:
            continue
        for item in adj[src].values():
            item[3] = False
        for item in adj[dst].values():
            item[3] = False
        cnt[dst] += cnt[src]
        tot[dst] = [x + y for x, y in zip(tot[dst], tot[src])]
        mean[dst] = [x / cnt[dst] for x in tot[dst]]
        if use_motion:
            mot[dst] = [x + y for x, y in zip(mot[dst], mot[src])]
            mmean[dst] = [x / cnt[dst] for x in mot[dst]]
        rtot[dst] = [x + y for x, y in zip(rtot[dst], rtot[src])]
        rcnt[dst] += rcnt[src]
        rmean[dst] = (rtot[dst][0] / max(rcnt[dst], 1.0), rtot[dst][1] / max(rcnt[dst], 1.0))
        lay[dst] = 1 if max(lay[dst], lay[src]) == 1 else min(lay[dst], lay[src])
        neighbours = (set(adj[src]) | set(adj[dst])) - {src, dst}
        for nb in adj.pop(src):
            adj[nb].pop(src, None)
        parent[src] = dst
        for nb in neighbours:
            item = [weight(dst, nb), dst, nb, True]
            adj[dst][nb] = adj[nb][dst] = item
            heapq.heappush(heap, item)

    def root(x: int) -> int:
        while x in parent:
            x = parent[x]
        return x

    survivors = sorted(adj)
    index = {s: i for i, s in enumerate(survivors)}
    lut = np.arange(n)
    for i in present:
        lut[i] = index[root(int(i))]
    return lut[labels]
