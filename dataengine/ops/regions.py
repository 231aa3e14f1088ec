"""Small helpers over integer label maps shared by segmenters and trackers."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential


# Offsets within 2 px, nearest first and, among equally near ones, smallest column then row: the order in
# which scipy's feature transform chooses among equally near labelled pixels (see nearest_label_at).
_NEAR = sorted(((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)),
               key=lambda o: (o[0] ** 2 + o[1] ** 2, o[1], o[0]))


def nearest_label(labels: np.ndarray, margin: int = 16) -> np.ndarray:
    """The label of the nearest labelled pixel, for every pixel (labelled ones keep theirs).

    Where the holes are few (at most an eighth of the frame: thin boundaries, small dropped pieces), each
    looks at its neighbours within 2 px first, nearest first and in the order scipy's feature transform
    chooses among equally near ones; the holes with no labelled pixel that near go through the transform
    in windows around them (``nearest_label_at``), as do all holes where they are more (over a quarter of
    the frame: one transform of the frame), and all but those next to a labelled pixel where most are not
    (a wide occlusion). The same labels as the transform of the whole frame.
    """
    holes = labels == 0
    if not holes.any() or holes.all():
        return labels
    h, w = labels.shape
    n = np.count_nonzero(holes)
    if n * 4 > h * w:       # holes everywhere (a random-weight DirectSAM's boundaries): the frame at once
        iy, ix = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
        return labels.ravel()[iy * w + ix]
    if n * 8 > h * w:
        return nearest_label_at(labels, holes, margin)
    ys, xs = np.nonzero(holes)
    out = labels.copy()
    padded = np.pad(labels, 2).ravel()          # the border reads as unlabelled
    at = (ys + 2) * (w + 4) + (xs + 2)
    holes_n = len(ys)
    for k, (dy, dx) in enumerate(_NEAR):
        value = padded[at + dy * (w + 4) + dx]
        found = value != 0
        out[ys[found], xs[found]] = value[found]
        keep = ~found
        ys, xs, at = ys[keep], xs[keep], at[keep]
        if len(ys) == 0:
            return out
        if k == 3 and 2 * len(ys) > holes_n:  # most holes lie deeper (a wide occlusion): the transform
            break
    rest = np.zeros_like(holes)
    rest[ys, xs] = True
    out[ys, xs] = nearest_label_at(labels, rest, margin)[ys, xs]
    return out


def nearest_label_at(labels: np.ndarray, targets: np.ndarray, margin: int = 16, max_windows: int = 32) -> np.ndarray:
    """``labels`` with each pixel of ``targets`` (boolean, where ``labels`` is 0) given the label that
    ``nearest_label`` gives it; every other pixel unchanged.

    scipy's feature transform picks, among the labelled pixels nearest to a pixel, the one with the smallest
    column and then the smallest row (``tests/test_host_fast_paths.py`` checks this against brute force), so
    its choice does not depend on the window it runs on as long as the window holds every nearest pixel.
    The transform runs on whichever covers fewer pixels: a window per connected piece of ``targets`` (at
    most ``max_windows``), one window around all of them, or the frame (always where the targets are more
    than a quarter of it). A window is a piece's bounding box
    grown by its smaller side (more than a compact piece's depth) and at least ``margin`` px; where a target
    in the box finds no labelled pixel that near, the window grows to the distance it did find, which then
    holds the nearest one.
    """
    import cv2

    targets = np.ascontiguousarray(targets, dtype=bool)
    if not targets.any():
        return labels
    holes = labels == 0
    if holes.all():
        return labels
    h, w = labels.shape

    def grown(box, m):
        y0, y1, x0, x1 = box
        return max(y0 - m, 0), min(y1 + m, h), max(x0 - m, 0), min(x1 + m, w)

    def reach(box):
        return max(margin, min(box[1] - box[0], box[3] - box[2]))

    def cost(boxes):
        return sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in (grown(b, reach(b)) for b in boxes))

    many = 4 * np.count_nonzero(targets) > h * w
    if not many:
        rows, cols = np.flatnonzero(targets.any(axis=1)), np.flatnonzero(targets.any(axis=0))
        choices = [[(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)]]
        n, _, stats, _ = cv2.connectedComponentsWithStats(targets.view(np.uint8), connectivity=8)
        if 1 < n - 1 <= max_windows:
            choices.append([(int(y), int(y + bh), int(x), int(x + bw)) for x, y, bw, bh, _ in stats[1:]])
        boxes = min(choices, key=cost)
    if many or 2 * cost(boxes) >= h * w:
        # many targets, or windows as dear as the frame (one call, no retry): the frame, indices only (the
        # distances would cost half as much again), one flat gather
        iy, ix = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
        return np.where(targets, labels.ravel()[iy * w + ix], labels)
    out = labels.copy()
    for box in boxes:
        by0, by1, bx0, bx1 = box
        core = targets[by0:by1, bx0:bx1]
        m = reach(box)
        while True:
            y0, y1, x0, x1 = grown(box, m)
            window = holes[y0:y1, x0:x1]
            if window.all():            # no labelled pixel near: a wider window
                m *= 2
                continue
            inner = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
            distance, (iy, ix) = ndimage.distance_transform_edt(window, return_indices=True)
            far = float(distance[inner][core].max())
            # exact when every target is at most m px from its nearest labelled pixel in the window: all
            # pixels outside the window are farther than m from the box (the frame's edge has none beyond)
            if far <= m or (y1 - y0) * (x1 - x0) == h * w:
                out[by0:by1, bx0:bx1][core] = labels[y0:y1, x0:x1][iy[inner], ix[inner]][core]
                break
            m = int(np.ceil(far))       # the window then holds a labelled pixel at most that far
    return out


def fill_unlabelled(labels: np.ndarray) -> np.ndarray:
    """Give every 0 pixel the label of the nearest labelled pixel (a panoptic partition)."""
    return nearest_label(labels)


def unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """The distinct unordered pairs of ``pairs`` (``[m, 2]`` ids below ``n``) as ``[k, 2]`` rows (smaller id
    first), sorted: ``np.unique(np.sort(pairs, 1), axis=0)`` through one integer key per pair, which is
    several times faster than a row-wise unique."""
    pairs = np.asarray(pairs, dtype=np.int64)
    key = np.unique(pairs.min(axis=1) * n + pairs.max(axis=1))
    return np.stack([key // n, key % n], axis=1)


def drop_small(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Zero regions with fewer than ``min_pixels`` pixels."""
    counts = np.bincount(labels.ravel())
    small = counts < min_pixels
    small[0] = False
    if not small.any():
        return labels
    out = labels.copy()
    out[small[labels]] = 0
    return out


def keep_largest(labels: np.ndarray, max_regions: int) -> np.ndarray:
    """Zero all but the ``max_regions`` largest regions (ties broken by id, deterministic)."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    ids = np.nonzero(counts)[0]
    if len(ids) <= max_regions:
        return labels
    order = ids[np.lexsort((ids, -counts[ids]))]
    keep = np.zeros(len(counts), dtype=bool)
    keep[order[:max_regions]] = True
    out = labels.copy()
    out[~keep[labels]] = 0
    return out


def kept_regions(labels: np.ndarray, min_pixels: int, max_regions: int) -> np.ndarray:
    """``consecutive(keep_largest(drop_small(labels, min_pixels), max_regions))`` in one count and one table
    look-up: regions below ``min_pixels`` and beyond the ``max_regions`` largest (ties by id) become 0, the
    rest 1..n in the order of their ids."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    ids = np.flatnonzero(counts >= max(min_pixels, 1))
    if len(ids) > max_regions:
        ids = np.sort(ids[np.lexsort((ids, -counts[ids]))][:max_regions])
    table = np.zeros(len(counts), np.int32)
    table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return table[labels]


def consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel to 1..n keeping 0 as 0."""
    return relabel_sequential(labels.astype(np.int32))[0].astype(np.int32)


def refine_boundaries(labels: np.ndarray, image: np.ndarray, radius: int = 3, iterations: int = 1) -> np.ndarray:
    """Move pixels on region outlines to the neighbouring region whose nearby colour they match.

    For each pixel that touches another region (4-neighbourhood), the candidates are its own region and
    those of its 4 neighbours; each candidate's *local* mean colour is taken over its pixels in a
    ``(2 radius + 1)^2`` window, outline pixels left out, and the pixel joins the candidate nearest to its
    own colour. Local rather than region-wide means, because on textured regions the region's mean says
    little about which side a pixel lies on, while its immediate neighbourhood does.
    """
    import cv2
    from skimage.segmentation import find_boundaries

    out = labels.astype(np.int32, copy=True)
    img = np.ascontiguousarray(image, dtype=np.float32)
    h, w = out.shape
    k = 2 * radius + 1
    for _ in range(iterations):
        diff = find_boundaries(out, connectivity=1, mode="thick")   # pixels touching another region
        if not diff.any():
            break
        pad = np.pad(out, 1, mode="edge")
        ys, xs = np.nonzero(diff)
        cands = np.stack([out[ys, xs], pad[ys + 1, xs + 2], pad[ys + 1, xs], pad[ys + 2, xs + 1],
                          pad[ys, xs + 1]], axis=1)                                 # own, right, left, down, up
        # per pixel: mask and colour of core (non-outline) pixels, as one 4-channel image
        core = (~diff).astype(np.float32)
        stack = np.concatenate([core[..., None], img * core[..., None]], axis=2)
        best = np.full(len(ys), np.inf, np.float32)
        choice = cands[:, 0].copy()
        pix = img[ys, xs]
        flat = cands.ravel()
        order = np.argsort(flat, kind="stable")
        ids, starts = np.unique(flat[order], return_index=True)
        for i, a, b in zip(ids, starts, list(starts[1:]) + [len(order)]):
            rows = order[a:b] // cands.shape[1]          # non-decreasing (stable sort): dedupe neighbours
            rows = rows[np.concatenate([[True], rows[1:] != rows[:-1]])]
            y0, y1 = max(int(ys[rows].min()) - radius, 0), min(int(ys[rows].max()) + radius + 1, h)
            x0, x1 = max(int(xs[rows].min()) - radius, 0), min(int(xs[rows].max()) + radius + 1, w)
            part = stack[y0:y1, x0:x1] * (out[y0:y1, x0:x1] == i)[..., None]
            sums = cv2.boxFilter(part, -1, (k, k), normalize=False,
                                 borderType=cv2.BORDER_CONSTANT)[ys[rows] - y0, xs[rows] - x0]
            n = sums[:, 0]
            ok = n > 0
            dist = np.full(len(rows), np.inf, np.float32)
            dist[ok] = np.linalg.norm(pix[rows[ok]] - sums[ok, 1:] / n[ok, None], axis=1)
            better = dist < best[rows]
            best[rows[better]] = dist[better]
            choice[rows[better]] = i
        out[ys, xs] = choice
    return out
